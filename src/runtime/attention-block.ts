/** One layer's self-attention: projections, QK-norm, RoPE, KV cache, causal attention, output projection. */
import type { ModelConfig } from '../models/canonical.js';
import { attend } from '../tensor/attention.js';
import { attendBatch } from '../tensor/attention-ort.js';
import { linear } from '../tensor/gemm.js';
import { rmsNorm } from '../tensor/norm.js';
import { applyRope, type RopeTables } from '../tensor/rope.js';
import type { KVCache } from './kv-cache.js';
import type { Weights } from './weights.js';

export interface AttentionDims {
  heads: number;
  kvHeads: number;
  dk: number;
  dv: number;
}

export function attentionDims(cfg: ModelConfig): AttentionDims {
  const a = cfg.attention;
  if (a.mla) return { heads: a.heads, kvHeads: a.heads, dk: a.mla.qkNopeHeadDim + a.mla.qkRopeHeadDim, dv: a.mla.vHeadDim };
  return { heads: a.heads, kvHeads: a.kvHeads, dk: a.headDim, dv: a.headDim };
}

/** OLMoE clip_qkv: clamp projections to [-c, c]. */
function clamp(x: Float32Array, c: number): void {
  for (let i = 0; i < x.length; i++) x[i] = Math.max(-c, Math.min(c, x[i]));
}

/** x: [T, N] @ weight(name) + bias(name) -> [T, out]. */
async function proj(w: Weights, name: string, x: Float32Array, T: number): Promise<Float32Array> {
  const W = w.get(`${name}.weight`);
  const [out, inp] = W.shape;
  return linear(x, W.data, T, out, inp, w.opt(`${name}.bias`) ?? undefined);
}

/** h: [T, H] -> q [T, NH, dk], k [T, NKV, dk], v [T, NKV, dv], RoPE not yet applied (MLA: applied here). */
async function projectQKV(cfg: ModelConfig, w: Weights, p: string, h: Float32Array, T: number, d: AttentionDims, positions: Int32Array, rope: RopeTables) {
  const a = cfg.attention;
  if (!a.mla) {
    const q = await proj(w, `${p}.q`, h, T);
    const k = await proj(w, `${p}.k`, h, T);
    const v = await proj(w, `${p}.v`, h, T);
    const qn = w.opt(`${p}.q_norm.weight`);
    const kn = w.opt(`${p}.k_norm.weight`);
    if (a.qkNorm === 'full' && qn && kn) {
      rmsNorm(q, qn, T, d.heads * d.dk, cfg.normEps, q);
      rmsNorm(k, kn, T, d.kvHeads * d.dk, cfg.normEps, k);
    } else if (a.qkNorm === 'head' && qn && kn) {
      rmsNorm(q, qn, T * d.heads, d.dk, cfg.normEps, q);
      rmsNorm(k, kn, T * d.kvHeads, d.dk, cfg.normEps, k);
    }
    // OLMoE clamps after the QK-norm
    if (a.clipQkv != null) for (const x of [q, k, v]) clamp(x, a.clipQkv);
    applyRope(q, T, d.heads, d.dk, 0, positions, rope);
    applyRope(k, T, d.kvHeads, d.dk, 0, positions, rope);
    return { q, k, v };
  }
  // Multi-head latent attention (DeepSeek): low-rank q and kv, a shared rotary key part.
  const m = a.mla;
  const eps = m.normEps ?? cfg.normEps;
  let q: Float32Array;
  if (m.qLoraRank) {
    const qa = await proj(w, `${p}.q_a`, h, T);
    rmsNorm(qa, w.get(`${p}.q_a_norm.weight`).data, T, m.qLoraRank, eps, qa);
    q = await proj(w, `${p}.q_b`, qa, T);
  } else q = await proj(w, `${p}.q`, h, T);
  const kva = await proj(w, `${p}.kv_a`, h, T); // [T, kvLoraRank + rope]
  const ckv = new Float32Array(T * m.kvLoraRank);
  const kRot = new Float32Array(T * m.qkRopeHeadDim);
  const row = m.kvLoraRank + m.qkRopeHeadDim;
  for (let t = 0; t < T; t++) {
    ckv.set(kva.subarray(t * row, t * row + m.kvLoraRank), t * m.kvLoraRank);
    kRot.set(kva.subarray(t * row + m.kvLoraRank, (t + 1) * row), t * m.qkRopeHeadDim);
  }
  rmsNorm(ckv, w.get(`${p}.kv_a_norm.weight`).data, T, m.kvLoraRank, eps, ckv);
  const kv = await proj(w, `${p}.kv_b`, ckv, T); // [T, NH, nope + dv]
  applyRope(q, T, d.heads, d.dk, m.qkNopeHeadDim, positions, rope);
  applyRope(kRot, T, 1, m.qkRopeHeadDim, 0, positions, rope);
  const k = new Float32Array(T * d.heads * d.dk);
  const v = new Float32Array(T * d.heads * d.dv);
  const kvRow = m.qkNopeHeadDim + m.vHeadDim;
  for (let t = 0; t < T; t++) {
    for (let hh = 0; hh < d.heads; hh++) {
      const src = (t * d.heads + hh) * kvRow;
      const ko = (t * d.heads + hh) * d.dk;
      k.set(kv.subarray(src, src + m.qkNopeHeadDim), ko);
      k.set(kRot.subarray(t * m.qkRopeHeadDim, (t + 1) * m.qkRopeHeadDim), ko + m.qkNopeHeadDim);
      v.set(kv.subarray(src + m.qkNopeHeadDim, src + kvRow), (t * d.heads + hh) * d.dv);
    }
  }
  return { q, k, v };
}

/**
 * h: [B*S, H] (normed hidden states of B sequences of S tokens) -> [B*S, H].
 * With a cache (B must be 1) the S tokens continue the cached sequence.
 */
export async function attentionBlock(cfg: ModelConfig, w: Weights, l: number, h: Float32Array, B: number, S: number, rope: RopeTables, cache: KVCache | null): Promise<Float32Array> {
  const p = `layers.${l}.attn`;
  const d = attentionDims(cfg);
  const T = B * S;
  const pos0 = cache ? cache.length : 0;
  const positions = new Int32Array(T);
  for (let t = 0; t < T; t++) positions[t] = pos0 + (t % S);
  const { q, k, v } = await projectQKV(cfg, w, p, h, T, d, positions, rope);
  const params = {
    ...d,
    scale: cfg.attention.scale,
    window: cfg.layers[l].slidingWindow,
    sinks: cfg.attention.sinks ? w.get(`${p}.sinks`).data : null,
  };
  let out: Float32Array; // [T, NH, dv]
  if (cache) {
    if (B !== 1) throw new Error('attentionBlock: a KV cache holds one sequence (B = 1)');
    cache.write(l, k, v, S);
    out = attend(q, cache.k[l], cache.v[l], S, { ...params, qPos0: pos0 });
  } else if (params.sinks === null) {
    // All B windows in one ORT call (attendBatch handles neither sinks nor a cache).
    out = await attendBatch(q, k, v, B, S, params);
  } else {
    out = new Float32Array(T * d.heads * d.dv);
    const qRow = d.heads * d.dk;
    const kRow = d.kvHeads * d.dk;
    const vRow = d.kvHeads * d.dv;
    const oRow = d.heads * d.dv;
    for (let b = 0; b < B; b++) {
      const ob = out.subarray(b * S * oRow, (b + 1) * S * oRow);
      attend(q.subarray(b * S * qRow), k.subarray(b * S * kRow), v.subarray(b * S * vRow), S, { ...params, qPos0: 0 }, ob);
    }
  }
  return proj(w, `${p}.o`, out, T);
}

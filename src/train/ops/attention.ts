/**
 * Causal grouped-query self-attention over B independent sequences of S tokens, forward and
 * backward, with the products on the GEMM backend.
 *
 * Per (sequence b, key/value head kh) the G = NH/NKV query heads that share kh are stacked into
 * one [G·S, D] matrix, so each pair costs one GEMM for the scores and one for the output.
 *
 * Memory: the softmax probabilities P are stored for the backward, B·NH·S² floats per call
 * (8 MiB for B 8, NH 4, S 256 in float32); q, k, v are the inputs' own arrays. Recomputing P
 * would save that at one more score GEMM per pair; at these sizes storing is cheaper.
 * The score GEMM computes the masked upper triangle too (S² instead of S²/2 multiply-adds):
 * one big product is faster than many small causal blocks through ORT.
 */
import { accumulate, Var, type Buf, type Tape } from '../tape.js';

export interface AttentionOptions {
  B: number;
  S: number;
  /** Softmax scale, usually 1/sqrt(D). */
  scale: number;
  /** Key j is visible to query i (same sequence) when j <= i and i - j < window; null: no window. */
  window: number | null;
}

interface Dims {
  B: number;
  S: number;
  NH: number;
  NKV: number;
  G: number;
  D: number;
  Dv: number;
}

/** Copy rows of head(s) between a token-major [B·S, heads, d] tensor and a stacked block. */
function gatherHeads(src: Buf, dst: Buf, b: number, S: number, heads: number, d: number, h0: number, count: number): void {
  for (let g = 0; g < count; g++) {
    for (let s = 0; s < S; s++) {
      const so = ((b * S + s) * heads + h0 + g) * d;
      dst.set(src.subarray(so, so + d), (g * S + s) * d);
    }
  }
}

/** The inverse of gatherHeads, adding into dst. */
function scatterHeads(src: Buf, dst: Buf, b: number, S: number, heads: number, d: number, h0: number, count: number): void {
  for (let g = 0; g < count; g++) {
    for (let s = 0; s < S; s++) {
      const dOff = ((b * S + s) * heads + h0 + g) * d;
      const sOff = (g * S + s) * d;
      for (let i = 0; i < d; i++) dst[dOff + i] += src[sOff + i];
    }
  }
}

/** scores: [G·S, S] -> scale·scores with the causal (and window) mask as -Infinity, in place. */
function scaleAndMask(p: Buf, G: number, S: number, scale: number, window: number | null): void {
  for (let r = 0; r < G * S; r++) {
    const i = r % S;
    const j0 = window === null ? 0 : Math.max(0, i - window + 1);
    const o = r * S;
    for (let j = 0; j < S; j++) p[o + j] = j >= j0 && j <= i ? p[o + j] * scale : -Infinity;
  }
}

/**
 * q: [B·S, NH, D], k: [B·S, NKV, D], v: [B·S, NKV, Dv] (RoPE already applied) -> [B·S, NH, Dv].
 * Query head h reads key/value head floor(h / G).
 */
export async function causalAttention(tape: Tape, q: Var, k: Var, v: Var, opts: AttentionOptions): Promise<Var> {
  tape.check('causalAttention', q, k, v);
  const { B, S, scale, window } = opts;
  if (q.shape.length !== 3 || k.shape.length !== 3 || v.shape.length !== 3) throw new Error('causalAttention: q, k, v must be [T, heads, dim]');
  const [T, NH, D] = q.shape;
  const [, NKV, Dv] = v.shape;
  if (T !== B * S || k.shape[0] !== T || v.shape[0] !== T) throw new Error(`causalAttention: ${T} query tokens, ${k.shape[0]} keys, ${v.shape[0]} values for ${B} x ${S}`);
  if (k.shape[1] !== NKV || k.shape[2] !== D || NH % NKV !== 0) throw new Error(`causalAttention: q [${q.shape}], k [${k.shape}], v [${v.shape}] do not fit grouped-query attention`);
  const dims: Dims = { B, S, NH, NKV, G: NH / NKV, D, Dv };
  const { G } = dims;
  const K = tape.kernels;
  const y = tape.alloc(T * NH * Dv);
  const probs: Buf[] = [];
  const qs = tape.alloc(G * S * D);
  const ks = tape.alloc(S * D);
  const vs = tape.alloc(S * Dv);
  for (let b = 0; b < B; b++) {
    for (let kh = 0; kh < NKV; kh++) {
      gatherHeads(q.data, qs, b, S, NH, D, kh * G, G);
      gatherHeads(k.data, ks, b, S, NKV, D, kh, 1);
      gatherHeads(v.data, vs, b, S, NKV, Dv, kh, 1);
      const scores = await K.linear(qs, ks, G * S, S, D); // [G·S, S]
      scaleAndMask(scores, G, S, scale, window);
      const p = await K.softmaxRows(scores, G * S, S); // masked entries -> 0; every row sees its own key
      const o = await K.matmul(p, vs, G * S, Dv, S); // [G·S, Dv]
      scatterHeads(o, y, b, S, NH, Dv, kh * G, G);
      if (tape.recording) probs.push(p);
    }
  }
  const out = new Var(y, [T, NH, Dv]);
  return tape.record('causalAttention', out, [q, k, v], () => attentionBackward(tape, q, k, v, out.grad!, probs, dims, scale));
}

/**
 * Per (b, kh): dP = dO·Vᵀ, dV = Pᵀ·dO, dS = P ⊙ (dP − rowsum(P ⊙ dP))·scale, dQ = dS·K, dK = dSᵀ·Q.
 * Masked entries have P = 0, so dS is zero there without a mask.
 */
async function attentionBackward(tape: Tape, q: Var, k: Var, v: Var, dy: Buf, probs: Buf[], d: Dims, scale: number): Promise<void> {
  const { B, S, NH, NKV, G, D, Dv } = d;
  const K = tape.kernels;
  const dq = tape.alloc(q.size);
  const dk = tape.alloc(k.size);
  const dv = tape.alloc(v.size);
  const qs = tape.alloc(G * S * D);
  const ks = tape.alloc(S * D);
  const vs = tape.alloc(S * Dv);
  const dos = tape.alloc(G * S * Dv);
  for (let b = 0; b < B; b++) {
    for (let kh = 0; kh < NKV; kh++) {
      const p = probs[b * NKV + kh];
      gatherHeads(dy, dos, b, S, NH, Dv, kh * G, G);
      gatherHeads(v.data, vs, b, S, NKV, Dv, kh, 1);
      if (v.needsGrad) scatterHeads(await K.matmulTN(p, dos, G * S, S, Dv), dv, b, S, NKV, Dv, kh, 1);
      if (!q.needsGrad && !k.needsGrad) continue;
      const ds = await K.linear(dos, vs, G * S, S, Dv); // dP: [G·S, S]
      for (let r = 0; r < G * S; r++) {
        const o = r * S;
        let dot = 0;
        for (let j = 0; j < S; j++) dot += p[o + j] * ds[o + j];
        for (let j = 0; j < S; j++) ds[o + j] = p[o + j] * (ds[o + j] - dot) * scale;
      }
      gatherHeads(q.data, qs, b, S, NH, D, kh * G, G);
      gatherHeads(k.data, ks, b, S, NKV, D, kh, 1);
      if (q.needsGrad) scatterHeads(await K.matmul(ds, ks, G * S, D, S), dq, b, S, NH, D, kh * G, G);
      if (k.needsGrad) scatterHeads(await K.matmulTN(ds, qs, G * S, S, D), dk, b, S, NKV, D, kh, 1);
    }
  }
  accumulate(q, dq, true);
  accumulate(k, dk, true);
  accumulate(v, dv, true);
}

/**
 * Tiny seeded models built in code (STYLE rule 7): a hub-style config.json per family, canonical
 * weights from a seeded RNG, mapped to hub tensor names by the family's own hubEntries and written
 * as real safetensors shards.
 */
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { writeCheckpoint } from '../../src/io/checkpoint.js';
import type { RawTensor } from '../../src/io/dtype.js';
import type { ModelConfig } from '../../src/models/canonical.js';
import { architectureFor } from '../../src/models/registry.js';
import { loadModel } from '../../src/runtime/load-model.js';
import { fromFloat32 } from '../../src/tensor/convert.js';
import { Rng } from '../../src/tensor/random.js';

/** Canonical names and shapes a config implies (written independently of the architecture files). */
export function canonicalShapes(cfg: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const { hidden: H, vocabSize: V } = cfg;
  const a = cfg.attention;
  m.set('embed', [V, H]);
  if (!cfg.tieEmbeddings) m.set('lm_head', [V, H]);
  if (cfg.lmHeadBias) m.set('lm_head_bias', [V]);
  const norm = (n: string) => {
    m.set(`${n}.weight`, [H]);
    if (cfg.norm === 'layer') m.set(`${n}.bias`, [H]);
  };
  norm('norm');
  cfg.layers.forEach((spec, l) => {
    const p = `layers.${l}.`;
    norm(p + 'attn_norm');
    norm(p + 'ffn_norm');
    if (a.mla) {
      const x = a.mla;
      const qd = a.heads * (x.qkNopeHeadDim + x.qkRopeHeadDim);
      if (x.qLoraRank) {
        m.set(p + 'attn.q_a.weight', [x.qLoraRank, H]);
        m.set(p + 'attn.q_a_norm.weight', [x.qLoraRank]);
        m.set(p + 'attn.q_b.weight', [qd, x.qLoraRank]);
      } else m.set(p + 'attn.q.weight', [qd, H]);
      m.set(p + 'attn.kv_a.weight', [x.kvLoraRank + x.qkRopeHeadDim, H]);
      m.set(p + 'attn.kv_a_norm.weight', [x.kvLoraRank]);
      m.set(p + 'attn.kv_b.weight', [a.heads * (x.qkNopeHeadDim + x.vHeadDim), x.kvLoraRank]);
      m.set(p + 'attn.o.weight', [H, a.heads * x.vHeadDim]);
    } else {
      const D = a.headDim;
      m.set(p + 'attn.q.weight', [a.heads * D, H]);
      m.set(p + 'attn.k.weight', [a.kvHeads * D, H]);
      m.set(p + 'attn.v.weight', [a.kvHeads * D, H]);
      m.set(p + 'attn.o.weight', [H, a.heads * D]);
      if (a.qkvBias) for (const x of ['q', 'k', 'v']) m.set(`${p}attn.${x}.bias`, [m.get(`${p}attn.${x}.weight`)![0]]);
      if (a.oBias) m.set(p + 'attn.o.bias', [H]);
      if (a.qkNorm === 'head') {
        m.set(p + 'attn.q_norm.weight', [D]);
        m.set(p + 'attn.k_norm.weight', [D]);
      } else if (a.qkNorm === 'full') {
        m.set(p + 'attn.q_norm.weight', [a.heads * D]);
        m.set(p + 'attn.k_norm.weight', [a.kvHeads * D]);
      }
      if (a.sinks) m.set(p + 'attn.sinks', [a.heads]);
    }
    const moe = cfg.moe;
    if (spec.ffn === 'moe' && moe) {
      const { experts: E, intermediate: I } = moe;
      m.set(p + 'moe.router.weight', [E, H]);
      if (moe.routerBias) m.set(p + 'moe.router.bias', [E]);
      if (moe.routing.kind === 'sigmoid-topk') m.set(p + 'moe.router.correction_bias', [E]);
      m.set(p + 'moe.experts.gate', [E, I, H]);
      m.set(p + 'moe.experts.up', [E, I, H]);
      m.set(p + 'moe.experts.down', [E, H, I]);
      if (moe.expertBias) {
        m.set(p + 'moe.experts.gate_bias', [E, I]);
        m.set(p + 'moe.experts.up_bias', [E, I]);
        m.set(p + 'moe.experts.down_bias', [E, H]);
      }
      if (moe.shared) {
        const IS = moe.shared.intermediate;
        m.set(p + 'moe.shared.gate', [IS, H]);
        m.set(p + 'moe.shared.up', [IS, H]);
        m.set(p + 'moe.shared.down', [H, IS]);
        if (moe.shared.gated) m.set(p + 'moe.shared_gate.weight', [1, H]);
      }
    } else {
      const F = cfg.denseIntermediate;
      m.set(p + 'mlp.gate', [F, H]);
      m.set(p + 'mlp.up', [F, H]);
      m.set(p + 'mlp.down', [H, F]);
    }
  });
  return m;
}

/** Seeded float32 weights: norms near 1, everything else N(0, scale²) with scale ~ 1/sqrt(fan-in). */
export function seededWeights(cfg: ModelConfig, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const rng = new Rng(seed);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape] of canonicalShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (/norm\.weight$/.test(name)) data = Float32Array.from({ length: n }, () => 1 + 0.1 * rng.normal());
    else if (name === 'embed') data = rng.normals(n, 1);
    else data = rng.normals(n, shape.length > 1 ? 1.2 / Math.sqrt(shape[shape.length - 1]) : 0.1);
    out.set(name, { shape, data });
  }
  return out;
}

/**
 * Write a tiny model directory: config.json as given, weights rounded to `dtype` and mapped to hub
 * names by the family's architecture. Returns the directory and the canonical weights (as stored,
 * i.e. after rounding) for references.
 */
export function writeTinyModel(
  configJson: Record<string, unknown>,
  opts: { seed?: number; dtype?: 'BF16' | 'F16' | 'F32'; shardBytes?: number; dir?: string; edit?: (w: Map<string, { shape: number[]; data: Float32Array }>, cfg: ModelConfig) => void } = {},
) {
  const dir = opts.dir ?? mkdtempSync(join(os.tmpdir(), 'moepress-tiny-'));
  const arch = architectureFor(configJson.model_type as string, 'config.json');
  const cfg = arch.parseConfig(configJson, 'config.json');
  const dtype = opts.dtype ?? 'F32';
  const weights = seededWeights(cfg, opts.seed ?? 1);
  opts.edit?.(weights, cfg);
  const raw = new Map<string, RawTensor>();
  for (const [name, t] of weights) {
    const bytes = fromFloat32(t.data, dtype);
    raw.set(name, { dtype, shape: t.shape, data: bytes });
    // keep the rounded values so references see exactly what the engine loads
    const back = dtype === 'F32' ? t.data : roundTrip(t.data, dtype);
    weights.set(name, { shape: t.shape, data: back });
  }
  const hub = arch.hubEntries(cfg, (n) => raw.has(n)).map((e) => [e.name, e.build((n) => {
    const r = raw.get(n);
    if (!r) throw new Error(`tiny model: canonical '${n}' not generated`);
    return r;
  })] as [string, RawTensor]);
  writeCheckpoint(dir, hub, { shardBytes: opts.shardBytes ?? 64 * 1024 });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson, null, 2));
  return { dir, cfg, weights };
}

function roundTrip(x: Float32Array, dtype: 'BF16' | 'F16'): Float32Array {
  const b = fromFloat32(x, dtype);
  const u = new Uint16Array(b.buffer, b.byteOffset, x.length);
  const out = new Float32Array(x.length);
  const view = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < u.length; i++) {
    if (dtype === 'BF16') {
      view.setUint32(0, u[i] << 16);
      out[i] = view.getFloat32(0);
    } else out[i] = f16(u[i]);
  }
  return out;
}

function f16(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** The model in dir written again in transformers-v5's fused expert layout, as bf16, at `${dir}-fused`. */
export function writeFusedCopy(dir: string): string {
  const m = loadModel(dir);
  const cfg = { ...m.config, expertLayout: 'fused' as const };
  const get = (n: string): RawTensor => {
    const t = m.weights.get(n);
    return { dtype: 'BF16', shape: t.shape, data: fromFloat32(t.data, 'BF16') };
  };
  const hub = architectureFor(cfg.modelType, 'config.json').hubEntries(cfg, (n) => m.weights.has(n)).map((e) => [e.name, e.build(get)] as [string, RawTensor]);
  const out = `${dir}-fused`;
  writeCheckpoint(out, hub, { shardBytes: 16 * 1024 });
  copyFileSync(join(dir, 'config.json'), join(out, 'config.json'));
  return out;
}

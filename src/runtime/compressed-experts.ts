/**
 * Compressed experts at inference (METHODS.md Family 3). Per token the router's top-K experts,
 * ordered by router weight, split into the K − m best (full experts) and the m lowest-weighted,
 * which contribute only their vectors c0, c2 ∈ R^H, c1 ∈ R^I, aggregated as
 *   c = Σ_j (w_j / Σ_aux w) · ces[j]   over the m auxiliary experts j,
 * and every full expert e computes y_e = W_down((silu(W_gate(x ⊙ c0)) ⊙ W_up(x ⊙ c2)) ⊙ c1),
 * added with its router weight w_e exactly as the router gave it: the K − m weights are NOT
 * renormalised (the paper weighs each full expert by w_e; for a norm_topk_prob router they are
 * the top-K-normalised weights). With all vectors at 1 the layer is the top-(K−m) selection of
 * the top-K routing, which for an unnormalised router (OLMoE) is exactly `--top-k K−m`.
 *
 *   splitRoutes + moe-block.ts (bank GEMMs)  <->  compressedMoeNaive (float64 reference)
 *
 * On disk, beside a model's own files:
 *   moepress-ce.safetensors  per MoE layer L: layers.L.ce.c0 [E, H], layers.L.ce.c1 [E, I],
 *                            layers.L.ce.c2 [E, H], F32
 *   moepress-ce.json         { format, version, m, K, train, seed, steps, ... }
 */
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readJsonObject } from '../io/config.js';
import type { RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import { SafetensorsFile } from '../io/safetensors.js';
import { writeSafetensors } from '../io/safetensors-writer.js';
import type { ModelConfig } from '../models/canonical.js';
import type { Routes } from '../tensor/router.js';
import type { Activation, ExpertBank, ExpertScaling } from './experts.js';

export const CE_TENSORS_FILE = 'moepress-ce.safetensors';
export const CE_META_FILE = 'moepress-ce.json';
export const CE_FORMAT = 'moepress-compressed-experts';
export const CE_VERSION = 1;

/** One MoE layer's compressed experts: per expert e, c0/c2 rows [E, H] and c1 rows [E, I]. */
export interface CompressedExpertsLayer {
  /** Compressed experts per token: the m lowest-weighted of the top-K. */
  m: number;
  c0: Float32Array; // [E, H]
  c1: Float32Array; // [E, I]
  c2: Float32Array; // [E, H]
}

/** moepress-ce.json. Fields beyond format/version/m/K record how the vectors were trained. */
export interface CompressedExpertsMeta {
  format: typeof CE_FORMAT;
  version: number;
  m: number;
  /** Experts chosen per token by the router (top-K) when the vectors were trained. */
  K: number;
  layers: number[];
  [key: string]: unknown;
}

export function ceTensorName(layer: number, v: 'c0' | 'c1' | 'c2'): string {
  return `layers.${layer}.ce.${v}`;
}

export function hasCompressedExperts(dir: string): boolean {
  return existsSync(join(dir, CE_META_FILE));
}

/** Reads and checks moepress-ce.json (m an integer with 1 <= m < K). */
export function readCompressedExpertsMeta(dir: string): CompressedExpertsMeta {
  const file = join(dir, CE_META_FILE);
  const meta = readJsonObject(file) as unknown as CompressedExpertsMeta;
  if (meta.format !== CE_FORMAT) throw new MoepressError(`not a compressed-experts file (format '${String(meta.format)}', expected '${CE_FORMAT}')`, { file });
  if (!(typeof meta.version === 'number' && meta.version <= CE_VERSION)) throw new MoepressError(`version ${String(meta.version)} is newer than this moepress reads (${CE_VERSION}); upgrade moepress`, { file });
  if (!(Number.isInteger(meta.K) && meta.K >= 2)) throw new MoepressError(`'K' must be an integer >= 2, got ${JSON.stringify(meta.K)}`, { file });
  if (!(Number.isInteger(meta.m) && meta.m >= 1 && meta.m < meta.K)) throw new MoepressError(`'m' must be an integer with 1 <= m < K = ${meta.K}, got ${JSON.stringify(meta.m)}`, { file });
  if (!Array.isArray(meta.layers)) throw new MoepressError("'layers' must list the MoE layers", { file });
  return meta;
}

/**
 * Per layer: the compressed experts of a model directory (null for dense layers), validated
 * against its config: every MoE layer present, F32, shapes [E, H] / [E, I], finite values.
 */
export function readCompressedExperts(dir: string, cfg: ModelConfig): { meta: CompressedExpertsMeta; layers: (CompressedExpertsLayer | null)[] } {
  const meta = readCompressedExpertsMeta(dir);
  const file = join(dir, CE_TENSORS_FILE);
  const moe = cfg.moe;
  if (!moe) throw new MoepressError('the model has compressed experts but no routed experts (config.json has no MoE)', { file: join(dir, CE_META_FILE) });
  if (meta.m >= moe.routing.topK) throw new MoepressError(`m = ${meta.m} compressed experts need a top-k above m; config.json routes to ${moe.routing.topK}`, { file: join(dir, CE_META_FILE) });
  if (!existsSync(file)) throw new MoepressError(`${CE_META_FILE} is present but the vectors are missing`, { file });
  const st = SafetensorsFile.open(file);
  try {
    const E = moe.experts;
    const read = (l: number, v: 'c0' | 'c1' | 'c2', N: number): Float32Array => {
      const name = ceTensorName(l, v);
      if (!st.tensors.has(name)) throw new MoepressError('missing: every MoE layer needs c0, c1 and c2', { file, tensor: name });
      const t = st.read(name);
      if (t.dtype !== 'F32') throw new MoepressError(`dtype ${t.dtype}, expected F32`, { file, tensor: name });
      if (t.shape.length !== 2 || t.shape[0] !== E || t.shape[1] !== N) throw new MoepressError(`shape [${t.shape}], expected [${E}, ${N}] (E, ${v === 'c1' ? 'I' : 'H'} of config.json)`, { file, tensor: name });
      const data = new Float32Array(E * N);
      new Uint8Array(data.buffer).set(t.data.subarray(0, data.byteLength));
      const bad = data.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) throw new MoepressError(`element ${bad} is NaN or Inf`, { file, tensor: name });
      return data;
    };
    const layers = cfg.layers.map((spec, l) => {
      if (spec.ffn !== 'moe') return null;
      return { m: meta.m, c0: read(l, 'c0', cfg.hidden), c1: read(l, 'c1', moe.intermediate), c2: read(l, 'c2', cfg.hidden) };
    });
    return { meta, layers };
  } finally {
    st.close();
  }
}

function f32Bytes(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

/** Writes moepress-ce.safetensors then moepress-ce.json (each under a temporary name, renamed). */
export function writeCompressedExperts(dir: string, cfg: ModelConfig, layers: (CompressedExpertsLayer | null)[], meta: Omit<CompressedExpertsMeta, 'format' | 'version' | 'layers'>): void {
  const moe = cfg.moe!;
  const tensors: [string, RawTensor][] = [];
  const present: number[] = [];
  layers.forEach((c, l) => {
    if (!c) return;
    present.push(l);
    tensors.push([ceTensorName(l, 'c0'), { dtype: 'F32', shape: [moe.experts, cfg.hidden], data: f32Bytes(c.c0) }]);
    tensors.push([ceTensorName(l, 'c1'), { dtype: 'F32', shape: [moe.experts, moe.intermediate], data: f32Bytes(c.c1) }]);
    tensors.push([ceTensorName(l, 'c2'), { dtype: 'F32', shape: [moe.experts, cfg.hidden], data: f32Bytes(c.c2) }]);
  });
  const st = join(dir, CE_TENSORS_FILE);
  writeSafetensors(`${st}.tmp`, tensors, { format: 'pt' });
  renameSync(`${st}.tmp`, st);
  const js = join(dir, CE_META_FILE);
  writeFileSync(`${js}.tmp`, JSON.stringify({ format: CE_FORMAT, version: CE_VERSION, ...meta, layers: present }, null, 2) + '\n');
  renameSync(`${js}.tmp`, js);
}

/** A bank that routes through compressed experts: the same experts, with the layer's vectors attached. */
export function withCompressedExperts(bank: ExpertBank, ce: CompressedExpertsLayer): ExpertBank {
  return {
    count: bank.count,
    residentBytes: bank.residentBytes + 4 * (ce.c0.length + ce.c1.length + ce.c2.length),
    compressedExperts: ce,
    offloaded: bank.offloaded,
    run: (e, x, n, scaling) => bank.run(e, x, n, scaling),
  };
}

/** The top-K routing split into full experts and, per token, the aggregated vectors. */
export interface CompressedRouting {
  /** [T, K − m]: the full experts, best first, with their router weights as given. */
  full: Routes;
  c0: Float32Array; // [T, H]
  c1: Float32Array; // [T, I]
  c2: Float32Array; // [T, H]
}

/** A token's K slots by router weight, best first; ties keep the router's order. */
function byWeight(routes: Routes, t: number): number[] {
  const K = routes.K;
  const slots = Array.from({ length: K }, (_, k) => k);
  return slots.sort((a, b) => routes.weights[t * K + b] - routes.weights[t * K + a] || a - b);
}

/**
 * routes: [T, K] -> the K − m full experts per token and the vectors c0, c2: [T, H], c1: [T, I]
 * aggregated over the m auxiliary experts with weights w_j / Σ_aux w (summed in float64).
 */
export function splitRoutes(routes: Routes, T: number, ce: CompressedExpertsLayer, H: number, I: number): CompressedRouting {
  const { K } = routes;
  const m = ce.m;
  if (!(m >= 1 && m < K)) throw new MoepressError(`the model has ${m} compressed experts per token, which needs a top-k above ${m}; got top-${K}`);
  const F = K - m;
  const experts = new Int32Array(T * F);
  const weights = new Float32Array(T * F);
  const c0 = new Float32Array(T * H);
  const c1 = new Float32Array(T * I);
  const c2 = new Float32Array(T * H);
  const acc0 = new Float64Array(H);
  const acc1 = new Float64Array(I);
  const acc2 = new Float64Array(H);
  for (let t = 0; t < T; t++) {
    const order = byWeight(routes, t);
    for (let k = 0; k < F; k++) {
      experts[t * F + k] = routes.experts[t * K + order[k]];
      weights[t * F + k] = routes.weights[t * K + order[k]];
    }
    let s = 0;
    for (let k = F; k < K; k++) s += routes.weights[t * K + order[k]];
    acc0.fill(0);
    acc1.fill(0);
    acc2.fill(0);
    for (let k = F; k < K; k++) {
      const e = routes.experts[t * K + order[k]];
      // the share is rounded to float32 as the training graph stores it (normalizeRows)
      const a = Math.fround(routes.weights[t * K + order[k]] / s);
      for (let i = 0; i < H; i++) acc0[i] += a * ce.c0[e * H + i];
      for (let i = 0; i < I; i++) acc1[i] += a * ce.c1[e * I + i];
      for (let i = 0; i < H; i++) acc2[i] += a * ce.c2[e * H + i];
    }
    c0.set(acc0, t * H);
    c1.set(acc1, t * I);
    c2.set(acc2, t * H);
  }
  return { full: { K: F, experts, weights }, c0, c1, c2 };
}

/** The rows `tokens` of a split's vectors: one expert call's scaling. */
export function scalingFor(split: CompressedRouting, tokens: Int32Array, H: number, I: number): ExpertScaling {
  const n = tokens.length;
  const c0 = new Float32Array(n * H);
  const c1 = new Float32Array(n * I);
  const c2 = new Float32Array(n * H);
  for (let r = 0; r < n; r++) {
    const t = tokens[r];
    c0.set(split.c0.subarray(t * H, (t + 1) * H), r * H);
    c1.set(split.c1.subarray(t * I, (t + 1) * I), r * I);
    c2.set(split.c2.subarray(t * H, (t + 1) * H), r * H);
  }
  return { c0, c1, c2 };
}

/** Stacked dense experts gate, up: [E, I, H], down: [E, H, I]; optional biases [E, I], [E, H]. */
export interface StackedExperts {
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
  gateBias?: Float32Array | null;
  upBias?: Float32Array | null;
  downBias?: Float32Array | null;
}

function actNaive(act: Activation, g: number, u: number): number {
  if (act.kind === 'swiglu') return (g / (1 + Math.exp(-g))) * u;
  const gc = Math.min(g, act.limit);
  const uc = Math.max(-act.limit, Math.min(u, act.limit));
  return (uc + 1) * (gc / (1 + Math.exp(-act.alpha * gc)));
}

/**
 * The naive twin of the routed part of moe-block.ts with compressed experts, in float64 from the
 * same routes: h: [T, H] -> [T, H] (no shared expert). Written from METHODS.md directly, token by
 * token: order the K chosen by weight, aggregate the last m's vectors, run the first K − m.
 */
export function compressedMoeNaive(h: Float32Array, T: number, H: number, I: number, routes: Routes, w: StackedExperts, ce: CompressedExpertsLayer, act: Activation): Float64Array {
  const { K } = routes;
  const m = ce.m;
  const out = new Float64Array(T * H);
  const c0 = new Float64Array(H);
  const c1 = new Float64Array(I);
  const c2 = new Float64Array(H);
  const a = new Float64Array(I);
  for (let t = 0; t < T; t++) {
    const slots = Array.from({ length: K }, (_, k) => ({ e: routes.experts[t * K + k], w: routes.weights[t * K + k], k }));
    slots.sort((p, q) => q.w - p.w || p.k - q.k);
    const full = slots.slice(0, K - m);
    const aux = slots.slice(K - m);
    const s = aux.reduce((acc, j) => acc + j.w, 0);
    c0.fill(0);
    c1.fill(0);
    c2.fill(0);
    for (const j of aux) {
      for (let i = 0; i < H; i++) c0[i] += (j.w / s) * ce.c0[j.e * H + i];
      for (let i = 0; i < I; i++) c1[i] += (j.w / s) * ce.c1[j.e * I + i];
      for (let i = 0; i < H; i++) c2[i] += (j.w / s) * ce.c2[j.e * H + i];
    }
    const x = h.subarray(t * H, (t + 1) * H);
    for (const { e, w: we } of full) {
      for (let f = 0; f < I; f++) {
        const row = (e * I + f) * H;
        let g = w.gateBias ? w.gateBias[e * I + f] : 0;
        let u = w.upBias ? w.upBias[e * I + f] : 0;
        for (let i = 0; i < H; i++) {
          g += w.gate[row + i] * x[i] * c0[i];
          u += w.up[row + i] * x[i] * c2[i];
        }
        a[f] = actNaive(act, g, u) * c1[f];
      }
      for (let i = 0; i < H; i++) {
        let y = w.downBias ? w.downBias[e * H + i] : 0;
        const row = (e * H + i) * I;
        for (let f = 0; f < I; f++) y += w.down[row + f] * a[f];
        out[t * H + i] += we * y;
      }
    }
  }
  return out;
}

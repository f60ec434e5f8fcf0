/**
 * Collects the routed experts' activation statistics (calib/types.ts) by running the original
 * model over seeded calibration windows. `compress` collects through calib/stream.ts, one layer in
 * memory at a time; collectCalibration, over a model loaded whole, is that stream's in-memory twin
 * (test/calib-stream.test.ts). Both accumulate with routedRows and accumulateExpert below.
 *
 *   collectCalibration(model, ids, opts) -> Calibration
 *     model: a runtime Transformer over the *original* weights (dense expert banks);
 *     ids: the calibration text's tokens; opts: { windows = CALIB_WINDOWS (128), windowSize = 256, seed = 0,
 *     maxFullI = 4096, source = '', batch = 4, onProgress }.
 *   calibrationWindows(n, windows, windowSize, seed) -> window starts (seeded, may overlap).
 *
 * A hook in the MoE block (runtime/moe-block.ts RouteObserver, 4th argument) sees each layer's
 * expert input h = ffn_norm(x) [T, H] and the top-K routes. Per expert e, with X_e the rows routed
 * to it: xtx += X_eᵀ X_e; a = act(gate X_e) ⊙ up X_e, ata += aᵀ a (or only its diagonal when
 * I > maxFullI, where [I, I] per expert would not fit); weightSq += Σ routing weight². Sums are
 * float32 GEMMs over at most batch·windowSize tokens, accumulated in float64.
 */
import { MoepressError } from '../../io/errors.js';
import type { ProgressFn } from '../../progress.js';
import { swiglu, swigluOai } from '../../tensor/activation.js';
import { linear, matmul } from '../../tensor/gemm.js';
import { Rng } from '../../tensor/random.js';
import type { Routes } from '../../tensor/router.js';
import { transpose } from '../../tensor/svd.js';
import { expertActivation, type Activation } from '../../runtime/experts.js';
import { gatherRows } from '../../runtime/moe-block.js';
import type { Transformer } from '../../runtime/transformer.js';
import type { Calibration, ExpertCalib, LayerCalib } from './types.js';

/**
 * Calibration windows (of 256 tokens) by default. Measured on the mixtral fixture, auto at budget
 * 0.125 with sequential calibration: 64 windows 15.80, 128 windows 15.28, 256 windows 15.23
 * (perplexity, 64 test windows; the original is 13.41): 128 takes most of the gain at half the
 * cost of 256.
 */
export const CALIB_WINDOWS = 128;

export interface CollectOptions {
  windows?: number;
  windowSize?: number;
  seed?: number;
  /** Keep the full Σ a aᵀ of down's input only up to this I (default 4096); above, its diagonal. */
  maxFullI?: number;
  /** Recorded in the result: where the tokens came from. */
  source?: string;
  /** Windows per forward pass (default 4). */
  batch?: number;
  onProgress?: ProgressFn;
}

export function calibrationWindows(n: number, windows: number, windowSize: number, seed: number): number[] {
  if (!(Number.isInteger(windows) && windows > 0)) throw new MoepressError(`calibration windows must be a positive integer, got ${windows}`);
  if (n < windowSize) throw new MoepressError(`the calibration text has ${n} tokens, fewer than one window of ${windowSize}`);
  const rng = new Rng(seed);
  return Array.from({ length: windows }, () => rng.int(n - windowSize + 1));
}

export function emptyExpert(H: number, I: number, full: boolean): ExpertCalib {
  return { tokens: 0, weightSq: 0, xtx: new Float64Array(H * H), ata: full ? new Float64Array(I * I) : null, ataDiag: new Float64Array(I) };
}

/** Σ over rows of xᵀx for x: [n, d], added into acc: [d, d]. */
async function addGram(acc: Float64Array, x: Float32Array, n: number, d: number): Promise<void> {
  const xt = transpose(x, n, d); // [d, n]
  const g = await matmul(xt, x, d, d, n);
  for (let i = 0; i < g.length; i++) acc[i] += g[i];
}

interface Pending {
  layer: number;
  h: Float32Array;
  routes: Routes;
  T: number;
}

export async function collectCalibration(model: Transformer, ids: ArrayLike<number>, opts: CollectOptions = {}): Promise<Calibration> {
  const cfg = model.config;
  const moe = cfg.moe;
  if (!moe) throw new MoepressError(`model_type '${cfg.modelType}' has no routed experts to calibrate`);
  const S = opts.windowSize ?? 256;
  const W = opts.windows ?? CALIB_WINDOWS;
  const seed = opts.seed ?? 0;
  const maxFullI = opts.maxFullI ?? 4096;
  const batch = opts.batch ?? 4;
  const { experts: E, intermediate: I } = moe;
  const H = cfg.hidden;
  const act = expertActivation(moe);
  const layers = new Map<number, LayerCalib>();
  cfg.layers.forEach((spec, l) => {
    if (spec.ffn !== 'moe') return;
    layers.set(l, { layer: l, E, I, H, tokens: 0, experts: Array.from({ length: E }, () => emptyExpert(H, I, I <= maxFullI)) });
  });
  const starts = calibrationWindows(ids.length, W, S, seed);
  const pending: Pending[] = [];
  const observe = (layer: number, routes: Routes, T: number, h?: Float32Array) => {
    if (!h) throw new Error('collectCalibration: the MoE block passed no expert inputs to the observer');
    pending.push({ layer, h: h.slice(), routes, T });
  };
  for (let w0 = 0; w0 < W; w0 += batch) {
    const B = Math.min(batch, W - w0);
    const tokens = new Int32Array(B * S);
    for (let b = 0; b < B; b++) for (let i = 0; i < S; i++) tokens[b * S + i] = ids[starts[w0 + b] + i];
    await model.hidden(tokens, B, S, null, { observe });
    for (const p of pending.splice(0)) await accumulate(model, layers.get(p.layer)!, p, act);
    opts.onProgress?.({ task: 'calibrate', done: w0 + B, total: W, unit: 'windows' });
  }
  return { source: opts.source ?? '', windows: W, windowSize: S, seed, layers };
}

/** One forward batch of one layer into its sums. */
async function accumulate(model: Transformer, lc: LayerCalib, p: Pending, act: Activation): Promise<void> {
  const { E, I, H } = lc;
  const prefix = `layers.${lc.layer}.moe.experts`;
  const gateAll = model.weights.get(`${prefix}.gate`).data;
  const upAll = model.weights.get(`${prefix}.up`).data;
  const gateBias = model.weights.opt(`${prefix}.gate_bias`);
  const upBias = model.weights.opt(`${prefix}.up_bias`);
  const rows = routedRows(lc, p.routes, p.T);
  const m = I * H;
  for (let e = 0; e < E; e++) {
    const w: ExpertInputWeights = { gate: gateAll.subarray(e * m, (e + 1) * m), up: upAll.subarray(e * m, (e + 1) * m), gateBias: gateBias?.subarray(e * I, (e + 1) * I), upBias: upBias?.subarray(e * I, (e + 1) * I) };
    await accumulateExpert(lc.experts[e], gatherRows(p.h, rows[e], H), rows[e].length, w, I, H, act);
  }
}

/**
 * Count one batch's T tokens into the layer and its experts' routing sums; returns, per expert,
 * the tokens routed to it (ascending).
 */
export function routedRows(lc: LayerCalib, routes: Routes, T: number): Int32Array[] {
  const K = routes.K;
  lc.tokens += T;
  const counts = new Int32Array(lc.E);
  for (let i = 0; i < T * K; i++) {
    counts[routes.experts[i]]++;
    lc.experts[routes.experts[i]].weightSq += routes.weights[i] * routes.weights[i];
  }
  const rows = Array.from(counts, (n) => new Int32Array(n));
  counts.fill(0);
  for (let i = 0; i < T * K; i++) {
    const e = routes.experts[i];
    rows[e][counts[e]++] = Math.floor(i / K);
  }
  return rows;
}

/** What an expert's input statistics need of its weights: gate and up [I, H] (+ biases). */
export interface ExpertInputWeights {
  gate: Float32Array;
  up: Float32Array;
  gateBias?: Float32Array;
  upBias?: Float32Array;
}

/** x: [n, H], the rows routed to one expert, into its sums: Σ xxᵀ, and Σ aaᵀ (or its diagonal) of a = act(gate x) ⊙ up x. */
export async function accumulateExpert(ec: ExpertCalib, x: Float32Array, n: number, w: ExpertInputWeights, I: number, H: number, act: Activation): Promise<void> {
  if (n === 0) return;
  ec.tokens += n;
  await addGram(ec.xtx, x, n, H);
  const g = await linear(x, w.gate, n, I, H, w.gateBias);
  const u = await linear(x, w.up, n, I, H, w.upBias);
  if (act.kind === 'swiglu') swiglu(g, u, g);
  else swigluOai(g, u, g, act.alpha, act.limit);
  // g is now a: [n, I], the down projection's input
  for (let r = 0; r < n; r++) for (let i = 0; i < I; i++) ec.ataDiag[i] += g[r * I + i] * g[r * I + i];
  if (ec.ata) await addGram(ec.ata, g, n, I);
}

/**
 * How `auto` scores a candidate encoding of one expert matrix: an estimated output error
 *   err(ΔW) = scale · Σ_i row_i Σ_j col_j ΔW_ij²        ΔW: [out, in]
 *
 * With calibration (the expert's input statistics on calibration text, calib/types.ts) this is the
 * diagonal of the Hessian-weighted error Σ_tokens g² ‖δ(expert output)‖²:
 *   down [H, I]: col_j = diag(Σ a aᵀ)_j, rows uniform: Σ_t g² ‖ΔW a_t‖² ≈ mean(g²) Σ_ij ΔW_ij² A_jj
 *   gate, up [I, H]: col_j = diag(Σ x xᵀ)_j; an error in row i (neuron i's pre-activation) reaches
 *     the output through the activation and column i of down, so
 *       row_i = ‖down[:, i]‖² · diag(Σ a aᵀ)_i / (w_i (Σ x xᵀ) w_iᵀ)
 *     (the second factor is the neuron's mean squared gain from this pre-activation to a_i,
 *     treating the SwiGLU product as locally linear in each input)
 *   scale = weightSq / tokens: the mean squared routing weight (the sums already count tokens,
 *     so experts the router picks often weigh more).
 * Off-diagonal Hessian terms are dropped: candidates are ranked by cheap element-wise sums.
 *
 * Without calibration (data-free fallback): the relative Frobenius error ‖ΔW‖² / ‖W‖², every
 * matrix of every expert weighted the same. The manifest records which proxy was used.
 *
 * Experts the calibration never reached (tokens = 0) get the layer's pooled column weights and
 * 1% of the smallest reached expert's scale: they get bits only after every reached expert's
 * cheaper gains, i.e. in practice the fewest bits.
 */
import type { ExpertWeights } from '../barycenter.js';
import type { ExpertCalib, LayerCalib } from '../calib/types.js';
import type { MatrixName } from '../parts.js';

export type ProxyKind = 'calibrated-diag-hessian' | 'data-free-relative-frobenius';

export interface MatrixWeighting {
  scale: number;
  /** [out] or null (all 1). */
  row: Float64Array | null;
  /** [in] or null (all 1). */
  col: Float64Array | null;
}

export type ExpertWeighting = Record<MatrixName, MatrixWeighting>;

/** Floor scale of an unreached expert, relative to the smallest reached one. */
export const UNREACHED_SCALE = 0.01;

function sumSq(w: Float32Array): number {
  let s = 0;
  for (let i = 0; i < w.length; i++) s += w[i] * w[i];
  return s;
}

export function dataFreeWeighting(w: ExpertWeights): ExpertWeighting {
  const one = (m: Float32Array): MatrixWeighting => ({ scale: 1 / Math.max(sumSq(m), 1e-30), row: null, col: null });
  return { gate: one(w.gate), up: one(w.up), down: one(w.down) };
}

/** Layer-level facts derived once from the calibration: pooled columns and the unreached scale. */
export interface LayerWeightingContext {
  calib: LayerCalib;
  pooledXtxDiag: Float64Array;
  pooledAtaDiag: Float64Array;
  unreachedScale: number;
}

export function layerContext(calib: LayerCalib): LayerWeightingContext {
  const { H, I } = calib;
  const xd = new Float64Array(H);
  const ad = new Float64Array(I);
  let tokens = 0;
  let minScale = Infinity;
  for (const ex of calib.experts) {
    if (ex.tokens === 0) continue;
    tokens += ex.tokens;
    for (let j = 0; j < H; j++) xd[j] += ex.xtx[j * H + j];
    for (let j = 0; j < I; j++) ad[j] += ex.ataDiag[j];
    minScale = Math.min(minScale, ex.weightSq / ex.tokens);
  }
  // per-token means, so an unreached expert looks like one token of average input
  for (let j = 0; j < H; j++) xd[j] /= Math.max(tokens, 1);
  for (let j = 0; j < I; j++) ad[j] /= Math.max(tokens, 1);
  return { calib, pooledXtxDiag: xd, pooledAtaDiag: ad, unreachedScale: UNREACHED_SCALE * (Number.isFinite(minScale) ? minScale : 1) };
}

/** w (Σ x xᵀ) wᵀ for each row w of m [I, H]; xtx [H, H]. */
function rowQuadratic(m: Float32Array, xtx: Float64Array, I: number, H: number): Float64Array {
  const out = new Float64Array(I);
  const t = new Float64Array(H);
  for (let i = 0; i < I; i++) {
    const w = m.subarray(i * H, (i + 1) * H);
    t.fill(0);
    for (let a = 0; a < H; a++) {
      const wa = w[a];
      if (wa === 0) continue;
      const r = a * H;
      for (let b = 0; b < H; b++) t[b] += wa * xtx[r + b];
    }
    let s = 0;
    for (let b = 0; b < H; b++) s += t[b] * w[b];
    out[i] = s;
  }
  return out;
}

/** The calibrated weighting of expert e (see the file comment). w: its original matrices. */
export function calibratedWeighting(ctx: LayerWeightingContext, e: number, w: ExpertWeights): ExpertWeighting {
  const { H, I } = ctx.calib;
  const ex: ExpertCalib = ctx.calib.experts[e];
  const reached = ex.tokens > 0;
  const scale = reached ? ex.weightSq / ex.tokens : ctx.unreachedScale;
  const xd = reached ? Float64Array.from({ length: H }, (_, j) => ex.xtx[j * H + j]) : ctx.pooledXtxDiag;
  const ad = reached ? Float64Array.from(ex.ataDiag) : ctx.pooledAtaDiag;
  // ‖down[:, i]‖², down: [H, I]
  const downCol = new Float64Array(I);
  for (let h = 0; h < H; h++) for (let i = 0; i < I; i++) downCol[i] += w.down[h * I + i] ** 2;
  const rows = (m: Float32Array): Float64Array => {
    const r = new Float64Array(I);
    if (!reached) {
      // no inputs seen: assume the neuron's gain is the layer's average (a_i² per unit pre-activation²)
      for (let i = 0; i < I; i++) r[i] = downCol[i];
      return r;
    }
    const q = rowQuadratic(m, ex.xtx, I, H);
    for (let i = 0; i < I; i++) r[i] = q[i] > 0 ? (downCol[i] * ad[i]) / q[i] : 0;
    return r;
  };
  return {
    gate: { scale, row: rows(w.gate), col: xd },
    up: { scale, row: rows(w.up), col: xd },
    down: { scale, row: null, col: ad },
  };
}

/** err(ΔW) for w [out, in] and its reconstruction r (float64 sums). */
export function weightedError(wt: MatrixWeighting, w: Float32Array, r: Float32Array, out: number, inp: number): number {
  let s = 0;
  for (let i = 0; i < out; i++) {
    const o = i * inp;
    let rs = 0;
    if (wt.col) for (let j = 0; j < inp; j++) rs += wt.col[j] * (w[o + j] - r[o + j]) ** 2;
    else for (let j = 0; j < inp; j++) rs += (w[o + j] - r[o + j]) ** 2;
    s += (wt.row ? wt.row[i] : 1) * rs;
  }
  return wt.scale * s;
}

/** Element importances for the codec's MSE scale search: the column weights tiled over rows ([out·in]), or undefined. */
export function codecImportance(wt: MatrixWeighting, out: number, inp: number): Float32Array | undefined {
  if (!wt.col) return undefined;
  const imp = new Float32Array(out * inp);
  let mean = 0;
  for (let j = 0; j < inp; j++) mean += wt.col[j];
  mean = mean / inp || 1;
  // normalised to mean 1 (codecs only compare weighted errors within a block); a zero column still counts a little
  for (let i = 0; i < out; i++) for (let j = 0; j < inp; j++) imp[i * inp + j] = wt.col[j] / mean + 1e-6;
  return imp;
}

/**
 * Per-input scales from the diagonal of a matrix's Hessian, for calibration-aware selection
 * (Wanda-style: an entry W_oj matters as |W_oj|·‖x_j‖) and for ResMoE's whitened residual SVD.
 *
 *   inputScales(calib, m, inp): ExpertCalib, matrix -> s: [in] (float64) or null
 *     s_j = sqrt(d_j / mean d), d = diag of the damped Hessian (gate/up: diag(xtx), down: ataDiag;
 *     dead inputs get the mean, + 1% of the mean, as calib/hessian.ts dampedHessian does), so the
 *     scales have mean square 1: one threshold over matrices with Hessians of different size (the
 *     ResMoE residual [gate | up | down]) keeps the data-free balance between them, and a scaled
 *     identity Hessian gives s = 1 exactly (the data-free selection). null when the expert was
 *     reached by fewer than `in` tokens (the rule of hessianFor): callers use the data-free
 *     treatment and list the expert as uncalibrated.
 *   scaledMagnitudes(x, rows, cols, s, into?): x: [rows, cols], s: [cols] -> |x_oj|·s_j, [rows·cols]
 *   topScaledPositions(x, rows, cols, s, count, scratch?): the `count` positions of largest
 *     |x_oj|·s_j, ascending (ties: lower index first); topScaledPositionsNaive is its sort-based twin.
 */
import type { MatrixName } from '../parts.js';
import { topMagnitudePositions } from '../sparse.js';
import { hessianFor, liveDiagonal } from './hessian.js';
import type { ExpertCalib } from './types.js';

const DAMP = 0.01;

export function inputScales(calib: ExpertCalib | undefined, m: MatrixName, inp: number): Float64Array | null {
  if (!calib || !hessianFor(calib, m, inp)) return null;
  const d = new Float64Array(inp);
  if (m === 'down') d.set(calib.ataDiag);
  else for (let j = 0; j < inp; j++) d[j] = calib.xtx[j * inp + j];
  return normalisedRoots(d);
}

/** sqrt((d_j or the mean when d_j <= 0) + λ) / sqrt(mean of those), λ = DAMP · mean (dampedHessian's rule). */
function normalisedRoots(raw: Float64Array): Float64Array {
  const n = raw.length;
  const { d, mean, live } = liveDiagonal(raw);
  if (!live) return d;
  let total = 0;
  for (let j = 0; j < n; j++) {
    d[j] += DAMP * mean;
    total += d[j];
  }
  const norm = total / n;
  for (let j = 0; j < n; j++) d[j] = Math.sqrt(d[j] / norm);
  return d;
}

export function scaledMagnitudes(x: Float32Array, rows: number, cols: number, s: ArrayLike<number>, into?: Float32Array): Float32Array {
  const y = into ?? new Float32Array(rows * cols);
  for (let o = 0; o < rows; o++) {
    const r = o * cols;
    for (let j = 0; j < cols; j++) y[r + j] = Math.abs(x[r + j]) * s[j];
  }
  return y;
}

export function topScaledPositions(x: Float32Array, rows: number, cols: number, s: ArrayLike<number>, count: number, scratch?: Float32Array): Int32Array {
  const scores = scaledMagnitudes(x, rows, cols, s);
  return topMagnitudePositions(scores, count, scratch);
}

export function topScaledPositionsNaive(x: Float32Array, rows: number, cols: number, s: ArrayLike<number>, count: number): Int32Array {
  const score = (i: number) => Math.fround(Math.abs(x[i]) * s[i % cols]);
  const order = Array.from({ length: rows * cols }, (_, i) => i).sort((a, b) => score(b) - score(a) || a - b);
  return Int32Array.from(order.slice(0, Math.max(0, count))).sort();
}

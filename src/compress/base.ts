/**
 * The shared base of the delta family (DeRS "Decompose"): the dense FFN the experts were upcycled
 * from (--base-from), or the element-wise mean / median of the experts, or one expert; and the
 * importance-weighted mean Σ_e c_e W_e / Σ_e c_e (D²-MoE's Fisher-weighted base, methods/d2moe.ts).
 *
 * Streaming (STYLE rule 10): the mean reads one expert matrix at a time into a float64
 * accumulator; the median reads a block of rows of every expert at a time. Peak memory is the base
 * plus one matrix (mean) or E row blocks (median), never the layer.
 */
import type { ExpertSource } from './experts-io.js';
import type { BaseKind } from './method.js';
import { MATRICES, matrixShape, type MatrixName } from './parts.js';

export type Base = Record<MatrixName, Float32Array>;

export function baseLabel(kind: BaseKind, fromDense: boolean): string {
  if (fromDense) return 'dense';
  return typeof kind === 'object' ? `expert:${kind.expert}` : kind;
}

/** Σ_e W_e / E in float64, expert by expert (the same additions, in the same order, as a column sum). */
function mean(x: ExpertSource, m: MatrixName): Float32Array {
  const n = x.I * x.H;
  const acc = new Float64Array(n);
  for (let e = 0; e < x.E; e++) {
    const w = x.matrix(m, e);
    for (let i = 0; i < n; i++) acc[i] += w[i];
  }
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = acc[i] / x.E;
  return out;
}

/** Σ_e c_e W_e / Σ_e c_e for every matrix, in float64, expert by expert. c: [E], not all zero. */
export function weightedMeanBase(x: ExpertSource, c: ArrayLike<number>): Base {
  let total = 0;
  for (let e = 0; e < x.E; e++) total += c[e];
  if (c.length !== x.E || !(total > 0)) throw new Error(`weightedMeanBase: ${c.length} weights for ${x.E} experts, summing to ${total}`);
  const out = {} as Base;
  for (const m of MATRICES) {
    const n = x.I * x.H;
    const acc = new Float64Array(n);
    for (let e = 0; e < x.E; e++) {
      if (c[e] === 0) continue;
      const w = x.matrix(m, e);
      for (let i = 0; i < n; i++) acc[i] += c[e] * w[i];
    }
    const b = new Float32Array(n);
    for (let i = 0; i < n; i++) b[i] = acc[i] / total;
    out[m] = b;
  }
  return out;
}

/** Element-wise median, one block of rows of every expert at a time. */
function median(x: ExpertSource, m: MatrixName): Float32Array {
  const [rows, cols] = matrixShape(m, x.I, x.H);
  const out = new Float32Array(rows * cols);
  const col = new Float64Array(x.E);
  const mid = x.E >> 1;
  // E blocks together stay near one block's size: rows per block shrink with E.
  const step = Math.max(1, Math.floor(x.blockRows(m) / Math.max(1, x.E >> 2)));
  for (let r0 = 0; r0 < rows; r0 += step) {
    const count = Math.min(step, rows - r0);
    const blocks = Array.from({ length: x.E }, (_, e) => x.rows(m, e, r0, count));
    const o = r0 * cols;
    for (let i = 0; i < count * cols; i++) {
      for (let e = 0; e < x.E; e++) col[e] = blocks[e][i];
      col.sort();
      out[o + i] = x.E % 2 ? col[mid] : 0.5 * (col[mid - 1] + col[mid]);
    }
  }
  return out;
}

/** Base for a layer in the experts' own neuron order (kind 'aligned' is handled by the caller). */
export function computeBase(x: ExpertSource, kind: Exclude<BaseKind, 'aligned'>, dense: Base | null): Base {
  const out = {} as Base;
  for (const m of MATRICES) {
    if (dense) out[m] = dense[m];
    else if (kind === 'mean') out[m] = mean(x, m);
    else if (kind === 'median') out[m] = median(x, m);
    else out[m] = x.matrix(m, kind.expert).slice();
  }
  return out;
}

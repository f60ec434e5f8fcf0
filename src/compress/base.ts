/**
 * The shared base of the delta family (DeRS "Decompose"): the dense FFN the experts were upcycled
 * from (--base-from), or the element-wise mean / median of the experts, or one expert.
 */
import type { BaseKind, LayerExperts } from './method.js';
import { expertMatrix } from './method.js';
import { MATRICES, type MatrixName } from './parts.js';

export type Base = Record<MatrixName, Float32Array>;

export function baseLabel(kind: BaseKind, fromDense: boolean): string {
  if (fromDense) return 'dense';
  return typeof kind === 'object' ? `expert:${kind.expert}` : kind;
}

function mean(x: LayerExperts, m: MatrixName): Float32Array {
  const n = x.I * x.H;
  const out = new Float32Array(n);
  const acc = new Float64Array(n);
  for (let e = 0; e < x.E; e++) {
    const w = expertMatrix(x, m, e);
    for (let i = 0; i < n; i++) acc[i] += w[i];
  }
  for (let i = 0; i < n; i++) out[i] = acc[i] / x.E;
  return out;
}

function median(x: LayerExperts, m: MatrixName): Float32Array {
  const n = x.I * x.H;
  const out = new Float32Array(n);
  const col = new Float64Array(x.E);
  const views = Array.from({ length: x.E }, (_, e) => expertMatrix(x, m, e));
  const mid = x.E >> 1;
  for (let i = 0; i < n; i++) {
    for (let e = 0; e < x.E; e++) col[e] = views[e][i];
    col.sort();
    out[i] = x.E % 2 ? col[mid] : 0.5 * (col[mid - 1] + col[mid]);
  }
  return out;
}

/** Base for a layer in the experts' own neuron order (kind 'aligned' is handled by the caller). */
export function computeBase(x: LayerExperts, kind: Exclude<BaseKind, 'aligned'>, dense: Base | null): Base {
  const out = {} as Base;
  for (const m of MATRICES) {
    if (dense) out[m] = dense[m];
    else if (kind === 'mean') out[m] = mean(x, m);
    else if (kind === 'median') out[m] = median(x, m);
    else out[m] = expertMatrix(x, m, kind.expert).slice();
  }
  return out;
}

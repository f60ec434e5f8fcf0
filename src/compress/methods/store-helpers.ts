/** Storing the pieces methods share: bf16 dense matrices, sparse matrices with exact byte counts. */
import { fromFloat32, toFloat32 } from '../../tensor/convert.js';
import type { LayerStore } from '../method.js';
import { MATRICES, matrixShape, type MatrixName, type MatrixPart } from '../parts.js';
import { gatherValues, positionBytes, positionsToBitmask, topMagnitudePositions } from '../sparse.js';

/** Store w [out, in] as bf16 and return the part and the rounded values (what readers will see). */
export function storeDense(store: LayerStore, local: string, w: Float32Array, out: number, inp: number): { part: MatrixPart; ref: string; rounded: Float32Array } {
  const t = { dtype: 'BF16' as const, shape: [out, inp], data: fromFloat32(w, 'BF16') };
  const ref = store.put(local, t);
  return { part: { kind: 'dense', ref }, ref, rounded: toFloat32(t) };
}

/**
 * Stores a layer's shared base (or barycenter) as bf16 `${prefix}.{gate,up,down}` and returns
 * the dense part of each matrix with its bf16-rounded values (what every delta is taken against).
 * Consumes `base`: each float32 matrix is released (replaced by an empty array) once stored, so
 * only the rounded copy stays in memory.
 */
export function storeBase(store: LayerStore, prefix: string, base: Record<MatrixName, Float32Array>, I: number, H: number): { parts: Record<MatrixName, MatrixPart>; refs: Record<MatrixName, string>; rounded: Record<MatrixName, Float32Array> } {
  const parts = {} as Record<MatrixName, MatrixPart>;
  const refs = {} as Record<MatrixName, string>;
  const rounded = {} as Record<MatrixName, Float32Array>;
  for (const m of MATRICES) {
    const [out, inp] = matrixShape(m, I, H);
    const d = storeDense(store, `${prefix}.${m}`, base[m], out, inp);
    base[m] = new Float32Array(0);
    parts[m] = d.part;
    refs[m] = d.ref;
    rounded[m] = d.rounded;
  }
  return { parts, refs, rounded };
}

/** The largest number of entries a sparse matrix of n entries can keep within `bytes`. */
export function sparseCapacity(n: number, bytes: number): number {
  // bitmask: 2c + n/8 <= bytes; index list: 6c <= bytes
  const withMask = Math.floor((bytes - Math.ceil(n / 8)) / 2);
  const withIdx = Math.floor(bytes / 6);
  return Math.max(0, Math.min(n, Math.max(withMask, withIdx)));
}

/**
 * Store x at the given positions (bf16 values × scale) with the cheaper position encoding, or,
 * when `seeded` is given, no positions at all (readers regenerate them from the seed).
 */
export function storeSparse(store: LayerStore, local: string, x: Float32Array, pos: Int32Array, scale = 1, seeded?: { seed: number; keep: number }): MatrixPart {
  const values = store.put(`${local}.values`, { dtype: 'BF16', shape: [pos.length], data: gatherValues(x, pos, scale) });
  if (seeded) return { kind: 'sparse', values, index: { kind: 'seeded', seed: seeded.seed, keep: seeded.keep } };
  const how = positionBytes(x.length, pos.length);
  if (how.kind === 'bitmask') {
    const ref = store.put(`${local}.mask`, { dtype: 'U8', shape: [Math.ceil(x.length / 8)], data: positionsToBitmask(pos, x.length) });
    return { kind: 'sparse', values, index: { kind: 'bitmask', ref } };
  }
  const ref = store.put(`${local}.indices`, { dtype: 'I32', shape: [pos.length], data: new Uint8Array(pos.buffer, pos.byteOffset, pos.byteLength) });
  return { kind: 'sparse', values, index: { kind: 'indices', ref } };
}

/** Keep the `count` largest-magnitude entries of x. */
export function storeTopMagnitude(store: LayerStore, local: string, x: Float32Array, count: number): MatrixPart {
  return storeSparse(store, local, x, topMagnitudePositions(x, count));
}

export function subtract(a: Float32Array, b: Float32Array): Float32Array {
  const d = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) d[i] = a[i] - b[i];
  return d;
}

/** ‖a − b‖² and ‖a‖², accumulated in float64 (for the per-layer error the manifest records). */
export function errorTerms(a: Float32Array, b: Float32Array): [number, number] {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += a[i] ** 2;
  }
  return [num, den];
}

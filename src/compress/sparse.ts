/**
 * Sparse matrices as stored by the delta and residual methods: values (bf16) at positions given by
 * a bitmask, an ascending index list, or a seeded Bernoulli mask that is regenerated, not stored.
 */
import type { RawTensor } from '../io/dtype.js';
import { fromFloat32, toFloat32 } from '../tensor/convert.js';
import { Rng } from '../tensor/random.js';
import type { SparseIndex } from './parts.js';

/** Bytes to store nnz positions among n: a bitmask or 4-byte indices, whichever is smaller. */
export function positionBytes(n: number, nnz: number): { kind: 'bitmask' | 'indices'; bytes: number } {
  const mask = Math.ceil(n / 8);
  const idx = 4 * nnz;
  return mask <= idx ? { kind: 'bitmask', bytes: mask } : { kind: 'indices', bytes: idx };
}

/** Seeded Bernoulli(keep) positions over n elements, ascending. Same seed, same positions. */
export function seededPositions(seed: number, keep: number, n: number): Int32Array {
  const rng = new Rng(seed);
  const out = new Int32Array(Math.ceil(n * keep + 6 * Math.sqrt(n * keep + 1) + 16));
  let k = 0;
  for (let i = 0; i < n; i++) {
    if (rng.next() < keep) {
      if (k === out.length) throw new Error('seededPositions: buffer overflow (keep fraction far above expectation)');
      out[k++] = i;
    }
  }
  return out.slice(0, k);
}

/**
 * Positions of the `count` largest |x| (ties: lower index first), ascending. scratch: x.length
 * floats the selection may overwrite (else it allocates a copy of x).
 */
export function topMagnitudePositions(x: Float32Array, count: number, scratch?: Float32Array): Int32Array {
  if (count >= x.length) return Int32Array.from(x.keys());
  if (count <= 0) return new Int32Array(0);
  const thr = kthLargestAbs(x, count, scratch);
  // Keep everything above the threshold, then fill ties at the threshold in index order.
  const out = new Int32Array(count);
  let k = 0;
  for (let i = 0; i < x.length && k < count; i++) if (Math.abs(x[i]) > thr) out[k++] = i;
  const above = k;
  for (let i = 0; i < x.length && k < count; i++) if (Math.abs(x[i]) === thr) out[k++] = i;
  // Both runs are ascending; only ties at the threshold need merging (a sort of 10⁷ is seconds).
  return k > above && above > 0 ? out.sort() : out;
}

/** The count-th largest |x| (1-based), by quickselect on a copy (in `scratch` when given). */
export function kthLargestAbs(x: Float32Array, count: number, scratch?: Float32Array): number {
  if (scratch && scratch.length < x.length) throw new Error(`kthLargestAbs: scratch of ${scratch.length} for ${x.length} values`);
  const a = scratch ? scratch.subarray(0, x.length) : new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) a[i] = Math.abs(x[i]);
  let lo = 0;
  let hi = a.length - 1;
  const target = a.length - count; // index in ascending order
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else break;
  }
  return a[target];
}

export function positionsToBitmask(pos: Int32Array, n: number): Uint8Array {
  const m = new Uint8Array(Math.ceil(n / 8));
  for (const p of pos) m[p >> 3] |= 1 << (p & 7);
  return m;
}

export function bitmaskToPositions(mask: Uint8Array, n: number): Int32Array {
  let count = 0;
  for (let j = 0; j < mask.length; j++) {
    let b = mask[j];
    while (b) {
      b &= b - 1;
      count++;
    }
  }
  const out = new Int32Array(count);
  let k = 0;
  for (let i = 0; i < n; i++) if (mask[i >> 3] & (1 << (i & 7))) out[k++] = i;
  return out;
}

/** Values of x at positions, scaled, as stored bf16 bytes. */
export function gatherValues(x: Float32Array, pos: Int32Array, scale = 1): Uint8Array {
  const v = new Float32Array(pos.length);
  for (let k = 0; k < pos.length; k++) v[k] = x[pos[k]] * scale;
  return fromFloat32(v, 'BF16');
}

/** Resolve a stored sparse index to positions. get(name) reads a stored tensor. */
export function resolvePositions(index: SparseIndex, n: number, get: (name: string) => RawTensor): Int32Array {
  if (index.kind === 'seeded') return seededPositions(index.seed, index.keep, n);
  const t = get(index.ref);
  if (index.kind === 'bitmask') return bitmaskToPositions(t.data, n);
  return new Int32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
}

/** target[pos[k]] += values[k]. */
export function scatterAdd(target: Float32Array, pos: Int32Array, values: RawTensor): void {
  const v = toFloat32(values);
  if (v.length !== pos.length) throw new Error(`sparse part: ${v.length} values for ${pos.length} positions`);
  for (let k = 0; k < pos.length; k++) target[pos[k]] += v[k];
}

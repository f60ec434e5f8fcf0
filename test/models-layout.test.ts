import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from './helpers/random.js';
import { DTYPE_BYTES, numel, type DType, type RawTensor } from '../src/io/dtype.js';
import { concatRows, deinterleaveRows, interleaveRows, sliceRows, stack, transpose2d, unstack } from '../src/models/layout.js';

function rand(dtype: DType, shape: number[], seed: number): RawTensor {
  return { dtype, shape, data: randomBytes(numel(shape) * DTYPE_BYTES[dtype], seed) };
}

/** Bytes of the element at a multi-index (the naive reference every test compares against). */
function elem(t: RawTensor, idx: number[]): number[] {
  let flat = 0;
  for (let d = 0; d < t.shape.length; d++) flat = flat * t.shape[d] + idx[d];
  const s = DTYPE_BYTES[t.dtype];
  return Array.from(t.data.subarray(flat * s, flat * s + s));
}

function* indices(shape: number[]): Generator<number[]> {
  const n = numel(shape);
  for (let f = 0; f < n; f++) {
    const idx: number[] = [];
    let r = f;
    for (let d = shape.length - 1; d >= 0; d--) {
      idx.unshift(r % shape[d]);
      r = Math.floor(r / shape[d]);
    }
    yield idx;
  }
}

const DTYPES: DType[] = ['U8', 'BF16', 'F16', 'F32', 'I64'];

test('stack and unstack are inverse byte moves for every element size', () => {
  for (const [k, dtype] of DTYPES.entries()) {
    const parts = [0, 1, 2].map((e) => rand(dtype, [3, 5], 10 * k + e));
    const s = stack(parts);
    assert.deepEqual(s.shape, [3, 3, 5]);
    assert.equal(s.dtype, dtype);
    for (let e = 0; e < 3; e++) assert.deepEqual(unstack(s, e), parts[e]);
  }
});

test('stack rejects mixed dtypes and shapes', () => {
  assert.throws(() => stack([rand('BF16', [2, 2], 1), rand('F16', [2, 2], 2)]), /tensor 1 is F16/);
  assert.throws(() => stack([rand('BF16', [2, 2], 1), rand('BF16', [2, 3], 2)]), /shape \[2,3\]/);
  assert.throws(() => stack([]), /no tensors/);
  assert.throws(() => unstack(rand('F32', [2, 3], 1), 2), /out of range/);
});

test('sliceRows matches element indexing on dim 0, 1 and the last dim', () => {
  for (const dtype of DTYPES) {
    const t = rand(dtype, [3, 6, 5], 7);
    for (const [dim, start, count] of [[0, 1, 2], [1, 2, 3], [2, 1, 4], [-1, 0, 5]] as const) {
      const s = sliceRows(t, start, count, dim);
      const d = dim < 0 ? 3 + dim : dim;
      const shape = t.shape.slice();
      shape[d] = count;
      assert.deepEqual(s.shape, shape);
      for (const idx of indices(shape)) {
        const src = idx.slice();
        src[d] += start;
        assert.deepEqual(elem(s, idx), elem(t, src));
      }
    }
  }
});

test('concatRows undoes sliceRows on any dim', () => {
  for (const dtype of DTYPES) {
    const t = rand(dtype, [2, 7, 3], 11);
    for (const dim of [0, 1, 2]) {
      const n = t.shape[dim];
      const a = sliceRows(t, 0, 1, dim);
      const b = sliceRows(t, 1, n - 1, dim);
      assert.deepEqual(concatRows([a, b], dim), t);
    }
  }
  assert.throws(() => concatRows([rand('F32', [2, 3], 1), rand('F32', [3, 3], 2)], 1), /incompatible/);
  assert.throws(() => sliceRows(rand('F32', [4, 3], 1), 3, 2), /out of range/);
});

test('deinterleaveRows splits even/odd positions like x[..., ::2] and x[..., 1::2]', () => {
  for (const dtype of DTYPES) {
    const t = rand(dtype, [2, 3, 8], 5);
    const [even, odd] = deinterleaveRows(t);
    assert.deepEqual(even.shape, [2, 3, 4]);
    for (const [e, h, i] of indices([2, 3, 4])) {
      assert.deepEqual(elem(even, [e, h, i]), elem(t, [e, h, 2 * i]));
      assert.deepEqual(elem(odd, [e, h, i]), elem(t, [e, h, 2 * i + 1]));
    }
    assert.deepEqual(interleaveRows(even, odd), t);
    // The same along dim 0 of a 2-D tensor.
    const m = rand(dtype, [6, 3], 9);
    const [me, mo] = deinterleaveRows(m, 0);
    assert.deepEqual(elem(me, [2, 1]), elem(m, [4, 1]));
    assert.deepEqual(elem(mo, [2, 1]), elem(m, [5, 1]));
    assert.deepEqual(interleaveRows(me, mo, 0), m);
  }
  assert.throws(() => deinterleaveRows(rand('F32', [2, 5], 1)), /odd length/);
});

test('transpose2d matches element indexing, in tiles and across odd sizes, for every element size', () => {
  for (const dtype of DTYPES) {
    for (const shape of [[1, 1], [3, 7], [37, 45], [2, 33, 65]]) {
      const t = rand(dtype, shape, shape[0] * 31 + shape[1]);
      const tt = transpose2d(t);
      const n = shape.length;
      assert.deepEqual(tt.shape, [...shape.slice(0, n - 2), shape[n - 1], shape[n - 2]]);
      for (const idx of indices(shape)) {
        const swapped = [...idx.slice(0, n - 2), idx[n - 1], idx[n - 2]];
        assert.deepEqual(elem(tt, swapped), elem(t, idx));
      }
      assert.deepEqual(transpose2d(tt), t);
    }
  }
  assert.throws(() => transpose2d(rand('F32', [4], 1)), /at least 2 dims/);
});

test('word-view moves handle data that is not aligned to the element size', () => {
  const t = rand('F32', [4, 6], 4);
  const backing = new Uint8Array(t.data.byteLength + 1);
  backing.set(t.data, 1);
  const odd: RawTensor = { dtype: 'F32', shape: [4, 6], data: backing.subarray(1) };
  assert.deepEqual(transpose2d(odd), transpose2d(t));
  assert.deepEqual(deinterleaveRows(odd), deinterleaveRows(t));
  const [a, b] = deinterleaveRows(t);
  assert.deepEqual(interleaveRows(a, b), t);
});

test('NaN payloads and negative zeros survive every move bit for bit', () => {
  // f32 signalling NaN with payload, -0, bf16 NaN with payload: a float copy could canonicalise these.
  const f32 = new Uint8Array(new Uint32Array([0x7f800001, 0x80000000, 0xffc12345, 0x3f800000]).buffer);
  const t: RawTensor = { dtype: 'F32', shape: [2, 2], data: f32 };
  assert.deepEqual(transpose2d(transpose2d(t)).data, f32);
  const [a, b] = deinterleaveRows(t);
  assert.deepEqual(interleaveRows(a, b).data, f32);
  const bf = new Uint8Array(new Uint16Array([0x7f81, 0xffff, 0x8000, 0x7fc1]).buffer);
  const tb: RawTensor = { dtype: 'BF16', shape: [1, 4], data: bf };
  assert.deepEqual(transpose2d(transpose2d(tb)).data, bf);
  assert.deepEqual(unstack(stack([tb, tb]), 1).data, bf);
});

test('byte length must match shape x dtype', () => {
  const bad: RawTensor = { dtype: 'BF16', shape: [2, 2], data: new Uint8Array(6) };
  assert.throws(() => transpose2d(bad), /needs 8 bytes, data has 6/);
  assert.throws(() => sliceRows(bad, 0, 1), /needs 8 bytes/);
});

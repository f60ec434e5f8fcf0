import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bf16ToF32, bf16ToF32Naive, f16ToF32, f16ToF32Naive, f32ToBf16, f32ToBf16Naive, f32ToF16, f32ToF16Naive,
  fromFloat32, toFloat32, toFloat32Naive,
} from '../src/tensor/convert.js';
import type { RawTensor } from '../src/io/dtype.js';
import { MoepressError } from '../src/io/errors.js';
import { uniformFn as rng } from './helpers/random.js';


const bitsToF32 = (u: number): number => new Float32Array(new Uint32Array([u]).buffer)[0];
const u16Bytes = (...bits: number[]): Uint8Array => new Uint8Array(new Uint16Array(bits).buffer);
const sameValue = (a: number, b: number): boolean => (Number.isNaN(a) && Number.isNaN(b)) || Object.is(a, b);

// ---- hand-computed values ----

test('bf16 -> f32: hand-computed values', () => {
  assert.equal(bf16ToF32(0x3f80), 1);
  assert.equal(bf16ToF32(0xc020), -2.5);
  assert.equal(bf16ToF32(0x0001), 2 ** -133); // smallest subnormal: 2^-126 * 2^-7
  assert.equal(bf16ToF32(0x0080), 2 ** -126); // smallest normal
  assert.equal(bf16ToF32(0x7f7f), (2 - 2 ** -7) * 2 ** 127); // max finite
  assert.equal(bf16ToF32(0x7f80), Infinity);
  assert.equal(bf16ToF32(0xff80), -Infinity);
  assert.ok(Number.isNaN(bf16ToF32(0x7fc0)));
  assert.ok(Object.is(bf16ToF32(0x8000), -0));
});

test('f32 -> bf16: hand-computed values and ties to even', () => {
  assert.equal(f32ToBf16(1), 0x3f80);
  assert.equal(f32ToBf16(-2.5), 0xc020);
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80); // exact tie between 0x3f80 and 0x3f81: to even
  assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82); // tie between 0x3f81 and 0x3f82: to even
  assert.equal(f32ToBf16(1 + 2 ** -8 + 2 ** -20), 0x3f81); // just above the tie
  assert.equal(f32ToBf16(1 + 2 ** -8 - 2 ** -20), 0x3f80); // just below
  assert.equal(f32ToBf16(2 ** -133), 0x0001);
  assert.equal(f32ToBf16(2 ** -134), 0x0000); // half the smallest subnormal: tie to even (zero)
  assert.equal(f32ToBf16(3 * 2 ** -134), 0x0002); // 1.5 x smallest: tie to even (2)
  assert.equal(f32ToBf16(bitsToF32(0x7f7f7fff)), 0x7f7f); // below half an ulp past max
  assert.equal(f32ToBf16(bitsToF32(0x7f7f8000)), 0x7f80); // tie past max (odd): up to infinity
  assert.equal(f32ToBf16(3.4028234663852886e38), 0x7f80); // float32 max overflows
  assert.equal(f32ToBf16(-Infinity), 0xff80);
  assert.equal(f32ToBf16(-0), 0x8000);
  assert.equal(f32ToBf16(NaN) & 0x7fc0, 0x7fc0);
});

test('f32 -> bf16 keeps NaN a NaN, even when the payload is only in the dropped bits', () => {
  const nans = new Float32Array(new Uint32Array([0x7f800001, 0xff800001, 0x7fc00000, 0xffffffff]).buffer);
  const out = new Uint16Array(fromFloat32(nans, 'BF16').buffer);
  assert.deepEqual([...out], [0x7fc0, 0xffc0, 0x7fc0, 0xffff]);
  for (const b of out) assert.ok(Number.isNaN(bf16ToF32(b)));
});

test('f16 -> f32: hand-computed values', () => {
  assert.equal(f16ToF32(0x3c00), 1);
  assert.equal(f16ToF32(0xc100), -2.5);
  assert.equal(f16ToF32(0x0001), 2 ** -24); // smallest subnormal, 5.96e-8
  assert.equal(f16ToF32(0x03ff), 1023 * 2 ** -24); // largest subnormal
  assert.equal(f16ToF32(0x0400), 2 ** -14); // smallest normal
  assert.equal(f16ToF32(0x7bff), 65504); // max finite
  assert.equal(f16ToF32(0x3555), 0.333251953125); // nearest to 1/3
  assert.equal(f16ToF32(0x7c00), Infinity);
  assert.equal(f16ToF32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  assert.ok(Number.isNaN(f16ToF32(0x7c01)));
  assert.ok(Object.is(f16ToF32(0x8000), -0));
  assert.equal(f16ToF32(0x8001), -(2 ** -24));
});

test('f32 -> f16: hand-computed values, subnormals, overflow and ties to even', () => {
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(-2.5), 0xc100);
  assert.equal(f32ToF16(1 / 3), 0x3555);
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00); // tie: to even
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02); // tie: to even
  assert.equal(f32ToF16(1 + 2 ** -11 + 2 ** -20), 0x3c01);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(65519), 0x7bff); // below the halfway point to 65536
  assert.equal(f32ToF16(65520), 0x7c00); // tie past max (odd): infinity
  assert.equal(f32ToF16(1e5), 0x7c00);
  assert.equal(f32ToF16(-1e5), 0xfc00);
  assert.equal(f32ToF16(2 ** -24), 0x0001);
  assert.equal(f32ToF16(2 ** -25), 0x0000); // half the smallest subnormal: tie to even (zero)
  assert.equal(f32ToF16(1.5 * 2 ** -25), 0x0001);
  assert.equal(f32ToF16(3 * 2 ** -25), 0x0002); // 1.5 x smallest: tie to 2
  assert.equal(f32ToF16(5 * 2 ** -25), 0x0002); // 2.5 x smallest: tie to 2
  assert.equal(f32ToF16(1023.5 * 2 ** -24), 0x0400); // rounds from subnormal up into the normals
  assert.equal(f32ToF16(2 ** -30), 0x0000);
  assert.equal(f32ToF16(-(2 ** -26)), 0x8000);
  assert.equal(f32ToF16(-0), 0x8000);
  assert.equal(f32ToF16(Infinity), 0x7c00);
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
  const sNaN = new Float32Array(new Uint32Array([0x7f800001]).buffer);
  assert.ok(Number.isNaN(f16ToF32(new Uint16Array(fromFloat32(sNaN, 'F16').buffer)[0])));
});

// ---- fast paths against their naive twins ----

test('every 16-bit pattern decodes the same fast and naive, and round-trips', () => {
  for (let b = 0; b < 65536; b++) {
    const h = f16ToF32(b);
    assert.ok(sameValue(h, f16ToF32Naive(b)), `f16 0x${b.toString(16)}`);
    const bf = bf16ToF32(b);
    assert.ok(sameValue(bf, bf16ToF32Naive(b)), `bf16 0x${b.toString(16)}`);
    if (!Number.isNaN(h)) assert.equal(f32ToF16(h), b, `f16 round trip 0x${b.toString(16)}`);
    if (!Number.isNaN(bf)) assert.equal(f32ToBf16(bf), b, `bf16 round trip 0x${b.toString(16)}`);
  }
});

test('f32 -> 16-bit encoders match their naive twins on random and tie patterns', () => {
  const r = rng(42);
  const patterns: number[] = [];
  for (let i = 0; i < 100_000; i++) patterns.push(Math.floor(r() * 2 ** 32));
  // Exact ties and near-ties for both formats: low 16 bits 0x8000 (bf16), low 13 bits 0x1000 (f16).
  for (let i = 0; i < 20_000; i++) {
    const hi = Math.floor(r() * 2 ** 32);
    patterns.push(((hi & 0xffff0000) | 0x8000) >>> 0, ((hi & 0xffff0000) | 0x7fff) >>> 0);
    patterns.push(((hi & ~0x1fff) | 0x1000) >>> 0, ((hi & ~0x1fff) | 0x1001) >>> 0);
  }
  // f16 subnormal and overflow region: exponents around 2^-25..2^-14 and 2^15..2^16.
  for (let i = 0; i < 20_000; i++) {
    const exp = [101, 102, 103, 110, 112, 113, 142, 143][i % 8];
    patterns.push(((exp << 23) | Math.floor(r() * 2 ** 23) | (i & 1 ? 0x80000000 : 0)) >>> 0);
  }
  for (const u of patterns) {
    const x = bitsToF32(u);
    const bf = f32ToBf16(x);
    const h = f32ToF16(x);
    if (Number.isNaN(x)) {
      assert.ok(Number.isNaN(bf16ToF32(bf)) && Number.isNaN(f16ToF32(h)));
      continue;
    }
    assert.equal(bf, f32ToBf16Naive(x), `bf16 of 0x${u.toString(16)}`);
    assert.equal(h, f32ToF16Naive(x), `f16 of 0x${u.toString(16)}`);
  }
});

test('toFloat32 fast path matches the naive twin, aligned or not', () => {
  const r = rng(7);
  for (const dtype of ['BF16', 'F16', 'F32'] as const) {
    const size = dtype === 'F32' ? 4 : 2;
    for (const n of [0, 1, 7, 1000]) {
      const backing = new Uint8Array(n * size + 3);
      for (let i = 0; i < backing.length; i++) backing[i] = Math.floor(r() * 256);
      for (const offset of [0, 1, 2, 3].filter((o) => o + n * size <= backing.length)) {
        const t: RawTensor = { dtype, shape: [n], data: backing.subarray(offset, offset + n * size) };
        const fast = toFloat32(t);
        const naive = toFloat32Naive(t);
        assert.equal(fast.length, n);
        for (let i = 0; i < n; i++) assert.ok(sameValue(fast[i], naive[i]), `${dtype} n=${n} off=${offset} i=${i}`);
      }
    }
  }
});

// ---- whole arrays ----

test('fromFloat32 -> toFloat32: exact for representable values, bounded relative error otherwise', () => {
  const exact = new Float32Array([1, -2.5, 0.15625, 1024, -0.0078125, 3.5]);
  for (const dtype of ['BF16', 'F16', 'F32'] as const) {
    const bytes = fromFloat32(exact, dtype);
    assert.equal(bytes.byteLength, exact.length * (dtype === 'F32' ? 4 : 2));
    assert.deepEqual(toFloat32({ dtype, shape: [2, 3], data: bytes }), exact);
  }
  // Gaussian values away from zero; relative error at most half an ulp at 1: 2^-8 (bf16: 7 stored bits),
  // 2^-11 (f16: 10 stored bits).
  const r = rng(3);
  const x = new Float32Array(10_000);
  for (let i = 0; i < x.length; i++) {
    const g = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
    x[i] = g + Math.sign(g) * 1e-3;
  }
  for (const [dtype, bound] of [['BF16', 2 ** -8], ['F16', 2 ** -11]] as const) {
    const y = toFloat32({ dtype, shape: [x.length], data: fromFloat32(x, dtype) });
    let worst = 0;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(y[i] - x[i]) / Math.abs(x[i]));
    assert.ok(worst <= bound && worst > 0, `${dtype} worst relative error ${worst}`);
  }
  // A subarray view at an odd float offset works too.
  const big = new Float32Array([9, 1, -2.5, 9]);
  assert.deepEqual(new Uint16Array(fromFloat32(big.subarray(1, 3), 'BF16').buffer), new Uint16Array([0x3f80, 0xc020]));
});

test('toFloat32 converts integer dtypes numerically', () => {
  const t = (dtype: RawTensor['dtype'], arr: ArrayBufferView): RawTensor =>
    ({ dtype, shape: [arr.byteLength / (arr as Uint8Array).BYTES_PER_ELEMENT], data: new Uint8Array(arr.buffer) });
  assert.deepEqual([...toFloat32(t('I8', new Int8Array([-128, 0, 127])))], [-128, 0, 127]);
  assert.deepEqual([...toFloat32(t('U8', new Uint8Array([0, 255])))], [0, 255]);
  assert.deepEqual([...toFloat32(t('I16', new Int16Array([-32768, 5])))], [-32768, 5]);
  assert.deepEqual([...toFloat32(t('U16', new Uint16Array([65535])))], [65535]);
  assert.deepEqual([...toFloat32(t('I32', new Int32Array([-7, 1 << 20])))], [-7, 1 << 20]);
  assert.deepEqual([...toFloat32(t('U32', new Uint32Array([4294967295])))], [4294967296]); // nearest float32
  assert.deepEqual([...toFloat32(t('I64', new BigInt64Array([-3n, 1n << 40n])))], [-3, 2 ** 40]);
  assert.deepEqual([...toFloat32({ dtype: 'BOOL', shape: [3], data: new Uint8Array([0, 1, 2]) })], [0, 1, 1]);
});

test('toFloat32 rejects data whose size does not match shape x dtype, naming the tensor', () => {
  assert.throws(() => toFloat32({ dtype: 'BF16', shape: [2, 3], data: u16Bytes(1, 2, 3) }, 'layers.0.w'),
    (e: unknown) => e instanceof MoepressError && e.message.includes("tensor 'layers.0.w'") &&
      e.message.includes('expected 12'));
});

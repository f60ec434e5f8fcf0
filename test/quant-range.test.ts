/** Scale range (f16 vs bf16), importance weights and input validation of the block codecs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { codecById } from '../src/compress/quant/codec.js';
import { relFrobenius } from '../src/compress/quant/error.js';
import { chooseScaleDtype } from '../src/compress/quant/select.js';
import { MoepressError } from '../src/io/errors.js';
import { Rng } from '../src/tensor/random.js';

const unit = new Rng(11).normals(64 * 100);
const scaled = (f: number): Float32Array => unit.map((v) => v * f);
const roundTrip = (id: string, x: Float32Array): number => {
  const c = codecById(id);
  return relFrobenius(x, c.dequantize(c.quantize(x), x.length));
};

test('f16 scales: small deltas (subnormal 8-bit scales) lose almost nothing', () => {
  for (const id of ['q8s-g64', 'q8a-g64', 'q4s-g64-rtn', 'q2s-g64', 'q1s-g64']) {
    const ref = roundTrip(id, unit);
    const tiny = roundTrip(id, scaled(3e-4)); // 8-bit scales ~ 5e-6, f16 subnormal
    assert.ok(tiny < ref * 1.1, `${id}: ${tiny} vs ${ref} at unit scale`);
  }
});

test('f16 scales underflow far below deltas; the -bf16 variant covers them; chooseScaleDtype sees it', () => {
  const ref = roundTrip('q4s-g64', unit);
  assert.ok(roundTrip('q4s-g64', scaled(1e-7)) > 1.5 * ref, 'f16 scales of ~4e-8 are coarse subnormals');
  assert.ok(roundTrip('q4s-g64', scaled(1e-8)) > 0.9, 'f16 scales of ~4e-9 underflow');
  assert.ok(roundTrip('q4s-g64-bf16', scaled(1e-8)) < ref * 1.1);
  assert.equal(chooseScaleDtype(unit, 4, 64), 'f16');
  assert.equal(chooseScaleDtype(scaled(1e-3), 8, 64), 'f16');
  assert.equal(chooseScaleDtype(scaled(1e-5), 8, 64), 'bf16'); // 8-bit scales ~ 2e-7 < 2^-16
  assert.equal(chooseScaleDtype(scaled(1e-5), 1, 64), 'f16'); // 1-bit scales ~ 1e-5: still f16
  assert.equal(chooseScaleDtype(scaled(1e-8), 4, 64), 'bf16');
  assert.equal(chooseScaleDtype(scaled(1e6), 4, 64), 'bf16'); // overflow
});

test('f16 overflow throws and names the -bf16 variant; bf16 stores the scale', () => {
  const x = scaled(1e6); // 4-bit scale ~ 4e6 / 8 > 65504
  assert.throws(() => codecById('q4s-g64').quantize(x), (e: unknown) => e instanceof MoepressError
    && /block 0: scale .* does not fit float16/.test(e.message) && e.message.includes('-bf16'));
  assert.throws(() => codecById('q4a-g64-rtn').quantize(x), /does not fit float16/);
  assert.ok(roundTrip('q4s-g64-bf16', x) < roundTrip('q4s-g64', unit) * 1.1);
});

test('weights: the weighted fit lowers the weighted error; unit weights change nothing', () => {
  const rng = new Rng(5);
  const w = Float32Array.from(unit, () => (rng.next() < 0.1 ? 100 : 1)); // 10% of entries matter 100x
  const werr = (x: Float32Array, y: Float32Array): number => {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += w[i] * (x[i] - y[i]) ** 2;
    return s;
  };
  for (const id of ['q2s-g64', 'q3s-g64', 'q4s-g64', 'q3a-g64', 'q1s-g64']) {
    const c = codecById(id);
    const plain = c.dequantize(c.quantize(unit), unit.length);
    const weighted = c.dequantize(c.quantize(unit, w), unit.length);
    assert.ok(werr(unit, weighted) < werr(unit, plain) * 0.97, `${id}: ${werr(unit, weighted)} vs ${werr(unit, plain)}`);
    assert.deepEqual(c.quantize(unit, new Float32Array(unit.length).fill(1)), c.quantize(unit), `${id} unit weights`);
  }
});

test('weights: RTN ignores them, and an all-zero-weight block falls back to RTN / mean|x|', () => {
  const zeros = new Float32Array(unit.length);
  const rng = new Rng(9);
  const w = Float32Array.from(unit, () => rng.next());
  assert.deepEqual(codecById('q4s-g64-rtn').quantize(unit, w), codecById('q4s-g64-rtn').quantize(unit));
  assert.deepEqual(codecById('q4s-g64').quantize(unit, zeros), codecById('q4s-g64-rtn').quantize(unit));
  assert.deepEqual(codecById('q4a-g64').quantize(unit, zeros), codecById('q4a-g64-rtn').quantize(unit));
  assert.deepEqual(codecById('q1s-g64').quantize(unit, zeros), codecById('q1s-g64').quantize(unit));
});

test('blocks of equal values, and an all-zero block inside a tensor, decode without NaN', () => {
  const x = Float32Array.from({ length: 24 }, (_, i) => (i < 8 ? 0.37 : i < 16 ? 0 : unit[i]));
  for (const id of ['q4s-g8', 'q4a-g8', 'q4a-g8-rtn', 'q2s-g8-rtn', 'q1s-g8']) {
    const c = codecById(id);
    const y = c.dequantize(c.quantize(x), x.length);
    for (let i = 8; i < 16; i++) assert.equal(y[i], 0, `${id} zero block`);
    for (let i = 0; i < 8; i++) assert.ok(Math.abs(y[i] - 0.37) < 0.37 * 1e-3, `${id}: ${y[i]}`);
    assert.ok(y.every(Number.isFinite));
  }
});

test('validation: non-finite values, bad weights, wrong byte counts', () => {
  const c = codecById('q4s-g8');
  assert.throws(() => c.quantize(Float32Array.from([1, NaN, 2])), /value NaN at index 1 is not finite/);
  assert.throws(() => c.quantize(Float32Array.from([1, Infinity])), /not finite/);
  assert.throws(() => c.quantize(Float32Array.from([1, 2]), Float32Array.from([1])), /1 weights for 2 values/);
  assert.throws(() => c.quantize(Float32Array.from([1, 2]), Float32Array.from([1, -1])), /weight -1 at index 1/);
  const packed = c.quantize(unit.subarray(0, 16));
  assert.throws(() => c.dequantize(packed, 17), (e: unknown) => e instanceof MoepressError
    && e.message.includes('q4s-g8') && e.message.includes('expected 3 blocks of 6 = 18 bytes'));
  assert.throws(() => c.dequantize(packed, 16, new Float32Array(15)), /output has 15 entries, expected 16/);
  assert.equal(c.quantize(new Float32Array(0)).length, 0);
});

/** Round-trip properties of every codec on random data: sizes, ids, error bounds, fitted vs RTN. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type BlockCodec, codecById, makeCodec, storedBytes } from '../src/compress/quant/codec.js';
import { candidateCodecs } from '../src/compress/quant/select.js';
import { relFrobenius } from '../src/compress/quant/error.js';
import { laplacianData } from '../src/compress/quant/bench.js';
import { f16ToF32 } from '../src/tensor/convert.js';
import { MoepressError } from '../src/io/errors.js';
import { Rng } from '../src/tensor/random.js';

const G = 32;
const NB = 200; // blocks of Gaussian data per check
const x = new Rng(7).normals(G * NB, 0.02); // weight-sized values

function all(kind: 'symmetric' | 'asymmetric', rtn: boolean, g = G): BlockCodec[] {
  return [2, 3, 4, 5, 6, 7, 8].map((bits) => makeCodec({ kind, bits, blockSize: g, rtn }));
}

/** Σ (x - x̂)² of block b. */
function blockSse(a: Float32Array, b: Float32Array, blk: number, g: number): number {
  let s = 0;
  for (let i = blk * g; i < (blk + 1) * g; i++) s += (a[i] - b[i]) ** 2;
  return s;
}

test('ids: codecById(c.id) rebuilds every codec; bad ids are rejected with the grammar', () => {
  const codecs = [
    ...candidateCodecs({ groupSizes: [4, 32, 64, 128, 256] }),
    ...candidateCodecs({ rtn: true, kind: 'asymmetric', scaleDtype: 'bf16', groupSizes: [8, 100] }),
    ...candidateCodecs({ kind: 'symmetric', scaleDtype: 'bf16' }),
    ...candidateCodecs({ rtn: true }),
  ];
  assert.ok(codecs.length > 100);
  for (const c of codecs) {
    const back = codecById(c.id);
    assert.equal(back.id, c.id);
    assert.deepEqual([back.kind, back.bits, back.blockSize, back.bytesPerBlock, back.rtn, back.scaleDtype],
      [c.kind, c.bits, c.blockSize, c.bytesPerBlock, c.rtn, c.scaleDtype]);
  }
  for (const bad of ['q4-g64', 'q9s-g64', 'q4s-g0', 'q4s-g064', 'q4s-g64-bf16-rtn', 'q1a-g64', 'q1s-g64-rtn', 'Q4S-G64']) {
    assert.throws(() => codecById(bad), (e: unknown) => e instanceof MoepressError && e.message.includes(bad), bad);
  }
});

test('sizes: bytesPerBlock is what quantize writes per block; storedBytes counts padding', () => {
  for (const c of [...all('symmetric', false), ...all('asymmetric', true), makeCodec({ kind: 'sign', bits: 1, blockSize: G })]) {
    assert.equal(c.bytesPerBlock, (c.kind === 'asymmetric' ? 4 : 2) + Math.ceil((G * c.bits) / 8), c.id);
    assert.equal(c.quantize(x.subarray(0, 5 * G)).length, 5 * c.bytesPerBlock, c.id);
    for (const n of [1, G - 1, G, G + 1, 3 * G + 5]) {
      const packed = c.quantize(x.subarray(0, n));
      assert.equal(packed.length, storedBytes(c, n), `${c.id} n=${n}`);
      assert.equal(packed.length, Math.ceil(n / G) * c.bytesPerBlock);
      assert.equal(c.dequantize(packed, n).length, n);
    }
  }
  // 3-bit with an odd block: 5 * 3 = 15 bits -> 2 bytes of codes.
  assert.equal(codecById('q3s-g5').bytesPerBlock, 4);
});

test('RTN error bound: symmetric |x - x̂| <= |s|/2, or <= |s| for values clipped at the top code', () => {
  for (const c of all('symmetric', true)) {
    const packed = c.quantize(x);
    const xhat = c.dequantize(packed, x.length);
    const top = (1 << (c.bits - 1)) - 1;
    let clipped = 0;
    for (let i = 0; i < x.length; i++) {
      const s = Math.abs(f16ToF32(packed[Math.floor(i / G) * c.bytesPerBlock] | (packed[Math.floor(i / G) * c.bytesPerBlock + 1] << 8)));
      const err = Math.abs(x[i] - xhat[i]);
      const atTop = Math.abs(xhat[i] / s) > top - 0.5 && Math.abs(x[i]) > Math.abs(xhat[i]);
      if (atTop && err > s / 2) clipped++;
      assert.ok(err <= (atTop ? s : s / 2) * (1 + 1e-6), `${c.id} i=${i}: |${x[i]} - ${xhat[i]}| > bound, s=${s}`);
    }
    assert.ok(clipped < x.length / 20, `${c.id}: ${clipped} clipped values`);
  }
});

test('RTN error bound: asymmetric |x - x̂| <= s/2', () => {
  for (const c of all('asymmetric', true)) {
    const packed = c.quantize(x);
    const xhat = c.dequantize(packed, x.length);
    for (let i = 0; i < x.length; i++) {
      const o = Math.floor(i / G) * c.bytesPerBlock;
      const s = f16ToF32(packed[o] | (packed[o + 1] << 8));
      assert.ok(Math.abs(x[i] - xhat[i]) <= (s / 2) * (1 + 1e-5), `${c.id} i=${i}`);
    }
  }
});

test('MSE-fitted scales are never worse than RTN, block by block, and better in aggregate', () => {
  for (const kind of ['symmetric', 'asymmetric'] as const) {
    for (const data of [x, laplacianData(G * NB, 3)]) {
      const fitted = all(kind, false);
      const rtn = all(kind, true);
      for (let j = 0; j < fitted.length; j++) {
        const a = fitted[j].dequantize(fitted[j].quantize(data), data.length);
        const b = rtn[j].dequantize(rtn[j].quantize(data), data.length);
        for (let blk = 0; blk < NB; blk++) {
          const ea = blockSse(data, a, blk, G);
          const eb = blockSse(data, b, blk, G);
          assert.ok(ea <= eb * (1 + 1e-6), `${fitted[j].id} block ${blk}: ${ea} > RTN ${eb}`);
        }
        const ra = relFrobenius(data, a);
        const rb = relFrobenius(data, b);
        assert.ok(ra < rb * 0.99, `${fitted[j].id}: fitted ${ra} not below RTN ${rb}`);
      }
    }
  }
});

test('error decreases with bits, for every family', () => {
  for (const family of [all('symmetric', false), all('symmetric', true), all('asymmetric', false), all('asymmetric', true)]) {
    const sign = makeCodec({ kind: 'sign', bits: 1, blockSize: G });
    const errs = [sign, ...family].map((c) => relFrobenius(x, c.dequantize(c.quantize(x), x.length)));
    for (let i = 1; i < errs.length; i++) {
      assert.ok(errs[i] < errs[i - 1] * 0.75, `${family[i - 1].id}: ${errs[i]} vs ${errs[i - 1]} one bit fewer`);
    }
    assert.ok(errs[errs.length - 1] < 0.01, `8 bits: ${errs[errs.length - 1]}`);
  }
});

test('1-bit: the stored scale is mean|x| of each block (to f16 rounding) and x̂ = ±scale by sign', () => {
  const c = codecById(`q1s-g${G}`);
  const packed = c.quantize(x);
  const xhat = c.dequantize(packed, x.length);
  for (let b = 0; b < NB; b++) {
    let mean = 0;
    for (let i = b * G; i < (b + 1) * G; i++) mean += Math.abs(x[i]) / G;
    const s = f16ToF32(packed[b * c.bytesPerBlock] | (packed[b * c.bytesPerBlock + 1] << 8));
    assert.ok(Math.abs(s - mean) <= mean * 2 ** -11, `block ${b}: ${s} vs ${mean}`);
    for (let i = b * G; i < (b + 1) * G; i++) assert.equal(xhat[i], x[i] >= 0 ? s : -s);
  }
});

/** GPTQ into the codecs' block layout, the Hessian error, and dampening (calib/gptq.ts, calib/hessian.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gptqQuantize, gptqQuantizeNaive, inverseFactorFast } from '../src/compress/calib/gptq.js';
import { dampedHessian, hessianError, hessianErrorDiag, hessianErrorFast } from '../src/compress/calib/hessian.js';
import { codecById } from '../src/compress/quant/codec.js';
import { BLOCKED_LEAF } from '../src/tensor/linalg/blocked.js';
import { Rng } from '../src/tensor/random.js';

/** Correlated inputs: x = A z with a random mixing A and per-direction scales; X: [T, n]. */
function correlatedInputs(T: number, n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const A = rng.normals(n * n);
  const scale = Float32Array.from({ length: n }, (_, i) => Math.exp(-3 * i / n));
  const X = new Float32Array(T * n);
  for (let t = 0; t < T; t++) {
    const z = rng.normals(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += A[i * n + k] * z[k] * scale[k];
      X[t * n + i] = s + 0.05 * rng.normal();
    }
  }
  return X;
}

/** XᵀX: [n, n], float64. */
function gram(X: Float32Array, T: number, n: number): Float64Array {
  const H = new Float64Array(n * n);
  for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j] += X[t * n + i] * X[t * n + j];
  return H;
}

test('gptq: lazy batches with a float32 GEMM update agree with the naive float64 column loop (output error, codes), on awkward shapes and every codec kind', async () => {
  // sizes above the GEMM's small-problem cutoff, so that ORT runs where it loads
  for (const [id, out, inp, batch] of [['q3s-g32', 37, 160, 40], ['q2a-g16', 45, 96, 7], ['q1s-g32', 13, 128, 128], ['q4s-g8-rtn', 29, 72, 5], ['q2s-g16', 300, 64, 32]] as const) {
    const codec = codecById(id);
    const X = correlatedInputs(400, inp, inp);
    const H = gram(X, 400, inp);
    const w = new Rng(out).normals(out * inp, 0.05);
    const a = gptqQuantizeNaive(w, out, inp, H, codec);
    const b = await gptqQuantize(w, out, inp, H, codec, { batch });
    assert.equal(b.packed.length, a.packed.length, `${id}: the codec's layout`);
    assert.equal(a.packed.length, codec.quantize(w).length, `${id}: the codec's layout`);
    const ea = hessianError(w, a.dequantized, H);
    const eb = hessianError(w, b.dequantized, H);
    assert.ok(Math.abs(eb - ea) <= 1e-3 * ea, `${id}: error ${eb} vs naive ${ea}`);
    let same = 0;
    for (let i = 0; i < w.length; i++) if (a.dequantized[i] === b.dequantized[i]) same++;
    assert.ok(same >= 0.98 * w.length, `${id}: ${same} of ${w.length} values equal`);
  }
});

test('inverseFactorFast: Uᵀ U is the inverse of the damped H, U upper; cached per H array', async () => {
  for (const n of [40, 300]) await checkFactor(n);
});

async function checkFactor(n: number): Promise<void> {
  const H = gram(correlatedInputs(100, n, 4), 100, n);
  const { U, lambda } = await inverseFactorFast(H, n, 0.01);
  const { H: Hd, lambda: l2 } = dampedHessian(H, n, 0.01);
  assert.equal(lambda, l2);
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(U[i * n + j], 0);
  // (Uᵀ U) Hd = I
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) {
        let m = 0;
        for (let t = 0; t <= Math.min(i, k); t++) m += U[t * n + i] * U[t * n + k];
        s += m * Hd[k * n + j];
      }
      worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
    }
  }
  // n = 300 takes the blocked path, whose off-diagonal products are float32
  assert.ok(worst < (n > BLOCKED_LEAF ? 1e-3 : 1e-8), `n = ${n}: max |Uᵀ U Hd − I| = ${worst}`);
  assert.equal((await inverseFactorFast(H, n, 0.01)).U, U, 'the second call returns the cached factor');
}

test('hessianErrorFast (float32 GEMM) agrees with hessianError (float64)', async () => {
  for (const [out, inp] of [[6, 20], [50, 96]] as const) {
    const H = gram(correlatedInputs(200, inp, out), 200, inp);
    const rng = new Rng(out);
    const w = rng.normals(out * inp);
    const what = Float32Array.from(w, (v) => v + 0.1 * rng.normal());
    const a = hessianError(w, what, H);
    const b = await hessianErrorFast(w, what, H);
    assert.ok(Math.abs(a - b) <= 1e-5 * a, `${b} vs ${a}`);
  }
  await assert.rejects(hessianErrorFast(new Float32Array(10), new Float32Array(10), new Float64Array(16)), /expected equal multiples of in = 4/);
});

test('gptq: output error on correlated inputs is below the codec\'s own (MSE-fitted and RTN) quantization', async () => {
  const inp = 64, out = 32, T = 400;
  const H = gram(correlatedInputs(T, inp, 3), T, inp);
  const w = new Rng(5).normals(out * inp, 0.05);
  for (const id of ['q2s-g32', 'q3s-g32', 'q3a-g16', 'q4s-g64-rtn', 'q1s-g32']) {
    const codec = codecById(id);
    const plain = hessianError(w, codec.dequantize(codec.quantize(w), w.length), H);
    const rtn = codec.rtn || codec.kind === 'sign' ? plain : hessianError(w, codecById(`${id}-rtn`).dequantize(codecById(`${id}-rtn`).quantize(w), w.length), H);
    const g = hessianError(w, (await gptqQuantize(w, out, inp, H, codec)).dequantized, H);
    assert.ok(g < 0.8 * plain, `${id}: GPTQ ${g} vs plain ${plain}`);
    assert.ok(g < 0.8 * rtn, `${id}: GPTQ ${g} vs RTN ${rtn}`);
  }
});

test('gptq: with H = identity (the data-free treatment) the bytes equal plain codec quantization', async () => {
  const inp = 64, out = 12;
  const I = new Float64Array(inp * inp);
  for (let i = 0; i < inp; i++) I[i * inp + i] = 1;
  const w = new Rng(11).normals(out * inp, 0.03);
  for (const id of ['q3s-g32', 'q2a-g64', 'q1s-g16', 'q4s-g32-rtn', 'q3a-g32-rtn-bf16']) {
    const codec = codecById(id);
    assert.deepEqual((await gptqQuantize(w, out, inp, I, codec)).packed, codec.quantize(w), id);
    assert.deepEqual(gptqQuantizeNaive(w, out, inp, I, codec).packed, codec.quantize(w), id);
  }
  // All-zero H (an expert the calibration never reached) is treated as the identity.
  const codec = codecById('q3s-g32');
  assert.deepEqual((await gptqQuantize(w, out, inp, new Float64Array(inp * inp), codec)).packed, codec.quantize(w));
});

test('gptq: rejects a codec whose blocks do not tile rows, and mis-sized inputs, naming them', async () => {
  const w = new Float32Array(4 * 48).fill(0.1);
  const H = new Float64Array(48 * 48);
  await assert.rejects(gptqQuantize(w, 4, 48, H, codecById('q3s-g32')), /q3s-g32 has blocks of 32 values, which do not tile rows of 48/);
  await assert.rejects(gptqQuantize(w, 4, 48, new Float64Array(10), codecById('q3s-g16')), /H has 10 entries, expected \[48, 48\]/);
  assert.throws(() => gptqQuantizeNaive(w, 4, 48, H, codecById('q3s-g32')), /q3s-g32 has blocks of 32 values, which do not tile rows of 48/);
});

test('hessianError equals Σ_t ‖(W − Ŵ) x_t‖² computed directly, and the diagonal variant its diagonal part', () => {
  const inp = 20, out = 6, T = 50;
  const X = correlatedInputs(T, inp, 9);
  const H = gram(X, T, inp);
  const rng = new Rng(2);
  const w = rng.normals(out * inp);
  const what = rng.normals(out * inp);
  let direct = 0;
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < out; r++) {
      let s = 0;
      for (let j = 0; j < inp; j++) s += (w[r * inp + j] - what[r * inp + j]) * X[t * inp + j];
      direct += s * s;
    }
  }
  const got = hessianError(w, what, H);
  assert.ok(Math.abs(got - direct) / direct < 1e-6, `${got} vs ${direct}`);
  const diag = Float64Array.from({ length: inp }, (_, i) => H[i * inp + i]);
  const Hd = new Float64Array(inp * inp);
  for (let i = 0; i < inp; i++) Hd[i * inp + i] = diag[i];
  const a = hessianErrorDiag(w, what, diag);
  const b = hessianError(w, what, Hd);
  assert.ok(Math.abs(a - b) / b < 1e-9, `${a} vs ${b}`);
});

test('dampedHessian: λ = damp · mean diag, dead inputs get the mean diagonal and no correlations, zero H becomes I', () => {
  const H = Float64Array.from([4, 1, 0, 1, 2, 0, 0, 0, 0]);
  const { H: d, lambda } = dampedHessian(H, 3, 0.1);
  const mean = 6 / 3;
  assert.ok(Math.abs(lambda - 0.1 * mean) < 1e-12);
  assert.deepEqual(Array.from(d), [4 + lambda, 1, 0, 1, 2 + lambda, 0, 0, 0, mean + lambda]);
  assert.deepEqual(Array.from(dampedHessian(new Float64Array(4), 2, 0.01).H), [1, 0, 0, 1]);
});

test('gptq act-order (static groups): lazy batches equal the naive loop, and the error stays below plain quantization', async () => {
  const inp = 64, out = 16, T = 300;
  const H = gram(correlatedInputs(T, inp, 12), T, inp);
  const w = new Rng(13).normals(out * inp, 0.05);
  for (const id of ['q2s-g16', 'q3a-g32', 'q1s-g32']) {
    const codec = codecById(id);
    const a = gptqQuantizeNaive(w, out, inp, H, codec, { actOrder: true });
    const b = await gptqQuantize(w, out, inp, H, codec, { actOrder: true, batch: 24 });
    assert.deepEqual(b.packed, a.packed, id);
    const plain = hessianError(w, codec.dequantize(codec.quantize(w), w.length), H);
    assert.ok(hessianError(w, b.dequantized, H) < 0.8 * plain, id);
  }
});

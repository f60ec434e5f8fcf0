import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LINEAR_SMALL_MNK,
  backendName,
  linear,
  linearBlocked,
  linearNaive,
  linearOrt,
  matmul,
  matmulBlocked,
  matmulNaive,
  matmulOrt,
  sessionCacheSize,
} from '../src/tensor/gemm.js';
import { benchGemm } from '../src/tensor/gemm-bench.js';
import { clearSessionCache, loadOrt } from '../src/tensor/ort.js';
import { uniformFn as mulberry32 } from './helpers/random.js';


/** Values in [-1, 1): never zeros, so a kernel that writes nothing cannot pass. */
function randn(n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = r() * 2 - 1;
  return out;
}

/** ‖a − b‖ / ‖b‖ in float64. */
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  assert.ok(den > 0, 'reference is all zeros');
  return Math.sqrt(num / den);
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 13],
  [3, 5, 2],
  [17, 33, 65],
  [64, 256, 512],
  [1, 1000, 300],
  [5, 70, 600], // K spans several K blocks of the blocked kernel, N not a multiple of 4
];

const TOL = 1e-5;
const hasOrt = backendName() === 'ort';

for (const [M, N, K] of SHAPES) {
  for (const withBias of [false, true]) {
    const label = `${M}x${N}x${K}${withBias ? ' +bias' : ''}`;
    const x = randn(M * K, 1000 + M);
    const w = randn(N * K, 2000 + N);
    const bias = withBias ? randn(N, 3000 + N) : undefined;

    test(`linearBlocked matches linearNaive ${label}`, () => {
      const ref = linearNaive(x, w, M, N, K, bias);
      assert.ok(relErr(linearBlocked(x, w, M, N, K, bias), ref) < TOL);
    });

    test(`linear (dispatching) matches linearNaive ${label}`, async () => {
      const ref = linearNaive(x, w, M, N, K, bias);
      assert.ok(relErr(await linear(x, w, M, N, K, bias), ref) < TOL);
    });

    test(`linearOrt matches linearNaive ${label}`, { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
      const ref = linearNaive(x, w, M, N, K, bias);
      const err = relErr(await linearOrt(x, w, M, N, K, bias), ref);
      assert.ok(err < TOL, `relative error ${err}`);
    });
  }
}

test('linearNaive matches a hand-computed product', () => {
  // x = [[1, 2], [3, 4]], w = [[1, 0], [1, -1], [2, 1]], bias = [0.5, 0, -1]
  const y = linearNaive(new Float32Array([1, 2, 3, 4]), new Float32Array([1, 0, 1, -1, 2, 1]), 2, 3, 2, new Float32Array([0.5, 0, -1]));
  assert.deepEqual([...y], [1.5, -1, 3, 3.5, -1, 9]);
});

for (const [M, N, K] of [[1, 1, 1], [2, 3, 4], [9, 31, 17], [64, 128, 96], [1, 300, 200]] as [number, number, number][]) {
  const label = `${M}x${N}x${K}`;
  const a = randn(M * K, 4000 + K);
  const b = randn(K * N, 5000 + N);

  test(`matmulBlocked matches matmulNaive ${label}`, () => {
    assert.ok(relErr(matmulBlocked(a, b, M, N, K), matmulNaive(a, b, M, N, K)) < TOL);
  });

  test(`matmul (dispatching) matches matmulNaive ${label}`, async () => {
    assert.ok(relErr(await matmul(a, b, M, N, K), matmulNaive(a, b, M, N, K)) < TOL);
  });

  test(`matmulOrt matches matmulNaive ${label}`, { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
    assert.ok(relErr(await matmulOrt(a, b, M, N, K), matmulNaive(a, b, M, N, K)) < TOL);
  });
}

test('matmulNaive matches linearNaive on a transposed operand', () => {
  const [M, N, K] = [4, 6, 5];
  const a = randn(M * K, 7);
  const w = randn(N * K, 8); // w: [N, K]
  const b = new Float32Array(K * N); // b = wᵀ: [K, N]
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) b[k * N + n] = w[n * K + k];
  assert.ok(relErr(matmulNaive(a, b, M, N, K), linearNaive(a, w, M, N, K)) < 1e-12);
});

test('linearOrt reads subarray views (one expert of a stacked [E, out, in] tensor)', { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
  const [E, M, N, K] = [3, 8, 40, 24];
  const stacked = randn(E * N * K, 11);
  const xs = randn(2 * M * K, 12);
  const x = xs.subarray(M * K); // second half: a view with a non-zero byteOffset
  const w = stacked.subarray(2 * N * K, 3 * N * K); // expert 2
  assert.ok(relErr(await linearOrt(x, w, M, N, K), linearNaive(x, w, M, N, K)) < TOL);
});

test('linear reuses one cached session per graph', { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
  const [M, N, K] = [32, 48, 40];
  assert.ok(M * N * K >= LINEAR_SMALL_MNK, 'shape must take the ORT path');
  const x = randn(M * K, 21);
  const w = randn(N * K, 22);
  await clearSessionCache();
  await linear(x, w, M, N, K);
  assert.equal(sessionCacheSize(), 1, 'the first ORT-sized call builds the Gemm session');
  await linear(x, w, M, N, K);
  await linear(randn(2 * M * K, 23), w, 2 * M, N, K); // a new M must not build a new session
  assert.equal(sessionCacheSize(), 1);
  await linear(x, w, M, N, K, randn(N, 24)); // the bias graph is a second graph
  await linear(x, w, M, N, K, randn(N, 25));
  assert.equal(sessionCacheSize(), 2);
});

test('tiny problems stay in JS (no session is built)', { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
  await clearSessionCache();
  await linear(randn(3 * 2, 1), randn(5 * 2, 2), 3, 5, 2);
  await matmul(randn(3 * 2, 1), randn(2 * 5, 2), 3, 5, 2);
  assert.equal(sessionCacheSize(), 0);
});

test('benchGemm returns one row per backend and size, naive only on small sizes', async () => {
  const rows = await benchGemm({ sizes: [[2, 64, 32], [65, 1024, 1024]], seconds: 0.01, backends: ['ort', 'ts-blocked', 'ts-naive'] });
  const small = rows.filter((r) => r.M === 2).map((r) => r.backend);
  const big = rows.filter((r) => r.M === 65).map((r) => r.backend);
  // The bench measures every backend that loads, whatever MOEPRESS_BACKEND selects.
  const ortLoads = loadOrt() !== null;
  assert.deepEqual(small, ortLoads ? ['ort', 'ts-blocked', 'ts-naive'] : ['ts-blocked', 'ts-naive']);
  assert.deepEqual(big, ortLoads ? ['ort', 'ts-blocked'] : ['ts-blocked']);
  for (const r of rows) assert.ok(r.gflops > 0 && r.msPerCall > 0 && r.calls >= 1, JSON.stringify(r));
});

test('kernels reject mismatched shapes with the shape in the message', async () => {
  const x = randn(6, 1);
  const w = randn(6, 2);
  assert.throws(() => linearNaive(x, w, 2, 2, 4), /x \[M=2, K=4\] needs 8 values, got 6/);
  assert.throws(() => linearBlocked(x, w, 2, 3, 3), /w \[N=3, K=3\] needs 9 values/);
  assert.throws(() => linearNaive(x, w, 2, 2, 3, new Float32Array(3)), /bias \[N=2\]/);
  assert.throws(() => matmulNaive(x, w, 2, 2, 2), /a \[M=2, K=2\]/);
  await assert.rejects(linear(x, w, 2, 2, 4), /needs 8 values/);
});

test('empty problems return the bias or nothing', async () => {
  const bias = randn(3, 5);
  assert.deepEqual([...(await linear(new Float32Array(0), new Float32Array(0), 2, 3, 0, bias))], [...bias, ...bias]);
  assert.equal((await linear(new Float32Array(0), randn(12, 6), 0, 3, 4)).length, 0);
});

test('MOEPRESS_BACKEND=ts forces the TS kernels', async () => {
  const saved = process.env.MOEPRESS_BACKEND;
  process.env.MOEPRESS_BACKEND = 'ts';
  try {
    assert.equal(backendName(), 'ts');
    const [M, N, K] = [32, 64, 48];
    const x = randn(M * K, 31);
    const w = randn(N * K, 32);
    assert.ok(relErr(await linear(x, w, M, N, K), linearNaive(x, w, M, N, K)) < TOL);
  } finally {
    if (saved === undefined) delete process.env.MOEPRESS_BACKEND;
    else process.env.MOEPRESS_BACKEND = saved;
  }
});

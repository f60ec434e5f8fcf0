/**
 * The training kernels against their naive twins (STYLE rule 3): gemm-grad.ts aᵀ·b through ORT
 * (Gemm transA) and blocked TS, pointwise.ts row softmax and sigmoid through ORT.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng } from '../src/tensor/random.js';
import { matmulTN, matmulTNBlocked, matmulTNNaive, matmulTNOrt } from '../src/train/gemm-grad.js';
import { sigmoid, sigmoidNaive, sigmoidOrt, softmaxRows, softmaxRowsNaive, softmaxRowsOrt } from '../src/train/pointwise.js';
import { assertClose } from './helpers/assert-close.js';

// [R, M, N]: degenerate, odd, K-blocked and ORT-sized shapes
const SHAPES: [number, number, number][] = [[1, 1, 1], [3, 5, 2], [17, 33, 65], [300, 7, 9], [64, 256, 128], [513, 40, 70]];

test('matmulTN: ORT, blocked and dispatching kernels equal the naive float64-accumulating twin', async () => {
  const r = new Rng(5);
  for (const [R, M, N] of SHAPES) {
    const a = r.normals(R * M);
    const b = r.normals(R * N);
    const ref = matmulTNNaive(a, b, R, M, N);
    assertClose(matmulTNBlocked(a, b, R, M, N), ref, 1e-6, `blocked ${R}x${M}x${N}`);
    assertClose(await matmulTNOrt(a, b, R, M, N), ref, 1e-5, `ort ${R}x${M}x${N}`);
    assertClose(await matmulTN(a, b, R, M, N), ref, 1e-5, `dispatch ${R}x${M}x${N}`);
  }
});

test('matmulTN: the naive twin matches a hand-computed product; bad lengths name the operand', async () => {
  // a = [[1, 2], [3, 4], [5, 6]] (R=3, M=2), b = [[1], [-1], [2]] (N=1): aᵀb = [1-3+10, 2-4+12]
  const y = matmulTNNaive(Float32Array.from([1, 2, 3, 4, 5, 6]), Float32Array.from([1, -1, 2]), 3, 2, 1);
  assert.deepEqual(Array.from(y), [8, 10]);
  assert.throws(() => matmulTNNaive(new Float32Array(5), new Float32Array(3), 3, 2, 1), /a \[R=3, M=2\] needs 6/);
  await assert.rejects(() => matmulTN(new Float32Array(6), new Float32Array(4), 3, 2, 1), /b \[R=3, N=1\] needs 3/);
  assert.equal((await matmulTN(new Float32Array(0), new Float32Array(0), 0, 3, 2)).length, 6, 'empty R gives zeros of [M, N]');
});

test('pointwise: ORT row softmax (with -Infinity masks) and sigmoid equal their naive twins', async () => {
  const r = new Rng(6);
  for (const [R, N] of [[1, 1], [3, 7], [512, 256], [64, 4096]] as const) {
    const x = r.normals(R * N, 4);
    for (let i = 0; i < x.length; i += 3) if (i % N !== 0) x[i] = -Infinity; // keep column 0 finite
    const ref = softmaxRowsNaive(x, R, N);
    assertClose(await softmaxRowsOrt(x, R, N), ref, 1e-6, `softmax ${R}x${N}`);
    assertClose(await softmaxRows(x, R, N), ref, 1e-6, `softmax dispatch ${R}x${N}`);
    for (let i = 0; i < x.length; i += 3) if (i % N !== 0) assert.equal(ref[i], 0, 'masked entries get probability 0');
  }
  // MLAS's Sigmoid (also the inference FFN's, tensor/ffn-ort.ts) is an approximation with absolute
  // error below 2e-7: relative error is large only in the far tail where σ(x) < 1e-7
  for (const n of [1, 5, 100000]) {
    const x = r.normals(n, 5);
    const ref = sigmoidNaive(x);
    for (const [what, y] of [['ort', await sigmoidOrt(x)], ['dispatch', await sigmoid(x)]] as const) {
      let worst = 0;
      for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(y[i] - ref[i]));
      assert.ok(worst < 2e-7, `sigmoid ${what} ${n}: absolute error ${worst}`);
    }
  }
});

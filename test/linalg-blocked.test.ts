/** Blocked Cholesky and triangular inverse (tensor/linalg/blocked.ts) against their dense.ts twins. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BLOCKED_LEAF, choleskyBlocked, upperInverseBlocked } from '../src/tensor/linalg/blocked.js';
import { cholesky, upperInverse } from '../src/tensor/linalg/dense.js';
import { Rng } from '../src/tensor/random.js';

/** XᵀX + 0.1·n·I of a Gaussian X: [T, n], float64: symmetric positive definite, moderately conditioned. */
function spd(n: number, T: number, seed: number): Float64Array {
  const X = new Rng(seed).normals(T * n);
  const G = new Float64Array(n * n);
  for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) {
    const xi = X[t * n + i];
    for (let j = 0; j < n; j++) G[i * n + j] += xi * X[t * n + j];
  }
  for (let i = 0; i < n; i++) G[i * n + i] += 0.1 * n;
  return G;
}

function maxRelDiff(a: Float64Array, b: Float64Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

test('choleskyBlocked and upperInverseBlocked agree with the float64 kernels, on awkward sizes above the leaf', async () => {
  for (const n of [BLOCKED_LEAF + 1, 333, 600]) {
    const G = spd(n, n + 50, n);
    const R = await choleskyBlocked(G, n);
    const R0 = cholesky(G, n)!;
    assert.ok(R !== null);
    assert.ok(maxRelDiff(R, R0) < 1e-5, `n = ${n}: chol ${maxRelDiff(R, R0)}`);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(R[i * n + j], 0);
    const X = await upperInverseBlocked(R0, n);
    const X0 = upperInverse(R0, n);
    assert.ok(maxRelDiff(X, X0) < 1e-5, `n = ${n}: inverse ${maxRelDiff(X, X0)}`);
  }
  // at or below the leaf size they are the dense kernels
  const G = spd(40, 60, 1);
  assert.deepEqual(await choleskyBlocked(G, 40), cholesky(G, 40));
});

test('choleskyBlocked returns null for a matrix that is not positive definite (the failure in a trailing block)', async () => {
  const n = 300;
  const G = spd(n, n + 50, 2);
  G[(n - 1) * n + n - 1] = -1;
  assert.equal(await choleskyBlocked(G, n), null);
});

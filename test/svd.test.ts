import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cholesky,
  energy,
  energyCurve,
  frobeniusSq,
  lowRank,
  orthRows,
  qr,
  qrNaive,
  rankForEnergy,
  reconstruct,
  svdNaive,
  svdValues,
  symEig,
  truncatedSvd,
  upperInverse,
} from '../src/tensor/svd.js';
import { Rng } from '../src/tensor/random.js';
import { relErr } from './helpers/assert-close.js';

// ---------------------------------------------------------------------------------------------
// float64 helpers

/** a: [m, k], b: [k, n] -> [m, n] in float64. */
function mm(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < k; t++) {
      const v = a[i * k + t];
      for (let j = 0; j < n; j++) y[i * n + j] += v * b[t * n + j];
    }
  }
  return y;
}

/** U: [m, k], S: [k], Vt: [k, n] -> U diag(S) Vt: [m, n], using the first r triplets. */
function usv(U: ArrayLike<number>, S: ArrayLike<number>, Vt: ArrayLike<number>, m: number, k: number, n: number, r = k): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let t = 0; t < r; t++) {
      const v = U[i * k + t] * S[t];
      for (let j = 0; j < n; j++) y[i * n + j] += v * Vt[t * n + j];
    }
  }
  return y;
}

/** max |Xᵀ X − I| for X: [m, k] (columns) or, with rows = true, max |X Xᵀ − I| for X: [k, m]. */
function orthoError(X: ArrayLike<number>, m: number, k: number, rows = false): number {
  let d = 0;
  for (let a = 0; a < k; a++) {
    for (let b = a; b < k; b++) {
      let s = 0;
      for (let i = 0; i < m; i++) s += rows ? X[a * m + i] * X[b * m + i] : X[i * k + a] * X[i * k + b];
      d = Math.max(d, Math.abs(s - (a === b ? 1 : 0)));
    }
  }
  return d;
}

function gaussian(n: number, seed: number): Float32Array {
  return new Rng(seed).normals(n);
}

/** A = U diag(sigma) Vᵀ: [m, n] with random orthonormal U, V (float32 storage of a float64 product). */
function withSpectrum(m: number, n: number, sigma: number[], seed: number): Float32Array {
  const k = sigma.length;
  const U = qrNaive(gaussian(m * k, seed), m, k).Q;
  const V = qrNaive(gaussian(n * k, seed + 1), n, k).Q;
  const Vt = new Float64Array(k * n);
  for (let i = 0; i < n; i++) for (let t = 0; t < k; t++) Vt[t * n + i] = V[i * k + t];
  return Float32Array.from(usv(U, sigma, Vt, m, k, n));
}

/** Exact singular values of a float32 matrix, float64. */
function exactS(A: Float32Array, m: number, n: number): Float64Array {
  return svdNaive(A, m, n).S;
}

/** ‖A − A_r‖_F for the best rank-r approximation (Eckart-Young), from exact singular values. */
function optimalError(S: ArrayLike<number>, r: number): number {
  let s = 0;
  for (let i = r; i < S.length; i++) s += S[i] * S[i];
  return Math.sqrt(s);
}

function frobDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return Math.sqrt(s);
}

// ---------------------------------------------------------------------------------------------
// svdNaive (the exact reference)

test('svdNaive: diagonal matrix gives |diagonal| sorted, signs moved into the vectors', () => {
  const A = [3, 0, 0, 0, -1, 0, 0, 0, 2];
  const { U, S, Vt } = svdNaive(A, 3, 3);
  assert.ok(relErr(S, [3, 2, 1]) < 1e-15);
  assert.ok(relErr(usv(U, S, Vt, 3, 3, 3), A) < 1e-15);
});

test('svdNaive: rank-1 outer product has one nonzero value and still orthonormal U, V', () => {
  const a = [1, -2, 3, 0.5];
  const b = [2, 1, -1];
  const A = a.flatMap((x) => b.map((y) => x * y)); // [4, 3]
  const { U, S, Vt } = svdNaive(A, 4, 3);
  const expected = Math.hypot(...a) * Math.hypot(...b);
  assert.ok(Math.abs(S[0] - expected) / expected < 1e-14);
  assert.ok(S[1] < 1e-14 * expected && S[2] < 1e-14 * expected, `trailing values ${S[1]}, ${S[2]}`);
  assert.ok(orthoError(U, 4, 3) < 1e-14);
  assert.ok(orthoError(Vt, 3, 3, true) < 1e-14);
  assert.ok(relErr(usv(U, S, Vt, 4, 3, 3), A) < 1e-14);
});

test('svdNaive: 3x2 hand case', () => {
  // AᵀA = [[17, 8], [8, 17]]: eigenvalues 25, 9 with v = (1, 1)/√2, (1, −1)/√2;
  // u = A v / σ = (1, 1, 0)/√2 and (1, −1, 4)/(3√2).
  const A = [3, 2, 2, 3, 2, -2];
  const { U, S, Vt } = svdNaive(A, 3, 2);
  assert.ok(relErr(S, [5, 3]) < 1e-15);
  const r2 = Math.SQRT1_2;
  const u = [[r2, r2, 0], [r2 / 3, -r2 / 3, (4 * r2) / 3]];
  const v = [[r2, r2], [r2, -r2]];
  for (let j = 0; j < 2; j++) {
    const sign = Math.sign(Vt[j * 2]) * Math.sign(v[j][0]); // singular vectors are defined up to sign
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(U[i * 2 + j] * sign - u[j][i]) < 1e-14);
    for (let i = 0; i < 2; i++) assert.ok(Math.abs(Vt[j * 2 + i] * sign - v[j][i]) < 1e-14);
  }
});

for (const [m, n] of [[1, 1], [1, 9], [9, 1], [7, 7], [40, 13], [13, 40], [64, 50]] as [number, number][]) {
  test(`svdNaive properties on a random ${m}x${n}`, () => {
    const A = gaussian(m * n, 100 + m * 7 + n);
    const k = Math.min(m, n);
    const { U, S, Vt } = svdNaive(A, m, n);
    assert.equal(U.length, m * k);
    assert.equal(Vt.length, k * n);
    for (let i = 1; i < k; i++) assert.ok(S[i] <= S[i - 1] && S[i] >= 0);
    assert.ok(orthoError(U, m, k) < 1e-12, `U orthonormality ${orthoError(U, m, k)}`);
    assert.ok(orthoError(Vt, n, k, true) < 1e-12, `V orthonormality ${orthoError(Vt, n, k, true)}`);
    const err = relErr(usv(U, S, Vt, m, k, n), A);
    assert.ok(err < 1e-10, `reconstruction ${err}`);
  });
}

test('svdNaive squares to symEig of the Gram matrix', () => {
  const [m, n] = [30, 12];
  const A = gaussian(m * n, 5);
  const At = new Float64Array(n * m);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) At[j * m + i] = A[i * n + j];
  const { values } = symEig(mm(At, A, n, m, n), n);
  const S = svdNaive(A, m, n).S;
  assert.ok(relErr(S.map((s) => s * s), values) < 1e-13);
});

// ---------------------------------------------------------------------------------------------
// symEig

test('symEig: 2x2 hand case', () => {
  const { values, vectors } = symEig([2, 1, 1, 2], 2);
  assert.ok(relErr(values, [3, 1]) < 1e-15);
  assert.ok(Math.abs(Math.abs(vectors[0]) - Math.SQRT1_2) < 1e-15); // (1, 1)/√2 up to sign
  assert.ok(Math.abs(vectors[0] - vectors[2]) < 1e-15);
});

for (const n of [1, 2, 7, 30, 64]) {
  test(`symEig on a random symmetric ${n}x${n}: A v = λ v, sorted, orthonormal`, () => {
    const g = gaussian(n * n, 300 + n);
    const A = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) A[i * n + j] = g[i * n + j] + g[j * n + i];
    const { values, vectors } = symEig(A, n);
    for (let i = 1; i < n; i++) assert.ok(values[i] <= values[i - 1]);
    const AV = mm(A, vectors, n, n, n);
    const VL = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) VL[i * n + j] = vectors[i * n + j] * values[j];
    const err = relErr(AV, VL);
    assert.ok(err < 1e-12, `residual ${err}`);
    assert.ok(orthoError(vectors, n, n) < 1e-13);
  });
}

// ---------------------------------------------------------------------------------------------
// Cholesky, QR

test('cholesky and upperInverse: G = RᵀR and R R⁻¹ = I', () => {
  const n = 20;
  const X = gaussian(40 * n, 11);
  const Xt = new Float64Array(n * 40);
  for (let i = 0; i < 40; i++) for (let j = 0; j < n; j++) Xt[j * 40 + i] = X[i * n + j];
  const G = mm(Xt, X, n, 40, n);
  const R = cholesky(G, n);
  assert.ok(R !== null);
  const Rt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) Rt[j * n + i] = R[i * n + j];
  assert.ok(relErr(mm(Rt, R, n, n, n), G) < 1e-14);
  const I = mm(R, upperInverse(R, n), n, n, n);
  assert.ok(orthoError(I, n, n) < 1e-13); // I is its own Gram iff I = identity (up to signs)
  for (let i = 0; i < n; i++) assert.ok(Math.abs(I[i * n + i] - 1) < 1e-13);
  assert.equal(cholesky([1, 2, 2, 1], 2), null); // indefinite
});

test('qrNaive: orthonormal Q, upper R with diag >= 0, Q R = A, even with a dependent column', () => {
  const [m, n] = [25, 6];
  const A = Float64Array.from(gaussian(m * n, 12));
  for (let i = 0; i < m; i++) A[i * n + 3] = A[i * n + 1] * 2; // column 3 = 2 · column 1
  const { Q, R } = qrNaive(A, m, n);
  assert.ok(orthoError(Q, m, n) < 1e-14);
  for (let i = 0; i < n; i++) {
    assert.ok(R[i * n + i] >= 0);
    for (let j = 0; j < i; j++) assert.equal(R[i * n + j], 0);
  }
  assert.ok(Math.abs(R[3 * n + 3]) < 1e-13);
  assert.ok(relErr(mm(Q, R, m, n, n), A) < 1e-14);
  assert.throws(() => qrNaive(A, n, m), /tall/);
});

for (const [m, n] of [[1, 1], [30, 1], [50, 50], [300, 20], [2000, 64]] as [number, number][]) {
  test(`qr (CholeskyQR2) matches qrNaive (Householder) on a random ${m}x${n}`, async () => {
    const A = gaussian(m * n, 400 + n);
    const fast = await qr(A, m, n);
    const ref = qrNaive(A, m, n);
    assert.ok(orthoError(fast.Q, m, n) < 2e-6, `orthonormality ${orthoError(fast.Q, m, n)}`);
    assert.ok(relErr(fast.Q, ref.Q) < 1e-4, `Q ${relErr(fast.Q, ref.Q)}`);
    assert.ok(relErr(fast.R, ref.R) < 1e-5, `R ${relErr(fast.R, ref.R)}`);
    assert.ok(relErr(mm(fast.Q, fast.R, m, n, n), A) < 1e-5);
  });
}

/** X: [l, len] -> the max |X − Rᵀ Q| relative to ‖X‖ for an orthRows result. */
function factorError(X: Float32Array, res: { Q: Float32Array; R: Float64Array }, l: number, len: number): number {
  const Rt = new Float64Array(l * l);
  for (let i = 0; i < l; i++) for (let j = 0; j < l; j++) Rt[j * l + i] = res.R[i * l + j];
  return relErr(mm(Rt, res.Q, l, l, len), X);
}

test('orthRows: CholeskyQR2 on a well-conditioned block', async () => {
  const [l, len] = [12, 500];
  const X = gaussian(l * len, 13);
  const res = await orthRows(X, l, len);
  assert.equal(res.method, 'cholqr');
  assert.ok(orthoError(res.Q, len, l, true) < 2e-6);
  assert.ok(factorError(X, res, l, len) < 1e-6);
});

test('orthRows on dependent rows: orthonormal rows that still factor X (either method)', async () => {
  const [l, len] = [12, 500];
  const X = gaussian(l * len, 14);
  X.copyWithin(5 * len, 2 * len, 3 * len); // row 5 = row 2: the float32 Gram leaves a noise pivot
  const res = await orthRows(X, l, len);
  assert.ok(orthoError(res.Q, len, l, true) < 2e-6, `${res.method}: ${orthoError(res.Q, len, l, true)}`);
  assert.ok(factorError(X, res, l, len) < 5e-6); // float32 rounding of X itself is 6e-8 per entry
});

test('orthRows falls back to Householder on a zero row', async () => {
  const [l, len] = [12, 500];
  const X = gaussian(l * len, 15);
  X.fill(0, 7 * len, 8 * len);
  const res = await orthRows(X, l, len);
  assert.equal(res.method, 'householder');
  assert.ok(orthoError(res.Q, len, l, true) < 1e-6);
  assert.ok(factorError(X, res, l, len) < 1e-6);
});

// ---------------------------------------------------------------------------------------------
// truncatedSvd against the exact SVD

const decay = (k: number, rate: number) => Array.from({ length: k }, (_, i) => rate ** i);

test('truncatedSvd on a decaying spectrum (σ_i = 0.8^i, 200x120, rank 10) matches the exact SVD', async () => {
  const [m, n, r] = [200, 120, 10];
  const A = withSpectrum(m, n, decay(n, 0.8), 21);
  const exact = svdNaive(A, m, n);
  const { U, S, Vt } = await truncatedSvd(A, m, n, r, { seed: 1 });
  assert.equal(U.length, m * r);
  assert.equal(S.length, r);
  assert.equal(Vt.length, r * n);
  for (let i = 0; i < r; i++) {
    const e = Math.abs(S[i] - exact.S[i]) / exact.S[i];
    assert.ok(e < 1e-4, `σ_${i}: ${S[i]} vs ${exact.S[i]} (relative ${e})`);
  }
  assert.ok(orthoError(U, m, r) < 1e-5);
  assert.ok(orthoError(Vt, n, r, true) < 1e-5);
  const err = frobDiff(usv(U, S, Vt, m, r, n), A);
  const opt = optimalError(exact.S, r);
  assert.ok(err <= 1.01 * opt, `error ${err} vs optimal ${opt}`);
});

test('truncatedSvd on an exactly rank-5 matrix recovers it', async () => {
  const [m, n] = [150, 90];
  const A = withSpectrum(m, n, [5, 4, 3, 2, 1], 22);
  const { U, S, Vt } = await truncatedSvd(A, m, n, 5, { seed: 2 });
  assert.ok(relErr(S, [5, 4, 3, 2, 1]) < 1e-6);
  const err = relErr(usv(U, S, Vt, m, 5, n), A);
  assert.ok(err < 1e-5, `relative reconstruction error ${err}`);
});

// A Gaussian matrix has a flat spectrum, the hardest case for a randomized method: with the
// default two power iterations the error stays within a few percent of the optimum.
test('truncatedSvd through the GEMM backend (300x160, rank 32, Gaussian: flat spectrum)', async () => {
  const [m, n, r] = [300, 160, 32];
  const A = gaussian(m * n, 23);
  const exact = exactS(A, m, n);
  const opt = optimalError(exact, r);
  const { U, S, Vt } = await truncatedSvd(A, m, n, r, { seed: 3 });
  const err = frobDiff(usv(U, S, Vt, m, r, n), A);
  assert.ok(err <= 1.03 * opt, `error ${err} vs optimal ${opt}`);
  const more = await truncatedSvd(A, m, n, r, { seed: 3, powerIters: 6 });
  const errMore = frobDiff(usv(more.U, more.S, more.Vt, m, r, n), A);
  assert.ok(errMore < err && errMore <= 1.01 * opt, `6 power iterations: ${errMore} vs optimal ${opt}`);
  for (let i = 0; i < r; i++) assert.ok(S[i] <= exact[i] * (1 + 1e-5), 'Ritz values never exceed the true ones');
});

const SHAPES: [number, number, number, string][] = [
  [60, 200, 8, 'm < n'],
  [1, 50, 1, 'm = 1'],
  [50, 1, 1, 'n = 1'],
  [40, 25, 25, 'rank = min(m, n), tall'],
  [25, 40, 25, 'rank = min(m, n), wide'],
  [30, 30, 3, 'square, no oversampling room past 30'],
];
for (const [m, n, r, label] of SHAPES) {
  test(`truncatedSvd awkward shape ${m}x${n} rank ${r} (${label})`, async () => {
    const A = withSpectrum(m, n, decay(Math.min(m, n), 0.7), 30 + m + n);
    const exact = svdNaive(A, m, n);
    const { U, S, Vt } = await truncatedSvd(A, m, n, r, { seed: 4 });
    assert.ok(relErr(S, exact.S.subarray(0, r)) < 1e-5);
    assert.ok(orthoError(U, m, r) < 1e-5);
    assert.ok(orthoError(Vt, n, r, true) < 1e-5);
    const err = frobDiff(usv(U, S, Vt, m, r, n), A);
    const opt = optimalError(exact.S, r);
    assert.ok(err <= 1.01 * opt + 1e-5 * Math.sqrt(frobeniusSq(A)), `error ${err} vs optimal ${opt}`);
  });
}

test('truncatedSvd rejects a rank above min(m, n), a non-positive rank and a wrong length', async () => {
  const A = gaussian(20 * 8, 40);
  await assert.rejects(truncatedSvd(A, 20, 8, 9), /rank 9 exceeds min\(m, n\) = 8/);
  await assert.rejects(truncatedSvd(A, 20, 8, 0), /rank must be a positive integer/);
  await assert.rejects(truncatedSvd(A, 20, 9, 2), /needs 180 values, got 160/);
  await assert.rejects(truncatedSvd(A, 20, 8, 2, { powerIters: -1 }), /powerIters/);
});

test('truncatedSvd of the zero matrix: zero values, orthonormal vectors', async () => {
  const { U, S, Vt } = await truncatedSvd(new Float32Array(12 * 7), 12, 7, 3);
  assert.deepEqual([...S], [0, 0, 0]);
  assert.ok(orthoError(U, 12, 3) === 0 && orthoError(Vt, 7, 3, true) === 0);
});

test('truncatedSvd is deterministic for a seed, and other seeds agree to rounding', async () => {
  const [m, n, r] = [200, 120, 10];
  const A = withSpectrum(m, n, decay(n, 0.8), 24);
  const a = await truncatedSvd(A, m, n, r, { seed: 7 });
  const b = await truncatedSvd(A, m, n, r, { seed: 7 });
  const c = await truncatedSvd(A, m, n, r, { seed: 8 });
  for (const key of ['U', 'S', 'Vt'] as const) {
    assert.deepEqual(Buffer.from(a[key].buffer), Buffer.from(b[key].buffer), `${key} bytes differ for one seed`);
  }
  assert.notDeepEqual(Buffer.from(a.U.buffer), Buffer.from(c.U.buffer));
  assert.ok(relErr(c.S, a.S) < 1e-5);
});

test('truncatedSvd without power iterations is still near-optimal on a decaying spectrum', async () => {
  const [m, n, r] = [200, 120, 10];
  const A = withSpectrum(m, n, decay(n, 0.8), 25);
  const exact = svdNaive(A, m, n);
  const { U, S, Vt } = await truncatedSvd(A, m, n, r, { powerIters: 0, oversample: 10, seed: 5 });
  const err = frobDiff(usv(U, S, Vt, m, r, n), A);
  assert.ok(err <= 1.05 * optimalError(exact.S, r), `error ${err} vs optimal ${optimalError(exact.S, r)}`);
});

// ---------------------------------------------------------------------------------------------
// lowRank, reconstruct, energy

test('lowRank factors multiply back to the best rank-r approximation', async () => {
  const [m, n, r] = [120, 80, 6];
  const A = withSpectrum(m, n, decay(n, 0.75), 26);
  const { left, right } = await lowRank(A, m, n, r, { seed: 6 });
  assert.equal(left.length, m * r);
  assert.equal(right.length, r * n);
  const exact = svdNaive(A, m, n);
  const best = usv(exact.U, exact.S, exact.Vt, m, n, n, r); // A_r from the exact SVD
  const approx = await reconstruct(left, right, m, r, n);
  assert.ok(relErr(approx, best) < 1e-4, `vs exact A_r: ${relErr(approx, best)}`);
});

test('energyCurve, rankForEnergy and energy agree with the exact spectrum', async () => {
  const [m, n] = [90, 60];
  const A = withSpectrum(m, n, decay(n, 0.9), 27);
  const S = svdNaive(A, m, n).S;
  const total = frobeniusSq(A);
  const curve = energyCurve(S, total);
  assert.ok(Math.abs(curve[n - 1] - 1) < 1e-6);
  const r = rankForEnergy(curve, 0.9);
  assert.ok(curve[r - 1] >= 0.9 && curve[r - 2] < 0.9);
  const e = await energy(A, m, n, r, { seed: 9 });
  assert.ok(Math.abs(e - curve[r - 1]) < 1e-5, `energy ${e} vs exact ${curve[r - 1]}`);
  const vals = await svdValues(A, m, n, 4);
  assert.ok(relErr(vals, S.subarray(0, 4)) < 1e-5);
});

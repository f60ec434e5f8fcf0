/** Activation-whitened low rank (calib/whiten.ts) against the plain truncated SVD. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hessianError } from '../src/compress/calib/hessian.js';
import { timesUpperT, whitenedLowRank, whitener } from '../src/compress/calib/whiten.js';
import { accurateSvdOptions, lowRank, reconstruct, svdNaive, upperInverse } from '../src/tensor/svd.js';
import { Rng } from '../src/tensor/random.js';

/** H = Σ x xᵀ for inputs with a few strong, correlated directions. */
function correlatedHessian(n: number, T: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const A = rng.normals(n * n);
  const H = new Float64Array(n * n);
  const x = new Float64Array(n);
  for (let t = 0; t < T; t++) {
    const z = rng.normals(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += A[i * n + k] * z[k] * Math.exp(-4 * k / n);
      x[i] = s;
    }
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j] += x[i] * x[j];
  }
  return H;
}

test('whitenedLowRank: lower output error tr(ΔW H ΔWᵀ) than the plain SVD at the same rank, on correlated inputs', async () => {
  const out = 24, inp = 40, rank = 6;
  const H = correlatedHessian(inp, 300, 2);
  const w = new Rng(3).normals(out * inp, 0.1);
  const white = await whitenedLowRank(w, out, inp, H, rank, { seed: 1 });
  const plain = await lowRank(w, out, inp, rank);
  const eW = hessianError(w, await reconstruct(white.left, white.right, out, rank, inp), H);
  const eP = hessianError(w, await reconstruct(plain.left, plain.right, out, rank, inp), H);
  assert.ok(eW < 0.7 * eP, `whitened ${eW} vs plain ${eP}`);
});

test('whitenedLowRank: the error left is the tail of W·S\'s singular values (float64 SVD), up to the damping', async () => {
  const out = 12, inp = 16, rank = 4;
  const H = correlatedHessian(inp, 100, 5);
  const w = new Rng(4).normals(out * inp, 0.1);
  const damp = 1e-6;
  const white = await whitenedLowRank(w, out, inp, H, rank, { damp });
  const got = hessianError(w, await reconstruct(white.left, white.right, out, rank, inp), H);
  // W S with S Sᵀ = H via the float64 Jacobi SVD of W · chol: tail Σ σ² = min error (damping 1e-6 negligible)
  const mean = Array.from({ length: inp }, (_, i) => H[i * inp + i]).reduce((a, b) => a + b) / inp;
  const Hd = Float64Array.from(H);
  for (let i = 0; i < inp; i++) Hd[i * inp + i] += damp * mean;
  // Gram route: σ² of W S are the eigenvalues of W Hd Wᵀ; compute via the SVD of W S built from a Cholesky here
  const L = new Float64Array(inp * inp);
  for (let j = 0; j < inp; j++) {
    let s = Hd[j * inp + j];
    for (let k = 0; k < j; k++) s -= L[j * inp + k] ** 2;
    L[j * inp + j] = Math.sqrt(s);
    for (let i = j + 1; i < inp; i++) {
      let t = Hd[i * inp + j];
      for (let k = 0; k < j; k++) t -= L[i * inp + k] * L[j * inp + k];
      L[i * inp + j] = t / L[j * inp + j];
    }
  }
  const ws = new Float64Array(out * inp);
  for (let o = 0; o < out; o++) for (let j = 0; j < inp; j++) {
    let s = 0;
    for (let i = 0; i < inp; i++) s += w[o * inp + i] * L[i * inp + j];
    ws[o * inp + j] = s;
  }
  const { S } = svdNaive(ws, out, inp);
  let tail = 0;
  for (let i = rank; i < S.length; i++) tail += S[i] ** 2;
  assert.ok(Math.abs(got - tail) / tail < 1e-3, `${got} vs tail ${tail}`);
});

test('whitenedLowRank: with H = identity it reconstructs like the plain truncated SVD', async () => {
  const out = 10, inp = 14, rank = 3;
  const H = new Float64Array(inp * inp);
  for (let i = 0; i < inp; i++) H[i * inp + i] = 1;
  const w = new Rng(6).normals(out * inp, 0.1);
  const a = await whitenedLowRank(w, out, inp, H, rank, { damp: 0 });
  const b = await lowRank(w, out, inp, rank);
  const ra = await reconstruct(a.left, a.right, out, rank, inp);
  const rb = await reconstruct(b.left, b.right, out, rank, inp);
  let num = 0, den = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i] - rb[i]) ** 2;
    den += rb[i] ** 2;
  }
  assert.ok(Math.sqrt(num / den) < 1e-4, `${Math.sqrt(num / den)}`);
});

test('whitenedLowRank: a diagonal H (dead inputs included) takes the O(out·in) path and equals the Cholesky path', async () => {
  const out = 24, inp = 40, rank = 5;
  const rng = new Rng(12);
  const w = rng.normals(out * inp, 0.1);
  const H = new Float64Array(inp * inp);
  for (let j = 0; j < inp; j++) H[j * inp + j] = j % 9 === 4 ? 0 : 0.2 + 5 * rng.next();
  const fast = await whitenedLowRank(w, out, inp, H, rank, { seed: 3 });
  // the general path, by hand: S = Rᵀ from the damped Cholesky
  const { R, lambda } = whitener(H, inp, 0.01, 'test');
  const f = await lowRank(timesUpperT(w, out, inp, R), out, inp, rank, accurateSvdOptions(rank, out, inp, 3));
  const right = timesUpperT(f.right, rank, inp, upperInverse(R, inp));
  assert.ok(Math.abs(fast.lambda - lambda) <= 1e-12 * lambda);
  const a = await reconstruct(fast.left, fast.right, out, rank, inp);
  const b = await reconstruct(f.left, right, out, rank, inp);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  assert.ok(Math.sqrt(num / den) < 1e-4, `relative difference ${Math.sqrt(num / den)}`);
  assert.ok(hessianError(w, a, H) <= hessianError(w, b, H) * (1 + 1e-4));
});

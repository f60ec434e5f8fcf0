/**
 * Activation-whitened low rank (SVD-LLM / D²-MoE style): W: [out, in] ≈ L·R minimising the output
 * error on the matrix's own inputs, ‖(W − L R) X‖_F² = tr(ΔW H ΔWᵀ) with H = Σ x xᵀ, instead of ‖W − L R‖_F².
 *
 *   whitenedLowRank(w, out, inp, H, rank, opts?) -> { left: [out, rank], right: [rank, in], lambda }
 *
 * With H + λI = Rᵀ R (upper Cholesky, λ = damp · mean diag, calib/hessian.ts) and S = Rᵀ:
 * ‖ΔW X‖² = ‖ΔW S‖_F², so the best rank-r W S is its truncated SVD U Σ Vᵀ (Eckart–Young) and
 * L = U Σ, R = Vᵀ S⁻¹ = Vᵀ R⁻ᵀ. The error left is the tail Σ σ_i² of W S (up to the damping).
 * With H = identity (an uncalibrated expert) this is the plain truncated SVD.
 *
 *   whitener(H, n, damp, who) -> { R: [n, n] upper, lambda }: the Cholesky factor used above.
 *   timesUpperT(x, rows, n, U) -> x Uᵀ: [rows, n], the whitening (U = R) and un-whitening (U = R⁻¹) products.
 */
import { accurateSvdOptions, cholesky, lowRank, upperInverse } from '../../tensor/svd.js';
import { MoepressError } from '../../io/errors.js';
import { dampedHessian, liveDiagonal } from './hessian.js';

export interface WhitenOptions {
  /** Dampening as a fraction of mean diag(H) (default 0.01). */
  damp?: number;
  seed?: number;
}

export async function whitenedLowRank(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, rank: number, opts: WhitenOptions = {}): Promise<{ left: Float32Array; right: Float32Array; lambda: number }> {
  if (w.length !== out * inp) throw new MoepressError(`whitenedLowRank: w has ${w.length} entries, expected [${out}, ${inp}]`);
  if (isDiagonal(H, inp)) return diagonalLowRank(w, out, inp, H, rank, opts);
  const { R, lambda } = whitener(H, inp, opts.damp ?? 0.01, 'whitenedLowRank');
  const ws = timesUpperT(w, out, inp, R); // W S = W Rᵀ: [out, in]
  const f = await lowRank(ws, out, inp, rank, accurateSvdOptions(rank, out, inp, opts.seed ?? 0));
  // right = Vᵀ R⁻ᵀ
  return { left: f.left, right: timesUpperT(f.right, rank, inp, upperInverse(R, inp)), lambda };
}

/** Whether H: [n, n] has no nonzero entry off its diagonal (down's Σ a aᵀ when only its diagonal was kept). */
function isDiagonal(H: ArrayLike<number>, n: number): boolean {
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j && H[i * n + j] !== 0) return false;
  return true;
}

/**
 * The same with a diagonal H, in O(out·in) instead of a Cholesky of [in, in]: R = diag(r),
 * r_j = sqrt(d_j + λ) with the dampening of dampedHessian (dead inputs at the mean diagonal).
 */
async function diagonalLowRank(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, rank: number, opts: WhitenOptions): Promise<{ left: Float32Array; right: Float32Array; lambda: number }> {
  const { d, mean, live } = liveDiagonal(Float64Array.from({ length: inp }, (_, j) => H[j * inp + j]));
  const lam = live ? (opts.damp ?? 0.01) * mean : 0; // an all-zero H whitens by the identity, undamped
  const r = Float64Array.from(d, (v) => Math.sqrt(v + lam));
  const ws = new Float32Array(out * inp);
  for (let o = 0; o < out; o++) for (let j = 0; j < inp; j++) ws[o * inp + j] = w[o * inp + j] * r[j];
  const f = await lowRank(ws, out, inp, rank, accurateSvdOptions(rank, out, inp, opts.seed ?? 0));
  for (let k = 0; k < rank; k++) for (let j = 0; j < inp; j++) f.right[k * inp + j] /= r[j];
  return { left: f.left, right: f.right, lambda: lam };
}

/**
 * The upper Cholesky factor R of the damped Hessian, H + λI = Rᵀ R (dampedHessian), retrying with
 * ten times the dampening up to five times when H is numerically not positive definite.
 *   H: [n, n] -> R: [n, n] upper (row-major), λ
 */
export function whitener(H: ArrayLike<number>, n: number, damp: number, who: string): { R: Float64Array; lambda: number } {
  for (let attempt = 0; attempt < 5; attempt++, damp *= 10) {
    const d = dampedHessian(H, n, damp);
    const R = cholesky(d.H, n);
    if (R !== null) return { R, lambda: d.lambda };
  }
  throw new MoepressError(`${who}: the Hessian [${n}, ${n}] is not positive definite even with dampening`);
}

/**
 * X Uᵀ for an upper-triangular U: x: [rows, n], U: [n, n] upper -> [rows, n] (float32),
 * (X Uᵀ)[o, j] = Σ_{i >= j} X[o, i] U[j, i], accumulated in float64.
 */
export function timesUpperT(x: Float32Array, rows: number, n: number, U: Float64Array): Float32Array {
  const y = new Float32Array(rows * n);
  for (let o = 0; o < rows; o++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let i = j; i < n; i++) s += x[o * n + i] * U[j * n + i];
      y[o * n + j] = s;
    }
  }
  return y;
}

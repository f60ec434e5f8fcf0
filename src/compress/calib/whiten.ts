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
 */
import { accurateSvdOptions, cholesky, lowRank, upperInverse } from '../../tensor/svd.js';
import { MoepressError } from '../../io/errors.js';
import { dampedHessian } from './hessian.js';

export interface WhitenOptions {
  /** Dampening as a fraction of mean diag(H) (default 0.01). */
  damp?: number;
  seed?: number;
}

export async function whitenedLowRank(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, rank: number, opts: WhitenOptions = {}): Promise<{ left: Float32Array; right: Float32Array; lambda: number }> {
  if (w.length !== out * inp) throw new MoepressError(`whitenedLowRank: w has ${w.length} entries, expected [${out}, ${inp}]`);
  let damp = opts.damp ?? 0.01;
  let R: Float64Array | null = null;
  let lambda = 0;
  for (let attempt = 0; attempt < 5 && R === null; attempt++, damp *= 10) {
    const d = dampedHessian(H, inp, damp);
    lambda = d.lambda;
    R = cholesky(d.H, inp);
  }
  if (R === null) throw new MoepressError(`whitenedLowRank: the Hessian [${inp}, ${inp}] is not positive definite even with dampening`);
  // WS = W Rᵀ: [out, in]; (W Rᵀ)[o, j] = Σ_{i >= j} W[o, i] R[j, i]
  const ws = new Float32Array(out * inp);
  for (let o = 0; o < out; o++) {
    for (let j = 0; j < inp; j++) {
      let s = 0;
      for (let i = j; i < inp; i++) s += w[o * inp + i] * R[j * inp + i];
      ws[o * inp + j] = s;
    }
  }
  const f = await lowRank(ws, out, inp, rank, accurateSvdOptions(rank, out, inp, opts.seed ?? 0));
  const Ri = upperInverse(R, inp); // R⁻¹, upper
  // right = Vᵀ R⁻ᵀ: right[k, j] = Σ_{i >= j} Vt[k, i] Ri[j, i]
  const right = new Float32Array(rank * inp);
  for (let k = 0; k < rank; k++) {
    for (let j = 0; j < inp; j++) {
      let s = 0;
      for (let i = j; i < inp; i++) s += f.right[k * inp + i] * Ri[j * inp + i];
      right[k * inp + j] = s;
    }
  }
  return { left: f.left, right, lambda };
}

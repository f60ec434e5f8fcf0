/**
 * ResMoE's residual SVD with calibration (issue 5): one rank-r factorisation of an expert's
 * residual points P = [Δgate | Δup | Δdownᵀ]: [I, 3H], with one left factor [I, r] shared by the
 * three right factors [r, H] (gate/up: Δ ≈ L R_m; down: Δ ≈ (L R_down)ᵀ).
 *
 *   residualLowRank(d, I, H, rank, seed, weights?) -> { left: [I, r], right: { gate, up, down: [r, H] } }
 *
 * Each matrix's output error has its own Hessian on its *input* side: gate/up on H (Σ x xᵀ),
 * down on I (Σ a aᵀ). In P the gate/up inputs are columns and down's inputs are rows, so exact
 * whitening of all three is not one two-sided transform of P (its left side would have to be
 * chol(Σ a aᵀ) for down and the identity for gate/up). What *is* exact for any invertible T
 * (rows) and S (columns) is that the best rank r of T P S, un-transformed, keeps the shared left
 * factor: L = T⁻¹ L', R = R' S⁻¹. We take
 *   S = blockdiag(Rᵀ/s̄, Rᵀ/s̄, 1) with Σ x xᵀ + λI = Rᵀ R (calib/whiten.ts), s̄² its mean diagonal,
 *   T = diag(w),  w_i = sqrt(diag(Σ a aᵀ)_i / mean)          (calib/scales.ts inputScales),
 * which minimises Σ_i w_i² (‖ΔG_i S̃‖² + ‖ΔU_i S̃‖² + ‖ΔD_i‖²) with S̃ S̃ᵀ = Σ x xᵀ / s̄²:
 *   - down: exactly its output error under the diagonal of Σ a aᵀ (over the mean);
 *   - gate/up: their output error on the expert's inputs, with neuron i's pre-activation error
 *     weighted by how much activation a_i carries (a dead neuron's gate error does not reach the
 *     output; a busy one's does), the approximation;
 *   - the normalisations (mean-square 1 on both sides) keep the data-free balance between the
 *     blocks, and identity (or scaled identity) Hessians give exactly the plain SVD.
 * weights: { xtx: [H, H], rows: w [I] } for a calibrated expert; null: the plain SVD of P.
 */
import { accurateSvdOptions, lowRank, upperInverse } from '../../tensor/svd.js';
import { expertPoints } from '../barycenter.js';
import { MATRICES, type MatrixName } from '../parts.js';
import { timesUpperT, whitener } from './whiten.js';

export interface ResidualWeights {
  /** Σ x xᵀ of the expert's inputs, [H, H]. */
  xtx: ArrayLike<number>;
  /** Row weights w_i on P's rows (neurons, in P's order), [I]. */
  rows: ArrayLike<number>;
}

export async function residualLowRank(d: Record<MatrixName, Float32Array>, I: number, H: number, rank: number, seed: number, weights: ResidualWeights | null = null): Promise<{ left: Float32Array; right: Record<MatrixName, Float32Array> }> {
  let gate = d.gate;
  let up = d.up;
  let R: Float64Array | null = null;
  let sbar = 1;
  if (weights) {
    R = whitener(weights.xtx, H, 0.01, 'resmoe-svd').R;
    let tr = 0;
    for (let i = 0; i < R.length; i++) tr += R[i] * R[i]; // tr(Rᵀ R) = tr(Σ x xᵀ + λI)
    sbar = Math.sqrt(tr / H);
    gate = scale(timesUpperT(gate, I, H, R), 1 / sbar);
    up = scale(timesUpperT(up, I, H, R), 1 / sbar);
  }
  const pts = expertPoints(gate, up, d.down, I, H); // [I, 3H]
  if (weights) scaleRows(pts, I, 3 * H, weights.rows, false);
  const f = await lowRank(pts, I, 3 * H, rank, accurateSvdOptions(rank, I, 3 * H, seed));
  if (weights) scaleRows(f.left, I, rank, weights.rows, true);
  const Ri = R ? upperInverse(R, H) : null;
  const right = {} as Record<MatrixName, Float32Array>;
  MATRICES.forEach((m, i) => {
    let Rm: Float32Array = new Float32Array(rank * H);
    for (let k = 0; k < rank; k++) Rm.set(f.right.subarray(k * 3 * H + i * H, k * 3 * H + (i + 1) * H), k * H);
    if (Ri && m !== 'down') Rm = scale(timesUpperT(Rm, rank, H, Ri), sbar); // R'_m S⁻¹ = R'_m R⁻ᵀ s̄
    right[m] = Rm;
  });
  return { left: f.left, right };
}

function scale(x: Float32Array, c: number): Float32Array {
  for (let i = 0; i < x.length; i++) x[i] *= c;
  return x;
}

/** x: [rows, cols] in place, row i times w_i (or divided by it). */
function scaleRows(x: Float32Array, rows: number, cols: number, w: ArrayLike<number>, divide: boolean): void {
  for (let i = 0; i < rows; i++) {
    const c = divide ? 1 / w[i] : w[i];
    for (let j = 0; j < cols; j++) x[i * cols + j] *= c;
  }
}

/**
 * Orthonormalising a few long vectors (a tall-skinny QR) on the GEMM backend: CholeskyQR2.
 *
 * Why not Householder: for X [len, l] with len = 14336 and l = 64..512, Householder in JS
 * float64 costs 4·len·l² flops at ~1 GFLOP/s, while CholeskyQR spends them in GEMMs (Gram XᵀX
 * and X R⁻¹) at ~50-150 GFLOP/s plus an l³/3 Cholesky in JS. Measured on the 2-core dev machine
 * (len = 14336; Householder vs CholeskyQR2): l = 64: 344 vs 41 ms; 128: 1036 vs 108 ms;
 * 256: 5188 vs 182 ms; 512: 16.4 s vs 0.80 s (8x to 28x).
 *
 * Why "2" (or more) passes: one CholeskyQR pass loses orthogonality like u·κ(X)² (u = float32
 * rounding, 6e-8); a second pass on the nearly orthonormal result restores it to O(u) whenever
 * κ(X) < ~u^(-1/2) ≈ 4000. Each pass's Gram tells how far from orthonormal its input was, so we
 * stop at the first pass whose input was already close (‖G − I‖ <= 0.1).
 *
 * Failure modes and the fallback: a (numerically) rank-deficient X makes the Cholesky break
 * down or the passes stop converging; we then retry the first pass with a small diagonal shift
 * (shifted CholeskyQR, Fukaya et al. 2020), and past that fall back to Householder in float64,
 * which always returns an orthonormal basis (extended arbitrarily past X's rank).
 */
import { linear, matmul } from '../gemm.js';
import { checkShape, cholesky, transpose, upperInverse } from './dense.js';
import { householderRows } from './householder.js';

const U32 = 2 ** -24; // float32 unit roundoff
const MAX_PASSES = 4;
/**
 * A pivot below PIVOT_TOL·√len·u of its diagonal entry is below the float32 Gram's own rounding
 * (√len·u relative, for random rounding): it would divide noise into a "direction", so it counts
 * as a breakdown. Above it the span survives even when orthogonality does not, and the next pass
 * restores orthogonality.
 */
const PIVOT_TOL = 1;
/** A pass whose input Gram is within this of the identity leaves O(u) orthogonality. */
const CLOSE = 0.1;

export type OrthMethod = 'cholqr' | 'householder';

export interface OrthRows {
  /** [l, len], orthonormal rows spanning the rows of X. */
  Q: Float32Array;
  /** [l, l] upper triangular, X ≈ Rᵀ Q (to u·κ(X)·‖X‖ for CholeskyQR). */
  R: Float64Array;
  method: OrthMethod;
  /** CholeskyQR passes used (0 for Householder). */
  passes: number;
}

/** Gram of the rows, symmetrised in float64: X: [l, len] -> X Xᵀ: [l, l]. */
async function gram(X: Float32Array, l: number, len: number): Promise<Float64Array> {
  const g = await linear(X, X, l, l, len);
  const G = new Float64Array(l * l);
  for (let i = 0; i < l; i++) {
    for (let j = i; j < l; j++) {
      const v = 0.5 * (g[i * l + j] + g[j * l + i]);
      G[i * l + j] = v;
      G[j * l + i] = v;
    }
  }
  return G;
}

/** R: [l, l] upper, X: [l, len] -> R⁻ᵀ X: [l, len] on the GEMM backend. */
async function applyInverseT(R: Float64Array, X: Float32Array, l: number, len: number): Promise<Float32Array> {
  const Rinv = upperInverse(R, l);
  const W = new Float32Array(l * l); // W = R⁻ᵀ: lower triangular
  for (let i = 0; i < l; i++) for (let j = 0; j <= i; j++) W[i * l + j] = Rinv[j * l + i];
  return matmul(W, X, l, len, l);
}

/** Upper R2 · R1 (both [l, l]) in float64. */
function upperProduct(R2: Float64Array, R1: Float64Array, l: number): Float64Array {
  const out = new Float64Array(l * l);
  for (let i = 0; i < l; i++) {
    for (let j = i; j < l; j++) {
      let s = 0;
      for (let k = i; k <= j; k++) s += R2[i * l + k] * R1[k * l + j];
      out[i * l + j] = s;
    }
  }
  return out;
}

function maxDeviationFromIdentity(G: Float64Array, l: number): number {
  let d = 0;
  for (let i = 0; i < l; i++) for (let j = 0; j < l; j++) d = Math.max(d, Math.abs(G[i * l + j] - (i === j ? 1 : 0)));
  return d;
}

/** X: [l, len] -> Householder result in float32 rows (the robust path). */
export function orthRowsNaive(X: ArrayLike<number>, l: number, len: number): OrthRows {
  checkShape('orthRowsNaive', X, l, len);
  if (l > len) throw new Error(`orthRowsNaive: needs l <= len, got l=${l}, len=${len}`);
  const { Qt, R } = householderRows(Float64Array.from(X), l, len);
  return { Q: Float32Array.from(Qt), R, method: 'householder', passes: 0 };
}

/**
 * X: [l, len] (l <= len; rows = the vectors) -> orthonormal rows Q spanning them, X ≈ Rᵀ Q.
 * CholeskyQR2 on the GEMM backend, Householder when X is too ill-conditioned for it.
 */
export async function orthRows(X: Float32Array, l: number, len: number): Promise<OrthRows> {
  checkShape('orthRows', X, l, len);
  if (l > len) throw new Error(`orthRows: needs l <= len, got l=${l}, len=${len}`);
  let Q = X;
  let R: Float64Array | null = null;
  for (let pass = 1; pass <= MAX_PASSES; pass++) {
    const G = await gram(Q, l, len);
    const close = pass > 1 && maxDeviationFromIdentity(G, l) <= CLOSE;
    const pivotTol = PIVOT_TOL * Math.sqrt(len) * U32;
    let Rp = cholesky(G, l, pivotTol);
    if (Rp === null && pass === 1) {
      // Shifted CholeskyQR: add about that rounding level (√len·u·‖X‖_F²) to the diagonal so the
      // factorization exists; nearly dependent directions come out shrunk rather than garbage,
      // and the next pass either restores them or breaks down into the fallback.
      let trace = 0;
      for (let i = 0; i < l; i++) trace += G[i * l + i];
      const shift = Math.sqrt(len) * U32 * trace;
      for (let i = 0; i < l; i++) G[i * l + i] += shift;
      Rp = cholesky(G, l);
    }
    if (Rp === null || hasZeroPivot(Rp, l)) break;
    Q = await applyInverseT(Rp, Q, l, len);
    R = R === null ? Rp : upperProduct(Rp, R, l);
    if (close) return { Q, R, method: 'cholqr', passes: pass };
  }
  return orthRowsNaive(X, l, len);
}

/** True when R has a zero diagonal entry (underflow in a pivot), which R⁻¹ cannot survive. */
function hasZeroPivot(R: Float64Array, l: number): boolean {
  for (let i = 0; i < l; i++) if (!(R[i * l + i] > 1e-300)) return true;
  return false;
}

/**
 * A: [m, n] with m >= n -> thin Q: [m, n] (orthonormal columns, float32), R: [n, n] upper
 * (float64), A ≈ Q R. The fast twin of qrNaive: CholeskyQR2 on the GEMM backend with the
 * Householder fallback.
 */
export async function qr(A: Float32Array, m: number, n: number): Promise<{ Q: Float32Array; R: Float64Array }> {
  checkShape('qr', A, m, n);
  if (m < n) throw new Error(`qr: needs a tall matrix (m >= n), got m=${m}, n=${n}`);
  const { Q, R } = await orthRows(transpose(A, m, n), n, m);
  return { Q: transpose(Q, n, m), R };
}

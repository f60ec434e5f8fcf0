/**
 * Cholesky and upper-triangular inverse for large n (GPTQ's [in, in] Hessians, in = 4096 for
 * Mixtral gate/up), recursive on halves so that the O(n³) work is float32 GEMMs (tensor/gemm.ts)
 * and only the leaves (n <= LEAF) run the float64 JS kernels of dense.ts, which are the twins:
 *
 *   await choleskyBlocked(G, n) -> upper R with G = Rᵀ R, or null (as cholesky)
 *     R11 = chol(G11), R12 = R11⁻ᵀ G12, R22 = chol(G22 − R12ᵀ R12)
 *   await upperInverseBlocked(R, n) -> R⁻¹
 *     [[R11, R12], [0, R22]]⁻¹ = [[X11, −X11 R12 X22], [0, X22]]
 *
 * The matrices stay float64; the off-diagonal products are rounded to float32 (relative error
 * ~1e-7 of each product), as GPTQ implementations compute the whole factorization in float32.
 * At n = 4096 the dense.ts kernels walk a 128 MB matrix per pivot (memory-bound, ~40 s each on
 * the 2-core dev machine); these take a few seconds.
 */
import { linear, matmul } from '../gemm.js';
import { cholesky, upperInverse } from './dense.js';

/** At or below this size the float64 JS kernels run (and the result equals theirs). */
export const BLOCKED_LEAF = 256;

/** A[r0:r1, c0:c1] of a row-major [?, n] matrix as float32. */
function block32(A: ArrayLike<number>, n: number, r0: number, r1: number, c0: number, c1: number): Float32Array {
  const cols = c1 - c0;
  const out = new Float32Array((r1 - r0) * cols);
  for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[(r - r0) * cols + c - c0] = A[r * n + c];
  return out;
}

function block64(A: ArrayLike<number>, n: number, r0: number, r1: number, c0: number, c1: number): Float64Array {
  const cols = c1 - c0;
  const out = new Float64Array((r1 - r0) * cols);
  for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[(r - r0) * cols + c - c0] = A[r * n + c];
  return out;
}

/** Writes B: [rows, cols] into A at (r0, c0), scaled by s. */
function put(A: Float64Array, n: number, r0: number, c0: number, B: ArrayLike<number>, rows: number, cols: number, s = 1): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) A[(r0 + r) * n + c0 + c] = s * B[r * cols + c];
}

/** a: [rows, cols] -> [cols, rows]. */
function transpose32(a: ArrayLike<number>, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j];
  return out;
}

/** G: [n, n] symmetric positive definite -> upper R: [n, n], G = Rᵀ R; null when a pivot fails. */
export async function choleskyBlocked(G: ArrayLike<number>, n: number): Promise<Float64Array | null> {
  if (n <= BLOCKED_LEAF) return cholesky(G, n);
  const h = Math.ceil(n / 2 / 64) * 64;
  const m = n - h;
  const R11 = await choleskyBlocked(block64(G, n, 0, h, 0, h), h);
  if (R11 === null) return null;
  const X11 = await upperInverseBlocked(R11, h);
  // R12 = X11ᵀ G12: [h, m]
  const R12 = await matmul(transpose32(X11, h, h), block32(G, n, 0, h, h, n), h, m, h);
  // S = R12ᵀ R12: [m, m] (linear: x wᵀ with x = w = R12ᵀ)
  const R12t = transpose32(R12, h, m);
  const S = await linear(R12t, R12t, m, m, h);
  const A22 = block64(G, n, h, n, h, n);
  for (let i = 0; i < m * m; i++) A22[i] -= S[i];
  const R22 = await choleskyBlocked(A22, m);
  if (R22 === null) return null;
  const R = new Float64Array(n * n);
  put(R, n, 0, 0, R11, h, h);
  put(R, n, 0, h, R12, h, m);
  put(R, n, h, h, R22, m, m);
  return R;
}

/** Upper-triangular R: [n, n] with a nonzero diagonal -> R⁻¹: [n, n], upper triangular. */
export async function upperInverseBlocked(R: ArrayLike<number>, n: number): Promise<Float64Array> {
  if (n <= BLOCKED_LEAF) return upperInverse(R, n);
  const h = Math.ceil(n / 2 / 64) * 64;
  const m = n - h;
  const X11 = await upperInverseBlocked(block64(R, n, 0, h, 0, h), h);
  const X22 = await upperInverseBlocked(block64(R, n, h, n, h, n), m);
  // X12 = −X11 R12 X22: [h, m]
  const T = await matmul(block32(X11, h, 0, h, 0, h), block32(R, n, 0, h, h, n), h, m, h);
  const X12 = await matmul(T, block32(X22, m, 0, m, 0, m), h, m, m);
  const X = new Float64Array(n * n);
  put(X, n, 0, 0, X11, h, h);
  put(X, n, 0, h, X12, h, m, -1);
  put(X, n, h, h, X22, m, m);
  return X;
}

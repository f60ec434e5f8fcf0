/**
 * Small dense linear algebra in float64, plain TS: the shared pieces (shape checks, transpose,
 * Cholesky, triangular inverse). The files beside this one hold the exact references and the
 * small problems inside the randomized SVD (an l x l SVD, l = rank + oversample; O(l³) in JS,
 * about 0.5 s at l = 266 and 12-19 s at l = 806, see jacobi-svd.ts):
 * eig.ts (symEig), householder.ts (qrNaive), jacobi-svd.ts (svdNaive). The big products belong
 * to the GEMM backend (orth.ts, ../svd.ts).
 *
 * All matrices are row-major. Inputs may be Float32Array or Float64Array (anything indexable);
 * outputs are Float64Array. Dimension letters: m rows, n columns, k = min(m, n).
 */

export type Mat = ArrayLike<number>;

/** Number.EPSILON: twice the float64 unit roundoff. */
export const EPS = 2.220446049250313e-16;

export function checkShape(fn: string, a: { length: number }, m: number, n: number): void {
  for (const [name, v] of [['m', m], ['n', n]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${fn}: ${name} must be a positive integer, got ${v}`);
  }
  if (a.length !== m * n) throw new Error(`${fn}: matrix [m=${m}, n=${n}] needs ${m * n} values, got ${a.length}`);
}

/** a: [rows, cols] -> [cols, rows], same element type. Tiled so both sides stay in cache. */
export function transpose<T extends Float32Array | Float64Array>(a: T, rows: number, cols: number): T {
  const out = (a instanceof Float32Array ? new Float32Array(rows * cols) : new Float64Array(rows * cols)) as T;
  const B = 32;
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(rows, i0 + B);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) out[j * rows + i] = a[i * cols + j];
    }
  }
  return out;
}

// Cholesky and triangular inverse (used by CholeskyQR in orth.ts)

/**
 * G: [n, n] symmetric -> upper R: [n, n] with G = Rᵀ R, or null when a pivot is not positive or
 * not above relTol times its original diagonal entry (G numerically singular at the precision
 * it was computed in): the caller decides how to recover.
 */
export function cholesky(G: Mat, n: number, relTol = 0): Float64Array | null {
  // Right-looking (outer-product) form: every inner loop walks two rows, contiguous, which is
  // 10-20x faster at n = 512 than the dot-product form that walks columns.
  const R = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) R[i * n + j] = G[i * n + j];
  for (let i = 0; i < n; i++) {
    const io = i * n;
    const d = R[io + i];
    if (!(d > 0) || d <= relTol * G[io + i]) return null;
    const rii = Math.sqrt(d);
    R[io + i] = rii;
    for (let j = i + 1; j < n; j++) R[io + j] /= rii;
    // Trailing update of the upper triangle: A[j, k] -= R[i, j] R[i, k] for i < j <= k.
    for (let j = i + 1; j < n; j++) {
      const rij = R[io + j];
      if (rij === 0) continue;
      const jo = j * n;
      for (let k = j; k < n; k++) R[jo + k] -= rij * R[io + k];
    }
  }
  return R;
}

/** Upper-triangular R: [n, n] with a nonzero diagonal -> R⁻¹: [n, n], upper triangular. */
export function upperInverse(R: Mat, n: number): Float64Array {
  // Rows of X = R⁻¹ from the bottom: R X = I gives X[i, :] = (e_i − Σ_{k>i} R[i, k] X[k, :]) / R[i, i],
  // a sum of contiguous row updates; row k of X is zero left of column k.
  const X = new Float64Array(n * n);
  for (let i = n - 1; i >= 0; i--) {
    const io = i * n;
    X[io + i] = 1;
    for (let k = i + 1; k < n; k++) {
      const rik = R[io + k];
      if (rik === 0) continue;
      const ko = k * n;
      for (let j = k; j < n; j++) X[io + j] -= rik * X[ko + j];
    }
    const inv = 1 / R[io + i];
    for (let j = i; j < n; j++) X[io + j] *= inv;
  }
  return X;
}

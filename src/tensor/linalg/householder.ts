/** Householder QR in float64: the exact reference for CholeskyQR2 and its robust fallback. */
import { checkShape, transpose, type Mat } from './dense.js';

/**
 * Householder QR of the l row vectors of X: [l, len] (l <= len), in place on X.
 * Rows, not columns, because every caller holds its tall matrix transposed: each reflector
 * then walks contiguous memory. Returns Qt: [l, len] with orthonormal rows and upper
 * R: [l, l], diag(R) >= 0, such that X = Rᵀ Qt (i.e. Xᵀ = Q R).
 * A dependent or zero row still gets an orthonormal Qt row (R's diagonal is 0 there): the
 * reflectors always form an orthogonal matrix, which is why this is the robust fallback.
 */
export function householderRows(X: Float64Array, l: number, len: number): { Qt: Float64Array; R: Float64Array } {
  if (l > len) throw new Error(`householderRows: needs l <= len, got l=${l}, len=${len}`);
  const V = new Float64Array(l * len); // reflector k in row k, nonzero from index k
  const R = new Float64Array(l * l);
  for (let k = 0; k < l; k++) {
    const xo = k * len, vo = k * len;
    let nrm2 = 0;
    for (let i = k; i < len; i++) nrm2 += X[xo + i] * X[xo + i];
    const nrm = Math.sqrt(nrm2);
    // alpha takes the sign opposite to x_k so that v = x - alpha e_k never cancels.
    const alpha = X[xo + k] >= 0 ? -nrm : nrm;
    let vn2 = 0;
    for (let i = k; i < len; i++) {
      const v = X[xo + i] - (i === k ? alpha : 0);
      V[vo + i] = v;
      vn2 += v * v;
    }
    if (vn2 === 0) {
      V[vo + k] = 1; // x is zero below k: any reflector keeps Q orthogonal
    } else {
      const inv = 1 / Math.sqrt(vn2);
      for (let i = k; i < len; i++) V[vo + i] *= inv;
    }
    for (let j = k; j < l; j++) {
      const jo = j * len;
      let d = 0;
      for (let i = k; i < len; i++) d += V[vo + i] * X[jo + i];
      d *= 2;
      for (let i = k; i < len; i++) X[jo + i] -= d * V[vo + i];
      R[k * l + j] = X[jo + k];
    }
  }
  // Thin Q = H_0 ... H_{l-1} [I; 0], accumulated backwards: H_k only touches columns >= k.
  const Qt = new Float64Array(l * len);
  for (let j = 0; j < l; j++) Qt[j * len + j] = 1;
  for (let k = l - 1; k >= 0; k--) {
    const vo = k * len;
    for (let j = k; j < l; j++) {
      const jo = j * len;
      let d = 0;
      for (let i = k; i < len; i++) d += V[vo + i] * Qt[jo + i];
      d *= 2;
      for (let i = k; i < len; i++) Qt[jo + i] -= d * V[vo + i];
    }
  }
  // Positive diagonal makes the factorization unique for full-rank X (comparable with CholeskyQR).
  for (let k = 0; k < l; k++) {
    if (R[k * l + k] >= 0) continue;
    for (let j = k; j < l; j++) R[k * l + j] = -R[k * l + j];
    for (let i = 0; i < len; i++) Qt[k * len + i] = -Qt[k * len + i];
  }
  return { Qt, R };
}

/**
 * A: [m, n] with m >= n -> thin Q: [m, n] (orthonormal columns), R: [n, n] upper triangular
 * with diag(R) >= 0, A = Q R. Householder in float64: the reference for the fast `qr`.
 */
export function qrNaive(A: Mat, m: number, n: number): { Q: Float64Array; R: Float64Array } {
  checkShape('qrNaive', A, m, n);
  if (m < n) throw new Error(`qrNaive: needs a tall matrix (m >= n), got m=${m}, n=${n}`);
  const X = transpose(Float64Array.from(A), m, n); // [n, m]: columns of A as rows
  const { Qt, R } = householderRows(X, n, m);
  return { Q: transpose(Qt, n, m), R };
}

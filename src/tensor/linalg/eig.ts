/** Symmetric eigendecomposition by cyclic Jacobi, float64. */
import { EPS, checkShape, type Mat } from './dense.js';

export interface SymEig {
  /** [n], descending. */
  values: Float64Array;
  /** [n, n], column j is the unit eigenvector of values[j] (A V = V diag(values)). */
  vectors: Float64Array;
}

/**
 * A: [n, n] symmetric (only trusted to be symmetric; the upper triangle is read) -> eigenpairs.
 * Cyclic Jacobi: slow (about 6n³ flops a sweep, 5-10 sweeps) but simple, always convergent and
 * accurate to a few ulps of ‖A‖, with small eigenvalues of definite matrices kept to high
 * relative accuracy by the relative rotation threshold.
 */
export function symEig(A: Mat, n: number): SymEig {
  checkShape('symEig', A, n, n);
  const a = new Float64Array(n * n);
  let fro = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = A[i * n + j];
      a[i * n + j] = v;
      a[j * n + i] = v;
      fro += (i === j ? 1 : 2) * v * v;
    }
  }
  // Vt rows are the eigenvectors, so the rotation updates walk contiguous memory.
  const Vt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) Vt[i * n + i] = 1;
  // Below this an off-diagonal entry is below the rounding of every other entry: stop rotating.
  const floor = EPS * EPS * Math.sqrt(fro);

  for (let sweep = 0; sweep < 100; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        const app = a[p * n + p];
        const aqq = a[q * n + q];
        if (Math.abs(apq) <= Math.max(EPS * Math.sqrt(Math.abs(app * aqq)), floor)) continue;
        rotated = true;
        const theta = (aqq - app) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        // Rows p and q of Jᵀ A J; symmetry gives the columns, so only rows are computed.
        const po = p * n, qo = q * n;
        for (let k = 0; k < n; k++) {
          const x = a[po + k], y = a[qo + k];
          a[po + k] = c * x - s * y;
          a[qo + k] = s * x + c * y;
        }
        a[po + p] = app - t * apq;
        a[qo + q] = aqq + t * apq;
        a[po + q] = 0;
        a[qo + p] = 0;
        for (let k = 0; k < n; k++) {
          a[k * n + p] = a[po + k];
          a[k * n + q] = a[qo + k];
        }
        for (let k = 0; k < n; k++) {
          const x = Vt[po + k], y = Vt[qo + k];
          Vt[po + k] = c * x - s * y;
          Vt[qo + k] = s * x + c * y;
        }
      }
    }
    if (!rotated) break;
  }

  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[j * n + j] - a[i * n + i]);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = a[src * n + src];
    for (let k = 0; k < n; k++) vectors[k * n + dst] = Vt[src * n + k];
  });
  return { values, vectors };
}

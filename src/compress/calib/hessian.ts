/**
 * The Hessian proxies of one expert matrix and the output error they measure.
 *
 *   hessianFor(calib, m, minTokens = 1): ExpertCalib, 'gate' | 'up' | 'down' -> H: [in, in] (Float64Array) or null
 *     gate/up: Σ x xᵀ of the expert's routed inputs (xtx, [H, H]); down: Σ a aᵀ (ata, [I, I]), or
 *     diag(ataDiag) when collection kept only the diagonal (I > maxFullI). null when the expert was
 *     reached by fewer than minTokens tokens (never reached: tokens = 0): callers then use the
 *     data-free treatment (identity Hessian, i.e. plain codec quantization / plain SVD) and record
 *     `uncalibrated` in the layer's choices. The methods pass minTokens = in: with fewer tokens
 *     than input dimensions H is singular, and GPTQ or whitening would push the whole error into
 *     the directions the few calibration tokens happen not to span (seen on the olmoe fixture: two
 *     experts reached by 1 token in 64 windows).
 *   hessianError(w, what, H): w, ŵ: [out, in] row-major, H: [in, in] -> tr((W − Ŵ) H (W − Ŵ)ᵀ)
 *     = Σ over calibration tokens of ‖(W − Ŵ) x‖², the matrix's output error on its own inputs
 *     (for down with a diagonal H, the diagonal approximation of it). `out` is w.length / in.
 *   await hessianErrorFast(w, what, H): the same as one float32 GEMM (ΔW H through tensor/gemm.ts),
 *     for real-size matrices (out·in² multiply-adds); hessianError is its float64 twin.
 *   hessianF32(H): H as float32 for GEMMs, cached per H array (H must not change afterwards).
 *   hessianErrorDiag(w, what, d): the same with H = diag(d), O(out·in).
 *   hessianDiagonal(calib, m, minTokens = 1): the diagonal alone when that is all collection kept
 *     (down with I > maxFullI), else null: callers then quantize with importances diag (what GPTQ
 *     does with a diagonal H, byte for byte: nothing is fed forward) instead of building [I, I].
 *   diagonalImportance(d, out): those importances per value [out·in], dead inputs at the mean (liveDiagonal).
 *   liveDiagonal(d): a Hessian diagonal with its dead inputs (d_j <= 0: the input was always 0 on
 *     the calibration text) at the mean of d over all inputs, as dampedHessian treats them; all ones
 *     when every input is dead (live false). GPTQ's importances, the diagonal whitening and the
 *     Wanda-style scales all start from it.
 *   dampedHessian(H, n, damp): H + λ I with λ = damp · mean diag(H), and dead inputs (H_jj <= 0, the
 *     input was always 0 on the calibration text) given the mean diagonal so they are quantized like
 *     an average column rather than ignored (they may be nonzero on other text). Identity when
 *     H is all zero. Returns the matrix and λ.
 */
import { MoepressError } from '../../io/errors.js';
import { matmul } from '../../tensor/gemm.js';
import type { MatrixName } from '../parts.js';
import type { ExpertCalib } from './types.js';

export function hessianDiagonal(calib: ExpertCalib, m: MatrixName, minTokens = 1): Float64Array | null {
  if (calib.tokens === 0 || calib.tokens < minTokens) return null;
  return m === 'down' && !calib.ata ? calib.ataDiag : null;
}

export function liveDiagonal(d: ArrayLike<number>): { d: Float64Array; mean: number; live: boolean } {
  const n = d.length;
  let sum = 0;
  for (let j = 0; j < n; j++) if (d[j] > 0) sum += d[j];
  if (!(sum > 0)) return { d: new Float64Array(n).fill(1), mean: 1, live: false };
  const mean = sum / n;
  return { d: Float64Array.from(d, (v) => (v > 0 ? v : mean)), mean, live: true };
}

export function diagonalImportance(d: ArrayLike<number>, out: number): Float32Array {
  const n = d.length;
  const row = Float32Array.from(liveDiagonal(d).d);
  const w = new Float32Array(out * n);
  for (let r = 0; r < out; r++) w.set(row, r * n);
  return w;
}

export function hessianFor(calib: ExpertCalib, m: MatrixName, minTokens = 1): Float64Array | null {
  if (calib.tokens === 0 || calib.tokens < minTokens) return null;
  if (m !== 'down') return calib.xtx;
  if (calib.ata) return calib.ata;
  const I = calib.ataDiag.length;
  const H = new Float64Array(I * I);
  for (let i = 0; i < I; i++) H[i * I + i] = calib.ataDiag[i];
  return H;
}

function sideOf(H: ArrayLike<number>, fn: string): number {
  const n = Math.round(Math.sqrt(H.length));
  if (n * n !== H.length) throw new MoepressError(`${fn}: H has ${H.length} entries, not a square [in, in]`);
  return n;
}

export function hessianError(w: Float32Array, what: Float32Array, H: ArrayLike<number>): number {
  const n = sideOf(H, 'hessianError');
  if (w.length !== what.length || w.length % n !== 0) throw new MoepressError(`hessianError: w has ${w.length} and ŵ ${what.length} entries, expected equal multiples of in = ${n}`);
  const rows = w.length / n;
  const d = new Float64Array(n);
  let total = 0;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < n; j++) d[j] = w[r * n + j] - what[r * n + j];
    // Δ H Δᵀ for one row, using symmetry: Σ_j d_j (H_jj d_j + 2 Σ_{k>j} H_jk d_k)
    for (let j = 0; j < n; j++) {
      const dj = d[j];
      if (dj === 0) continue;
      const o = j * n;
      let s = 0;
      for (let k = j + 1; k < n; k++) s += H[o + k] * d[k];
      total += dj * (H[o + j] * dj + 2 * s);
    }
  }
  return total;
}

const f32Cache = new WeakMap<object, Float32Array>();

export function hessianF32(H: ArrayLike<number>): Float32Array {
  if (H instanceof Float32Array) return H;
  let h = f32Cache.get(H as object);
  if (!h) {
    h = Float32Array.from(H);
    f32Cache.set(H as object, h);
  }
  return h;
}

export async function hessianErrorFast(w: Float32Array, what: Float32Array, H: ArrayLike<number>): Promise<number> {
  const n = sideOf(H, 'hessianErrorFast');
  if (w.length !== what.length || w.length % n !== 0) throw new MoepressError(`hessianErrorFast: w has ${w.length} and ŵ ${what.length} entries, expected equal multiples of in = ${n}`);
  const rows = w.length / n;
  const D = new Float32Array(w.length);
  for (let i = 0; i < w.length; i++) D[i] = w[i] - what[i];
  const DH = await matmul(D, hessianF32(H), rows, n, n); // [out, in]
  let total = 0;
  for (let i = 0; i < D.length; i++) total += D[i] * DH[i];
  return total;
}

export function hessianErrorDiag(w: Float32Array, what: Float32Array, diag: ArrayLike<number>): number {
  const n = diag.length;
  if (w.length !== what.length || w.length % n !== 0) throw new MoepressError(`hessianErrorDiag: w has ${w.length} and ŵ ${what.length} entries, expected equal multiples of in = ${n}`);
  let total = 0;
  for (let i = 0; i < w.length; i++) {
    const e = w[i] - what[i];
    total += diag[i % n] * e * e;
  }
  return total;
}

export function dampedHessian(H: ArrayLike<number>, n: number, damp: number): { H: Float64Array; lambda: number } {
  if (H.length !== n * n) throw new MoepressError(`dampedHessian: H has ${H.length} entries, expected [${n}, ${n}]`);
  const out = Float64Array.from(H);
  let mean = 0;
  let live = 0;
  for (let j = 0; j < n; j++) {
    if (out[j * n + j] > 0) {
      mean += out[j * n + j];
      live++;
    }
  }
  if (live === 0) {
    out.fill(0);
    for (let j = 0; j < n; j++) out[j * n + j] = 1;
    return { H: out, lambda: 0 };
  }
  mean /= n;
  for (let j = 0; j < n; j++) {
    if (!(out[j * n + j] > 0)) {
      for (let k = 0; k < n; k++) out[j * n + k] = out[k * n + j] = 0;
      out[j * n + j] = mean;
    }
  }
  const lambda = damp * mean;
  for (let j = 0; j < n; j++) out[j * n + j] += lambda;
  return { H: out, lambda };
}

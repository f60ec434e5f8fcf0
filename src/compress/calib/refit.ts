/**
 * Output-reconstruction refit of a quantized matrix's block headers (issue 5): the codes stay as
 * GPTQ or the codec chose them, and each row's scales (and mins) are refit jointly by least squares
 * on the matrix's output error over its calibration inputs,
 *
 *   min over θ_r of (w_r − q_r(θ_r)) H (w_r − q_r(θ_r))ᵀ,   q_r = Σ_j θ_j φ_j,
 *
 * where every block k of row r decodes to value(u) = a + b·u (quant/grid.ts): symmetric
 * s·(u − 2^(k−1)) and sign s·(2u − 1) are linear in their scale s (one basis φ per block),
 * asymmetric m + s·u in (m, s) (two). With the codes fixed the objective is quadratic in θ: the
 * normal equations A θ = c, A_jl = φ_jᵀ H φ_l, c_j = φ_jᵀ H w_r, are P × P per row (P = blocks or
 * twice that), built from H's block columns. The solution is rounded to the header dtype and kept
 * only where the row's error (with the rounded values) goes down, so the refit never makes a
 * matrix worse on its own objective. GPTQ fixes each block's scale before the later columns'
 * errors are known; this joint refit is what it leaves on the table.
 *
 *   await refitHeaders(packed, codec, w, out, inp, H) -> { packed (a new buffer), before, after, rows }
 *     before/after: tr(ΔW H ΔWᵀ) with the given and the refit headers; rows: rows changed. The
 *     normal equations of all rows come from float32 GEMMs (tensor/gemm.ts), one block column of
 *     H at a time, so a real-size matrix costs seconds, not the out·in² JS loop of the per-row form.
 *   refitHeadersRows(...)   the same row by row in float64 (the fast path's twin; used for a diagonal H)
 *   refitHeadersNaive(...)  the same from the dense Φ (P × inp) per row, in float64 (the rows' twin)
 *
 * Needs blocks that tile rows (inp % blockSize === 0), as GPTQ does (gptqApplies). H may be a
 * diagonal, given as its inp values (down's Σ a aᵀ above maxFullI): then blocks decouple and each
 * block's one or two parameters are a weighted least-squares fit of its own values, O(out·in).
 */
import { MoepressError } from '../../io/errors.js';
import { matmul } from '../../tensor/gemm.js';
import { cholesky } from '../../tensor/svd.js';
import { hessianF32 } from './hessian.js';
import { encodeScale, decodeScale, readU16, writeU16 } from '../quant/block.js';
import type { BlockCodec } from '../quant/codec.js';
import { blockGrid, headerBytes } from '../quant/grid.js';
import { unpackBits } from '../quant/pack.js';

export interface RefitResult {
  packed: Uint8Array;
  before: number;
  after: number;
  rows: number;
}

/** Parameters per block: (s) for symmetric and sign codecs, (m, s) for asymmetric ones. */
function paramsPerBlock(codec: BlockCodec): number {
  return codec.kind === 'asymmetric' ? 2 : 1;
}

/** Row r's bases: phi[j·G + i] = φ_j on its block's G columns (block j / perBlock). */
function rowBases(codec: BlockCodec, packed: Uint8Array, r: number, P: number, codes: Uint8Array, phi: Float64Array): void {
  const G = codec.blockSize;
  const hb = headerBytes(codec);
  const per = paramsPerBlock(codec);
  const blocks = P / per;
  const nmax = codec.kind === 'symmetric' ? 1 << (codec.bits - 1) : 0;
  for (let k = 0; k < blocks; k++) {
    const off = (r * blocks + k) * codec.bytesPerBlock;
    unpackBits(packed, off + hb, codec.bits, G, codes);
    for (let i = 0; i < G; i++) {
      const u = codes[i];
      if (codec.kind === 'symmetric') phi[k * G + i] = u - nmax;
      else if (codec.kind === 'sign') phi[k * G + i] = 2 * u - 1;
      else {
        phi[(2 * k) * G + i] = 1; // m
        phi[(2 * k + 1) * G + i] = u; // s
      }
    }
  }
}

/** The stored θ of row r (per block: s, or m then s). */
function rowParams(codec: BlockCodec, packed: Uint8Array, r: number, blocks: number): Float64Array {
  const per = paramsPerBlock(codec);
  const theta = new Float64Array(blocks * per);
  for (let k = 0; k < blocks; k++) {
    const off = (r * blocks + k) * codec.bytesPerBlock;
    const s = decodeScale(readU16(packed, off), codec.scaleDtype);
    if (per === 2) {
      theta[2 * k] = blockGrid(codec, packed, off).a;
      theta[2 * k + 1] = s;
    } else theta[k] = s;
  }
  return theta;
}

/** Writes θ (rounded to the header dtype) into row r's headers; returns the values actually stored. */
function writeParams(codec: BlockCodec, packed: Uint8Array, r: number, blocks: number, theta: Float64Array): Float64Array | null {
  const per = paramsPerBlock(codec);
  const stored = new Float64Array(theta.length);
  const bits: number[] = [];
  for (let j = 0; j < theta.length; j++) {
    const b = encodeScale(theta[j], codec.scaleDtype);
    const v = decodeScale(b, codec.scaleDtype);
    if (!Number.isFinite(v)) return null;
    bits.push(b);
    stored[j] = v;
  }
  for (let k = 0; k < blocks; k++) {
    const off = (r * blocks + k) * codec.bytesPerBlock;
    if (per === 2) {
      writeU16(packed, off, bits[2 * k + 1]);
      writeU16(packed, off + 2, bits[2 * k]);
    } else writeU16(packed, off, bits[k]);
  }
  return stored;
}

/** Row error d H dᵀ with d = w_r − Σ θ_j φ_j. */
function rowError(w: Float32Array, r: number, inp: number, G: number, per: number, phi: Float64Array, theta: Float64Array, H: ArrayLike<number>, d: Float64Array): number {
  for (let i = 0; i < inp; i++) {
    const k = Math.floor(i / G);
    let q = 0;
    for (let p = 0; p < per; p++) q += theta[k * per + p] * phi[(k * per + p) * G + (i % G)];
    d[i] = w[r * inp + i] - q;
  }
  let e = 0;
  if (H.length === inp) {
    for (let i = 0; i < inp; i++) e += H[i] * d[i] * d[i];
    return e;
  }
  for (let i = 0; i < inp; i++) {
    if (d[i] === 0) continue;
    let s = 0;
    const o = i * inp;
    for (let j = 0; j < inp; j++) s += H[o + j] * d[j];
    e += d[i] * s;
  }
  return e;
}

/** Solves the symmetric positive (semi)definite A θ = c (P × P) with a small ridge; null when singular. */
function solve(A: Float64Array, c: Float64Array, P: number): Float64Array | null {
  let tr = 0;
  for (let j = 0; j < P; j++) tr += A[j * P + j];
  if (!(tr > 0)) return null;
  const M = Float64Array.from(A);
  for (let j = 0; j < P; j++) M[j * P + j] += 1e-9 * (tr / P);
  const R = cholesky(M, P);
  if (!R) return null;
  // Rᵀ R θ = c: forward with Rᵀ, back with R
  const y = new Float64Array(P);
  for (let i = 0; i < P; i++) {
    let s = c[i];
    for (let k = 0; k < i; k++) s -= R[k * P + i] * y[k];
    y[i] = s / R[i * P + i];
  }
  const x = new Float64Array(P);
  for (let i = P - 1; i >= 0; i--) {
    let s = y[i];
    for (let k = i + 1; k < P; k++) s -= R[i * P + k] * x[k];
    x[i] = s / R[i * P + i];
  }
  return x.every(Number.isFinite) ? x : null;
}

function check(codec: BlockCodec, packed: Uint8Array, w: Float32Array, out: number, inp: number, H: ArrayLike<number>): void {
  if (inp % codec.blockSize !== 0) throw new MoepressError(`refitHeaders: ${codec.id} blocks of ${codec.blockSize} do not tile rows of ${inp}`);
  if (w.length !== out * inp || (H.length !== inp * inp && H.length !== inp)) throw new MoepressError(`refitHeaders: w has ${w.length} entries and H ${H.length}, expected [${out}, ${inp}] and [${inp}, ${inp}] (or its diagonal [${inp}])`);
  if (packed.length !== (out * inp / codec.blockSize) * codec.bytesPerBlock) throw new MoepressError(`refitHeaders: ${packed.length} packed bytes for ${out * inp} values of ${codec.id}`);
}

/**
 * The normal equations of row r from its bases: A = Φ H Φᵀ, c = Φ H w_r, using that φ_j is zero
 * outside its block: (H φ_l) costs inp·G, and φ_jᵀ (H φ_l) reads only block(j)'s G rows.
 */
function normalEquations(w: Float32Array, r: number, inp: number, G: number, per: number, P: number, phi: Float64Array, H: ArrayLike<number>, Hphi: Float64Array): { A: Float64Array; c: Float64Array } {
  for (let l = 0; l < P; l++) {
    const k = Math.floor(l / per);
    const col = k * G;
    for (let i = 0; i < inp; i++) {
      let s = 0;
      const o = i * inp + col;
      for (let t = 0; t < G; t++) s += H[o + t] * phi[l * G + t];
      Hphi[l * inp + i] = s;
    }
  }
  const A = new Float64Array(P * P);
  const c = new Float64Array(P);
  for (let j = 0; j < P; j++) {
    const col = Math.floor(j / per) * G;
    for (let l = j; l < P; l++) {
      let s = 0;
      for (let t = 0; t < G; t++) s += phi[j * G + t] * Hphi[l * inp + col + t];
      A[j * P + l] = s;
      A[l * P + j] = s;
    }
    let s = 0;
    for (let i = 0; i < inp; i++) s += Hphi[j * inp + i] * w[r * inp + i];
    c[j] = s;
  }
  return { A, c };
}

/**
 * θ of row r with a diagonal H: only parameters of the same block couple, so each block's one or
 * two parameters solve their own weighted least squares (1 × 1 or 2 × 2); null when a block's system is singular.
 */
function diagonalSolve(w: Float32Array, r: number, inp: number, G: number, per: number, P: number, phi: Float64Array, d: ArrayLike<number>): Float64Array | null {
  const theta = new Float64Array(P);
  for (let k = 0; k < P / per; k++) {
    const col = k * G;
    const A = new Float64Array(per * per);
    const c = new Float64Array(per);
    for (let a = 0; a < per; a++) {
      const j = k * per + a;
      for (let b = 0; b < per; b++) {
        const l = k * per + b;
        let s = 0;
        for (let t = 0; t < G; t++) s += phi[j * G + t] * d[col + t] * phi[l * G + t];
        A[a * per + b] = s;
      }
      let s = 0;
      for (let t = 0; t < G; t++) s += phi[j * G + t] * d[col + t] * w[r * inp + col + t];
      c[a] = s;
    }
    const x = solve(A, c, per);
    if (!x) return null;
    theta.set(x, k * per);
  }
  return theta;
}

function refit(packed: Uint8Array, codec: BlockCodec, w: Float32Array, out: number, inp: number, H: ArrayLike<number>, equations: typeof normalEquations): RefitResult {
  check(codec, packed, w, out, inp, H);
  const diagonal = H.length === inp && inp > 1;
  const G = codec.blockSize;
  const per = paramsPerBlock(codec);
  const blocks = inp / G;
  const P = blocks * per;
  const result = Uint8Array.from(packed);
  const codes = new Uint8Array(G);
  const phi = new Float64Array(P * G);
  const Hphi = new Float64Array(diagonal ? 0 : P * inp);
  const d = new Float64Array(inp);
  let before = 0;
  let after = 0;
  let rows = 0;
  for (let r = 0; r < out; r++) {
    rowBases(codec, packed, r, P, codes, phi);
    const theta0 = rowParams(codec, packed, r, blocks);
    const e0 = rowError(w, r, inp, G, per, phi, theta0, H, d);
    before += e0;
    let theta: Float64Array | null;
    if (diagonal) theta = diagonalSolve(w, r, inp, G, per, P, phi, H);
    else {
      const { A, c } = equations(w, r, inp, G, per, P, phi, H, Hphi);
      theta = solve(A, c, P);
    }
    const stored = theta ? writeParams(codec, result, r, blocks, theta) : null;
    const e1 = stored ? rowError(w, r, inp, G, per, phi, stored, H, d) : Infinity;
    if (e1 < e0) {
      after += e1;
      rows++;
    } else {
      after += e0;
      writeParams(codec, result, r, blocks, theta0);
    }
  }
  return { packed: result, before, after, rows };
}

/** The per-row float64 version (the fast path's twin, and what it runs for a diagonal H). */
export function refitHeadersRows(packed: Uint8Array, codec: BlockCodec, w: Float32Array, out: number, inp: number, H: ArrayLike<number>): RefitResult {
  return refit(packed, codec, w, out, inp, H, normalEquations);
}

/** Rows per chunk of the fast path: its normal equations (rows · P² float64) stay near 256 MB. */
const CHUNK_VALUES = 32 * 1024 * 1024;

/**
 * The fast path. D0 = W − Q0 (the given headers) and H D0ᵀ come from one GEMM; then, for a chunk
 * of rows and each parameter l (block k, basis p), T_l = Φ_l H[cols_k, :end]: [rows, G]·[G, end]
 * (H symmetric; end = the block's last column + 1) is a GEMM, and A_jl(r) = Σ_t φ_j(r)[t]
 * T_l[r, col_j + t] for j <= l reads it (A is symmetric).
 * Each row then solves A δ = c' with c'_j = φ_jᵀ H d0 (the step from its stored θ0, the same
 * optimum as A θ = Φ H w), rounds θ0 + δ to the header dtype, and keeps it only when its error
 * e1 = e0 − 2 δᵀ c' + δᵀ A δ (δ: the stored step) is below e0 = d0 H d0ᵀ.
 */
export async function refitHeaders(packed: Uint8Array, codec: BlockCodec, w: Float32Array, out: number, inp: number, H: ArrayLike<number>): Promise<RefitResult> {
  check(codec, packed, w, out, inp, H);
  if (H.length === inp) return refitHeadersRows(packed, codec, w, out, inp, H);
  const G = codec.blockSize;
  const per = paramsPerBlock(codec);
  const blocks = inp / G;
  const P = blocks * per;
  const H32 = hessianF32(H);
  const D0 = codec.dequantize(packed, out * inp);
  for (let i = 0; i < D0.length; i++) D0[i] = w[i] - D0[i];
  const HD = await matmul(D0, H32, out, inp, inp); // [out, in]: row r is H d0_r
  const result = Uint8Array.from(packed);
  const codes = new Uint8Array(G);
  const R = Math.max(1, Math.min(out, Math.floor(CHUNK_VALUES / (P * P))));
  const phi = new Float64Array(R * P * G); // [R, P·G]: row r's bases as rowBases lays them out
  const A = new Float64Array(R * P * P);
  const Phil = new Float32Array(R * G);
  const c = new Float64Array(P);
  let before = 0;
  let after = 0;
  let rows = 0;
  for (let r0 = 0; r0 < out; r0 += R) {
    const rn = Math.min(R, out - r0);
    for (let r = 0; r < rn; r++) rowBases(codec, packed, r0 + r, P, codes, phi.subarray(r * P * G, (r + 1) * P * G));
    for (let l = 0; l < P; l++) {
      const col = Math.floor(l / per) * G;
      for (let r = 0; r < rn; r++) for (let t = 0; t < G; t++) Phil[r * G + t] = phi[r * P * G + l * G + t];
      // T: [rn, end] = Φ_l H[cols_l, :end]; A_jl for j <= l reads only the columns before end
      const end = col + G;
      const Hl = new Float32Array(G * end);
      for (let t = 0; t < G; t++) Hl.set(H32.subarray((col + t) * inp, (col + t) * inp + end), t * end);
      const T = await matmul(rn === R ? Phil : Phil.subarray(0, rn * G), Hl, rn, end, G);
      for (let r = 0; r < rn; r++) {
        const po = r * P * G;
        const to = r * end;
        const ao = r * P * P;
        for (let j = 0; j <= l; j++) {
          const cj = Math.floor(j / per) * G;
          let s = 0;
          for (let t = 0; t < G; t++) s += phi[po + j * G + t] * T[to + cj + t];
          A[ao + j * P + l] = s;
          A[ao + l * P + j] = s;
        }
      }
    }
    for (let r = 0; r < rn; r++) {
      const row = r0 + r;
      const po = r * P * G;
      const ho = row * inp;
      let e0 = 0;
      for (let i = 0; i < inp; i++) e0 += D0[ho + i] * HD[ho + i];
      before += e0;
      for (let j = 0; j < P; j++) {
        const cj = Math.floor(j / per) * G;
        let s = 0;
        for (let t = 0; t < G; t++) s += phi[po + j * G + t] * HD[ho + cj + t];
        c[j] = s;
      }
      const Ar = A.subarray(r * P * P, (r + 1) * P * P);
      const theta0 = rowParams(codec, packed, row, blocks);
      const delta = solve(Ar, c, P);
      let e1 = Infinity;
      if (delta) {
        for (let j = 0; j < P; j++) delta[j] += theta0[j];
        const stored = writeParams(codec, result, row, blocks, delta);
        if (stored) {
          for (let j = 0; j < P; j++) stored[j] -= theta0[j];
          e1 = e0 - 2 * dot(stored, c, P) + quadratic(Ar, stored, P);
        }
      }
      if (e1 < e0) {
        after += e1;
        rows++;
      } else {
        after += e0;
        writeParams(codec, result, row, blocks, theta0);
      }
    }
  }
  return { packed: result, before, after, rows };
}

function dot(a: Float64Array, b: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/** xᵀ A x for A: [n, n]. */
function quadratic(A: Float64Array, x: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) {
    if (x[i] === 0) continue;
    let t = 0;
    for (let j = 0; j < n; j++) t += A[i * n + j] * x[j];
    s += x[i] * t;
  }
  return s;
}

/** The twin: A and c from the dense bases Φ: [P, inp] (zeros outside each block), H Φᵀ in full. */
function normalEquationsNaive(w: Float32Array, r: number, inp: number, G: number, per: number, P: number, phi: Float64Array, H: ArrayLike<number>): { A: Float64Array; c: Float64Array } {
  const dense = new Float64Array(P * inp);
  for (let j = 0; j < P; j++) {
    const col = Math.floor(j / per) * G;
    for (let t = 0; t < G; t++) dense[j * inp + col + t] = phi[j * G + t];
  }
  const A = new Float64Array(P * P);
  const c = new Float64Array(P);
  for (let j = 0; j < P; j++) {
    for (let l = 0; l < P; l++) {
      let s = 0;
      for (let a = 0; a < inp; a++) for (let b = 0; b < inp; b++) s += dense[j * inp + a] * H[a * inp + b] * dense[l * inp + b];
      A[j * P + l] = s;
    }
    let s = 0;
    for (let a = 0; a < inp; a++) for (let b = 0; b < inp; b++) s += dense[j * inp + a] * H[a * inp + b] * w[r * inp + b];
    c[j] = s;
  }
  return { A, c };
}

export function refitHeadersNaive(packed: Uint8Array, codec: BlockCodec, w: Float32Array, out: number, inp: number, H: ArrayLike<number>): RefitResult {
  return refit(packed, codec, w, out, inp, H, normalEquationsNaive);
}

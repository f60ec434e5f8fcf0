/**
 * GPTQ (Frantar et al. 2022): error-compensated quantization of one matrix W: [out, in] against a
 * Hessian proxy H: [in, in] = Σ x xᵀ of the matrix's inputs, written into EXACTLY the packed block
 * layout of an existing codec (quant/codec.ts), so the runtime dequantizes it unchanged.
 *
 *   await gptqQuantize(w, out, inp, H, codec, opts?) -> { packed, dequantized, lambda }
 *   gptqQuantizeNaive(...)   the same, one column at a time over the whole row tail, float64 (the twin)
 *   gptqApplies(codec, inp)  whether the codec's blocks tile rows (inp % blockSize === 0)
 *
 * Layout check: codecs quantize the row-major [out, in] matrix as one vector cut into blocks of G
 * consecutive values, so with inp % G === 0 every block is G consecutive columns of one row, the
 * groups GPTQ needs. Columns are visited left to right (no act-order: it would need a stored
 * permutation). When column j starts a group, each row's group is quantized by the codec itself on
 * the *current* (error-updated) values with importances diag(H) (its MSE search, or RTN for -rtn
 * codecs); that fixes the block's header (scale, min), and its grid (quant/grid.ts) is then used
 * column by column: q = round onto the grid, the error e = (w − q) / U_jj is fed to the later
 * columns, W[:, k] −= e · U_jk, with U the upper Cholesky factor of H⁻¹ (H⁻¹ = Uᵀ U).
 *
 * H is damped (calib/hessian.ts dampedHessian: λ = damp · mean diag, default 1%); when Cholesky
 * still fails, damp grows 10x (up to 4 more tries). With H = identity (or any diagonal H) U is
 * diagonal, nothing is fed forward, and the output is byte-identical to codec.quantize(w, diag) —
 * for the identity, to codec.quantize(w): the data-free treatment of uncalibrated experts.
 *
 * The fast version uses GPTQ's lazy batches: within a batch of B columns (a multiple of G, so that a
 * group's header sees all earlier errors) only the batch is updated; the rest of the row gets the
 * batch's errors afterwards as one float32 GEMM. Its results equal the naive loop's up to that
 * rounding (a few codes on the edge between two grid points flip). The act-order path (static
 * groups) stays in float64 JS; its lazy batches agree with its naive loop bit for bit.
 */
import { MoepressError } from '../../io/errors.js';
import { matmul } from '../../tensor/gemm.js';
import { choleskyBlocked, upperInverseBlocked } from '../../tensor/linalg/blocked.js';
import { cholesky, upperInverse } from '../../tensor/svd.js';
import type { BlockCodec } from '../quant/codec.js';
import { blockGrid, codeFor, headerBytes, type BlockGrid } from '../quant/grid.js';
import { packBits } from '../quant/pack.js';
import { dampedHessian, liveDiagonal } from './hessian.js';

export interface GptqOptions {
  /** Dampening as a fraction of mean diag(H) (default 0.01). */
  damp?: number;
  /** Columns per lazy batch (fast version only; default 128). */
  batch?: number;
  /**
   * Visit columns in decreasing diag(H) (GPTQ's act-order) with static groups: every block's header
   * is chosen up front on the original weights, so the stored layout stays in column order and no
   * permutation is stored. Default false.
   */
  actOrder?: boolean;
}

export interface GptqResult {
  /** Exactly codec.quantize's layout for out·in values. */
  packed: Uint8Array;
  /** codec.dequantize(packed): [out, in]. */
  dequantized: Float32Array;
  /** The dampening λ added to diag(H). */
  lambda: number;
}

export function gptqApplies(codec: BlockCodec, inp: number): boolean {
  return inp % codec.blockSize === 0;
}

/** H: [n, n] -> U: [n, n] upper with H⁻¹ = Uᵀ U, after dampening (retried with more on failure). */
export function inverseFactor(H: ArrayLike<number>, n: number, damp: number): { U: Float64Array; lambda: number } {
  let d = damp;
  for (let attempt = 0; attempt < 5; attempt++, d *= 10) {
    const { H: Hd, lambda } = dampedHessian(H, n, d);
    const R = cholesky(Hd, n); // Hd = Rᵀ R
    if (R === null) continue;
    const Ri = upperInverse(R, n); // H⁻¹ = R⁻¹ R⁻ᵀ
    const Hinv = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        let s = 0;
        for (let k = j; k < n; k++) s += Ri[i * n + k] * Ri[j * n + k];
        Hinv[i * n + j] = Hinv[j * n + i] = s;
      }
    }
    const U = cholesky(Hinv, n);
    if (U !== null) return { U, lambda };
  }
  throw new MoepressError(`GPTQ: the Hessian [${n}, ${n}] is not positive definite even with dampening ${d / 10} of its mean diagonal`);
}

interface Setup {
  W: Float64Array;
  U: Float64Array;
  lambda: number;
  diag: Float32Array;
  packed: Uint8Array;
  grids: BlockGrid[];
  codes: Uint8Array; // [out, G]
  G: number;
  hb: number;
  blocksPerRow: number;
}

/**
 * The fast path's U: H = V Vᵀ with V upper is H's Cholesky factor with rows and columns reversed
 * (J H J = Rᵀ R gives V = J Rᵀ J), and U = V⁻¹ = J R⁻ᵀ J, so one Cholesky and one triangular
 * inverse (n³/3 multiply-adds) replace inverseFactor's two Cholesky, inverse and product (2n³/3),
 * and both are blocked so that their bulk is float32 GEMMs (tensor/linalg/blocked.ts).
 * Cached per H array (gate and up of an expert share one H): H must not change after the call.
 */
const factorCache = new WeakMap<object, Map<number, { U: Float64Array; lambda: number }>>();

export async function inverseFactorFast(H: ArrayLike<number>, n: number, damp: number): Promise<{ U: Float64Array; lambda: number }> {
  const byDamp = factorCache.get(H as object) ?? new Map<number, { U: Float64Array; lambda: number }>();
  const hit = byDamp.get(damp);
  if (hit) return hit;
  let d = damp;
  for (let attempt = 0; attempt < 5; attempt++, d *= 10) {
    const { H: Hd, lambda } = dampedHessian(H, n, d);
    const Hr = new Float64Array(n * n); // J Hd J
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) Hr[i * n + j] = Hd[(n - 1 - i) * n + (n - 1 - j)];
    const R = await choleskyBlocked(Hr, n);
    if (R === null) continue;
    const Ri = await upperInverseBlocked(R, n);
    const U = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = i; j < n; j++) U[i * n + j] = Ri[(n - 1 - j) * n + (n - 1 - i)];
    const f = { U, lambda };
    byDamp.set(damp, f);
    factorCache.set(H as object, byDamp);
    return f;
  }
  throw new MoepressError(`GPTQ: the Hessian [${n}, ${n}] is not positive definite even with dampening ${d / 10} of its mean diagonal`);
}

function checkInputs(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, codec: BlockCodec): void {
  if (w.length !== out * inp) throw new MoepressError(`GPTQ: w has ${w.length} entries, expected [${out}, ${inp}]`);
  if (H.length !== inp * inp) throw new MoepressError(`GPTQ: H has ${H.length} entries, expected [${inp}, ${inp}]`);
  if (!gptqApplies(codec, inp)) throw new MoepressError(`GPTQ: codec ${codec.id} has blocks of ${codec.blockSize} values, which do not tile rows of ${inp}`);
}

function setup(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, codec: BlockCodec, damp: number, factor = inverseFactor): Setup {
  checkInputs(w, out, inp, H, codec);
  const { U, lambda } = factor(H, inp, damp);
  // Importances for the codec's scale search: diag(H), dead inputs at the mean (as dampedHessian
  // treats them), all ones for an all-zero H; the dampening is left out, so H = I gives weights 1.
  const diag = Float32Array.from(liveDiagonal(Float64Array.from({ length: inp }, (_, j) => Math.fround(H[j * inp + j]))).d);
  const G = codec.blockSize;
  return {
    W: Float64Array.from(w), U, lambda, diag, packed: new Uint8Array((out * inp / G) * codec.bytesPerBlock),
    grids: new Array(out), codes: new Uint8Array(out * G), G, hb: headerBytes(codec), blocksPerRow: inp / G,
  };
}

/** Column j starts a group: each row's header is the codec's choice on the current values. */
function startGroup(s: Setup, codec: BlockCodec, out: number, inp: number, j: number): void {
  const x = new Float32Array(s.G);
  const wts = s.diag.subarray(j, j + s.G);
  for (let r = 0; r < out; r++) {
    for (let i = 0; i < s.G; i++) x[i] = s.W[r * inp + j + i];
    const blk = codec.quantize(x, wts);
    const off = (r * s.blocksPerRow + j / s.G) * codec.bytesPerBlock;
    s.packed.set(blk.subarray(0, s.hb), off);
    s.grids[r] = blockGrid(codec, blk, 0);
  }
}

/** Column j ends a group: pack each row's codes after its header. */
function endGroup(s: Setup, codec: BlockCodec, out: number, j: number): void {
  const g0 = j + 1 - s.G;
  for (let r = 0; r < out; r++) {
    const off = (r * s.blocksPerRow + g0 / s.G) * codec.bytesPerBlock + s.hb;
    packBits(s.codes.subarray(r * s.G, (r + 1) * s.G), codec.bits, s.packed, off);
  }
}

/** Quantizes column j of every row; returns nothing, leaves e_r = (w − q) / U_jj in err[r * stride + col]. */
function quantizeColumn(s: Setup, codec: BlockCodec, out: number, inp: number, j: number, err: Float64Array, stride: number, col: number): void {
  const d = s.U[j * inp + j];
  for (let r = 0; r < out; r++) {
    const g = s.grids[r];
    const w = s.W[r * inp + j];
    const u = codeFor(g, codec, w);
    s.codes[r * s.G + (j % s.G)] = u;
    err[r * stride + col] = (w - (g.a + g.b * u)) / d;
  }
}

function finish(s: Setup, codec: BlockCodec, out: number, inp: number): GptqResult {
  return { packed: s.packed, dequantized: codec.dequantize(s.packed, out * inp), lambda: s.lambda };
}

export function gptqQuantizeNaive(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, codec: BlockCodec, opts: GptqOptions = {}): GptqResult {
  if (opts.actOrder) return gptqStatic(w, out, inp, H, codec, opts.damp ?? 0.01, 1);
  const s = setup(w, out, inp, H, codec, opts.damp ?? 0.01);
  const err = new Float64Array(out);
  for (let j = 0; j < inp; j++) {
    if (j % s.G === 0) startGroup(s, codec, out, inp, j);
    quantizeColumn(s, codec, out, inp, j, err, 1, 0);
    for (let r = 0; r < out; r++) {
      const e = err[r];
      const o = r * inp;
      for (let k = j + 1; k < inp; k++) s.W[o + k] -= e * s.U[j * inp + k];
    }
    if (j % s.G === s.G - 1) endGroup(s, codec, out, j);
  }
  return finish(s, codec, out, inp);
}

/**
 * w: [out, in], H: [in, in] -> the packed codes. Lazy batches of B columns: inside a batch the
 * column loop updates only the batch's columns (in sub-batches of g columns, the rest of the batch
 * by a small GEMM); the rest of every row gets the batch's errors in one float32 GEMM,
 * W[:, j1:] −= Err[:, batch] · U[batch, j1:] (tensor/gemm.ts matmul), which is where GPTQ spends
 * out·in²/2 multiply-adds. The factor U is inverseFactorFast's (cached per H).
 * The twin is gptqQuantizeNaive; the two agree to float32 rounding of the fed-forward errors
 * (tested on tr(ΔW H ΔWᵀ) and on the share of equal codes).
 */
export async function gptqQuantize(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, codec: BlockCodec, opts: GptqOptions = {}): Promise<GptqResult> {
  if (opts.actOrder) return gptqStatic(w, out, inp, H, codec, opts.damp ?? 0.01, Math.max(1, opts.batch ?? 128));
  checkInputs(w, out, inp, H, codec);
  const factor = await inverseFactorFast(H, inp, opts.damp ?? 0.01);
  const s = setup(w, out, inp, H, codec, opts.damp ?? 0.01, () => factor);
  // A group's header is chosen on values that have received every earlier column's error, so a
  // batch holds whole groups: B is rounded to a multiple of G.
  const G = codec.blockSize;
  const B = Math.max(G, Math.floor((opts.batch ?? 128) / G) * G);
  // Inside a batch, sub-batches of g columns (whole groups, >= 32): the column loop updates only
  // its sub-batch; the rest of the batch gets the sub-batch's errors by a small GEMM. The JS loop
  // then costs out·in·g/2 instead of out·in·B/2 multiply-adds.
  const g = Math.min(B, G * Math.ceil(32 / G));
  const err = new Float64Array(out * B); // [out, B]: the batch's scaled errors
  const U = s.U;
  const W = s.W;
  for (let j0 = 0; j0 < inp; j0 += B) {
    const j1 = Math.min(inp, j0 + B);
    for (let s0 = j0; s0 < j1; s0 += g) {
      const s1 = Math.min(j1, s0 + g);
      for (let j = s0; j < s1; j++) {
        if (j % G === 0) startGroup(s, codec, out, inp, j);
        quantizeColumn(s, codec, out, inp, j, err, B, j - j0);
        const uo = j * inp;
        for (let r = 0; r < out; r++) {
          const e = err[r * B + j - j0];
          const o = r * inp;
          for (let k = j + 1; k < s1; k++) W[o + k] -= e * U[uo + k];
        }
        if (j % G === G - 1) endGroup(s, codec, out, j);
      }
      await subtractProduct(s, out, inp, err, B, s0 - j0, s1 - s0, s0, s1, j1);
    }
    await subtractProduct(s, out, inp, err, B, 0, j1 - j0, j0, j1, inp);
  }
  return finish(s, codec, out, inp);
}

/**
 * W[:, c0:c1] −= Err[:, e0:e0+ne] · U[u0:u0+ne, c0:c1] as one float32 GEMM: err: [out, B] holds the
 * scaled errors of the columns u0.. at e0.. (tensor/gemm.ts matmul; [out, ne]·[ne, c1−c0]).
 */
async function subtractProduct(s: Setup, out: number, inp: number, err: Float64Array, B: number, e0: number, ne: number, u0: number, c0: number, c1: number): Promise<void> {
  const cols = c1 - c0;
  if (cols === 0 || ne === 0) return;
  const E32 = new Float32Array(out * ne);
  for (let r = 0; r < out; r++) for (let b = 0; b < ne; b++) E32[r * ne + b] = err[r * B + e0 + b];
  const Ub = new Float32Array(ne * cols);
  for (let b = 0; b < ne; b++) for (let k = 0; k < cols; k++) Ub[b * cols + k] = s.U[(u0 + b) * inp + c0 + k];
  const upd = await matmul(E32, Ub, out, cols, ne);
  const W = s.W;
  for (let r = 0; r < out; r++) {
    const o = r * inp + c0;
    const uo = r * cols;
    for (let k = 0; k < cols; k++) W[o + k] -= upd[uo + k];
  }
}

/**
 * Act-order with static groups. Headers: codec.quantize of the original rows (importances diag(H));
 * columns visited in decreasing diag(H), i.e. W and H permuted, U from the permuted H. B = 1 is the
 * naive loop (every column updates the whole tail at once); larger B are lazy batches with the same
 * order of subtractions, hence the same bytes.
 */
function gptqStatic(w: Float32Array, out: number, inp: number, H: ArrayLike<number>, codec: BlockCodec, damp: number, B: number): GptqResult {
  const s = setup(w, out, inp, H, codec, damp); // validates; its U is for the unpermuted H
  const G = s.G;
  const order = Int32Array.from({ length: inp }, (_, j) => j).sort((a, b) => s.diag[b] - s.diag[a] || a - b);
  const Hp = new Float64Array(inp * inp);
  for (let i = 0; i < inp; i++) for (let k = 0; k < inp; k++) Hp[i * inp + k] = H[order[i] * inp + order[k]];
  const { U } = inverseFactor(Hp, inp, damp);
  const W = new Float64Array(out * inp);
  for (let r = 0; r < out; r++) for (let i = 0; i < inp; i++) W[r * inp + i] = w[r * inp + order[i]];
  const wts = new Float32Array(out * inp);
  for (let r = 0; r < out; r++) wts.set(s.diag, r * inp);
  const packed = codec.quantize(w, wts); // the static headers (codes are rewritten below)
  const grids: BlockGrid[] = [];
  for (let b = 0; b < out * s.blocksPerRow; b++) grids.push(blockGrid(codec, packed, b * codec.bytesPerBlock));
  const codes = new Uint8Array(out * inp); // original column order
  const err = new Float64Array(out * B);
  for (let i0 = 0; i0 < inp; i0 += B) {
    const i1 = Math.min(inp, i0 + B);
    for (let i = i0; i < i1; i++) {
      const j = order[i];
      const d = U[i * inp + i];
      for (let r = 0; r < out; r++) {
        const g = grids[r * s.blocksPerRow + Math.floor(j / G)];
        const x = W[r * inp + i];
        const u = codeFor(g, codec, x);
        codes[r * inp + j] = u;
        const e = (x - (g.a + g.b * u)) / d;
        err[r * B + i - i0] = e;
        const o = r * inp;
        for (let k = i + 1; k < i1; k++) W[o + k] -= e * U[i * inp + k];
      }
    }
    for (let r = 0; r < out; r++) {
      const o = r * inp;
      for (let b = 0; b < i1 - i0; b++) {
        const e = err[r * B + b];
        if (e === 0) continue;
        const uo = (i0 + b) * inp;
        for (let k = i1; k < inp; k++) W[o + k] -= e * U[uo + k];
      }
    }
  }
  for (let b = 0; b < out * s.blocksPerRow; b++) packBits(codes.subarray(b * G, (b + 1) * G), codec.bits, packed, b * codec.bytesPerBlock + s.hb);
  return { packed, dequantized: codec.dequantize(packed, out * inp), lambda: s.lambda };
}

/**
 * Asymmetric int-k block codec (k = 2..8): x̂ = m + s * q, q in 0 .. 2^k - 1, with a scale s and a
 * min m per block (both 2 bytes). Layout: [s u16][m u16][codes]. Costs 16 bits more per block than
 * the symmetric codec, and pays off when a block is not centred on zero.
 *
 * RTN: m = the block minimum rounded down to a storable value, s = (max - m) / (2^k - 1) rounded up,
 * so [min, max] stays inside the code range and every error is <= s/2. Codes are
 * q = clamp(floor((x - m) * (1/s) + 0.5)) (ties up; Math.round is 3x slower in V8).
 *
 * MSE-fitted, after llama.cpp's make_qkx2_quants: (1) for a grid of inverse scales
 * (2^k - 1 + δ) / (max - min), δ in -1 .. 1, round to codes anchored at the minimum and solve the
 * 2x2 weighted least squares for (s, m) given those codes; keep the codes whose fit leaves the least
 * error; (2) alternate "store (s, m) -> recode for the stored values -> refit" a few times; (3) keep
 * the lowest exact error among these and RTN, so a fitted block is never worse than its RTN twin.
 */
import { BlockCodecBase, atLeastBits, atMostBits, checkBlockSize, decodeScale, formatCodecId, nearestBits, readU16, type ScaleDtype, writeU16 } from './block.js';
import type { BlockCodec } from './codec.js';
import { MoepressError } from '../../io/errors.js';
import { packBits, packedBytes, unpackBits } from './pack.js';

/**
 * δ in -1 .. 1 by 0.2 (llama.cpp uses 0.1): measured on 1M Gaussian/Laplacian values, 11 steps and up to
 * 6 Lloyd steps beat 21 steps and 3 Lloyd steps at every k (k=2: 0.110 vs 0.112), at half the cost.
 */
const GRID: readonly number[] = Array.from({ length: 11 }, (_, i) => (i - 5) / 5);
const REFITS = 6;

/** Weighted sums of one block's codes q against its values x. */
interface Sums { w: number; q: number; q2: number; x: number; qx: number; x2: number }

/** Least-squares (s, m) minimising Σ w (x - m - s q)², and the error left; null if the codes are all equal. */
function leastSquares(t: Sums): { s: number; m: number; err: number } | null {
  const det = t.w * t.q2 - t.q * t.q;
  if (!(det > 0)) return null;
  const s = (t.w * t.qx - t.q * t.x) / det;
  const m = (t.q2 * t.x - t.q * t.qx) / det;
  const err = t.x2 - 2 * s * t.qx - 2 * m * t.x + s * s * t.q2 + 2 * s * m * t.q + m * m * t.w;
  return { s, m, err };
}

export class AsymmetricCodec extends BlockCodecBase implements BlockCodec {
  readonly kind = 'asymmetric';
  readonly id: string;
  readonly bits: number;
  readonly blockSize: number;
  readonly bytesPerBlock: number;
  readonly rtn: boolean;
  readonly scaleDtype: ScaleDtype;
  private readonly qmax: number;
  private readonly codes: Uint8Array; // scratch: one block of codes
  private readonly sums: Sums = { w: 0, q: 0, q2: 0, x: 0, qx: 0, x2: 0 };

  constructor(bits: number, blockSize: number, opts: { rtn: boolean; scaleDtype: ScaleDtype }) {
    super();
    if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new MoepressError(`asymmetric codec: bits must be 2..8, got ${bits}`);
    checkBlockSize(blockSize);
    this.bits = bits;
    this.blockSize = blockSize;
    this.rtn = opts.rtn;
    this.scaleDtype = opts.scaleDtype;
    this.qmax = (1 << bits) - 1;
    this.bytesPerBlock = 4 + packedBytes(blockSize, bits);
    this.codes = new Uint8Array(blockSize);
    this.id = formatCodecId('asymmetric', bits, blockSize, this.rtn, this.scaleDtype);
  }

  protected readonly encode = (x: Float32Array, w: Float32Array | null, len: number, out: Uint8Array, offset: number,
    block: number): void => {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < len; i++) {
      if (x[i] < lo) lo = x[i];
      if (x[i] > hi) hi = x[i];
    }
    const dt = this.scaleDtype;
    let mb = atMostBits(lo, dt, block);
    let sb = atLeastBits((hi - decodeScale(mb, dt)) / this.qmax, dt, block);
    if (!this.rtn && hi > lo) [sb, mb] = this.fit(x, w, len, lo, hi, sb, mb, block);
    const s = decodeScale(sb, dt);
    const m = decodeScale(mb, dt);
    const inv = s === 0 ? 0 : 1 / s;
    const qmax = this.qmax;
    const codes = this.codes;
    for (let i = 0; i < codes.length; i++) {
      const q = Math.floor((x[i] - m) * inv + 0.5);
      codes[i] = q < 0 ? 0 : q > qmax ? qmax : q;
    }
    writeU16(out, offset, sb);
    writeU16(out, offset + 2, mb);
    packBits(codes, this.bits, out, offset + 4);
  };

  protected readonly decode = (src: Uint8Array, offset: number, out: Float32Array, outOffset: number, count: number): void => {
    const s = decodeScale(readU16(src, offset), this.scaleDtype);
    const m = decodeScale(readU16(src, offset + 2), this.scaleDtype);
    const codes = this.codes;
    unpackBits(src, offset + 4, this.bits, count, codes);
    for (let i = 0; i < count; i++) out[outOffset + i] = m + s * codes[i];
  };

  /** Returns the stored [scale, min] bits with the least Σ w (x - m - s q)² over the first len values. */
  private fit(x: Float32Array, w: Float32Array | null, len: number, lo: number, hi: number, rtnS: number, rtnM: number,
    block: number): [number, number] {
    const dt = this.scaleDtype;
    // (1) grid of inverse scales anchored at the minimum, each refit by least squares.
    let best: { s: number; m: number; err: number } | null = null;
    for (const d of GRID) {
      const iscale = (this.qmax + d) / (hi - lo);
      const fitted = leastSquares(this.accumulate(x, w, len, lo, iscale));
      if (fitted !== null && (best === null || fitted.err < best.err)) best = fitted;
    }
    // (2)+(3) Lloyd steps on stored values; RTN is the incumbent.
    let bestBits: [number, number] = [rtnS, rtnM];
    let bestErr = this.evaluate(x, w, len, decodeScale(rtnS, dt), decodeScale(rtnM, dt));
    let prevS = rtnS;
    let prevM = rtnM;
    for (let it = 0; it < REFITS && best !== null; it++) {
      const sb = nearestBits(best.s, dt, block);
      const mb = nearestBits(best.m, dt, block, 'min');
      if (sb === prevS && mb === prevM) break;
      prevS = sb;
      prevM = mb;
      const s = decodeScale(sb, dt);
      if (s === 0) break;
      const err = this.evaluate(x, w, len, s, decodeScale(mb, dt));
      if (err < bestErr) {
        bestErr = err;
        bestBits = [sb, mb];
      }
      best = leastSquares(this.sums);
    }
    return bestBits;
  }

  /** Sums of the codes round((x - lo) * iscale), clamped, into this.sums. */
  private accumulate(x: Float32Array, w: Float32Array | null, len: number, lo: number, iscale: number): Sums {
    const qmax = this.qmax;
    let sw = 0, sq = 0, sq2 = 0, sx = 0, sqx = 0, sx2 = 0;
    for (let i = 0; i < len; i++) {
      const xi = x[i];
      let q = Math.floor((xi - lo) * iscale + 0.5);
      q = q < 0 ? 0 : q > qmax ? qmax : q;
      const wi = w === null ? 1 : w[i];
      sw += wi;
      sq += wi * q;
      sq2 += wi * q * q;
      sx += wi * xi;
      sqx += wi * q * xi;
      sx2 += wi * xi * xi;
    }
    const t = this.sums;
    t.w = sw; t.q = sq; t.q2 = sq2; t.x = sx; t.qx = sqx; t.x2 = sx2;
    return t;
  }

  /** Exact Σ w (x - m - s q)² for codes rounded at (s, m); leaves the code sums in this.sums. */
  private evaluate(x: Float32Array, w: Float32Array | null, len: number, s: number, m: number): number {
    const qmax = this.qmax;
    const inv = s === 0 ? 0 : 1 / s;
    let err = 0;
    let sw = 0, sq = 0, sq2 = 0, sx = 0, sqx = 0, sx2 = 0;
    for (let i = 0; i < len; i++) {
      const xi = x[i];
      let q = Math.floor((xi - m) * inv + 0.5);
      q = q < 0 ? 0 : q > qmax ? qmax : q;
      const wi = w === null ? 1 : w[i];
      const e = xi - m - s * q;
      err += wi * e * e;
      sw += wi;
      sq += wi * q;
      sq2 += wi * q * q;
      sx += wi * xi;
      sqx += wi * q * xi;
      sx2 += wi * xi * xi;
    }
    const t = this.sums;
    t.w = sw; t.q = sq; t.q2 = sq2; t.x = sx; t.qx = sqx; t.x2 = sx2;
    return err;
  }
}

/**
 * Symmetric int-k block codec (k = 2..8): x̂ = s * q, q in [-2^(k-1), 2^(k-1) - 1], one scale per
 * block, stored as code u = q + 2^(k-1).
 *
 * Full range, as llama.cpp's Q4_0: the value of largest magnitude, m, gets code -2^(k-1) with the
 * signed scale s = m / -2^(k-1), so all 2^k codes are used. We measured it against the restricted
 * range [-(2^(k-1)-1), 2^(k-1)-1] with s = max|x| / (2^(k-1)-1) (RTN, 1M values, g64): relative MSE
 * is lower at every k on Gaussian and Laplacian data (k=2: 0.155 vs 0.515; k=4: 9.0e-3 vs 1.16e-2;
 * k=8: 3.47e-5 vs 3.52e-5). The price: RTN error is <= |s|/2 except for values of the other sign
 * beyond (2^(k-1) - 1/2)|s|, clipped to code 2^(k-1)-1, whose error is <= |s|.
 *
 * Codes are q = clamp(floor(x * (1/s) + 0.5)), so ties round toward +inf, like llama.cpp's
 * (int)(x*id + 8.5). RTN rounds |s| up to the next storable value so m keeps its code.
 *
 * MSE-fitted (no -rtn), after llama.cpp's make_qx_quants: (1) try a grid of inverse scales around the
 * max anchor, on both sides of the code range; for each, round to codes q and score them by the error
 * left with the best real scale for those codes, s* = Σwxq / Σwq² (error = Σwx² - (Σwxq)²/Σwq², so
 * maximise (Σwxq)²/Σwq²); (2) from the best, alternate "store s* -> recode x for the stored scale ->
 * refit s*" (Lloyd steps: each half-step is optimal given the other, only the rounding of s* to the
 * stored dtype can undo a little); (3) keep the candidate with the lowest exact error among these and
 * the RTN scale, so a fitted block is never worse than its RTN twin.
 */
import { BlockCodecBase, atLeastBits, checkBlockSize, decodeScale, formatCodecId, nearestBits, readU16, type ScaleDtype, writeU16 } from './block.js';
import type { BlockCodec } from './codec.js';
import { MoepressError } from '../../io/errors.js';
import { packBits, packedBytes, unpackBits } from './pack.js';

/**
 * Offsets δ added to the anchor's code: 7 steps of 0.3 (-0.9 .. 0.9, llama.cpp's range) up to 5 bits,
 * wider above (step 0.3 * 2^(k-1) / 16) where a fixed ±0.9 is a negligible change of scale. Measured
 * on 1M Gaussian/Laplacian values: as good as llama.cpp's 19 steps to 0.1%, and k = 6..8 gain 1-2%
 * from the wider steps. Lloyd steps stop early once the stored scale repeats.
 */
function grid(nmax: number): number[] {
  const step = 0.3 * Math.max(1, nmax / 16);
  return Array.from({ length: 7 }, (_, i) => (i - 3) * step);
}
const REFITS = 6;

export class SymmetricCodec extends BlockCodecBase implements BlockCodec {
  readonly kind = 'symmetric';
  readonly id: string;
  readonly bits: number;
  readonly blockSize: number;
  readonly bytesPerBlock: number;
  readonly rtn: boolean;
  readonly scaleDtype: ScaleDtype;
  private readonly nmax: number; // codes are -nmax .. nmax - 1
  private readonly codes: Uint8Array; // scratch: one block of codes
  private readonly grid: readonly number[];
  private lx = 0; // Σ w x q and Σ w q² left by the last sumCodes() / evaluate() call
  private l2 = 0;

  constructor(bits: number, blockSize: number, opts: { rtn: boolean; scaleDtype: ScaleDtype }) {
    super();
    if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new MoepressError(`symmetric codec: bits must be 2..8, got ${bits}`);
    checkBlockSize(blockSize);
    this.bits = bits;
    this.blockSize = blockSize;
    this.rtn = opts.rtn;
    this.scaleDtype = opts.scaleDtype;
    this.nmax = 1 << (bits - 1);
    this.bytesPerBlock = 2 + packedBytes(blockSize, bits);
    this.codes = new Uint8Array(blockSize);
    this.grid = grid(this.nmax);
    this.id = formatCodecId('symmetric', bits, blockSize, this.rtn, this.scaleDtype);
  }

  // x, w: [G] (first len real) -> out[offset .. offset + bytesPerBlock)
  protected readonly encode = (x: Float32Array, w: Float32Array | null, len: number, out: Uint8Array, offset: number,
    block: number): void => {
    let amax = 0;
    let anchor = 0; // the signed value of largest magnitude
    for (let i = 0; i < len; i++) {
      const a = Math.abs(x[i]);
      if (a > amax) {
        amax = a;
        anchor = x[i];
      }
    }
    let sb = 0; // an all-zero block stores scale 0 and code 0
    if (amax > 0) {
      const rtnBits = atLeastBits(anchor / -this.nmax, this.scaleDtype, block);
      sb = this.rtn ? rtnBits : this.fit(x, w, len, anchor, rtnBits, block);
    }
    const s = decodeScale(sb, this.scaleDtype);
    const inv = s === 0 ? 0 : 1 / s;
    const nmax = this.nmax;
    const hi = nmax - 1;
    const codes = this.codes;
    for (let i = 0; i < codes.length; i++) {
      let q = Math.floor(x[i] * inv + 0.5);
      q = q < -nmax ? -nmax : q > hi ? hi : q;
      codes[i] = q + nmax;
    }
    writeU16(out, offset, sb);
    packBits(codes, this.bits, out, offset + 2);
  };

  protected readonly decode = (src: Uint8Array, offset: number, out: Float32Array, outOffset: number, count: number): void => {
    const s = decodeScale(readU16(src, offset), this.scaleDtype);
    const codes = this.codes;
    unpackBits(src, offset + 2, this.bits, count, codes);
    const nmax = this.nmax;
    for (let i = 0; i < count; i++) out[outOffset + i] = s * (codes[i] - nmax);
  };

  /** Returns the stored bits of the scale with the least Σ w (x - s q)² over the first len values. */
  private fit(x: Float32Array, w: Float32Array | null, len: number, anchor: number, rtnBits: number, block: number): number {
    const nmax = this.nmax;
    const hi = nmax - 1;
    // (1) grid: anchor at the negative end (code -nmax - δ) and at the positive end (code hi + δ).
    let bestScore = -1;
    let bestS = 0;
    for (let side = 0; side < 2; side++) {
      for (const d of this.grid) {
        const iscale = side === 0 ? -(nmax + d) / anchor : (hi + d) / anchor;
        this.sumCodes(x, w, len, iscale);
        const lx = this.lx;
        const l2 = this.l2;
        if (l2 > 0 && (lx * lx) / l2 > bestScore) {
          bestScore = (lx * lx) / l2;
          bestS = lx / l2;
        }
      }
    }
    // (2)+(3) Lloyd steps on stored scales; RTN is the incumbent.
    let bestBits = rtnBits;
    let bestErr = this.evaluate(x, w, len, decodeScale(rtnBits, this.scaleDtype));
    let s = bestS;
    let prev = rtnBits;
    for (let it = 0; it < REFITS && s !== 0; it++) {
      const bits = nearestBits(s, this.scaleDtype, block);
      if (bits === prev) break;
      prev = bits;
      const stored = decodeScale(bits, this.scaleDtype);
      if (stored === 0) break; // underflowed: an all-zero block is never better than RTN here
      const err = this.evaluate(x, w, len, stored);
      if (err < bestErr) {
        bestErr = err;
        bestBits = bits;
      }
      if (this.l2 === 0) break;
      s = this.lx / this.l2;
    }
    return bestBits;
  }

  /** Σ w x q and Σ w q² for codes q = clamp(round(x * iscale)), into this.lx, this.l2. */
  private sumCodes(x: Float32Array, w: Float32Array | null, len: number, iscale: number): void {
    const nmax = this.nmax;
    const hi = nmax - 1;
    let lx = 0;
    let l2 = 0;
    for (let i = 0; i < len; i++) {
      const xi = x[i];
      let q = Math.floor(xi * iscale + 0.5);
      q = q < -nmax ? -nmax : q > hi ? hi : q;
      const wi = w === null ? 1 : w[i];
      lx += wi * xi * q;
      l2 += wi * q * q;
    }
    this.lx = lx;
    this.l2 = l2;
  }

  /** Exact Σ w (x - s q)² for codes rounded at scale s; leaves Σwxq, Σwq² in this.lx, this.l2. */
  private evaluate(x: Float32Array, w: Float32Array | null, len: number, s: number): number {
    const nmax = this.nmax;
    const hi = nmax - 1;
    const inv = 1 / s;
    let err = 0;
    let lx = 0;
    let l2 = 0;
    for (let i = 0; i < len; i++) {
      const xi = x[i];
      let q = Math.floor(xi * inv + 0.5);
      q = q < -nmax ? -nmax : q > hi ? hi : q;
      const wi = w === null ? 1 : w[i];
      const e = xi - s * q;
      err += wi * e * e;
      lx += wi * xi * q;
      l2 += wi * q * q;
    }
    this.lx = lx;
    this.l2 = l2;
    return err;
  }
}

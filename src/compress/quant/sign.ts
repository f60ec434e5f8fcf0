/**
 * 1-bit sign codec: x̂ = s * sign(x), one bit per value (1 for x >= 0, 0 for x < 0) and one 2-byte
 * scale per block. Layout: [s u16][bits, LSB first (pack.ts)].
 *
 * Why s = mean|x| (weighted: Σ w|x| / Σ w): the block error is
 *   E(s, b) = Σ w_i (x_i - s b_i)²,  b_i in {-1, +1}.
 * For any s >= 0, each term is smallest with b_i = sign(x_i), since (|x_i| - s)² <= (|x_i| + s)²;
 * and s < 0 is the same as s > 0 with every b flipped, so b = sign(x) loses nothing. With b fixed,
 * E is a convex quadratic in s: dE/ds = -2 Σ w_i b_i x_i + 2 s Σ w_i b_i² = -2 Σ w_i |x_i| + 2 s Σ w_i,
 * zero at s = Σ w_i |x_i| / Σ w_i. Both choices are jointly optimal, so sign x mean|x| is the
 * L2-optimal 1-bit symmetric quantizer of the block; only rounding s to f16 (relative 2^-11) departs
 * from it, and E grows by Σw (s - ŝ)², negligible. A block whose weights are all 0 uses mean|x|.
 * There is no RTN variant: nothing is searched.
 */
import { BlockCodecBase, checkBlockSize, decodeScale, formatCodecId, nearestBits, readU16, type ScaleDtype, writeU16 } from './block.js';
import type { BlockCodec } from './codec.js';
import { packBits, packedBytes, unpackBits } from './pack.js';

export class SignCodec extends BlockCodecBase implements BlockCodec {
  readonly kind = 'sign';
  readonly id: string;
  readonly bits = 1;
  readonly blockSize: number;
  readonly bytesPerBlock: number;
  readonly rtn = false;
  readonly scaleDtype: ScaleDtype;
  private readonly codes: Uint8Array; // scratch: one block of sign bits

  constructor(blockSize: number, scaleDtype: ScaleDtype) {
    super();
    checkBlockSize(blockSize);
    this.blockSize = blockSize;
    this.scaleDtype = scaleDtype;
    this.bytesPerBlock = 2 + packedBytes(blockSize, 1);
    this.codes = new Uint8Array(blockSize);
    this.id = formatCodecId('sign', 1, blockSize, false, scaleDtype);
  }

  protected readonly encode = (x: Float32Array, w: Float32Array | null, len: number, out: Uint8Array, offset: number,
    block: number): void => {
    let sum = 0;
    let wsum = 0;
    if (w !== null) {
      for (let i = 0; i < len; i++) {
        sum += w[i] * Math.abs(x[i]);
        wsum += w[i];
      }
    }
    if (!(wsum > 0)) {
      sum = 0;
      for (let i = 0; i < len; i++) sum += Math.abs(x[i]);
      wsum = len;
    }
    const codes = this.codes;
    for (let i = 0; i < codes.length; i++) codes[i] = x[i] >= 0 ? 1 : 0;
    writeU16(out, offset, nearestBits(sum / wsum, this.scaleDtype, block));
    packBits(codes, 1, out, offset + 2);
  };

  protected readonly decode = (src: Uint8Array, offset: number, out: Float32Array, outOffset: number, count: number): void => {
    const s = decodeScale(readU16(src, offset), this.scaleDtype);
    const codes = this.codes;
    unpackBits(src, offset + 2, 1, count, codes);
    for (let i = 0; i < count; i++) out[outOffset + i] = codes[i] === 1 ? s : -s;
  };
}

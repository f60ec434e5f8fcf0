/**
 * The affine grid one stored block decodes to, for quantizers that choose codes themselves (GPTQ,
 * calib/gptq.ts) but must write exactly the codec's block layout so the runtime decodes it unchanged:
 *   value(u) = a + b·u, u in 0 .. umax (the stored code),
 * read from the block's header (the codec.ts layout: [scale u16][min u16, asymmetric only][codes]):
 *   symmetric  a = −s·2^(k−1), b = s       (codes u = q + 2^(k−1))
 *   asymmetric a = m,          b = s
 *   sign       a = −s,         b = 2s      (u = 1 for x >= 0)
 * `codeFor` rounds exactly as the codecs do (floor(· + 0.5), clamped), so a block re-encoded with the
 * grid of its own header and the same values gets the same codes.
 */
import { decodeScale, readU16 } from './block.js';
import type { BlockCodec } from './codec.js';
import { packedBytes } from './pack.js';

export interface BlockGrid {
  a: number;
  b: number;
  umax: number;
}

/** Bytes of a block before its packed codes (scale, and min for asymmetric codecs). */
export function headerBytes(codec: BlockCodec): number {
  return codec.bytesPerBlock - packedBytes(codec.blockSize, codec.bits);
}

/** The grid of the block stored at packed[offset ..]. */
export function blockGrid(codec: BlockCodec, packed: Uint8Array, offset: number): BlockGrid {
  const s = decodeScale(readU16(packed, offset), codec.scaleDtype);
  if (codec.kind === 'sign') return { a: -s, b: 2 * s, umax: 1 };
  if (codec.kind === 'asymmetric') return { a: decodeScale(readU16(packed, offset + 2), codec.scaleDtype), b: s, umax: (1 << codec.bits) - 1 };
  const nmax = 1 << (codec.bits - 1);
  return { a: -s * nmax, b: s, umax: (1 << codec.bits) - 1 };
}

/** The code of x on grid g, rounded as the codecs round (a zero step gives the code of 0: the middle for symmetric). */
export function codeFor(g: BlockGrid, codec: BlockCodec, x: number): number {
  if (codec.kind === 'sign') return x >= 0 ? 1 : 0;
  if (g.b === 0) return codec.kind === 'symmetric' ? 1 << (codec.bits - 1) : 0;
  let u: number;
  if (codec.kind === 'symmetric') {
    const nmax = 1 << (codec.bits - 1);
    u = Math.floor(x * (1 / g.b) + 0.5);
    u = (u < -nmax ? -nmax : u > nmax - 1 ? nmax - 1 : u) + nmax;
    return u;
  }
  u = Math.floor((x - g.a) * (1 / g.b) + 0.5);
  return u < 0 ? 0 : u > g.umax ? g.umax : u;
}

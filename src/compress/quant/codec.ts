/**
 * Block codecs for expert weights (STYLE rule 6): a tensor is cut into blocks of `blockSize` values,
 * each stored in exactly `bytesPerBlock` bytes (packed codes plus 2-byte scale, plus a 2-byte min for
 * asymmetric codecs), so the budget of any codec is known before quantizing:
 *   bits per weight = 8 * bytesPerBlock / blockSize, e.g. q4s-g64: (2 + 32) * 8 / 64 = 4.25.
 *
 * Ids are q{bits}{s|a}-g{G}[-rtn][-bf16]:
 *   s      symmetric, codes -2^(k-1) .. 2^(k-1)-1 times one scale (q1s: sign x scale, 1 bit)
 *   a      asymmetric, min + scale x (0 .. 2^k-1)
 *   -rtn   round-to-nearest with the max-abs (or min/max) scale: the `quant` baseline; without it the
 *          scale (and min) are searched to minimise the block's squared error
 *   -bf16  scales stored as bfloat16 instead of float16 (range, see block.ts)
 * Block layout (little-endian): [scale u16][min u16, asymmetric only][codes, bit stream (pack.ts)].
 * A length that is not a multiple of blockSize is zero-padded to whole blocks; the padding is stored,
 * so storedBytes counts it.
 */
import { MoepressError } from '../../io/errors.js';
import { AsymmetricCodec } from './asymmetric.js';
import type { ScaleDtype } from './block.js';
import { SignCodec } from './sign.js';
import { SymmetricCodec } from './symmetric.js';

export type CodecKind = 'symmetric' | 'asymmetric' | 'sign';

export interface BlockCodec {
  /** Stable id, written into manifests; codecById(id) rebuilds the codec. */
  readonly id: string;
  readonly kind: CodecKind;
  /** Bits per value (1..8). */
  readonly bits: number;
  /** Values per block (the group size). */
  readonly blockSize: number;
  /** Stored bytes per block: packed codes + scale (+ min). */
  readonly bytesPerBlock: number;
  /** True for plain round-to-nearest with max-abs scales (the `quant` baseline). */
  readonly rtn: boolean;
  readonly scaleDtype: ScaleDtype;
  /**
   * x: [n] -> packed [ceil(n / blockSize) * bytesPerBlock]. weights: [n] optional importances >= 0;
   * the MSE search then minimises sum w (x - x̂)^2 per block (RTN ignores them).
   */
  quantize(x: Float32Array, weights?: Float32Array): Uint8Array;
  /** packed (exactly storedBytes(this, n) bytes) -> x̂: [n], written into out when given. */
  dequantize(packed: Uint8Array, n: number, out?: Float32Array): Float32Array;
}

export interface CodecSpec {
  kind: CodecKind;
  bits: number;
  blockSize: number;
  rtn?: boolean;
  scaleDtype?: ScaleDtype;
}

export function makeCodec(spec: CodecSpec): BlockCodec {
  const opts = { rtn: spec.rtn ?? false, scaleDtype: spec.scaleDtype ?? 'f16' };
  if (spec.kind === 'sign') {
    if (spec.bits !== 1) throw new MoepressError(`the sign codec stores 1 bit per value, not ${spec.bits}`);
    if (opts.rtn) {
      throw new MoepressError(`the 1-bit sign codec has no rtn variant: its scale mean|x| is already closed-form`);
    }
    return new SignCodec(spec.blockSize, opts.scaleDtype);
  }
  if (spec.bits === 1) throw new MoepressError(`1-bit codecs are sign x scale: use kind 'sign' (id q1s-gG)`);
  return spec.kind === 'symmetric' ? new SymmetricCodec(spec.bits, spec.blockSize, opts)
    : new AsymmetricCodec(spec.bits, spec.blockSize, opts);
}

const ID = /^q([1-8])([sa])-g([1-9][0-9]*)(-rtn)?(-bf16)?$/;

/** Parses an id written by a codec (see the grammar above) back into that codec. */
export function codecById(id: string): BlockCodec {
  const m = ID.exec(id);
  if (m === null) {
    throw new MoepressError(`unknown codec id '${id}': expected q{bits}{s|a}-g{group}[-rtn][-bf16], e.g. 'q4s-g64'`);
  }
  const bits = Number(m[1]);
  const kind: CodecKind = m[2] === 'a' ? 'asymmetric' : bits === 1 ? 'sign' : 'symmetric';
  try {
    return makeCodec({ kind, bits, blockSize: Number(m[3]), rtn: m[4] !== undefined, scaleDtype: m[5] ? 'bf16' : 'f16' });
  } catch (e) {
    if (e instanceof MoepressError) throw new MoepressError(`codec id '${id}': ${e.detail}`);
    throw e;
  }
}

/** Bytes stored for n values, the zero padding of the last block included. */
export function storedBytes(codec: BlockCodec, n: number): number {
  return Math.ceil(n / codec.blockSize) * codec.bytesPerBlock;
}

/** Stored bits per weight for a whole number of blocks, scales included. */
export function bitsPerWeight(codec: BlockCodec): number {
  return (8 * codec.bytesPerBlock) / codec.blockSize;
}

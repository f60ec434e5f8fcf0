/**
 * What the block codecs share: how a scale (or min) is stored in 2 bytes, and the loop over blocks
 * with zero padding of the last one.
 *
 * Scales are float16 by default, as in llama.cpp. Two range limits matter:
 * - Overflow: a scale above 65504 (values beyond ~65504 * 2^(k-1)) cannot be stored. We never clamp,
 *   since a clamped scale silently clips the whole block; quantize throws and names the '-bf16'
 *   variant of the codec, whose scales reach 3.4e38 with 8 significant bits instead of 11.
 * - Underflow: expert deltas are small (|Δ| ~ 1e-4 .. 1e-3), so 8-bit scales can fall below the
 *   smallest normal f16 (6.1e-5) into subnormals, spaced 2^-24 = 6e-8. That costs relative precision
 *   of the *scale* only, and codes are always chosen for the stored scale, so the error bounds hold.
 *   Below a scale of 2^-16 f16 subnormals are coarser than bf16's 8 significant bits, and below
 *   ~3e-8 they round to zero: chooseScaleDtype (select.ts) picks '-bf16' for such data (q8s-g64 on
 *   Gaussian data of σ 1e-5: relative error 0.0066 with f16 scales, 0.0056 with bf16).
 * Every quantizer rounds its scale to the stored dtype first and then chooses codes for that rounded
 * value, so what quantize optimises is exactly what dequantize reproduces.
 */
import { MoepressError } from '../../io/errors.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../tensor/convert.js';

export type ScaleDtype = 'f16' | 'bf16';

export function encodeScale(v: number, dtype: ScaleDtype): number {
  return dtype === 'f16' ? f32ToF16(v) : f32ToBf16(v);
}

export function decodeScale(bits: number, dtype: ScaleDtype): number {
  return dtype === 'f16' ? f16ToF32(bits) : bf16ToF32(bits);
}

function checkStored(bits: number, v: number, dtype: ScaleDtype, block: number, what: string): number {
  if (!Number.isFinite(decodeScale(bits, dtype))) {
    const hint = dtype === 'f16' ? `; use the '-bf16' variant of this codec` : '';
    throw new MoepressError(`block ${block}: ${what} ${v} does not fit ${dtype === 'f16' ? 'float16 (largest 65504)'
      : 'bfloat16'}${hint}`);
  }
  return bits;
}

/** Bits of the storable value nearest to v. */
export function nearestBits(v: number, dtype: ScaleDtype, block: number, what = 'scale'): number {
  return checkStored(encodeScale(v, dtype), v, dtype, block, what);
}

/**
 * Bits of the storable value nearest to v whose magnitude is >= |v| (same sign). RTN uses it so the
 * largest-magnitude value of a block still lands inside the code range after the scale is rounded.
 * f16/bf16 are sign-magnitude, so "next larger magnitude" is bits + 1.
 */
export function atLeastBits(v: number, dtype: ScaleDtype, block: number, what = 'scale'): number {
  let b = encodeScale(v, dtype);
  if (Math.abs(decodeScale(b, dtype)) < Math.abs(v)) b++;
  return checkStored(b, v, dtype, block, what);
}

/** Bits of the largest storable value <= v (the asymmetric min must not exceed the block's minimum). */
export function atMostBits(v: number, dtype: ScaleDtype, block: number, what = 'min'): number {
  let b = encodeScale(v, dtype);
  const d = decodeScale(b, dtype);
  if (d > v) {
    if (d > 0) b--; // smaller positive magnitude
    else if (d === 0) b = 0x8001; // smallest negative subnormal (same pattern in f16 and bf16)
    else b++; // larger negative magnitude
  }
  return checkStored(b, v, dtype, block, what);
}

export function writeU16(out: Uint8Array, offset: number, bits: number): void {
  out[offset] = bits & 255;
  out[offset + 1] = bits >>> 8;
}

export function readU16(src: Uint8Array, offset: number): number {
  return src[offset] | (src[offset + 1] << 8);
}

/**
 * Encodes one block. x and w have blockSize entries but only the first len are real; the rest are
 * the zero padding of a short last block (weight 0), which must get codes but must not steer the fit.
 * w is null when no importance weights were given (all ones).
 */
export type EncodeBlock = (x: Float32Array, w: Float32Array | null, len: number, out: Uint8Array,
  offset: number, block: number) => void;

/** Decodes one block at src[offset..] into out[outOffset .. outOffset + count), count <= blockSize. */
export type DecodeBlock = (src: Uint8Array, offset: number, out: Float32Array, outOffset: number, count: number) => void;

/**
 * x: [n] -> packed blocks [ceil(n / G) * bytesPerBlock]. A short last block is zero-padded to G
 * values; its padding is stored (and counted in the budget) but carries no weight in the fit.
 */
export function quantizeBlocks(x: Float32Array, weights: Float32Array | undefined, G: number, bytesPerBlock: number,
  encode: EncodeBlock): Uint8Array {
  if (weights !== undefined && weights.length !== x.length) {
    throw new MoepressError(`quantize: ${weights.length} weights for ${x.length} values`);
  }
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) throw new MoepressError(`quantize: value ${x[i]} at index ${i} is not finite`);
    if (weights !== undefined && !(weights[i] >= 0 && weights[i] < Infinity)) {
      throw new MoepressError(`quantize: weight ${weights[i]} at index ${i} must be finite and >= 0`);
    }
  }
  const nBlocks = Math.ceil(x.length / G);
  const out = new Uint8Array(nBlocks * bytesPerBlock);
  const full = Math.floor(x.length / G);
  for (let b = 0; b < full; b++) {
    const xb = x.subarray(b * G, (b + 1) * G);
    encode(xb, weights ? weights.subarray(b * G, (b + 1) * G) : null, G, out, b * bytesPerBlock, b);
  }
  if (full < nBlocks) {
    const len = x.length - full * G;
    const xb = new Float32Array(G);
    xb.set(x.subarray(full * G));
    let wb: Float32Array | null = null;
    if (weights) {
      wb = new Float32Array(G);
      wb.set(weights.subarray(full * G));
    }
    encode(xb, wb, len, out, full * bytesPerBlock, full);
  }
  return out;
}

/** packed blocks -> x̂: [n]; packed must be exactly the bytes quantize produced for n values. */
export function dequantizeBlocks(id: string, packed: Uint8Array, n: number, out: Float32Array | undefined, G: number,
  bytesPerBlock: number, decode: DecodeBlock): Float32Array {
  const nBlocks = Math.ceil(n / G);
  if (packed.length !== nBlocks * bytesPerBlock) {
    throw new MoepressError(`${id}: ${packed.length} bytes for ${n} values, expected ${nBlocks} blocks of ${
      bytesPerBlock} = ${nBlocks * bytesPerBlock} bytes`);
  }
  const dst = out ?? new Float32Array(n);
  if (dst.length !== n) throw new MoepressError(`${id}: output has ${dst.length} entries, expected ${n}`);
  for (let b = 0; b < nBlocks; b++) decode(packed, b * bytesPerBlock, dst, b * G, Math.min(G, n - b * G));
  return dst;
}

/** Canonical codec id: q{bits}{s|a}-g{G}[-rtn][-bf16], e.g. 'q4s-g64', 'q3a-g32-rtn', 'q1s-g128-bf16'. */
export function formatCodecId(kind: 'symmetric' | 'asymmetric' | 'sign', bits: number, blockSize: number, rtn: boolean,
  scaleDtype: ScaleDtype): string {
  return `q${bits}${kind === 'asymmetric' ? 'a' : 's'}-g${blockSize}${rtn ? '-rtn' : ''}${scaleDtype === 'bf16' ? '-bf16' : ''}`;
}

export function checkBlockSize(blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > 65536) {
    throw new MoepressError(`block size must be an integer in 1..65536, got ${blockSize}`);
  }
}

/**
 * The block loop every codec shares: a codec supplies its id, block size, bytes per block and the
 * per-block encode/decode; quantize/dequantize run them over whole tensors (padding the last block).
 */
export abstract class BlockCodecBase {
  abstract readonly id: string;
  abstract readonly blockSize: number;
  abstract readonly bytesPerBlock: number;
  protected abstract readonly encode: EncodeBlock;
  protected abstract readonly decode: DecodeBlock;

  quantize(x: Float32Array, weights?: Float32Array): Uint8Array {
    return quantizeBlocks(x, weights, this.blockSize, this.bytesPerBlock, this.encode);
  }

  dequantize(packed: Uint8Array, n: number, out?: Float32Array): Float32Array {
    return dequantizeBlocks(this.id, packed, n, out, this.blockSize, this.bytesPerBlock, this.decode);
  }
}

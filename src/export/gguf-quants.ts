/**
 * moepress block codecs -> GGML block types, without requantizing: a lossless repack of the bytes.
 *
 *   q4s-g32[-rtn]  [f16 scale s][16 bytes, code u_i = q_i + 8 at nibble i of the stream: element 2k in
 *                  the low nibble of byte k, 2k+1 in the high one]; value = s * (u_i - 8)
 *   Q4_0           [f16 d][16 bytes: element j < 16 in the low nibble of byte j, j + 16 in the high
 *                  nibble of byte j]; value = d * (nibble - 8)                       (ggml block_q4_0)
 * Same scale bits and the same 4-bit codes (both codes -8..7 as u - 8, both scales signed f16):
 * only the nibbles move. Likewise q8s-g32 [f16 s][32 bytes u = q + 128] -> Q8_0 [f16 d][32 int8 q]:
 * the byte u - 128 as int8 is u XOR 0x80.
 *
 * The GGML-side dequantizers below are written from ggml's definitions (gguf-py quants.py
 * Q4_0/Q8_0.dequantize_blocks), not from ours: the test checks that they give back exactly what
 * codec.dequantize gives for every block, which is what makes the repack lossless.
 */
import { MoepressError } from '../io/errors.js';
import { f16ToF32 } from '../tensor/convert.js';
import { TENSOR_BLOCK } from './gguf-format.js';

/** GGML block types written from moepress codecs. */
export type GgufBlockType = 'Q4_0' | 'Q8_0';

/** The GGML type a codec id repacks into losslessly, or null. */
export function ggmlTypeForCodec(codecId: string): GgufBlockType | null {
  if (codecId === 'q4s-g32' || codecId === 'q4s-g32-rtn') return 'Q4_0';
  if (codecId === 'q8s-g32' || codecId === 'q8s-g32-rtn') return 'Q8_0';
  return null;
}

/** The codec ids ggmlTypeForCodec accepts, for error messages. */
export const REPACKABLE_CODECS = 'q4s-g32 (-> Q4_0) and q8s-g32 (-> Q8_0), with or without -rtn, f16 scales';

/**
 * Packed blocks of the matching codec -> the GGML type's blocks, written into out at outOffset
 * (out.length >= outOffset + src.length; both are 18 or 34 bytes per block of 32 values).
 */
export function repackBlocks(type: GgufBlockType, src: Uint8Array, out: Uint8Array, outOffset = 0): void {
  const bpb = TENSOR_BLOCK[type].bytes;
  if (src.length % bpb !== 0) throw new MoepressError(`${src.length} bytes are not whole ${type} blocks of ${bpb} bytes`);
  if (out.length < outOffset + src.length) throw new MoepressError(`repackBlocks: output has ${out.length - outOffset} bytes, needs ${src.length}`);
  for (let b = 0; b < src.length; b += bpb) {
    const o = outOffset + b;
    out[o] = src[b];
    out[o + 1] = src[b + 1];
    if (type === 'Q4_0') {
      // Our byte k holds elements 2k (low) and 2k+1 (high); Q4_0 byte j holds j (low) and j+16 (high).
      for (let j = 0; j < 16; j++) {
        const lo = j; // element j: byte j>>1 of ours, nibble j&1
        const hi = j + 16;
        const a = (src[b + 2 + (lo >> 1)] >> ((lo & 1) * 4)) & 15;
        const c = (src[b + 2 + (hi >> 1)] >> ((hi & 1) * 4)) & 15;
        out[o + 2 + j] = a | (c << 4);
      }
    } else {
      for (let j = 0; j < 32; j++) out[o + 2 + j] = src[b + 2 + j] ^ 0x80;
    }
  }
}

/** GGML Q4_0 / Q8_0 bytes -> n float32 values (n a multiple of 32), by ggml's definition. */
export function dequantizeGgml(type: GgufBlockType, bytes: Uint8Array, n: number): Float32Array {
  const { values, bytes: bpb } = TENSOR_BLOCK[type];
  if (n % values !== 0 || bytes.length < (n / values) * bpb) throw new MoepressError(`${type}: ${bytes.length} bytes do not hold ${n} values`);
  const out = new Float32Array(n);
  for (let blk = 0; blk < n / values; blk++) {
    const o = blk * bpb;
    const d = f16ToF32(bytes[o] | (bytes[o + 1] << 8));
    const x = blk * values;
    if (type === 'Q4_0') {
      for (let j = 0; j < 16; j++) {
        const q = bytes[o + 2 + j];
        out[x + j] = ((q & 15) - 8) * d;
        out[x + j + 16] = ((q >> 4) - 8) * d;
      }
    } else {
      for (let j = 0; j < 32; j++) out[x + j] = ((bytes[o + 2 + j] << 24) >> 24) * d;
    }
  }
  return out;
}

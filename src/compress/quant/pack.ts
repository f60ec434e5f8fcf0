/**
 * Bit packing of k-bit unsigned codes (k = 1..8) into bytes.
 *
 * Bit order is little-endian throughout: code i occupies stream bits [i*k, (i+1)*k), least
 * significant bit first, and stream bit j is bit (j mod 8) of byte floor(j / 8). So for k = 4,
 * code 0 is the low nibble of byte 0 and code 1 the high nibble; for k = 3, code 2 straddles bytes
 * 0 and 1 (its low two bits are bits 6-7 of byte 0). Unused bits of the last byte are written as 0.
 * (llama.cpp's Q4_0 interleaves element j with j + 16 in one byte; we keep plain stream order, so
 * our blocks are not byte-compatible with gguf, only equivalent in size and arithmetic.)
 *
 * The fast versions work a byte at a time for k = 1, 2, 4, 8 and through a small bit accumulator for
 * k = 3, 5, 6, 7; the naive twins move one bit at a time (STYLE rule 3). Codes are masked to k bits,
 * so both agree even on out-of-range input.
 */

/** Bytes that n k-bit codes occupy. */
export function packedBytes(n: number, k: number): number {
  return Math.ceil((n * k) / 8);
}

function checkBits(k: number): void {
  if (!Number.isInteger(k) || k < 1 || k > 8) throw new RangeError(`bits per code must be 1..8, got ${k}`);
}

/** codes: [n] k-bit values -> out[offset .. offset + packedBytes(n, k)). */
export function packBits(codes: Uint8Array, k: number, out: Uint8Array, offset = 0): void {
  checkBits(k);
  const n = codes.length;
  let o = offset;
  if (k === 8) {
    out.set(codes, o);
    return;
  }
  if (k === 4) {
    let i = 0;
    for (; i + 1 < n; i += 2) out[o++] = (codes[i] & 15) | ((codes[i + 1] & 15) << 4);
    if (i < n) out[o] = codes[i] & 15;
    return;
  }
  if (k === 2) {
    let i = 0;
    for (; i + 3 < n; i += 4) {
      out[o++] = (codes[i] & 3) | ((codes[i + 1] & 3) << 2) | ((codes[i + 2] & 3) << 4) | ((codes[i + 3] & 3) << 6);
    }
    if (i < n) {
      let b = 0;
      for (let s = 0; i < n; i++, s += 2) b |= (codes[i] & 3) << s;
      out[o] = b;
    }
    return;
  }
  if (k === 1) {
    let i = 0;
    for (; i + 7 < n; i += 8) {
      out[o++] = (codes[i] & 1) | ((codes[i + 1] & 1) << 1) | ((codes[i + 2] & 1) << 2) | ((codes[i + 3] & 1) << 3)
        | ((codes[i + 4] & 1) << 4) | ((codes[i + 5] & 1) << 5) | ((codes[i + 6] & 1) << 6) | ((codes[i + 7] & 1) << 7);
    }
    if (i < n) {
      let b = 0;
      for (let s = 0; i < n; i++, s++) b |= (codes[i] & 1) << s;
      out[o] = b;
    }
    return;
  }
  // General stream: acc holds fewer than 8 pending bits plus one new code, so at most 15 bits.
  const mask = (1 << k) - 1;
  let acc = 0;
  let nbits = 0;
  for (let i = 0; i < n; i++) {
    acc |= (codes[i] & mask) << nbits;
    nbits += k;
    while (nbits >= 8) {
      out[o++] = acc & 255;
      acc >>>= 8;
      nbits -= 8;
    }
  }
  if (nbits > 0) out[o] = acc;
}

/** src[offset .. offset + packedBytes(n, k)) -> out[0 .. n) (out may be longer than n). */
export function unpackBits(src: Uint8Array, offset: number, k: number, n: number, out: Uint8Array): void {
  checkBits(k);
  let o = offset;
  if (k === 8) {
    out.set(src.subarray(o, o + n));
    return;
  }
  if (k === 4) {
    let i = 0;
    for (; i + 1 < n; i += 2) {
      const b = src[o++];
      out[i] = b & 15;
      out[i + 1] = b >>> 4;
    }
    if (i < n) out[i] = src[o] & 15;
    return;
  }
  if (k === 2) {
    let i = 0;
    for (; i + 3 < n; i += 4) {
      const b = src[o++];
      out[i] = b & 3;
      out[i + 1] = (b >>> 2) & 3;
      out[i + 2] = (b >>> 4) & 3;
      out[i + 3] = b >>> 6;
    }
    for (let s = 0; i < n; i++, s += 2) out[i] = (src[o] >>> s) & 3;
    return;
  }
  if (k === 1) {
    let i = 0;
    for (; i + 7 < n; i += 8) {
      const b = src[o++];
      out[i] = b & 1;
      out[i + 1] = (b >>> 1) & 1;
      out[i + 2] = (b >>> 2) & 1;
      out[i + 3] = (b >>> 3) & 1;
      out[i + 4] = (b >>> 4) & 1;
      out[i + 5] = (b >>> 5) & 1;
      out[i + 6] = (b >>> 6) & 1;
      out[i + 7] = b >>> 7;
    }
    for (let s = 0; i < n; i++, s++) out[i] = (src[o] >>> s) & 1;
    return;
  }
  // General stream: read a byte only when fewer than k bits are pending, so never past the end.
  const mask = (1 << k) - 1;
  let acc = 0;
  let nbits = 0;
  for (let i = 0; i < n; i++) {
    if (nbits < k) {
      acc |= src[o++] << nbits;
      nbits += 8;
    }
    out[i] = acc & mask;
    acc >>>= k;
    nbits -= k;
  }
}

// ---- Naive twins: one bit at a time, straight from the bit-order definition above. ----

export function packBitsNaive(codes: Uint8Array, k: number, out: Uint8Array, offset = 0): void {
  checkBits(k);
  out.fill(0, offset, offset + packedBytes(codes.length, k));
  for (let i = 0; i < codes.length; i++) {
    for (let b = 0; b < k; b++) {
      const bit = (codes[i] >> b) & 1;
      const j = i * k + b;
      out[offset + (j >> 3)] |= bit << (j & 7);
    }
  }
}

export function unpackBitsNaive(src: Uint8Array, offset: number, k: number, n: number, out: Uint8Array): void {
  checkBits(k);
  for (let i = 0; i < n; i++) {
    let c = 0;
    for (let b = 0; b < k; b++) {
      const j = i * k + b;
      c |= ((src[offset + (j >> 3)] >> (j & 7)) & 1) << b;
    }
    out[i] = c;
  }
}

/**
 * Storage dtypes <-> float32. All compute is float32; bf16/f16 exist only on disk.
 *
 * Fast paths work on whole arrays through integer views of the same bytes; each has a naive twin
 * below (STYLE rule 3) computed a different way (Math.pow, nearest-value search) that the tests
 * compare against. Rounding to 16 bits is round-to-nearest, ties-to-even, as PyTorch does.
 * Assumes a little-endian host (every platform Node ships for) for the typed-array views;
 * safetensors data is little-endian.
 */
import { DTYPE_BYTES, type RawTensor, numel } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';

// Scratch for single-value bit casts between float32 and uint32.
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** bf16 bits -> value: bf16 is the top half of a float32, so this is exact. */
export function bf16ToF32(bits: number): number {
  U32[0] = (bits & 0xffff) << 16;
  return F32[0];
}

/** value (rounded to float32 first) -> bf16 bits, round-to-nearest-even; NaN stays a quiet NaN. */
export function f32ToBf16(x: number): number {
  F32[0] = x;
  return bf16FromBits(U32[0]);
}

function bf16FromBits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff; // NaN: keep sign, force quiet
  // Adding 0x7fff plus the lowest kept bit rounds half to even; a carry may roll into the exponent,
  // which correctly rounds the largest finite values up to infinity.
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f16 bits -> value, by bit arithmetic (exact: every f16 is a float32). */
export function f16ToF32(bits: number): number {
  const sign = (bits & 0x8000) << 16;
  const exp = (bits >>> 10) & 0x1f;
  let mant = bits & 0x3ff;
  if (exp === 0x1f) {
    U32[0] = sign | 0x7f800000 | (mant << 13); // inf, or NaN with payload kept
  } else if (exp !== 0) {
    U32[0] = sign | ((exp + 112) << 23) | (mant << 13); // rebias exponent 15 -> 127
  } else if (mant === 0) {
    U32[0] = sign;
  } else {
    // Subnormal mant * 2^-24: normalise so the leading 1 becomes the implicit bit.
    let e = 113;
    while ((mant & 0x400) === 0) {
      mant <<= 1;
      e--;
    }
    U32[0] = sign | (e << 23) | ((mant & 0x3ff) << 13);
  }
  return F32[0];
}

/** value (rounded to float32 first) -> f16 bits, round-to-nearest-even, with subnormals. */
export function f32ToF16(x: number): number {
  F32[0] = x;
  return f16FromBits(U32[0]);
}

function f16FromBits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0); // inf / quiet NaN
  const e = exp - 112; // f16 biased exponent
  if (e >= 0x1f) return sign | 0x7c00; // beyond 65504 (+ half an ulp): infinity
  if (e <= 0) {
    // f16 subnormal: value / 2^-24 = (1.mant) * 2^(e - 14 + 23 - 23) -> shift the 24-bit significand.
    const shift = 14 - e;
    if (shift > 24) return sign; // below half the smallest subnormal: rounds to zero
    const full = mant | 0x800000;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (m & 1) !== 0)) m++; // may carry into the smallest normal
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // carry may reach infinity: correct
  return sign | h;
}

let f16Table: Float32Array | null = null;

/** All 65536 f16 values, built once on first use (256 KB), so decoding is one lookup per value. */
function f16Lookup(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let b = 0; b < 65536; b++) f16Table[b] = f16ToF32(b);
  }
  return f16Table;
}

/**
 * Decodes a stored tensor to a fresh float32 array (never a view of t.data). Integer dtypes
 * convert numerically (I64 beyond 2^24 loses precision, as any float32 would); BOOL gives 0/1.
 * t: any shape -> [numel(shape)] flat, row-major.
 */
export function toFloat32(t: RawTensor, name?: string): Float32Array {
  const n = numel(t.shape);
  const size = DTYPE_BYTES[t.dtype];
  if (size === undefined) throw new MoepressError(`unknown dtype '${t.dtype}'`, { tensor: name });
  if (t.data.byteLength !== n * size) {
    throw new MoepressError(`data is ${t.data.byteLength} bytes, expected ${n * size} for ${t.dtype} [${
      t.shape.join(', ')}]`, { tensor: name });
  }
  const out = new Float32Array(n);
  // Typed views need a byte offset that is a multiple of the element size; copy only if not.
  const bytes = t.data.byteOffset % size === 0 ? t.data : t.data.slice();
  const buf = bytes.buffer;
  const off = bytes.byteOffset;
  switch (t.dtype) {
    case 'BF16': {
      const src = new Uint16Array(buf, off, n);
      const dst = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) dst[i] = src[i] << 16;
      break;
    }
    case 'F16': {
      const src = new Uint16Array(buf, off, n);
      const table = f16Lookup();
      for (let i = 0; i < n; i++) out[i] = table[src[i]];
      break;
    }
    case 'F32': out.set(new Float32Array(buf, off, n)); break;
    case 'I8': out.set(new Int8Array(buf, off, n)); break;
    case 'U8': out.set(new Uint8Array(buf, off, n)); break;
    case 'I16': out.set(new Int16Array(buf, off, n)); break;
    case 'U16': out.set(new Uint16Array(buf, off, n)); break;
    case 'I32': out.set(new Int32Array(buf, off, n)); break;
    case 'U32': out.set(new Uint32Array(buf, off, n)); break;
    case 'I64': {
      const src = new BigInt64Array(buf, off, n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      break;
    }
    case 'BOOL': {
      const src = new Uint8Array(buf, off, n);
      for (let i = 0; i < n; i++) out[i] = src[i] !== 0 ? 1 : 0;
      break;
    }
  }
  return out;
}

/** Encodes float32 values as `dtype` bytes, round-to-nearest-even. data: [N] -> bytes [N * size]. */
export function fromFloat32(data: Float32Array, dtype: 'BF16' | 'F16' | 'F32'): Uint8Array {
  const n = data.length;
  if (dtype === 'F32') return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + n * 4));
  // Reading the float bits through a Uint32Array requires a 4-aligned view.
  const bits = data.byteOffset % 4 === 0 ? new Uint32Array(data.buffer, data.byteOffset, n)
    : new Uint32Array(data.slice().buffer);
  const out = new Uint16Array(n);
  if (dtype === 'BF16') for (let i = 0; i < n; i++) out[i] = bf16FromBits(bits[i]);
  else if (dtype === 'F16') for (let i = 0; i < n; i++) out[i] = f16FromBits(bits[i]);
  else throw new MoepressError(`fromFloat32: unsupported dtype '${dtype as string}' (expected BF16, F16 or F32)`);
  return new Uint8Array(out.buffer);
}

// ---- Naive twins: slow, obviously-correct references for the fast paths above. ----

/** f16 bits -> value from the definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024. */
export function f16ToF32Naive(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1;
  const e = (bits >>> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0x1f) return m === 0 ? s * Infinity : NaN;
  if (e === 0) return s * Math.pow(2, -14) * (m / 1024);
  return s * Math.pow(2, e - 15) * (1 + m / 1024);
}

/** bf16 bits -> value from the definition: (-1)^s * 2^(e-127) * (1 + m/128). */
export function bf16ToF32Naive(bits: number): number {
  const s = bits & 0x8000 ? -1 : 1;
  const e = (bits >>> 7) & 0xff;
  const m = bits & 0x7f;
  if (e === 0xff) return m === 0 ? s * Infinity : NaN;
  if (e === 0) return s * Math.pow(2, -126) * (m / 128);
  return s * Math.pow(2, e - 127) * (1 + m / 128);
}

/**
 * Nearest 16-bit float by search: non-negative bit patterns up to infinity are ordered like their
 * values, so binary-search the largest pattern <= |x|, then pick it or the next one by distance
 * (computed exactly in float64), ties to the even pattern.
 */
function nearestNaive(x: number, decode: (bits: number) => number, infBits: number, nanBits: number): number {
  const v = Math.fround(x);
  if (Number.isNaN(v)) return nanBits;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  let lo = 0;
  let hi = infBits; // the answer lies in [lo, hi]: decode(0) = 0 <= a, decode(infBits) = inf
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (decode(mid) <= a) lo = mid;
    else hi = mid - 1;
  }
  if (lo === infBits) return sign | infBits;
  const below = a - decode(lo);
  // Above the largest finite value, the "next" value is infinity: round as if the exponent range
  // continued, i.e. the next step has the same ulp as the one below.
  const next = lo + 1 === infBits ? decode(lo) + (decode(lo) - decode(lo - 1)) : decode(lo + 1);
  const above = next - a;
  if (below < above || (below === above && (lo & 1) === 0)) return sign | lo;
  return sign | (lo + 1);
}

/** Twin of f32ToBf16 by nearest-value search (NaN gives the canonical quiet NaN, sign dropped). */
export function f32ToBf16Naive(x: number): number {
  return nearestNaive(x, bf16ToF32Naive, 0x7f80, 0x7fc0);
}

/** Twin of f32ToF16 by nearest-value search (NaN gives the canonical quiet NaN, sign dropped). */
export function f32ToF16Naive(x: number): number {
  return nearestNaive(x, f16ToF32Naive, 0x7c00, 0x7e00);
}

/** Twin of toFloat32 for BF16/F16: per element through a DataView and the naive decoders. */
export function toFloat32Naive(t: RawTensor): Float32Array {
  const n = numel(t.shape);
  const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (t.dtype === 'BF16') out[i] = bf16ToF32Naive(view.getUint16(2 * i, true));
    else if (t.dtype === 'F16') out[i] = f16ToF32Naive(view.getUint16(2 * i, true));
    else if (t.dtype === 'F32') out[i] = view.getFloat32(4 * i, true);
    else throw new MoepressError(`toFloat32Naive: unsupported dtype '${t.dtype}'`);
  }
  return out;
}

/**
 * Byte-level moves on RawTensor: stack, slice, concatenate, (de)interleave, transpose.
 *
 * Architecture mappings use these to turn hub layouts into the canonical [E, out, in] expert stacks
 * and back. Every function copies whole elements as bytes (never through floats), so NaN payloads,
 * signed zeros and bf16/f16/f32/i64 bit patterns survive and a hub -> canonical -> hub round trip is
 * byte-identical whatever the dtype. Inputs are never modified; outputs own fresh buffers.
 */
import { DTYPE_BYTES, numel, type RawTensor } from '../io/dtype.js';

function fail(what: string, msg: string): never {
  throw new Error(`layout.${what}: ${msg}`);
}

function elemBytes(t: RawTensor): number {
  return DTYPE_BYTES[t.dtype];
}

function checkBytes(what: string, t: RawTensor): void {
  const want = numel(t.shape) * elemBytes(t);
  if (t.data.byteLength !== want) {
    fail(what, `shape [${t.shape}] of ${t.dtype} needs ${want} bytes, data has ${t.data.byteLength}`);
  }
}

function normDim(what: string, t: RawTensor, dim: number): number {
  const d = dim < 0 ? t.shape.length + dim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= t.shape.length) fail(what, `dim ${dim} out of range for shape [${t.shape}]`);
  return d;
}

/**
 * View shape as [outer, n, inner] around dim d: outer = prod(shape[:d]), n = shape[d],
 * innerBytes = prod(shape[d+1:]) * element size. Row-major slicing along d is then a copy of
 * `outer` runs of bytes.
 */
function around(t: RawTensor, d: number): { outer: number; n: number; innerBytes: number } {
  return {
    outer: numel(t.shape.slice(0, d)),
    n: t.shape[d],
    innerBytes: numel(t.shape.slice(d + 1)) * elemBytes(t),
  };
}

/** tensors: E x [...S] (same dtype and shape) -> [E, ...S]. */
export function stack(tensors: readonly RawTensor[]): RawTensor {
  if (tensors.length === 0) fail('stack', 'no tensors');
  const first = tensors[0];
  for (const [i, t] of tensors.entries()) {
    checkBytes('stack', t);
    if (t.dtype !== first.dtype) fail('stack', `tensor ${i} is ${t.dtype}, tensor 0 is ${first.dtype}`);
    if (!sameShape(t.shape, first.shape)) fail('stack', `tensor ${i} has shape [${t.shape}], tensor 0 has [${first.shape}]`);
  }
  const each = first.data.byteLength;
  const out = new Uint8Array(each * tensors.length);
  tensors.forEach((t, i) => out.set(t.data, i * each));
  return { dtype: first.dtype, shape: [tensors.length, ...first.shape], data: out };
}

/** t: [E, ...S] -> t[i]: [...S] (a copy). */
export function unstack(t: RawTensor, i: number): RawTensor {
  checkBytes('unstack', t);
  if (t.shape.length < 1) fail('unstack', 'scalar tensor');
  const E = t.shape[0];
  if (!Number.isInteger(i) || i < 0 || i >= E) fail('unstack', `index ${i} out of range [0, ${E})`);
  const each = t.data.byteLength / E;
  return { dtype: t.dtype, shape: t.shape.slice(1), data: t.data.slice(i * each, (i + 1) * each) };
}

/** t: [..., N, ...] -> [..., count, ...]: rows start..start+count-1 along dim (default 0). */
export function sliceRows(t: RawTensor, start: number, count: number, dim = 0): RawTensor {
  checkBytes('sliceRows', t);
  const d = normDim('sliceRows', t, dim);
  const { outer, n, innerBytes } = around(t, d);
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > n) {
    fail('sliceRows', `rows [${start}, ${start + count}) out of range [0, ${n}) on dim ${d} of [${t.shape}]`);
  }
  const out = new Uint8Array(outer * count * innerBytes);
  const runBytes = count * innerBytes;
  for (let o = 0; o < outer; o++) {
    const src = (o * n + start) * innerBytes;
    out.set(t.data.subarray(src, src + runBytes), o * runBytes);
  }
  const shape = t.shape.slice();
  shape[d] = count;
  return { dtype: t.dtype, shape, data: out };
}

/** tensors: [..., N_i, ...] (equal elsewhere) -> [..., sum N_i, ...] along dim (default 0). */
export function concatRows(tensors: readonly RawTensor[], dim = 0): RawTensor {
  if (tensors.length === 0) fail('concatRows', 'no tensors');
  const first = tensors[0];
  const d = normDim('concatRows', first, dim);
  for (const [i, t] of tensors.entries()) {
    checkBytes('concatRows', t);
    if (t.dtype !== first.dtype) fail('concatRows', `tensor ${i} is ${t.dtype}, tensor 0 is ${first.dtype}`);
    const a = t.shape.slice();
    const b = first.shape.slice();
    a[d] = b[d] = 0;
    if (t.shape.length !== first.shape.length || !sameShape(a, b)) {
      fail('concatRows', `tensor ${i} has shape [${t.shape}], incompatible with [${first.shape}] on dim ${d}`);
    }
  }
  const parts = tensors.map((t) => around(t, d));
  const outer = parts[0].outer;
  const total = parts.reduce((s, p) => s + p.n, 0);
  const rowBytes = total * parts[0].innerBytes;
  const out = new Uint8Array(outer * rowBytes);
  for (let o = 0; o < outer; o++) {
    let at = o * rowBytes;
    tensors.forEach((t, i) => {
      const run = parts[i].n * parts[i].innerBytes;
      out.set(t.data.subarray(o * run, (o + 1) * run), at);
      at += run;
    });
  }
  const shape = first.shape.slice();
  shape[d] = total;
  return { dtype: first.dtype, shape, data: out };
}

/**
 * t: [..., 2N, ...] -> [even, odd], each [..., N, ...]: element 2j of dim goes to even[j], 2j+1 to
 * odd[j]. Default dim is the last (GPT-OSS gate_up_proj [E, H, 2I]: gate = [..., ::2], up = [..., 1::2]).
 */
export function deinterleaveRows(t: RawTensor, dim = -1): [RawTensor, RawTensor] {
  checkBytes('deinterleaveRows', t);
  const d = normDim('deinterleaveRows', t, dim);
  const { outer, n, innerBytes } = around(t, d);
  if (n % 2 !== 0) fail('deinterleaveRows', `dim ${d} of [${t.shape}] has odd length ${n}`);
  const half = n / 2;
  const even = new Uint8Array(outer * half * innerBytes);
  const odd = new Uint8Array(outer * half * innerBytes);
  // Element-sized runs (the GPT-OSS case, dim = -1) go through word views; a per-run subarray
  // copy would cost ~20x more there.
  // The casts only quiet the Words union: every view indexes the same way, whatever its width.
  const unit = wordUnit(innerBytes);
  const w = innerBytes / unit;
  const S = wordView(aligned(t.data, unit), unit) as Uint32Array;
  const A = wordView(even, unit) as Uint32Array;
  const B = wordView(odd, unit) as Uint32Array;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < half; j++) {
      const from = (o * n + 2 * j) * w;
      const to = (o * half + j) * w;
      for (let k = 0; k < w; k++) {
        A[to + k] = S[from + k];
        B[to + k] = S[from + w + k];
      }
    }
  }
  const shape = t.shape.slice();
  shape[d] = half;
  return [
    { dtype: t.dtype, shape, data: even },
    { dtype: t.dtype, shape: shape.slice(), data: odd },
  ];
}

/** Inverse of deinterleaveRows: a, b: [..., N, ...] -> [..., 2N, ...] with a at even and b at odd positions. */
export function interleaveRows(a: RawTensor, b: RawTensor, dim = -1): RawTensor {
  checkBytes('interleaveRows', a);
  checkBytes('interleaveRows', b);
  if (a.dtype !== b.dtype) fail('interleaveRows', `dtypes differ: ${a.dtype} vs ${b.dtype}`);
  if (!sameShape(a.shape, b.shape)) fail('interleaveRows', `shapes differ: [${a.shape}] vs [${b.shape}]`);
  const d = normDim('interleaveRows', a, dim);
  const { outer, n, innerBytes } = around(a, d);
  const out = new Uint8Array(a.data.byteLength * 2);
  const unit = wordUnit(innerBytes);
  const w = innerBytes / unit;
  const A = wordView(aligned(a.data, unit), unit) as Uint32Array;
  const B = wordView(aligned(b.data, unit), unit) as Uint32Array;
  const O = wordView(out, unit) as Uint32Array;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < n; j++) {
      const from = (o * n + j) * w;
      const to = (o * 2 * n + 2 * j) * w;
      for (let k = 0; k < w; k++) {
        O[to + k] = A[from + k];
        O[to + w + k] = B[from + k];
      }
    }
  }
  const shape = a.shape.slice();
  shape[d] = 2 * n;
  return { dtype: a.dtype, shape, data: out };
}

/**
 * Transpose the last two dims: [..., R, C] -> [..., C, R] (a 2-D transpose, or one per leading
 * index for stacked experts: GPT-OSS [E, H, 2I] in x out <-> canonical [E, 2I, H]).
 */
export function transpose2d(t: RawTensor): RawTensor {
  checkBytes('transpose2d', t);
  if (t.shape.length < 2) fail('transpose2d', `needs at least 2 dims, got [${t.shape}]`);
  const R = t.shape[t.shape.length - 2];
  const C = t.shape[t.shape.length - 1];
  const batch = numel(t.shape.slice(0, -2));
  const size = elemBytes(t);
  // Work on element-sized words when the source is aligned (fast and still bit-exact: integer
  // typed arrays never canonicalise anything); copy to an aligned buffer first when it is not.
  const src = aligned(t.data, size);
  const out = new Uint8Array(src.byteLength);
  const words = wordView(src, size);
  const outWords = wordView(out, size);
  for (let b = 0; b < batch; b++) transposeBlock(words, outWords, b * R * C, R, C);
  const shape = t.shape.slice();
  shape[shape.length - 2] = C;
  shape[shape.length - 1] = R;
  return { dtype: t.dtype, shape, data: out };
}

type Words = Uint8Array | Uint16Array | Uint32Array | BigUint64Array;

/** The widest word (8, 4, 2 or 1 bytes) that divides a run of `bytes` bytes. */
function wordUnit(bytes: number): number {
  for (const u of [8, 4, 2]) if (bytes % u === 0) return u;
  return 1;
}

/** bytes itself when its offset is a multiple of unit, else an aligned copy (typed views need it). */
function aligned(bytes: Uint8Array, unit: number): Uint8Array {
  return bytes.byteOffset % unit === 0 ? bytes : bytes.slice();
}

function wordView(bytes: Uint8Array, size: number): Words {
  const n = bytes.byteLength / size;
  if (size === 1) return bytes;
  if (size === 2) return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  if (size === 4) return new Uint32Array(bytes.buffer, bytes.byteOffset, n);
  if (size === 8) return new BigUint64Array(bytes.buffer, bytes.byteOffset, n);
  return fail('wordView', `unsupported word size ${size}`);
}

/** src[base + r*C + c] -> dst[base + c*R + r], in 32x32 tiles to stay cache friendly. */
function transposeBlock(src: Words, dst: Words, base: number, R: number, C: number): void {
  const TILE = 32;
  const s = src as Uint32Array; // all Words share indexing semantics; the cast only quiets the union
  const o = dst as Uint32Array;
  for (let r0 = 0; r0 < R; r0 += TILE) {
    const r1 = Math.min(R, r0 + TILE);
    for (let c0 = 0; c0 < C; c0 += TILE) {
      const c1 = Math.min(C, c0 + TILE);
      for (let r = r0; r < r1; r++) {
        const row = base + r * C;
        for (let c = c0; c < c1; c++) o[base + c * R + r] = s[row + c];
      }
    }
  }
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

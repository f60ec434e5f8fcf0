/**
 * Running stored expert matrices: y = x · Wᵀ with W a sum of parts (see parts.ts), part by part, so
 * a shared base is one GEMM over the stored base (never copied per expert), a low-rank part is two
 * thin GEMMs, and a sparse part is either a scatter kernel (few tokens) or densified (many tokens).
 * densifyMatrix is the naive twin: W rebuilt dense, then one GEMM.
 */
import type { RawTensor } from '../io/dtype.js';
import { toFloat32 } from '../tensor/convert.js';
import { linear, linearNaive, matmul } from '../tensor/gemm.js';
import type { MatrixPart } from './parts.js';
import { codecById } from './quant/codec.js';
import { resolvePositions } from './sparse.js';

/** A part decoded once for repeated use at run time. */
export type PreparedPart =
  | { kind: 'dense'; w: Float32Array }
  | { kind: 'sparse'; pos: Int32Array; values: Float32Array }
  | { kind: 'quant'; codec: string; packed: Uint8Array }
  | { kind: 'lowrank'; left: Float32Array; right: Float32Array; rank: number; transposed: boolean };

export type TensorGetter = (name: string) => RawTensor;

/** Decodes parts; f32 caches shared dense tensors so every expert sees the same Float32Array. */
export function prepareParts(parts: MatrixPart[], out: number, inp: number, get: TensorGetter, f32: (name: string) => Float32Array): PreparedPart[] {
  return parts.map((p): PreparedPart => {
    switch (p.kind) {
      case 'dense':
        return { kind: 'dense', w: f32(p.ref) };
      case 'sparse':
        return { kind: 'sparse', pos: resolvePositions(p.index, out * inp, get), values: toFloat32(get(p.values)) };
      case 'quant':
        return { kind: 'quant', codec: p.codec, packed: get(p.ref).data };
      case 'lowrank':
        return { kind: 'lowrank', left: f32(p.left), right: f32(p.right), rank: p.rank, transposed: p.transposed };
    }
  });
}

export function preparedBytes(parts: PreparedPart[], shared: Set<Float32Array>): number {
  let b = 0;
  const arr = (a: Float32Array) => {
    if (shared.has(a)) return 0;
    shared.add(a);
    return a.byteLength;
  };
  for (const p of parts) {
    if (p.kind === 'dense') b += arr(p.w);
    else if (p.kind === 'sparse') b += p.pos.byteLength + p.values.byteLength;
    else if (p.kind === 'quant') b += p.packed.byteLength;
    else b += arr(p.left) + arr(p.right);
  }
  return b;
}

/** W: [out, in] rebuilt dense from its parts (into `dest`, zeroed first, when given). */
export function densifyMatrix(parts: PreparedPart[], out: number, inp: number, dest?: Float32Array): Float32Array {
  const w = dest ? dest.fill(0) : new Float32Array(out * inp);
  for (const p of parts) addPartInto(w, p, out, inp);
  return w;
}

function addPartInto(w: Float32Array, p: PreparedPart, out: number, inp: number): void {
  if (p.kind === 'dense') for (let i = 0; i < w.length; i++) w[i] += p.w[i];
  else if (p.kind === 'sparse') for (let k = 0; k < p.pos.length; k++) w[p.pos[k]] += p.values[k];
  else if (p.kind === 'quant') {
    const d = codecById(p.codec).dequantize(p.packed, out * inp);
    for (let i = 0; i < w.length; i++) w[i] += d[i];
  } else {
    const r = p.rank;
    // (left [a, r] · right [r, b]) with a×b = out×in, or its transpose
    const a = p.transposed ? inp : out;
    const b = p.transposed ? out : inp;
    for (let i = 0; i < a; i++) {
      for (let k = 0; k < r; k++) {
        const l = p.left[i * r + k];
        if (l === 0) continue;
        const ro = k * b;
        if (p.transposed) for (let j = 0; j < b; j++) w[j * inp + i] += l * p.right[ro + j];
        else for (let j = 0; j < b; j++) w[i * inp + j] += l * p.right[ro + j];
      }
    }
  }
}

/** x: [n, in] -> y: [n, out] += x · Sᵀ for a sparse S given by flat positions in [out, in]. */
export function sparseLinearAdd(y: Float32Array, x: Float32Array, n: number, out: number, inp: number, pos: Int32Array, values: Float32Array): void {
  for (let k = 0; k < pos.length; k++) {
    const r = (pos[k] / inp) | 0;
    const c = pos[k] - r * inp;
    const v = values[k];
    for (let t = 0; t < n; t++) y[t * out + r] += v * x[t * inp + c];
  }
}

/** x: [n, in] -> [n, out], part by part. */
export async function applyParts(parts: PreparedPart[], x: Float32Array, n: number, out: number, inp: number): Promise<Float32Array> {
  const y = new Float32Array(n * out);
  let pending: Float32Array | null = null; // parts densified together when that is cheaper
  for (const p of parts) {
    if (p.kind === 'dense') add(y, await linear(x, p.w, n, out, inp));
    else if (p.kind === 'lowrank') {
      if (p.transposed) {
        // W = (L R)ᵀ with L [in, r], R [r, out]: x·W ᵀ = x·L·R
        const t = await matmul(x, p.left, n, p.rank, inp);
        add(y, await matmul(t, p.right, n, out, p.rank));
      } else {
        // W = L R with L [out, r], R [r, in]: x·Wᵀ = (x·Rᵀ)·Lᵀ
        const t = await linear(x, p.right, n, p.rank, inp);
        add(y, await linear(t, p.left, n, out, p.rank));
      }
    } else if (p.kind === 'sparse' && n * p.pos.length < out * inp) sparseLinearAdd(y, x, n, out, inp, p.pos, p.values);
    else {
      pending ??= new Float32Array(out * inp);
      addPartInto(pending, p, out, inp);
    }
  }
  if (pending) add(y, await linear(x, pending, n, out, inp));
  return y;
}

/** The naive twin of applyParts: densify, then the naive GEMM. */
export function applyPartsNaive(parts: PreparedPart[], x: Float32Array, n: number, out: number, inp: number): Float32Array {
  return linearNaive(x, densifyMatrix(parts, out, inp), n, out, inp);
}

function add(y: Float32Array, z: Float32Array): void {
  for (let i = 0; i < y.length; i++) y[i] += z[i];
}

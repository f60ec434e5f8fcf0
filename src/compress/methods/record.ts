/** Building a layer record: stored bytes from the store, and the reconstruction error measured. */
import { toFloat32 } from '../../tensor/convert.js';
import { densifyMatrix, prepareParts } from '../apply.js';
import { expertMatrix, referenceBytes, type LayerExperts, type LayerStore } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts, type LayerRecord } from '../parts.js';
import { errorTerms } from './store-helpers.js';

/** Inverse-permute rows (gate/up) or columns (down) of a stored-order matrix back to the original order. */
export function unpermute(w: Float32Array, perm: Int32Array, m: 'gate' | 'up' | 'down', I: number, H: number): Float32Array {
  const out = new Float32Array(w.length);
  if (m === 'down') {
    for (let r = 0; r < H; r++) for (let j = 0; j < I; j++) out[r * I + perm[j]] = w[r * I + j];
  } else {
    for (let j = 0; j < I; j++) out.set(w.subarray(j * H, (j + 1) * H), perm[j] * H);
  }
  return out;
}

/**
 * Finish a layer: bytes come from what the store holds; the relative Frobenius error of every
 * matrix kind is measured by rebuilding the experts from the stored bytes (as restore would).
 */
export function makeRecord(x: LayerExperts, store: LayerStore, method: string, experts: ExpertParts[], perms: Int32Array[] | null, choices: Record<string, unknown>): LayerRecord {
  const cache = new Map<string, Float32Array>();
  const get = (n: string) => store.get(n);
  const f32 = (n: string) => {
    if (!cache.has(n)) cache.set(n, toFloat32(get(n)));
    return cache.get(n)!;
  };
  const err: Record<string, number> = {};
  let allNum = 0;
  let allDen = 0;
  for (const m of MATRICES) {
    const [out, inp] = matrixShape(m, x.I, x.H);
    let num = 0;
    let den = 0;
    experts.forEach((parts, e) => {
      let w = densifyMatrix(prepareParts(parts[m], out, inp, get, f32), out, inp);
      if (perms) w = unpermute(w, perms[e], m, x.I, x.H);
      const [a, b] = errorTerms(expertMatrix(x, m, e), w);
      num += a;
      den += b;
    });
    err[m] = Math.sqrt(num / den);
    allNum += num;
    allDen += den;
  }
  let permNames: string[] | null = null;
  if (perms) {
    // Neuron indices fit 16 bits for I <= 65536: store them as U16 to spend fewer budget bytes.
    const wide = x.I > 65536;
    permNames = perms.map((p, e) => store.put(`perm.${e}`, wide
      ? { dtype: 'I32', shape: [x.I], data: new Uint8Array(p.buffer.slice(p.byteOffset, p.byteOffset + p.byteLength)) }
      : { dtype: 'U16', shape: [x.I], data: new Uint8Array(Uint16Array.from(p).buffer) }));
  }
  return {
    layer: x.layer,
    method,
    experts,
    perms: permNames,
    storedBytes: store.bytes(),
    referenceBytes: referenceBytes(x.E, x.I, x.H),
    choices: { ...choices, relError: { ...err, all: Math.sqrt(allNum / allDen) } },
  };
}

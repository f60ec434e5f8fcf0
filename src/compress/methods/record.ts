/** Building a layer record: stored bytes from the store, and the reconstruction error measured. */
import { toFloat32 } from '../../tensor/convert.js';
import { densifyMatrix, prepareParts } from '../apply.js';
import type { ExpertWeights } from '../barycenter.js';
import { referenceBytes, type LayerStore } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts, type LayerRecord, type MatrixName } from '../parts.js';
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

/** inv[perm[j]] = j. */
function inverse(perm: Int32Array): Int32Array {
  const inv = new Int32Array(perm.length);
  for (let j = 0; j < perm.length; j++) inv[perm[j]] = j;
  return inv;
}

/**
 * errorTerms(a, unpermute(w, perm)) without building the unpermuted matrix: element k of the
 * original order is read from w through inv = perm⁻¹, in the same order, so the sums are the same.
 */
function errorTermsUnpermuted(a: Float32Array, w: Float32Array, inv: Int32Array, m: 'gate' | 'up' | 'down', I: number, H: number): [number, number] {
  let num = 0;
  let den = 0;
  if (m === 'down') {
    for (let r = 0; r < H; r++) {
      const o = r * I;
      for (let c = 0; c < I; c++) {
        const x = a[o + c];
        num += (x - w[o + inv[c]]) ** 2;
        den += x ** 2;
      }
    }
  } else {
    for (let r = 0; r < I; r++) {
      const o = r * H;
      const s = inv[r] * H;
      for (let h = 0; h < H; h++) {
        const x = a[o + h];
        num += (x - w[s + h]) ** 2;
        den += x ** 2;
      }
    }
  }
  return [num, den];
}

/**
 * A layer's record, built expert by expert while the method runs: after storing expert e's parts
 * the method hands them over with the expert's original weights (still in memory), and the
 * relative Frobenius error of each matrix kind is measured by rebuilding the expert from the
 * stored bytes (as restore would). Only the shared tensors (a base or barycenter, decoded once)
 * stay cached between experts, so no pass over the experts is needed at the end.
 */
export class RecordBuilder {
  readonly experts: ExpertParts[] = [];
  private readonly num: Record<MatrixName, number> = { gate: 0, up: 0, down: 0 };
  private readonly den: Record<MatrixName, number> = { gate: 0, up: 0, down: 0 };
  private readonly shared = new Map<string, Float32Array>();
  /** One matrix rebuilt from the stored bytes, reused for every matrix of every expert. */
  private rebuilt: Float32Array | null = null;

  constructor(
    private readonly x: { layer: number; E: number; I: number; H: number },
    private readonly store: LayerStore,
    private readonly method: string,
    private readonly perms: Int32Array[] | null,
  ) {}

  /** A stored tensor's float32 values known to the caller (e.g. a bf16-rounded base): never decoded again. */
  share(name: string, values: Float32Array): void {
    this.shared.set(name, values);
  }

  /** Expert e's parts (e must come in order 0..E−1) and its original weights, in the checkpoint's neuron order. */
  add(e: number, parts: ExpertParts, original: ExpertWeights): void {
    if (e !== this.experts.length) throw new Error(`RecordBuilder: expert ${e} added after ${this.experts.length - 1}`);
    const { I, H } = this.x;
    const get = (n: string) => this.store.get(n);
    const local = new Map<string, Float32Array>();
    const f32 = (n: string) => {
      const hit = this.shared.get(n) ?? local.get(n);
      if (hit) return hit;
      const v = toFloat32(get(n));
      local.set(n, v);
      return v;
    };
    const inv = this.perms ? inverse(this.perms[e]) : null;
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, I, H);
      if (this.rebuilt?.length !== out * inp) this.rebuilt = new Float32Array(out * inp);
      const w = densifyMatrix(prepareParts(parts[m], out, inp, get, f32), out, inp, this.rebuilt);
      const [a, b] = inv ? errorTermsUnpermuted(original[m], w, inv, m, I, H) : errorTerms(original[m], w);
      this.num[m] += a;
      this.den[m] += b;
    }
    this.experts.push(parts);
  }

  /** Stores the permutations and returns the record; every expert must have been added. */
  finish(choices: Record<string, unknown>): LayerRecord {
    const { layer, E, I, H } = this.x;
    if (this.experts.length !== E) throw new Error(`RecordBuilder: ${this.experts.length} of ${E} experts added`);
    const err: Record<string, number> = {};
    let allNum = 0;
    let allDen = 0;
    for (const m of MATRICES) {
      err[m] = Math.sqrt(this.num[m] / this.den[m]);
      allNum += this.num[m];
      allDen += this.den[m];
    }
    let permNames: string[] | null = null;
    if (this.perms) {
      // Neuron indices fit 16 bits for I <= 65536: store them as U16 to spend fewer budget bytes.
      const wide = I > 65536;
      permNames = this.perms.map((p, e) => this.store.put(`perm.${e}`, wide
        ? { dtype: 'I32', shape: [I], data: new Uint8Array(p.buffer.slice(p.byteOffset, p.byteOffset + p.byteLength)) }
        : { dtype: 'U16', shape: [I], data: new Uint8Array(Uint16Array.from(p).buffer) }));
    }
    return {
      layer,
      method: this.method,
      experts: this.experts,
      perms: permNames,
      storedBytes: this.store.bytes(),
      referenceBytes: referenceBytes(E, I, H),
      choices: { ...choices, relError: { ...err, all: Math.sqrt(allNum / allDen) } },
    };
  }
}

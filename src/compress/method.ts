/** What a compression method sees and returns, one MoE layer at a time. */
import { DTYPE_BYTES, numel, type RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';
import type { LayerRecord } from './parts.js';

/** The routed experts of one layer, canonical float32: gate/up [E, I, H], down [E, H, I]. */
export interface LayerExperts {
  layer: number;
  E: number;
  I: number;
  H: number;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

/** Expert e's matrix as a view (no copy). */
export function expertMatrix(x: LayerExperts, m: 'gate' | 'up' | 'down', e: number): Float32Array {
  const n = x.I * x.H;
  return x[m].subarray(e * n, (e + 1) * n);
}

/** Collects the tensors a layer stores; names are prefixed so layers never collide. */
export class LayerStore {
  readonly tensors = new Map<string, RawTensor>();
  constructor(readonly layer: number) {}
  name(local: string): string {
    return `moepress.layers.${this.layer}.${local}`;
  }
  put(local: string, t: RawTensor): string {
    const name = this.name(local);
    if (this.tensors.has(name)) throw new Error(`LayerStore: '${name}' stored twice`);
    if (numel(t.shape) * DTYPE_BYTES[t.dtype] !== t.data.byteLength) throw new Error(`LayerStore: '${name}' shape [${t.shape}] does not match ${t.data.byteLength} bytes`);
    this.tensors.set(name, t);
    return name;
  }
  get(name: string): RawTensor {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`LayerStore: '${name}' not stored`);
    return t;
  }
  bytes(): number {
    let b = 0;
    for (const t of this.tensors.values()) b += t.data.byteLength;
    return b;
  }
}

export type BaseKind = 'mean' | 'median' | 'aligned' | { expert: number };

export interface MethodOptions {
  /** Fraction of bf16 routed-expert bytes the layer may store. */
  budget: number;
  seed: number;
  /** Delta family: which shared base (ignored by other methods). */
  base: BaseKind;
  /** The dense FFN this layer's experts were upcycled from (--base-from), canonical f32. */
  denseBase: { gate: Float32Array; up: Float32Array; down: Float32Array } | null;
  /** Barycenter iterations (ResMoE, merge, aligned base). */
  alignIters: number;
  onProgress?: ProgressFn;
}

export interface Method {
  name: string;
  /** One line for `--help` and the README. */
  summary: string;
  /** Throws a MoepressError when the budget cannot be met for experts of this shape. */
  check(E: number, I: number, H: number, budget: number, opts: Pick<MethodOptions, 'base' | 'denseBase'>): void;
  compressLayer(x: LayerExperts, store: LayerStore, opts: MethodOptions): Promise<LayerRecord>;
}

export function referenceBytes(E: number, I: number, H: number): number {
  return E * 3 * I * H * 2;
}

export function budgetError(method: string, budget: number, minimum: number, why: string): MoepressError {
  return new MoepressError(`--budget ${budget} is too small for ${method}: ${why} needs at least ${minimum.toFixed(4)} of the bf16 expert bytes`);
}

/** A seed for one (layer, expert, matrix), derived from the run's seed. */
export function derivedSeed(seed: number, layer: number, expert: number, matrix: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [layer, expert, matrix]) {
    h = Math.imul(h ^ (v + 0x7f4a7c15), 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h || 1;
}

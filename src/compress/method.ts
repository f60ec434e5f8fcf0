/** What a compression method sees and returns, one MoE layer at a time. */
import { closeSync, openSync, rmSync } from 'node:fs';
import { DTYPE_BYTES, numel, type DType, type RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import { readFullyAt, writeFullyAt } from '../io/fileio.js';
import { SafetensorsWriter } from '../io/safetensors-writer.js';
import type { ProgressFn } from '../progress.js';
import type { AllocOption } from './auto/allocate.js';
import type { LayerCalib } from './calib/types.js';
import type { ExpertSource } from './experts-io.js';
import type { LayerRecord } from './parts.js';
import type { CompressProfile } from './profile.js';

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

interface Spilled {
  dtype: DType;
  shape: number[];
  offset: number;
  byteLength: number;
}

/**
 * Collects the tensors a layer stores; names are prefixed so layers never collide. With a spill
 * file, every tensor's bytes go to disk as soon as it is put and only its header entry stays in
 * memory (a Mixtral layer at budget 0.25 stores 700 MB); `get` reads them back by position.
 * `writeSafetensors` then writes the layer's file one tensor at a time.
 */
export class LayerStore {
  private readonly kept = new Map<string, RawTensor>();
  private readonly spilled = new Map<string, Spilled>();
  private fd: number | null = null;
  private end = 0;
  /** Bytes and milliseconds spent writing (spill and final file), for the benchmarks. */
  readonly io = { bytesWritten: 0, writeMs: 0, bytesRead: 0, readMs: 0 };

  constructor(readonly layer: number, private readonly spillFile: string | null = null) {
    if (spillFile) this.fd = openSync(spillFile, 'w+');
  }

  name(local: string): string {
    return `moepress.layers.${this.layer}.${local}`;
  }

  put(local: string, t: RawTensor): string {
    const name = this.name(local);
    if (this.has(name)) throw new Error(`LayerStore: '${name}' stored twice`);
    if (numel(t.shape) * DTYPE_BYTES[t.dtype] !== t.data.byteLength) throw new Error(`LayerStore: '${name}' shape [${t.shape}] does not match ${t.data.byteLength} bytes`);
    if (this.fd === null) {
      this.kept.set(name, t);
      return name;
    }
    const t0 = performance.now();
    writeFullyAt(this.fd, t.data, this.end);
    this.io.writeMs += performance.now() - t0;
    this.io.bytesWritten += t.data.byteLength;
    this.spilled.set(name, { dtype: t.dtype, shape: [...t.shape], offset: this.end, byteLength: t.data.byteLength });
    this.end += t.data.byteLength;
    return name;
  }

  has(name: string): boolean {
    return this.kept.has(name) || this.spilled.has(name);
  }

  get(name: string): RawTensor {
    const t = this.kept.get(name);
    if (t) return t;
    const s = this.spilled.get(name);
    if (!s || this.fd === null) throw new Error(`LayerStore: '${name}' not stored`);
    const data = new Uint8Array(s.byteLength);
    const t0 = performance.now();
    readFullyAt(this.fd, data, s.offset, { file: this.spillFile!, tensor: name });
    this.io.readMs += performance.now() - t0;
    this.io.bytesRead += s.byteLength;
    return { dtype: s.dtype, shape: [...s.shape], data };
  }

  /** Stored names in the order they were put. */
  names(): string[] {
    return [...this.kept.keys(), ...this.spilled.keys()];
  }

  bytes(): number {
    let b = 0;
    for (const t of this.kept.values()) b += t.data.byteLength;
    for (const s of this.spilled.values()) b += s.byteLength;
    return b;
  }

  /** Writes every stored tensor to one safetensors file, one tensor in memory at a time. */
  writeSafetensors(file: string, metadata: Record<string, string>): void {
    const names = this.names();
    const writer = new SafetensorsWriter(file, names.map((name) => {
      const t = this.kept.get(name) ?? this.spilled.get(name)!;
      return { name, dtype: t.dtype, shape: t.shape };
    }), metadata);
    try {
      for (const name of names) {
        const t = this.get(name);
        const t0 = performance.now();
        writer.write(name, t.data);
        this.io.writeMs += performance.now() - t0;
        this.io.bytesWritten += t.data.byteLength;
      }
      writer.close();
    } catch (e) {
      writer.abort();
      throw e;
    }
  }

  /** Closes and deletes the spill file; the store is empty afterwards. */
  dispose(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
      rmSync(this.spillFile!, { force: true });
    }
    this.kept.clear();
    this.spilled.clear();
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
  /** Where the methods add their alignment GEMM and assignment time (benchmarks). */
  profile?: CompressProfile;
  /**
   * This layer's activation statistics (calib/types.ts) when the run has calibration text; null or
   * absent: data-free. Methods that use it record `calib` in the layer's choices.
   */
  calib?: LayerCalib | null;
  /**
   * The layer's byte cap when a model-wide allocation set it (--allocate global); absent: the
   * budget × the layer's bf16 bytes. Methods without `measureLayer` ignore it.
   */
  capBytes?: number;
  /** This layer's options from `measureLayer`, when the run already measured them (saves measuring again). */
  measured?: AllocOption[][];
}

/** A layer's options for the model-wide allocation (Method.measureLayer). */
export interface LayerMeasure {
  items: AllocOption[][];
  /** The estimated error of storing nothing (Σ over the items): the layer's output energy, in the errors' units. */
  energy: number;
}

export interface Method {
  name: string;
  /** One line for `--help` and the README. */
  summary: string;
  /** Throws a MoepressError when the budget cannot be met for experts of this shape. */
  check(E: number, I: number, H: number, budget: number, opts: Pick<MethodOptions, 'base' | 'denseBase'>): void;
  /**
   * Compresses one layer, reading experts from x as it goes (one pass for a base or barycenter,
   * one expert at a time for the deltas) and putting every stored tensor into store as soon as
   * it exists. Experts are visited in order 0..E−1.
   */
  compressLayer(x: ExpertSource, store: LayerStore, opts: MethodOptions): Promise<LayerRecord>;
  /**
   * Methods that allocate bytes among options (auto): every item of the layer with its options
   * (bytes, estimated error in units comparable across layers), for a model-wide allocation that
   * then sets each layer's `capBytes`. Deterministic; reads experts in order 0..E−1.
   */
  measureLayer?(x: ExpertSource, opts: MethodOptions): Promise<LayerMeasure>;
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

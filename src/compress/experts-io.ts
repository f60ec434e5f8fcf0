/**
 * Reading one MoE layer's routed experts out of a checkpoint, one expert (or one block of rows) at
 * a time, by position, and telling which hub tensors they are.
 *
 * Memory (STYLE rule 10): a Mixtral-8x7B layer is 8 experts × 3 matrices of 14336×4096, 2.8 GB
 * in bf16 and 5.6 GB in float32. ExpertSource never holds more than the piece asked for: a matrix
 * [out, in], a block of its rows, or an expert's point cloud [I, 3H], built from bounded row
 * blocks read straight from the shard files.
 *
 * Hub layouts (models/hub-layout.ts), expert e's canonical matrix as bytes of the hub tensors:
 *   per-expert  experts.e.{w1,w3,w2} (or gate/up/down_proj): the whole tensor, [out, in]
 *   fused       gate_up_proj [E, 2I, H]: gate = rows e·2I .. e·2I+I, up = the next I rows;
 *               down_proj [E, H, I]: slab e, contiguous
 *   gpt-oss     gate_up_proj [E, H, 2I]: slab e [H, 2I], gate = even columns, up = odd, transposed;
 *               down_proj [E, I, H]: slab e transposed
 * The first two are contiguous byte ranges (row blocks read directly); gpt-oss slabs are read
 * whole and rearranged.
 */
import { closeSync, openSync } from 'node:fs';
import { DTYPE_BYTES, type DType } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import { readFullyAt } from '../io/fileio.js';
import type { CanonicalEntry } from '../models/canonical.js';
import { toFloat32 } from '../tensor/convert.js';
import { readChecked, type ModelSource } from '../runtime/load-model.js';
import type { ExpertWeights } from './barycenter.js';
import type { LayerExperts } from './method.js';
import { MATRICES, matrixShape, type MatrixName } from './parts.js';

/** Canonical names of routed-expert weight matrices (biases are kept as they are, not compressed). */
export function isExpertWeight(canonicalName: string): boolean {
  return /\.moe\.experts\.(gate|up|down)$/.test(canonicalName);
}

export function expertEntries(src: ModelSource, layer: number): CanonicalEntry[] {
  return src.arch.canonicalEntries(src.config, (n) => src.checkpoint.has(n)).filter((e) => e.layer === layer && isExpertWeight(e.name));
}

/** Hub tensor names holding the routed-expert weights of the given layers. */
export function expertHubNames(src: ModelSource, layers: Iterable<number>): Set<string> {
  const want = new Set(layers);
  const out = new Set<string>();
  for (const e of src.arch.canonicalEntries(src.config, (n) => src.checkpoint.has(n))) {
    if (e.layer !== null && want.has(e.layer) && isExpertWeight(e.name)) e.hub.forEach((h) => out.add(h));
  }
  return out;
}

/** What reading experts cost, for the benchmarks' I/O share. */
export interface ReadStats {
  bytesRead: number;
  /** Milliseconds in positional reads (the disk or page cache). */
  readMs: number;
  /** Milliseconds converting stored bytes to float32 and rearranging them. */
  decodeMs: number;
}

/**
 * The routed experts of one layer, read on demand. Every call returns a fresh float32 array the
 * caller owns (or, for memorySource, a view the caller must not modify).
 */
export interface ExpertSource {
  readonly layer: number;
  readonly E: number;
  readonly I: number;
  readonly H: number;
  /** Expert e's matrix m: gate/up [I, H], down [H, I]; written into `into` when given. */
  matrix(m: MatrixName, e: number, into?: Float32Array): Float32Array;
  /** Rows r0 .. r0+count−1 of expert e's matrix m: [count, in]. */
  rows(m: MatrixName, e: number, r0: number, count: number): Float32Array;
  /** Rows per call of `rows` that reads efficiently: about 16 MB of float32, or the whole matrix when its rows are not contiguous on disk. */
  blockRows(m: MatrixName): number;
  /**
   * Expert e as the barycenter's point cloud [I, 3H], row j = [gate[j,:], up[j,:], down[:,j]],
   * written into `into` when given (a caller reusing one buffer for every expert).
   */
  cloud(e: number, into?: Float32Array): Float32Array;
  readonly stats: ReadStats;
  close(): void;
}

/**
 * Expert e's three matrices: fresh arrays, or written into `into` (one set of buffers a method
 * reuses for every expert of the layer; a memory source may return views instead).
 */
export function readExpert(x: ExpertSource, e: number, into?: ExpertWeights): ExpertWeights {
  return { gate: x.matrix('gate', e, into?.gate), up: x.matrix('up', e, into?.up), down: x.matrix('down', e, into?.down) };
}

/** Buffers for one expert of this source's shape (for readExpert's `into`). */
export function expertBuffers(x: ExpertSource): ExpertWeights {
  const n = x.I * x.H;
  return { gate: new Float32Array(n), up: new Float32Array(n), down: new Float32Array(n) };
}

/** Rows per block when a matrix is read in pieces: about 16 MB of float32 for H = 4096. */
const BLOCK_ELEMS = 1 << 22;

/** Where expert e's matrix m lives in the hub tensors. */
type Locator =
  | { kind: 'range'; hub: string; byteOffset: number } // [out, in] contiguous at byteOffset in hub
  | { kind: 'oss-gate-up'; hub: string; which: 0 | 1 } // slab [H, 2I], interleaved columns
  | { kind: 'oss-down'; hub: string }; // slab [I, H], transposed

class CheckpointExpertSource implements ExpertSource {
  readonly stats: ReadStats = { bytesRead: 0, readMs: 0, decodeMs: 0 };
  private readonly fds = new Map<string, number>();
  private readonly hubs = new Map<MatrixName, string[]>();
  private readonly dtype: DType;
  /** Reused for every read (one block of rows, or a GPT-OSS slab): reading allocates no garbage. */
  private scratch = new Uint8Array(0);

  constructor(private readonly src: ModelSource, readonly layer: number, readonly E: number, readonly I: number, readonly H: number) {
    for (const entry of expertEntries(src, layer)) this.hubs.set(entry.name.slice(entry.name.lastIndexOf('.') + 1) as MatrixName, entry.hub);
    for (const m of MATRICES) {
      if (!this.hubs.has(m)) throw new MoepressError(`layer ${layer}: routed expert '${m}' weights not found`, { file: src.dir });
    }
    const dtypes = new Set([...this.hubs.values()].flat().map((h) => this.info(h).dtype));
    if (dtypes.size !== 1) throw new MoepressError(`layer ${layer}: routed experts stored in mixed dtypes (${[...dtypes].join(', ')})`, { file: src.dir });
    this.dtype = [...dtypes][0];
    if (!['BF16', 'F16', 'F32'].includes(this.dtype)) throw new MoepressError(`layer ${layer}: routed experts are ${this.dtype}; expected bf16, f16 or f32`, { file: src.dir });
    for (const m of MATRICES) this.checkShapes(m);
  }

  private info(hub: string) {
    if (!this.src.checkpoint.has(hub)) throw new MoepressError(`layer ${this.layer}: expert tensor not in the checkpoint`, { file: this.src.dir, tensor: hub });
    return this.src.checkpoint.info(hub);
  }

  /** The hub tensors must hold exactly E experts of the canonical shape in the expected layout. */
  private checkShapes(m: MatrixName): void {
    const [out, inp] = matrixShape(m, this.I, this.H);
    const hubs = this.hubs.get(m)!;
    const layout = this.layout();
    const want = layout === 'per-expert' ? [out, inp]
      : layout === 'gpt-oss' ? (m === 'down' ? [this.E, this.I, this.H] : [this.E, this.H, 2 * this.I])
        : m === 'down' ? [this.E, this.H, this.I] : [this.E, 2 * this.I, this.H];
    for (const h of hubs) {
      const shape = this.info(h).shape;
      if (shape.length !== want.length || shape.some((d, i) => d !== want[i])) {
        throw new MoepressError(`layer ${this.layer}: expert tensor has shape [${shape}], expected [${want}]`, { file: this.info(h).file, tensor: h });
      }
    }
  }

  /** openModel detects the layout from the hub names; per-expert names are one tensor per expert. */
  private layout(): 'per-expert' | 'fused' | 'gpt-oss' {
    const l = this.src.config.expertLayout;
    if (l === 'gpt-oss' || l === 'fused') return l;
    return this.hubs.get('gate')!.length === this.E ? 'per-expert' : 'fused';
  }

  private locate(m: MatrixName, e: number): Locator {
    const b = DTYPE_BYTES[this.dtype];
    const hubs = this.hubs.get(m)!;
    const { I, H } = this;
    switch (this.layout()) {
      case 'per-expert':
        return { kind: 'range', hub: hubs[e], byteOffset: 0 };
      case 'fused':
        return m === 'down' ? { kind: 'range', hub: hubs[0], byteOffset: e * H * I * b }
          : { kind: 'range', hub: hubs[0], byteOffset: (e * 2 * I + (m === 'up' ? I : 0)) * H * b };
      case 'gpt-oss':
        return m === 'down' ? { kind: 'oss-down', hub: hubs[0] } : { kind: 'oss-gate-up', hub: hubs[0], which: m === 'up' ? 1 : 0 };
    }
  }

  /** Reads `count` elements of hub from byteOffset (from the tensor's first byte) into the reused byte scratch. */
  private readRaw(hub: string, byteOffset: number, count: number): Uint8Array {
    const info = this.info(hub);
    const b = DTYPE_BYTES[this.dtype];
    if (this.scratch.byteLength < count * b) this.scratch = new Uint8Array(count * b);
    const data = this.scratch.subarray(0, count * b);
    let fd = this.fds.get(info.file);
    if (fd === undefined) {
      try {
        fd = openSync(info.file, 'r');
      } catch (err) {
        throw new MoepressError(`cannot open shard: ${(err as Error).message}`, { file: info.file, tensor: hub });
      }
      this.fds.set(info.file, fd);
    }
    const t0 = performance.now();
    readFullyAt(fd, data, info.offset + byteOffset, { file: info.file, tensor: hub });
    this.stats.readMs += performance.now() - t0;
    this.stats.bytesRead += data.byteLength;
    checkFinite(this.dtype, data, info.file, hub, byteOffset / b);
    return data;
  }

  /** Stored bytes -> float32 into dest (same element count); bf16 widens in place, no temporary. */
  private decodeInto(raw: Uint8Array, dest: Float32Array, hub: string): void {
    const t0 = performance.now();
    if (this.dtype === 'BF16') {
      const src = new Uint16Array(raw.buffer, raw.byteOffset, dest.length);
      const dst = new Uint32Array(dest.buffer, dest.byteOffset, dest.length);
      for (let i = 0; i < dst.length; i++) dst[i] = src[i] << 16;
    } else dest.set(toFloat32({ dtype: this.dtype, shape: [dest.length], data: raw }, hub));
    this.stats.decodeMs += performance.now() - t0;
  }

  matrix(m: MatrixName, e: number, into?: Float32Array): Float32Array {
    const [out, inp] = matrixShape(m, this.I, this.H);
    if (!into) return this.rows(m, e, 0, out);
    if (into.length !== out * inp) throw new Error(`ExpertSource.matrix: buffer of ${into.length} values for ${m} [${out}, ${inp}]`);
    this.rowsInto(m, e, 0, out, into);
    return into;
  }

  blockRows(m: MatrixName): number {
    const [out, inp] = matrixShape(m, this.I, this.H);
    return this.layout() === 'gpt-oss' ? out : Math.min(out, Math.max(1, Math.floor(BLOCK_ELEMS / inp)));
  }

  rows(m: MatrixName, e: number, r0: number, count: number): Float32Array {
    const inp = matrixShape(m, this.I, this.H)[1];
    const dest = new Float32Array(count * inp);
    this.rowsInto(m, e, r0, count, dest);
    return dest;
  }

  /** Rows r0 .. r0+count−1 of expert e's matrix m into dest [count, in], a block at a time through the byte scratch. */
  private rowsInto(m: MatrixName, e: number, r0: number, count: number, dest: Float32Array): void {
    this.checkExpert(e);
    const [out, inp] = matrixShape(m, this.I, this.H);
    if (!(Number.isInteger(r0) && Number.isInteger(count) && r0 >= 0 && count >= 0 && r0 + count <= out)) {
      throw new Error(`ExpertSource.rows: rows [${r0}, ${r0 + count}) outside [0, ${out}) of ${m}`);
    }
    const loc = this.locate(m, e);
    const b = DTYPE_BYTES[this.dtype];
    if (loc.kind === 'range') {
      const step = this.blockRows(m);
      for (let r = 0; r < count; r += step) {
        const n = Math.min(step, count - r);
        const raw = this.readRaw(loc.hub, loc.byteOffset + (r0 + r) * inp * b, n * inp);
        this.decodeInto(raw, dest.subarray(r * inp, (r + n) * inp), loc.hub);
      }
      return;
    }
    // GPT-OSS: the slab is read whole and rearranged.
    const { I, H } = this;
    const slab = new Float32Array(loc.kind === 'oss-down' ? I * H : 2 * I * H);
    this.decodeInto(this.readRaw(loc.hub, e * slab.length * b, slab.length), slab, loc.hub);
    const t0 = performance.now();
    if (loc.kind === 'oss-down') {
      // slab [I, H]; canonical down [H, I] = slabᵀ
      for (let h = 0; h < count; h++) for (let i = 0; i < I; i++) dest[h * I + i] = slab[i * H + r0 + h];
    } else {
      // slab [H, 2I]; canonical gate[i, h] = slab[h, 2i], up[i, h] = slab[h, 2i + 1]
      for (let i = 0; i < count; i++) for (let h = 0; h < H; h++) dest[i * H + h] = slab[h * 2 * I + 2 * (r0 + i) + loc.which];
    }
    this.stats.decodeMs += performance.now() - t0;
  }

  cloud(e: number, into?: Float32Array): Float32Array {
    this.checkExpert(e);
    const { I, H } = this;
    const D = 3 * H;
    if (into && into.length !== I * D) throw new Error(`ExpertSource.cloud: buffer of ${into.length} values for a cloud of [${I}, ${D}]`);
    const p = into ?? new Float32Array(I * D);
    // One float32 block reused for every piece: no garbage per expert beyond the cloud itself.
    const most = Math.max(...MATRICES.map((m) => this.blockRows(m) * matrixShape(m, I, H)[1]));
    const block = new Float32Array(most);
    // gate and up: row j of the matrix is a slice of cloud row j
    MATRICES.slice(0, 2).forEach((m, k) => {
      const step = this.blockRows(m);
      for (let r0 = 0; r0 < I; r0 += step) {
        const n = Math.min(step, I - r0);
        this.rowsInto(m, e, r0, n, block.subarray(0, n * H));
        const t0 = performance.now();
        for (let j = 0; j < n; j++) p.set(block.subarray(j * H, (j + 1) * H), (r0 + j) * D + k * H);
        this.stats.decodeMs += performance.now() - t0;
      }
    });
    // down [H, I]: row h scatters into column 2H + h of every cloud row
    const step = this.blockRows('down');
    for (let h0 = 0; h0 < H; h0 += step) {
      const n = Math.min(step, H - h0);
      this.rowsInto('down', e, h0, n, block.subarray(0, n * I));
      const t0 = performance.now();
      scatterColumns(block, p, n, I, D, 2 * H + h0);
      this.stats.decodeMs += performance.now() - t0;
    }
    return p;
  }

  private checkExpert(e: number): void {
    if (!(Number.isInteger(e) && e >= 0 && e < this.E)) throw new Error(`ExpertSource: expert ${e} outside [0, ${this.E})`);
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/**
 * block [n, I] (rows h0 .. h0+n−1 of down) -> p[j·D + col0 + h] = block[h, j]. Cloud rows are
 * written contiguously (j outer): the n strided reads per j stay in cache across neighbouring j,
 * where h outer would touch a new page of p on every write.
 */
function scatterColumns(block: Float32Array, p: Float32Array, n: number, I: number, D: number, col0: number): void {
  for (let j = 0; j < I; j++) {
    const o = j * D + col0;
    for (let h = 0; h < n; h++) p[o + h] = block[h * I + j];
  }
}

/** Refuses NaN/Inf with the shard, tensor and element, as readChecked does for whole tensors. */
function checkFinite(dtype: DType, d: Uint8Array, file: string, tensor: string, first: number): void {
  if (dtype === 'F32') {
    const u = new Uint32Array(d.buffer, d.byteOffset, d.byteLength / 4);
    for (let i = 0; i < u.length; i++) if ((u[i] & 0x7f800000) === 0x7f800000) throw nonFinite(file, tensor, first + i);
    return;
  }
  const u = new Uint16Array(d.buffer, d.byteOffset, d.byteLength / 2);
  const mask = dtype === 'BF16' ? 0x7f80 : 0x7c00;
  for (let i = 0; i < u.length; i++) if ((u[i] & mask) === mask) throw nonFinite(file, tensor, first + i);
}

function nonFinite(file: string, tensor: string, i: number): MoepressError {
  return new MoepressError(`element ${i} is NaN or Inf; the checkpoint is corrupt or was saved after a diverged run`, { file, tensor });
}

/** The experts of one MoE layer of a checkpoint, read expert by expert by position. */
export function openExpertSource(src: ModelSource, layer: number): ExpertSource {
  const moe = src.config.moe;
  if (!moe || src.config.layers[layer]?.ffn !== 'moe') throw new MoepressError(`layer ${layer} is not a MoE layer`, { file: src.dir });
  return new CheckpointExpertSource(src, layer, moe.experts, moe.intermediate, src.config.hidden);
}

/** An ExpertSource over experts already in memory (tests, small models); returns views. */
export function memorySource(x: LayerExperts): ExpertSource {
  const { E, I, H } = x;
  const n = I * H;
  const view = (m: MatrixName, e: number) => x[m].subarray(e * n, (e + 1) * n);
  return {
    layer: x.layer, E, I, H,
    stats: { bytesRead: 0, readMs: 0, decodeMs: 0 },
    matrix: view,
    blockRows: (m) => matrixShape(m, I, H)[0],
    rows: (m, e, r0, count) => {
      const inp = matrixShape(m, I, H)[1];
      return view(m, e).subarray(r0 * inp, (r0 + count) * inp);
    },
    cloud: (e, into) => {
      const p = into ?? new Float32Array(I * 3 * H);
      const g = view('gate', e);
      const u = view('up', e);
      for (let j = 0; j < I; j++) {
        p.set(g.subarray(j * H, (j + 1) * H), j * 3 * H);
        p.set(u.subarray(j * H, (j + 1) * H), j * 3 * H + H);
      }
      scatterColumns(view('down', e), p, H, I, 3 * H, 2 * H);
      return p;
    },
    close: () => {},
  };
}

/** One layer's experts as canonical float32 stacks (gate/up [E,I,H], down [E,H,I]): E times a matrix in memory, for small models and tests. */
export function readLayerExperts(src: ModelSource, layer: number): LayerExperts {
  const moe = src.config.moe;
  if (!moe || src.config.layers[layer]?.ffn !== 'moe') throw new MoepressError(`layer ${layer} is not a MoE layer`, { file: src.dir });
  const got: Record<string, Float32Array> = {};
  for (const e of expertEntries(src, layer)) {
    const m = e.name.slice(e.name.lastIndexOf('.') + 1);
    got[m] = toFloat32(e.load((n) => readChecked(src.checkpoint, n)), e.name);
  }
  for (const m of ['gate', 'up', 'down']) {
    if (!got[m]) throw new MoepressError(`layer ${layer}: routed expert '${m}' weights not found`, { file: src.dir });
  }
  return { layer, E: moe.experts, I: moe.intermediate, H: src.config.hidden, gate: got.gate, up: got.up, down: got.down };
}

/** Canonical `layers.L.mlp.{gate,up,down}` of a dense model, read alone (not the whole model). */
export function readDenseFfn(d: ModelSource, layer: number): Record<MatrixName, Float32Array> {
  const want = new Map(MATRICES.map((m) => [`layers.${layer}.mlp.${m}`, m]));
  const out = {} as Record<MatrixName, Float32Array>;
  for (const e of d.arch.canonicalEntries(d.config, (n) => d.checkpoint.has(n))) {
    const m = want.get(e.name);
    if (m) out[m] = toFloat32(e.load((n) => readChecked(d.checkpoint, n)), e.name);
  }
  for (const m of MATRICES) if (!out[m]) throw new MoepressError(`--base-from: layer ${layer} mlp.${m} not found`, { file: d.dir });
  return out;
}

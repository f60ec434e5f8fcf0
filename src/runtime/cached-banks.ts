/**
 * Expert banks whose routed experts live in an ExpertCache (expert-cache.ts) and are read from
 * the checkpoint, by position, the first time a token routes to them after an eviction.
 *
 *   hub layer         entry = one expert's float32 matrices (gate, up [I, H], down [H, I]),
 *                     read through compress/experts-io.ts ExpertSource (per-expert, fused or
 *                     gpt-oss layout); 3·I·H·4 bytes
 *   compressed layer  entry = one expert's prepared parts (compress/apply.ts), as the in-memory
 *                     CompressedExpertBank holds them: quantized blocks stay packed, sparse parts
 *                     are positions + float32 values, factors float32. Tensors several experts
 *                     share (a base, a shared low-rank factor) are one entry of their own, the
 *                     parent of the layer's experts.
 *
 * Why parts and not the decoded expert for compressed layers: a 4-bit expert's parts are ~1/7 of
 * its float32 matrices, so the same budget holds ~7 times as many experts (a higher hit rate),
 * and running on the parts is what the in-memory engine does, so the outputs are the same bits.
 *
 * Both banks compute exactly what DenseExpertBank / CompressedExpertBank compute on the same
 * values (ffnForward / runExpertParts), so offloaded generation equals in-memory generation.
 */
import { readExpert, type ExpertSource } from '../compress/experts-io.js';
import type { ExpertWeights } from '../compress/barycenter.js';
import { prepareParts, preparedBytes, type PreparedPart } from '../compress/apply.js';
import { MATRICES, matrixShape, type LayerRecord, type MatrixName, type MatrixPart } from '../compress/parts.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { numel, type RawTensor } from '../io/dtype.js';
import { toFloat32 } from '../tensor/convert.js';
import { runExpertParts } from './compressed-bank.js';
import type { ExpertCache } from './expert-cache.js';
import { ffnForward, type Activation, type ExpertBank, type ExpertScaling } from './experts.js';
import { expertFfn, type ExpertBiases } from './streamed-bank.js';

/**
 * One ExpertSource open at a time for every hub layer: a source keeps a read buffer of up to
 * ~8 MB, which 32 layers' sources would hold for nothing (decode visits layers in order, and
 * opening one reads no weights).
 */
export class SourceSlot {
  private current: ExpertSource | null = null;
  constructor(private readonly open: (layer: number) => ExpertSource) {}
  source(layer: number): ExpertSource {
    if (this.current?.layer !== layer) {
      this.current?.close();
      this.current = this.open(layer);
    }
    return this.current;
  }
  close(): void {
    this.current?.close();
    this.current = null;
  }
}

/** Float32 bytes of one hub expert: gate, up [I, H] and down [H, I]. */
export function hubExpertBytes(I: number, H: number): number {
  return 3 * I * H * 4;
}

function isExpertWeights(v: unknown, n: number): boolean {
  const w = v as Partial<ExpertWeights> | null;
  return w?.gate instanceof Float32Array && w.gate.length === n && w.up?.length === n && w.down?.length === n;
}

/** A hub layer's routed experts through the cache (biases, small, stay resident). */
export class CachedHubBank implements ExpertBank {
  readonly offloaded = true;
  /** The resident expert biases; cached experts are counted by the cache. */
  readonly residentBytes: number;
  constructor(
    private readonly cache: ExpertCache,
    private readonly slot: SourceSlot,
    private readonly layer: number,
    readonly count: number,
    private readonly I: number,
    private readonly H: number,
    private readonly biases: ExpertBiases,
    private readonly act: Activation,
  ) {
    const b = biases;
    this.residentBytes = 4 * ((b.gate?.length ?? 0) + (b.up?.length ?? 0) + (b.down?.length ?? 0));
  }

  /** Bytes one cached expert of this layer holds. */
  expertBytes(): number {
    return hubExpertBytes(this.I, this.H);
  }

  run(e: number, x: Float32Array, n: number, scaling?: ExpertScaling): Promise<Float32Array> {
    const { I, H, layer } = this;
    const w = this.cache.get<ExpertWeights>(`${layer}:${e}`, this.expertBytes(), (evicted) => {
      const src = this.slot.source(layer);
      const before = src.stats.bytesRead;
      // Every hub expert has the same shape: read into an evicted one's buffers when there is one.
      const value = readExpert(src, e, evicted.find((v): v is ExpertWeights => isExpertWeights(v, I * H)));
      return { value, bytes: value.gate.byteLength + value.up.byteLength + value.down.byteLength, bytesRead: src.stats.bytesRead - before };
    });
    return ffnForward(expertFfn(w, this.biases, e, I, H), x, n, this.act, scaling);
  }
}

type ExpertParts = Record<MatrixName, PreparedPart[]>;

/** Names of the float32 tensors a part decodes (dense bases, low-rank factors). */
function floatRefs(p: MatrixPart): string[] {
  if (p.kind === 'dense') return [p.ref];
  if (p.kind === 'lowrank') return [p.left, p.right];
  return [];
}

/** How a compressed layer splits into cache entries, and their sizes. */
export interface CompressedLayerSizes {
  /** Float32 tensors referenced by more than one expert: the layer's shared entry. */
  shared: string[];
  sharedBytes: number;
  /** Per expert, the bytes its entry holds. */
  experts: number[];
}

/**
 * Entry sizes of a compressed layer from the tensor headers, before anything is read: float32
 * tensors numel·4, sparse positions and values nnz·4 each, quantized blocks their stored bytes.
 */
export function compressedLayerSizes(ckpt: Checkpoint, rec: LayerRecord): CompressedLayerSizes {
  const users = new Map<string, Set<number>>();
  rec.experts.forEach((ex, e) => {
    for (const m of MATRICES) for (const p of ex[m]) for (const r of floatRefs(p)) users.set(r, (users.get(r) ?? new Set()).add(e));
  });
  const shared = [...users].filter(([, s]) => s.size > 1).map(([r]) => r);
  const f32Bytes = (n: string) => 4 * numel(ckpt.info(n).shape);
  const isShared = new Set(shared);
  const experts = rec.experts.map((ex) => {
    const own = new Set<string>();
    let b = 0;
    for (const m of MATRICES) {
      for (const p of ex[m]) {
        for (const r of floatRefs(p)) if (!isShared.has(r)) own.add(r);
        if (p.kind === 'sparse') b += 2 * 4 * numel(ckpt.info(p.values).shape);
        if (p.kind === 'quant') b += ckpt.info(p.ref).byteLength;
      }
    }
    return b + [...own].reduce((s, n) => s + f32Bytes(n), 0);
  });
  return { shared, sharedBytes: shared.reduce((s, n) => s + f32Bytes(n), 0), experts };
}

/** A compressed layer's routed experts through the cache (sizes: compressedLayerSizes). */
export class CachedCompressedBank implements ExpertBank {
  readonly offloaded = true;
  readonly residentBytes = 0;
  readonly count: number;
  private readonly shared: string[];
  private readonly sharedBytes: number;
  private readonly sizes: number[];

  constructor(
    private readonly cache: ExpertCache,
    private readonly ckpt: Checkpoint,
    private readonly rec: LayerRecord,
    private readonly I: number,
    private readonly H: number,
    private readonly act: Activation,
  ) {
    this.count = rec.experts.length;
    const z = compressedLayerSizes(ckpt, rec);
    this.shared = z.shared;
    this.sharedBytes = z.sharedBytes;
    this.sizes = z.experts;
  }

  /** Bytes of the layer's shared entry (0 when its experts share nothing). */
  sharedEntryBytes(): number {
    return this.sharedBytes;
  }

  /** Bytes expert e's entry holds. */
  expertBytes(e: number): number {
    return this.sizes[e];
  }

  private sharedKey(): string {
    return `${this.rec.layer}:shared`;
  }

  /** Reads a stored tensor, adding its bytes to `read`. */
  private reader(read: { bytes: number }): (n: string) => RawTensor {
    return (n) => {
      const t = this.ckpt.read(n);
      read.bytes += t.data.byteLength;
      return t;
    };
  }

  private sharedTensors(): Map<string, Float32Array> {
    return this.cache.get(this.sharedKey(), this.sharedBytes, () => {
      const read = { bytes: 0 };
      const get = this.reader(read);
      const value = new Map(this.shared.map((n) => [n, toFloat32(get(n), n)]));
      return { value, bytes: [...value.values()].reduce((s, a) => s + a.byteLength, 0), bytesRead: read.bytes };
    }, {}, false);
  }

  private parts(e: number): ExpertParts {
    const hasShared = this.shared.length > 0;
    const shared = hasShared ? this.sharedTensors() : new Map<string, Float32Array>();
    return this.cache.get<ExpertParts>(`${this.rec.layer}:${e}`, this.sizes[e], () => {
      const read = { bytes: 0 };
      const get = this.reader(read);
      const own = new Map<string, Float32Array>();
      const f32 = (n: string) => {
        const s = shared.get(n) ?? own.get(n);
        if (s) return s;
        const a = toFloat32(get(n), n);
        own.set(n, a);
        return a;
      };
      const value = {} as ExpertParts;
      for (const m of MATRICES) {
        const [o, i] = matrixShape(m, this.I, this.H);
        value[m] = prepareParts(this.rec.experts[e][m], o, i, get, f32);
      }
      // Shared arrays are the parent's bytes: seen up front, so not counted again here.
      const seen = new Set<Float32Array>(shared.values());
      return { value, bytes: MATRICES.reduce((s, m) => s + preparedBytes(value[m], seen), 0), bytesRead: read.bytes };
    }, hasShared ? { parent: this.sharedKey() } : {});
  }

  run(e: number, x: Float32Array, n: number, scaling?: ExpertScaling): Promise<Float32Array> {
    return runExpertParts(this.parts(e), x, n, this.I, this.H, this.act, scaling);
  }
}

/**
 * Open a Hugging Face model directory and load it into canonical float32 weights:
 * config.json -> architecture -> canonical entries -> positional reads from the shards.
 */
import { join } from 'node:path';
import { Checkpoint } from '../io/checkpoint.js';
import { readConfig } from '../io/config.js';
import { numel, type RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import type { Architecture, CanonicalEntry, ModelConfig } from '../models/canonical.js';
import type { LayerRecord } from '../compress/parts.js';
import type { Tensor } from '../tensor/tensor.js';
import { architectureFor, parseModelConfig } from '../models/registry.js';
import type { ProgressFn } from '../progress.js';
import { toFloat32 } from '../tensor/convert.js';
import { expectedShape } from './shapes.js';
import { Weights } from './weights.js';
import { isCompressedDir, readManifest, type Manifest } from '../compress/format.js';
import { isExpertWeight } from '../compress/experts-io.js';
import { CompressedExpertBank } from './compressed-bank.js';
import { denseBanks } from './transformer.js';
import { expertActivation, type ExpertBank } from './experts.js';
import { hasCompressedExperts, readCompressedExperts, withCompressedExperts, type CompressedExpertsMeta } from './compressed-experts.js';

export interface ModelSource {
  dir: string;
  config: ModelConfig;
  arch: Architecture;
  checkpoint: Checkpoint;
  /** The raw config.json, kept to be written back unchanged. */
  rawConfig: Record<string, unknown>;
}

export function openModel(dir: string): ModelSource {
  const rawConfig = readConfig(dir);
  const file = join(dir, 'config.json');
  const checkpoint = Checkpoint.open(dir);
  // Seeing the tensor names lets the config record the checkpoint's expert layout (per-expert or fused).
  const config = parseModelConfig(rawConfig, file, (n) => checkpoint.has(n));
  const arch = architectureFor(config.modelType, file);
  return { dir, config, arch, checkpoint, rawConfig };
}

/** First non-finite element of a float tensor, checked on the raw bits (exponent all ones). */
function firstNonFinite(t: RawTensor): number {
  if (t.dtype === 'BF16' || t.dtype === 'F16') {
    const u = new Uint16Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 2);
    const mask = t.dtype === 'BF16' ? 0x7f80 : 0x7c00;
    for (let i = 0; i < u.length; i++) if ((u[i] & mask) === mask) return i;
  } else if (t.dtype === 'F32') {
    const u = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
    for (let i = 0; i < u.length; i++) if ((u[i] & 0x7f800000) === 0x7f800000) return i;
  }
  return -1;
}

/** Read a hub tensor, refusing NaN/Inf with an error naming the shard and tensor. */
export function readChecked(ckpt: Checkpoint, name: string): RawTensor {
  const t = ckpt.read(name);
  const bad = firstNonFinite(t);
  if (bad >= 0) throw new MoepressError(`element ${bad} is NaN or Inf; the checkpoint is corrupt or was saved after a diverged run`, { file: ckpt.info(name).file, tensor: name });
  return t;
}

export interface LoadOptions {
  onProgress?: ProgressFn;
}

export interface LoadedModel extends ModelSource {
  weights: Weights;
  /** Per layer: the routed experts (dense or compressed), null for dense-FFN layers. */
  banks: (ExpertBank | null)[];
  /** The manifest when the directory is a moepress compressed checkpoint. */
  manifest: Manifest | null;
  /** moepress-ce.json when the directory carries compressed experts (METHODS.md Family 3). */
  compressedExperts: CompressedExpertsMeta | null;
}

/** Reads one canonical tensor as float32, checked: finite, and the shape config.json implies. */
export function loadEntry(src: ModelSource, entry: CanonicalEntry): Tensor {
  const { dir, config, checkpoint } = src;
  let raw: RawTensor;
  try {
    raw = entry.load((n) => readChecked(checkpoint, n));
  } catch (e) {
    // Mapping errors know the tensor but not which shard holds it: add the file.
    if (e instanceof MoepressError && !e.file && e.tensor && checkpoint.has(e.tensor)) {
      throw new MoepressError(e.detail, { file: checkpoint.info(e.tensor).file, tensor: e.tensor });
    }
    throw e;
  }
  const want = expectedShape(config, entry.name);
  if (want && (want.length !== raw.shape.length || want.some((d, j) => d !== raw.shape[j]))) {
    throw new MoepressError(`shape [${raw.shape}] does not match config.json, which implies [${want}] for canonical '${entry.name}'`, { file: join(dir, 'model.safetensors.index.json'), tensor: entry.hub.join(', ') });
  }
  if (numel(raw.shape) === 0 && raw.shape.length > 0) throw new MoepressError('tensor is empty', { tensor: entry.hub.join(', ') });
  return { shape: raw.shape, data: toFloat32(raw, entry.name) };
}

/** The per-layer records of a moepress compressed directory (empty for a hub checkpoint). */
export function compressedLayers(manifest: Manifest | null): Map<number, LayerRecord> {
  return new Map((manifest?.layers ?? []).map((r) => [r.layer, r]));
}

/** Canonical entries to load; compressed layers keep their experts in moepress tensors, not under hub names. */
export function modelEntries(src: ModelSource, compressed: Map<number, LayerRecord>): CanonicalEntry[] {
  return src.arch.canonicalEntries(src.config, (n) => src.checkpoint.has(n)).filter((e) => !(e.layer !== null && compressed.has(e.layer) && isExpertWeight(e.name)));
}

/**
 * The experts of a compressed layer, prepared from its stored parts (experts-LLLLL.safetensors),
 * read through `read` (default: the model's checkpoint); every part is read while the bank is built.
 */
export function compressedBank(src: Pick<ModelSource, 'config' | 'checkpoint'>, rec: LayerRecord, read: (name: string) => RawTensor = (n) => src.checkpoint.read(n)): ExpertBank {
  const moe = src.config.moe!;
  return new CompressedExpertBank(rec, moe.intermediate, src.config.hidden, read, expertActivation(moe));
}

export function loadModel(dir: string, opts: LoadOptions = {}): LoadedModel {
  const src = openModel(dir);
  const { config } = src;
  const manifest = isCompressedDir(dir) ? readManifest(dir) : null;
  const compressed = compressedLayers(manifest);
  const entries = modelEntries(src, compressed);
  const weights = new Weights(new Map());
  entries.forEach((entry, i) => {
    weights.set(entry.name, loadEntry(src, entry));
    opts.onProgress?.({ task: 'load', done: i + 1, total: entries.length, unit: 'tensors', detail: entry.name });
  });
  const dense = denseBanks(config, weights, (l) => !compressed.has(l));
  const ce = hasCompressedExperts(dir) ? readCompressedExperts(dir, config) : null;
  const banks = dense.map((b, l) => {
    const rec = compressed.get(l);
    const bank = !rec || !config.moe ? b : compressedBank(src, rec);
    const vectors = ce?.layers[l];
    return bank && vectors ? withCompressedExperts(bank, vectors) : bank;
  });
  return { ...src, weights, banks, manifest, compressedExperts: ce?.meta ?? null };
}

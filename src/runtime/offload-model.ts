/**
 * A model for generation with its routed experts offloaded: every other weight (embeddings,
 * attention, norms, routers, shared experts, expert biases, lm_head) is loaded as float32 and
 * stays resident; the routed experts of every MoE layer go through one ExpertCache
 * (expert-cache.ts) and are read from the checkpoint on demand (cached-banks.ts). Hub checkpoints
 * (per-expert, fused and gpt-oss layouts) and moepress compressed directories both work.
 *
 * generate-model.ts chooses between this and loadModel. The Transformer built on it is the in-memory TS engine with other banks: the same arithmetic,
 * so generate() over it gives the tokens and logits of generate() over loadModel().
 */
import { isCompressedDir, readManifest } from '../compress/format.js';
import { isExpertWeight, openExpertSource } from '../compress/experts-io.js';
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';
import { CachedCompressedBank, CachedHubBank, compressedLayerSizes, hubExpertBytes, SourceSlot } from './cached-banks.js';
import { hasCompressedExperts, readCompressedExperts, withCompressedExperts } from './compressed-experts.js';
import { ExpertCache } from './expert-cache.js';
import { expertActivation, type ExpertBank } from './experts.js';
import { compressedLayers, loadEntry, modelEntries, openModel, type ModelSource } from './load-model.js';
import { Weights } from './weights.js';
import type { LayerRecord } from '../compress/parts.js';

/** Bytes of the routed experts as cache entries: all of them, and the least a cache must hold. */
export interface ExpertFootprint {
  /** Every entry of every MoE layer (what a cache holding everything holds). */
  totalBytes: number;
  /** The largest single expert (with its layer's shared entry): a smaller cache cannot run. */
  minCacheBytes: number;
  /** The layer that sets minCacheBytes. */
  minLayer: number;
}

/** From the headers only (no weights read). */
export function expertFootprint(src: ModelSource, compressed: Map<number, LayerRecord>): ExpertFootprint {
  const cfg = src.config;
  const out: ExpertFootprint = { totalBytes: 0, minCacheBytes: 0, minLayer: -1 };
  const moe = cfg.moe;
  if (!moe) return out;
  cfg.layers.forEach((spec, l) => {
    if (spec.ffn !== 'moe') return;
    const rec = compressed.get(l);
    let total: number;
    let min: number;
    if (rec) {
      const z = compressedLayerSizes(src.checkpoint, rec);
      total = z.sharedBytes + z.experts.reduce((s, b) => s + b, 0);
      min = z.sharedBytes + Math.max(...z.experts);
    } else {
      min = hubExpertBytes(moe.intermediate, cfg.hidden);
      total = moe.experts * min;
    }
    out.totalBytes += total;
    if (min > out.minCacheBytes) [out.minCacheBytes, out.minLayer] = [min, l];
  });
  return out;
}

export interface OffloadOptions {
  /** The expert cache's capacity in bytes. */
  cacheBytes: number;
  onProgress?: ProgressFn;
}

export interface OffloadedModel extends ModelSource {
  weights: Weights;
  banks: (ExpertBank | null)[];
  cache: ExpertCache;
  footprint: ExpertFootprint;
  /** Closes the expert reader and the checkpoint. */
  close(): void;
}

/** Loads everything but the routed experts; refuses a cache that cannot hold one expert, naming the size needed. */
export function loadOffloaded(dir: string, opts: OffloadOptions): OffloadedModel {
  const src = openModel(dir);
  try {
    return build(src, opts);
  } catch (e) {
    src.checkpoint.close();
    throw e;
  }
}

function build(src: ModelSource, opts: OffloadOptions): OffloadedModel {
  const { config: cfg, dir } = src;
  const compressed = compressedLayers(isCompressedDir(dir) ? readManifest(dir) : null);
  const footprint = expertFootprint(src, compressed);
  if (cfg.moe && opts.cacheBytes < footprint.minCacheBytes) {
    throw new MoepressError(`an expert cache of ${opts.cacheBytes} bytes cannot hold one expert of layer ${footprint.minLayer}: it needs at least ${footprint.minCacheBytes} bytes (--expert-cache ${footprint.minCacheBytes})`, { file: dir });
  }
  const cache = new ExpertCache(opts.cacheBytes);
  const entries = modelEntries(src, compressed).filter((e) => !isExpertWeight(e.name));
  const weights = new Weights(new Map());
  entries.forEach((entry, i) => {
    weights.set(entry.name, loadEntry(src, entry));
    opts.onProgress?.({ task: 'load', done: i + 1, total: entries.length, unit: 'tensors', detail: entry.name });
  });
  const slot = new SourceSlot((l) => openExpertSource(src, l));
  const ce = hasCompressedExperts(dir) ? readCompressedExperts(dir, cfg) : null;
  const banks = cfg.layers.map((spec, l): ExpertBank | null => {
    const moe = cfg.moe;
    if (spec.ffn !== 'moe' || !moe) return null;
    const rec = compressed.get(l);
    const act = expertActivation(moe);
    const p = `layers.${l}.moe.experts`;
    const bank = rec
      ? new CachedCompressedBank(cache, src.checkpoint, rec, moe.intermediate, cfg.hidden, act)
      : new CachedHubBank(cache, slot, l, moe.experts, moe.intermediate, cfg.hidden, { gate: weights.opt(`${p}.gate_bias`), up: weights.opt(`${p}.up_bias`), down: weights.opt(`${p}.down_bias`) }, act);
    const vectors = ce?.layers[l];
    return vectors ? withCompressedExperts(bank, vectors) : bank;
  });
  const close = () => {
    slot.close();
    src.checkpoint.close();
  };
  return { ...src, weights, banks, cache, footprint, close };
}

/**
 * Before generation: the peak memory of the in-memory and the offloaded engine, from the
 * checkpoint's headers (no weights read), and which one to run. Returned as data; the CLI prints it.
 *
 * Memory model (bytes); T = prompt tokens, C = min(maxPositions, T + new tokens):
 *   resident     float32 weights that are not routed experts (embeddings, attention, norms,
 *                routers, shared experts, expert biases, lm_head) + the largest stored tensor
 *                while it is converted
 *   experts      in memory: every routed expert as the engine holds it (float32, or a compressed
 *                layer's prepared parts); offloaded: the expert cache, min(capacity, all experts)
 *                + the expert reader's buffer: one block of rows (≤ 2^22 elements) or a GPT-OSS slab
 *                (2·I·H), at ≤ 8 bytes an element (stored + float32)
 *   decode graph in memory, when the one-graph decoder would be built (≤ 1.8 GB of weights):
 *                GRAPH_COPIES copies of the weights alive while the session is created (initializer
 *                arrays, protobuf chunks, the serialized model, ORT's initializers)
 *   KV cache     layers · C · NKV · (dk + dv) · 4
 *   activations  the prompt pass, its largest step: 2·T·H residual/normed + max(attention
 *                6·T·H + heads·T², FFN T·(2H + 2·Imax)) + one row of logits V, all float32
 * peak = PROCESS_BYTES + (sum) · (1 + GC_SLACK), as compress's and eval's estimates.
 */
import os from 'node:os';
import { isCompressedDir, readManifest } from '../compress/format.js';
import { GC_SLACK, PROCESS_BYTES } from '../compress/estimate.js';
import { isExpertWeight } from '../compress/experts-io.js';
import { DTYPE_BYTES, numel } from '../io/dtype.js';
import type { ModelConfig } from '../models/canonical.js';
import { attentionDims } from './attention-block.js';
import { MAX_GRAPH_BYTES } from './decode-graph.js';
import { compressedLayers, modelEntries, openModel } from './load-model.js';
import { expertFootprint } from './offload-model.js';

/**
 * Copies of the weights building the decode graph holds at its peak: measured 3.85 on a 1.1 GB
 * (float32) synthetic Mixtral-shaped model, peak RSS 5.7 GB against 1.1 GB of loaded weights.
 */
export const GRAPH_COPIES = 4;

/** Elements per block the expert reader reads (compress/experts-io.ts BLOCK_ELEMS). */
const READ_BLOCK_ELEMS = 2 ** 22;

export interface GenerateEstimate {
  residentWeightBytes: number;
  /** Routed experts as the in-memory engine holds them (= a cache holding all of them). */
  expertBytes: number;
  /** The least an expert cache must hold (the largest expert, with its layer's shared tensors). */
  minCacheBytes: number;
  /** The offloaded engine's read buffer. */
  readBufferBytes: number;
  /** The one-graph decoder's copies of the weights (0 when it would not be built). */
  graphBytes: number;
  kvCacheBytes: number;
  activationBytes: number;
  inMemoryPeakBytes: number;
}

/** Peak bytes from the parts of a working set: PROCESS_BYTES + sum · (1 + GC_SLACK). */
export function peakOf(parts: number[]): number {
  return Math.round(PROCESS_BYTES + parts.reduce((s, b) => s + b, 0) * (1 + GC_SLACK));
}

/** The offloaded engine's peak with an expert cache of cacheBytes. */
export function offloadedPeakBytes(est: GenerateEstimate, cacheBytes: number): number {
  return peakOf([est.residentWeightBytes, Math.min(cacheBytes, est.expertBytes), est.readBufferBytes, est.kvCacheBytes, est.activationBytes]);
}

/** KV cache bytes for C positions (kv-cache.ts: per layer K [C, NKV·dk] and V [C, NKV·dv], float32). */
export function kvCacheBytes(cfg: ModelConfig, positions: number): number {
  const d = attentionDims(cfg);
  return 4 * cfg.numLayers * positions * d.kvHeads * (d.dk + d.dv);
}

/** The prompt pass's largest step (see the memory model above). */
export function activationBytes(cfg: ModelConfig, T: number): number {
  const H = cfg.hidden;
  const d = attentionDims(cfg);
  const moe = cfg.moe;
  const Imax = Math.max(cfg.denseIntermediate, moe?.intermediate ?? 0, moe?.shared?.intermediate ?? 0);
  return 4 * (2 * T * H + Math.max(6 * T * H + d.heads * T * T, T * (2 * H + 2 * Imax)) + cfg.vocabSize);
}

export function estimateGenerate(dir: string, run: { promptTokens: number; maxTokens: number }): GenerateEstimate {
  const src = openModel(dir);
  try {
    const cfg = src.config;
    const compressed = compressedLayers(isCompressedDir(dir) ? readManifest(dir) : null);
    let resident = 0;
    let rawMax = 0;
    let hubExperts = 0;
    for (const e of modelEntries(src, compressed)) {
      const infos = e.hub.map((h) => src.checkpoint.info(h));
      const elems = infos.reduce((s, i) => s + numel(i.shape), 0);
      if (isExpertWeight(e.name)) {
        hubExperts += 4 * elems;
        continue;
      }
      resident += 4 * elems;
      rawMax = Math.max(rawMax, infos.reduce((s, i) => s + numel(i.shape) * DTYPE_BYTES[i.dtype], 0));
    }
    const fp = expertFootprint(src, compressed);
    // Hub experts in the footprint are exactly hubExperts; compressed layers add their prepared parts.
    const expertBytes = fp.totalBytes;
    const moe = cfg.moe;
    const IH = moe ? moe.intermediate * cfg.hidden : 0;
    const readElems = cfg.expertLayout === 'gpt-oss' ? 2 * IH : Math.min(IH, READ_BLOCK_ELEMS);
    const readBufferBytes = hubExperts > 0 ? 8 * readElems : 0;
    const residentWeightBytes = resident + rawMax;
    const weights = resident + expertBytes;
    const graphBytes = weights <= MAX_GRAPH_BYTES ? GRAPH_COPIES * weights : 0;
    const positions = Math.min(cfg.maxPositions, run.promptTokens + run.maxTokens);
    const kv = kvCacheBytes(cfg, positions);
    const act = activationBytes(cfg, run.promptTokens);
    return {
      residentWeightBytes, expertBytes, minCacheBytes: fp.minCacheBytes, readBufferBytes, graphBytes,
      kvCacheBytes: kv, activationBytes: act,
      inMemoryPeakBytes: peakOf([residentWeightBytes, expertBytes, graphBytes, kv, act]),
    };
  } finally {
    src.checkpoint.close();
  }
}

export interface GeneratePlan {
  mode: 'in-memory' | 'offloaded';
  /** The expert cache's capacity (null in memory). */
  cacheBytes: number | null;
  /** Estimated peak of the chosen mode. */
  peakBytes: number;
  /** Memory the plan may use: availableBytes · (1 − margin). */
  usableBytes: number;
  /** Whether peakBytes fits in usableBytes. */
  fits: boolean;
  reason: string;
}

/** Share of the available memory left free for the system and estimate error. */
export const MEMORY_MARGIN = 0.2;

/**
 * In memory when it fits, else offloaded with the largest cache that fits (at least one expert,
 * at most all of them); an explicit expertCacheBytes always offloads.
 */
export function chooseGenerateMode(est: GenerateEstimate, opts: { availableBytes: number; expertCacheBytes?: number; margin?: number }): GeneratePlan {
  const usable = Math.floor(opts.availableBytes * (1 - (opts.margin ?? MEMORY_MARGIN)));
  const plan = (mode: GeneratePlan['mode'], cacheBytes: number | null, reason: string): GeneratePlan => {
    const peakBytes = cacheBytes === null ? est.inMemoryPeakBytes : offloadedPeakBytes(est, cacheBytes);
    return { mode, cacheBytes, peakBytes, usableBytes: usable, fits: peakBytes <= usable, reason };
  };
  if (opts.expertCacheBytes !== undefined) return plan('offloaded', opts.expertCacheBytes, 'expert cache size given');
  if (est.expertBytes === 0 || est.inMemoryPeakBytes <= usable) return plan('in-memory', null, 'the model fits in memory');
  // Largest cache with offloadedPeakBytes <= usable: invert peakOf for the cache term.
  const rest = est.residentWeightBytes + est.readBufferBytes + est.kvCacheBytes + est.activationBytes;
  const room = Math.floor((usable - PROCESS_BYTES) / (1 + GC_SLACK) - rest);
  const cache = Math.min(est.expertBytes, Math.max(est.minCacheBytes, room));
  return plan('offloaded', cache, 'the in-memory model would not fit');
}

/** Memory this process may still take: the OS's available memory, capped by a cgroup limit when set. */
export function availableMemory(): number {
  const limit = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0;
  const free = os.freemem();
  return limit > 0 ? Math.min(free, Math.max(0, limit - process.memoryUsage.rss())) : free;
}

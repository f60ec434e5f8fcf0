/** What `moepress inspect` reports, computed from config.json and the safetensors headers alone. */
import { DTYPE_BYTES, numel, type DType } from '../io/dtype.js';
import type { Architecture, ModelConfig } from './canonical.js';

export interface TensorHeader {
  dtype: DType;
  shape: number[];
}

export interface ModelSummary {
  modelType: string;
  family: string;
  layers: number;
  moeLayers: number;
  hidden: number;
  vocab: number;
  experts: number;
  topK: number;
  expertIntermediate: number;
  sharedIntermediate: number;
  denseIntermediate: number;
  attention: { heads: number; kvHeads: number; headDim: number; mla: boolean };
  params: { total: number; routedExperts: number; activePerToken: number };
  bytes: { total: number; routedExperts: number; routedShare: number; byDtype: Record<string, number> };
}

export function isRoutedExpert(canonicalName: string): boolean {
  return /\.moe\.experts\./.test(canonicalName);
}

/**
 * Parameters and bytes per category. Active parameters per token count every non-routed
 * parameter (embeddings included) plus K/E of the routed experts of each MoE layer.
 */
export function summarize(cfg: ModelConfig, arch: Architecture, headers: Map<string, TensorHeader>, topK?: number): ModelSummary {
  const entries = arch.canonicalEntries(cfg, (n) => headers.has(n));
  const routedHub = new Set<string>();
  for (const e of entries) if (isRoutedExpert(e.name)) e.hub.forEach((h) => routedHub.add(h));
  let total = 0;
  let routed = 0;
  let bytes = 0;
  let routedBytes = 0;
  const byDtype: Record<string, number> = {};
  for (const [name, h] of headers) {
    const n = numel(h.shape);
    const b = n * DTYPE_BYTES[h.dtype];
    total += n;
    bytes += b;
    byDtype[h.dtype] = (byDtype[h.dtype] ?? 0) + b;
    if (routedHub.has(name)) {
      routed += n;
      routedBytes += b;
    }
  }
  const moe = cfg.moe;
  const K = topK ?? moe?.routing.topK ?? 0;
  const E = moe?.experts ?? 1;
  return {
    modelType: cfg.modelType,
    family: cfg.family,
    layers: cfg.numLayers,
    moeLayers: cfg.layers.filter((l) => l.ffn === 'moe').length,
    hidden: cfg.hidden,
    vocab: cfg.vocabSize,
    experts: moe?.experts ?? 0,
    topK: K,
    expertIntermediate: moe?.intermediate ?? 0,
    sharedIntermediate: moe?.shared?.intermediate ?? 0,
    denseIntermediate: cfg.denseIntermediate,
    attention: { heads: cfg.attention.heads, kvHeads: cfg.attention.kvHeads, headDim: cfg.attention.headDim, mla: cfg.attention.mla !== null },
    params: { total, routedExperts: routed, activePerToken: Math.round(total - routed + (routed * K) / E) },
    bytes: { total: bytes, routedExperts: routedBytes, routedShare: bytes ? routedBytes / bytes : 0, byDtype },
  };
}

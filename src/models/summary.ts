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
  /** activePerToken: with compressed experts, the K − m full experts plus the m experts' vectors. */
  params: { total: number; routedExperts: number; activePerToken: number };
  /** Present when the model carries compressed experts (METHODS.md Family 3). */
  compressedExperts?: CompressedExpertsSummary;
  bytes: { total: number; routedExperts: number; routedShare: number; byDtype: Record<string, number> };
}

export interface CompressedExpertsSummary {
  /** Compressed experts per token (the m lowest-weighted of the top-K). */
  m: number;
  /** Full experts per token: K − m. */
  fullExperts: number;
  /** Stored vector parameters: per MoE layer E · (2H + I). */
  vectorParams: number;
  /** Routed-expert parameters per token: K full experts before, K − m full + m experts' vectors after. */
  activeExpertParams: ActiveExpertParams;
  /** Whole-model active parameters per token before (params.activePerToken is the after value). */
  activePerTokenBefore: number;
}

export interface ActiveExpertParams {
  before: number;
  after: number;
  /** 1 − after / before. */
  reduction: number;
}

/** One routed expert's parameters: gate, up [I, H], down [H, I], plus biases when the family has them. */
export function paramsPerExpert(cfg: ModelConfig): number {
  const moe = cfg.moe;
  if (!moe) return 0;
  const { intermediate: I } = moe;
  const H = cfg.hidden;
  return 3 * I * H + (moe.expertBias ? 2 * I + H : 0);
}

/**
 * Routed-expert parameters one token touches over all MoE layers: K experts with the plain router;
 * with m compressed experts, K − m experts plus the m auxiliary experts' vectors c0, c2 [H], c1 [I].
 */
export function activeExpertParams(cfg: ModelConfig, K: number, m: number): ActiveExpertParams {
  const moe = cfg.moe;
  const layers = cfg.layers.filter((l) => l.ffn === 'moe').length;
  if (!moe || layers === 0) return { before: 0, after: 0, reduction: 0 };
  if (!(Number.isInteger(m) && m >= 0 && m < K)) throw new Error(`activeExpertParams: m = ${m} must be in [0, K = ${K})`);
  const P = paramsPerExpert(cfg);
  const before = layers * K * P;
  const after = layers * ((K - m) * P + m * (2 * cfg.hidden + moe.intermediate));
  return { before, after, reduction: before ? 1 - after / before : 0 };
}

export function isRoutedExpert(canonicalName: string): boolean {
  return /\.moe\.experts\./.test(canonicalName);
}

/**
 * Parameters and bytes per category. Active parameters per token count every non-routed
 * parameter (embeddings included) plus K/E of the routed experts of each MoE layer; with
 * `compressedExperts` = m (moepress-ce.json, not among `headers`), (K − m)/E of them plus the
 * vectors of m experts per layer, and the vectors count in the total.
 */
export function summarize(cfg: ModelConfig, arch: Architecture, headers: Map<string, TensorHeader>, topK?: number, compressedExperts?: number): ModelSummary {
  const entries = arch.canonicalEntries(cfg, (n) => headers.has(n));
  const routedHub = new Set<string>();
  for (const e of entries) if (isRoutedExpert(e.name)) e.hub.forEach((h) => routedHub.add(h));
  let total = 0;
  let routed = 0;
  let bytes = 0;
  let routedBytes = 0;
  const byDtype: Record<string, number> = {};
  // A moepress compressed directory stores the routed experts of its compressed layers as
  // `moepress.layers.L.*` tensors (codes, scales, factors, bases): their bytes are routed-expert
  // bytes, and the parameters they represent are the layer's E original experts.
  const compressedLayers = new Set<number>();
  for (const [name, h] of headers) {
    const n = numel(h.shape);
    const b = n * DTYPE_BYTES[h.dtype];
    bytes += b;
    byDtype[h.dtype] = (byDtype[h.dtype] ?? 0) + b;
    const c = /^moepress\.layers\.(\d+)\./.exec(name);
    if (c) {
      compressedLayers.add(Number(c[1]));
      routedBytes += b;
      continue;
    }
    total += n;
    if (routedHub.has(name)) {
      routed += n;
      routedBytes += b;
    }
  }
  if (cfg.moe && compressedLayers.size) {
    const represented = compressedLayers.size * cfg.moe.experts * paramsPerExpert(cfg);
    total += represented;
    routed += represented;
  }
  const moe = cfg.moe;
  const K = topK ?? moe?.routing.topK ?? 0;
  const E = moe?.experts ?? 1;
  const activeBefore = Math.round(total - routed + (routed * K) / E);
  let active = activeBefore;
  let ce: CompressedExpertsSummary | undefined;
  const m = compressedExperts ?? 0;
  if (m > 0 && moe) {
    if (m >= K) throw new Error(`summarize: ${m} compressed experts need top-k above ${m}, got ${K}`);
    const moeLayers = cfg.layers.filter((l) => l.ffn === 'moe').length;
    const perExpertVectors = 2 * cfg.hidden + moe.intermediate;
    const vectorParams = moeLayers * E * perExpertVectors;
    total += vectorParams;
    active = Math.round(total - vectorParams - routed + (routed * (K - m)) / E + moeLayers * m * perExpertVectors);
    ce = { m, fullExperts: K - m, vectorParams, activeExpertParams: activeExpertParams(cfg, K, m), activePerTokenBefore: activeBefore };
  }
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
    params: { total, routedExperts: routed, activePerToken: active },
    ...(ce ? { compressedExperts: ce } : {}),
    bytes: { total: bytes, routedExperts: routedBytes, routedShare: bytes ? routedBytes / bytes : 0, byDtype },
  };
}

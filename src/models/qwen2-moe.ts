/**
 * Qwen2-MoE (model_type 'qwen2_moe'), checked against transformers configuration_qwen2_moe.py and
 * modular_qwen2_moe.py (Qwen2MoeAttention, Qwen2MoeTopKRouter, Qwen2MoeSparseMoeBlock,
 * Qwen2MoeDecoderLayer).
 *
 * Attention: q/k/v biases (qkv_bias, default true; o_proj never), rotate_half RoPE. Sliding window
 * only with use_sliding_window, on the layers layer_types marks 'sliding_attention' (default rule:
 * even layers below max_window_layers). Router: softmax over E, top-K, renormalised iff
 * norm_topk_prob (default false). Every MoE layer adds a shared SwiGLU expert of width
 * shared_expert_intermediate_size scaled by sigmoid(shared_expert_gate · x) ([1,H], no bias).
 * Layer l is sparse iff l not in mlp_only_layers and (l+1) % decoder_sparse_step == 0; other layers
 * are dense MLPs of intermediate_size. Routed experts have moe_intermediate_size.
 */
import type { Architecture, ModelConfig } from './canonical.js';
import { baseConfig, checkModelType, qwenFfnKinds, readBase, readExpertCounts, swigluMoe, readRope, requireSilu, routing, standardAttention, windowsFromLayerTypes, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, QWEN_NAMES } from './hub-layout.js';

/** transformers Qwen2MoeConfig defaults. */
export const QWEN2_MOE_DEFAULTS = {
  base: { ropeTheta: 10000, normEps: 1e-6, maxPositions: 32768, kvHeads: 16, bos: null, eos: null } satisfies BaseDefaults,
  numExperts: 60,
  numExpertsPerTok: 4,
  normTopkProb: false,
  qkvBias: true,
  useSlidingWindow: false,
  slidingWindow: 4096,
  maxWindowLayers: 28,
};

export function parseQwen2MoeConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, ['qwen2_moe']);
  requireSilu(r);
  const d = QWEN2_MOE_DEFAULTS;
  const b = readBase(r, d.base);
  const { E, K } = readExpertCounts(r, 'num_experts', d.numExperts, d.numExpertsPerTok);
  const ffn = qwenFfnKinds(r, b.numLayers, E);

  const useWindow = r.bool('use_sliding_window', d.useSlidingWindow);
  const window = useWindow ? r.intOrNull('sliding_window', d.slidingWindow) : null;
  const maxWindowLayers = r.int('max_window_layers', d.maxWindowLayers, 0);
  const types =
    r.strList('layer_types') ??
    ffn.map((_, i) => ((i + 1) % 2 === 1 && i < maxWindowLayers && useWindow ? 'sliding_attention' : 'full_attention'));
  const windows = windowsFromLayerTypes(r, types, b.numLayers, window);

  const qkvBias = r.bool('qkv_bias', d.qkvBias);
  return {
    ...baseConfig(modelType, 'qwen2-moe', b),
    norm: 'rms',
    attention: standardAttention(b, { qkvBias, oBias: false }),
    rope: readRope(r, { defaultTheta: d.base.ropeTheta, headDim: b.headDim, style: 'half', maxPositions: b.maxPositions }),
    layers: ffn.map((kind, l) => ({ ffn: kind, slidingWindow: windows[l] })),
    moe: swigluMoe(E, r.int('moe_intermediate_size'), routing('softmax-topk', K, r.bool('norm_topk_prob', d.normTopkProb)), { intermediate: r.int('shared_expert_intermediate_size'), gated: true }),
    denseIntermediate: ffn.includes('dense') ? r.int('intermediate_size') : 0,
    expertLayout: 'per-expert',
  };
}

export const qwen2Moe: Architecture = {
  family: 'qwen2-moe',
  modelTypes: ['qwen2_moe'],
  parseConfig: parseQwen2MoeConfig,
  ...layoutMapping({ ...QWEN_NAMES, shared: 'shared_expert', sharedGate: 'shared_expert_gate' }),
};

/**
 * Qwen3-MoE (model_type 'qwen3_moe'), checked against transformers configuration_qwen3_moe.py and
 * modular_qwen3_moe.py (Qwen3MoeAttention = Qwen3Attention, Qwen3MoeSparseMoeBlock, and
 * Qwen2MoeDecoderLayer / Qwen2MoeTopKRouter it reuses).
 *
 * Attention: q/k/v/o biases iff attention_bias (default false); RMSNorm over each head's D on q and
 * k after the head split (q_norm/k_norm weight [D], qkNorm 'head'); head_dim from config.json
 * (Qwen3-30B-A3B: 128, not hidden/heads). Sliding window on every layer only with
 * use_sliding_window. Router as Qwen2-MoE: softmax, top-K, renormalised iff norm_topk_prob
 * (default false). No shared expert. Same sparse-step / mlp_only_layers rule; dense layers use
 * intermediate_size, routed experts moe_intermediate_size.
 */
import type { Architecture, ModelConfig } from './canonical.js';
import { baseConfig, checkModelType, qwenFfnKinds, readBase, readExpertCounts, swigluMoe, readRope, requireSilu, routing, standardAttention, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, QWEN_NAMES } from './hub-layout.js';

/** transformers Qwen3MoeConfig defaults. */
export const QWEN3_MOE_DEFAULTS = {
  base: { ropeTheta: 10000, normEps: 1e-6, maxPositions: 32768, kvHeads: 4, bos: null, eos: null } satisfies BaseDefaults,
  numExperts: 128,
  numExpertsPerTok: 8,
  normTopkProb: false,
  attentionBias: false,
  useSlidingWindow: false,
  slidingWindow: 4096,
};

export function parseQwen3MoeConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, ['qwen3_moe']);
  requireSilu(r);
  const d = QWEN3_MOE_DEFAULTS;
  const b = readBase(r, d.base);
  const { E, K } = readExpertCounts(r, 'num_experts', d.numExperts, d.numExpertsPerTok);
  const ffn = qwenFfnKinds(r, b.numLayers, E);
  const window = r.bool('use_sliding_window', d.useSlidingWindow) ? r.intOrNull('sliding_window', d.slidingWindow) : null;
  const bias = r.bool('attention_bias', d.attentionBias);
  return {
    ...baseConfig(modelType, 'qwen3-moe', b),
    norm: 'rms',
    attention: standardAttention(b, { qkvBias: bias, oBias: bias, qkNorm: 'head' }),
    rope: readRope(r, { defaultTheta: d.base.ropeTheta, headDim: b.headDim, style: 'half', maxPositions: b.maxPositions }),
    layers: ffn.map((kind) => ({ ffn: kind, slidingWindow: window })),
    moe: swigluMoe(E, r.int('moe_intermediate_size'), routing('softmax-topk', K, r.bool('norm_topk_prob', d.normTopkProb))),
    denseIntermediate: ffn.includes('dense') ? r.int('intermediate_size') : 0,
    expertLayout: 'per-expert',
  };
}

export const qwen3Moe: Architecture = {
  family: 'qwen3-moe',
  modelTypes: ['qwen3_moe'],
  parseConfig: parseQwen3MoeConfig,
  ...layoutMapping(QWEN_NAMES),
};

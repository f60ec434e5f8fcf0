/**
 * OLMoE (model_type 'olmoe'), checked against transformers configuration_olmoe.py and
 * modular_olmoe.py (OlmoeAttention, OlmoeSparseMoeBlock, Qwen2MoeTopKRouter).
 *
 * Attention: Llama attention (q/k/v/o biases iff attention_bias) with RMSNorm on the whole q and k
 * projections before the head split: q_norm over hidden_size (= NH*D), k_norm over NKV*D, i.e.
 * qkNorm 'full'; optional clip_qkv clamps q, k, v after that. rotate_half RoPE, no sliding window.
 * Router (Qwen2MoeTopKRouter): softmax over E, top-K, renormalised only when norm_topk_prob
 * (default false). Experts SwiGLU with gate_proj/up_proj/down_proj.
 *
 * Checkpoint: model.layers.L.mlp.gate.weight [E,H], mlp.experts.e.{gate,up,down}_proj.weight,
 * self_attn.{q,k}_norm.weight; transformers v5 may hold mlp.experts.gate_up_proj/down_proj.
 */
import type { Architecture, ModelConfig } from './canonical.js';
import { baseConfig, checkModelType, readBase, readExpertCounts, swigluMoe, readRope, requireSilu, routing, standardAttention, uniformLayers, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, QWEN_NAMES } from './hub-layout.js';

/** transformers OlmoeConfig defaults. */
export const OLMOE_DEFAULTS = {
  base: { ropeTheta: 10000, normEps: 1e-5, maxPositions: 4096, kvHeads: null, bos: null, eos: 50279 } satisfies BaseDefaults,
  numExperts: 64,
  numExpertsPerTok: 8,
  normTopkProb: false,
  attentionBias: false,
  clipQkv: null,
};

export function parseOlmoeConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, ['olmoe']);
  requireSilu(r);
  const b = readBase(r, OLMOE_DEFAULTS.base);
  // q_norm is built over hidden_size, so the projection must be exactly that wide.
  if (b.heads * b.headDim !== b.hidden) r.fail('head_dim', `num_attention_heads * head_dim = hidden_size (${b.hidden}) for OLMoE's q_norm`);
  const { E, K } = readExpertCounts(r, 'num_experts', OLMOE_DEFAULTS.numExperts, OLMOE_DEFAULTS.numExpertsPerTok);
  const bias = r.bool('attention_bias', OLMOE_DEFAULTS.attentionBias);
  const clip = r.has('clip_qkv') ? r.num('clip_qkv') : OLMOE_DEFAULTS.clipQkv;
  return {
    ...baseConfig(modelType, 'olmoe', b),
    norm: 'rms',
    attention: standardAttention(b, { qkvBias: bias, oBias: bias, qkNorm: 'full', clipQkv: clip }),
    rope: readRope(r, { defaultTheta: OLMOE_DEFAULTS.base.ropeTheta, headDim: b.headDim, style: 'half', maxPositions: b.maxPositions }),
    layers: uniformLayers(b.numLayers, 'moe', null),
    moe: swigluMoe(E, r.int('intermediate_size'), routing('softmax-topk', K, r.bool('norm_topk_prob', OLMOE_DEFAULTS.normTopkProb))),
    denseIntermediate: 0,
    expertLayout: 'per-expert',
  };
}

export const olmoe: Architecture = {
  family: 'olmoe',
  modelTypes: ['olmoe'],
  parseConfig: parseOlmoeConfig,
  ...layoutMapping(QWEN_NAMES),
};

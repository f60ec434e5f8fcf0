/**
 * Phi-MoE / Phi-3.5-MoE (model_type 'phimoe'), checked against transformers configuration_phimoe.py
 * and modeling_phimoe.py / modular_phimoe.py (sparsemixer, PhimoeSparseMoeBlock, PhimoeDecoderLayer).
 *
 * Norms are LayerNorm with weight and bias (input_layernorm, post_attention_layernorm, final norm),
 * eps = rms_norm_eps. Attention is Llama attention with q/k/v/o biases iff attention_bias; RoPE is
 * rotate_half, usually longrope (short/long factors and mscales in rope_scaling). Experts are
 * Mixtral's (block_sparse_moe.experts.e.w1/w3/w2). Routing is sparsemixer, always two picks: at
 * inference pick 1 = argmax; its weight = softmax over the logits masked to those within
 * 2·router_jitter_noise (relative) of the max; pick 2 the same with pick 1 removed. lm_head has a
 * bias iff lm_head_bias. transformers v5 names the router mlp.router in its fused layout.
 */
import type { Architecture, ModelConfig } from './canonical.js';
import { baseConfig, checkModelType, readBase, readExpertCounts, swigluMoe, readRope, requireSilu, routing, standardAttention, uniformLayers, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, MIXTRAL_NAMES } from './hub-layout.js';

/** transformers PhimoeConfig defaults. */
export const PHIMOE_DEFAULTS = {
  base: { ropeTheta: 1e6, normEps: 1e-5, maxPositions: 4096 * 32, kvHeads: 8, bos: 1, eos: 2 } satisfies BaseDefaults,
  numLocalExperts: 16,
  numExpertsPerTok: 2,
  routerJitterNoise: 0.01,
  attentionBias: false,
  lmHeadBias: false,
  slidingWindow: null,
};

export function parsePhimoeConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, ['phimoe']);
  requireSilu(r);
  const d = PHIMOE_DEFAULTS;
  const b = readBase(r, d.base);
  const { E, K } = readExpertCounts(r, 'num_local_experts', d.numLocalExperts, d.numExpertsPerTok);
  if (K !== 2) r.fail('num_experts_per_tok', '2 (sparsemixer always selects two experts)');
  const bias = r.bool('attention_bias', d.attentionBias);
  return {
    ...baseConfig(modelType, 'phimoe', b),
    norm: 'layer',
    attention: standardAttention(b, { qkvBias: bias, oBias: bias }),
    rope: readRope(r, { defaultTheta: d.base.ropeTheta, headDim: b.headDim, style: 'half', maxPositions: b.maxPositions }),
    layers: uniformLayers(b.numLayers, 'moe', r.intOrNull('sliding_window', d.slidingWindow)),
    moe: swigluMoe(E, r.int('intermediate_size'), routing('sparsemixer', K, false, { jitterEps: r.num('router_jitter_noise', d.routerJitterNoise) })),
    denseIntermediate: 0,
    lmHeadBias: r.bool('lm_head_bias', d.lmHeadBias),
    expertLayout: 'per-expert',
  };
}

export const phimoe: Architecture = {
  family: 'phimoe',
  modelTypes: ['phimoe'],
  parseConfig: parsePhimoeConfig,
  ...layoutMapping({ ...MIXTRAL_NAMES, fusedRouter: 'mlp.router' }),
};

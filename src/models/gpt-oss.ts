/**
 * GPT-OSS (model_type 'gpt_oss'), checked against transformers configuration_gpt_oss.py and
 * modeling_gpt_oss.py (GptOssExperts, GptOssTopKRouter, GptOssAttention, eager_attention_forward).
 *
 * Attention: q/k/v/o biases (attention_bias, default true), head_dim 64, GQA, a learned sink logit
 * per head (self_attn.sinks [NH]) joined to the softmax and dropped after it; rotate_half RoPE
 * (chunk into halves), default yarn (factor 32, beta_fast 32, beta_slow 1, truncate false,
 * original_max_position_embeddings 4096, theta 150000). layer_types alternate, default: even layers
 * 'sliding_attention' (window sliding_window, default 128), odd 'full_attention'.
 * Router: linear with bias [E,H] + [E]; top-K of the logits, softmax over those K (topk-softmax).
 * Experts (in x out): gate_up = x @ gate_up_proj[e] + gate_up_proj_bias[e] with gate = [..., ::2],
 * up = [..., 1::2]; gate clamped above at swiglu_limit, up to ±limit; (up + 1) · gate ·
 * sigmoid(alpha · gate); out = that @ down_proj[e] + down_proj_bias[e]. Stored gate_up_proj
 * [E,H,2I], gate_up_proj_bias [E,2I], down_proj [E,I,H], down_proj_bias [E,H]; canonical
 * transposes to [E,I,H] / [E,H,I] and de-interleaves gate/up, all as byte moves.
 * Hub checkpoints quantized to MXFP4 (gate_up_proj_blocks/_scales) are refused with an error.
 */
import type { Architecture, ModelConfig } from './canonical.js';
import { baseConfig, checkModelType, readBase, readExpertCounts, readRope, routing, standardAttention, windowsFromLayerTypes, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, QWEN_NAMES } from './hub-layout.js';

/** transformers GptOssConfig defaults. */
export const GPT_OSS_DEFAULTS = {
  base: { ropeTheta: 150000, normEps: 1e-5, maxPositions: 131072, kvHeads: 8, bos: null, eos: null, headDim: 64 } satisfies BaseDefaults,
  numLocalExperts: 128,
  numExpertsPerTok: 4,
  slidingWindow: 128,
  attentionBias: true,
  swigluAlpha: 1.702,
  swigluLimit: 7.0,
  ropeScaling: { rope_type: 'yarn', factor: 32.0, beta_fast: 32.0, beta_slow: 1.0, truncate: false, original_max_position_embeddings: 4096 },
};

export function parseGptOssConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, ['gpt_oss']);
  const d = GPT_OSS_DEFAULTS;
  const b = readBase(r, d.base);
  const { E, K } = readExpertCounts(r, 'num_local_experts', d.numLocalExperts, d.numExpertsPerTok);
  const window = r.intOrNull('sliding_window', d.slidingWindow);
  const types = r.strList('layer_types') ?? Array.from({ length: b.numLayers }, (_, i) => ((i + 1) % 2 === 1 ? 'sliding_attention' : 'full_attention'));
  const windows = windowsFromLayerTypes(r, types, b.numLayers, window);
  const bias = r.bool('attention_bias', d.attentionBias);
  return {
    ...baseConfig(modelType, 'gpt-oss', b),
    norm: 'rms',
    attention: standardAttention(b, { qkvBias: bias, oBias: bias, sinks: true }),
    rope: readRope(r, { defaultTheta: d.base.ropeTheta, headDim: b.headDim, style: 'half', maxPositions: b.maxPositions, defaultScaling: d.ropeScaling }),
    layers: windows.map((w) => ({ ffn: 'moe' as const, slidingWindow: w })),
    moe: {
      experts: E,
      intermediate: r.int('intermediate_size'),
      // The K weights are a softmax over the K selected logits, so they already sum to 1.
      routing: routing('topk-softmax', K, false),
      activation: 'swiglu-oai',
      expertBias: true,
      routerBias: true,
      shared: null,
      oaiSwiglu: { alpha: r.num('swiglu_alpha', d.swigluAlpha), limit: r.num('swiglu_limit', d.swigluLimit) },
    },
    denseIntermediate: 0,
    expertLayout: 'gpt-oss',
  };
}

export const gptOss: Architecture = {
  family: 'gpt-oss',
  modelTypes: ['gpt_oss'],
  parseConfig: parseGptOssConfig,
  ...layoutMapping({ ...QWEN_NAMES, fusedRouter: 'mlp.router' }),
};

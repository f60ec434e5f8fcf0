/**
 * Mixtral (model_type 'mixtral'), checked against transformers configuration_mixtral.py and
 * modeling_mixtral.py (MixtralSparseMoeBlock / MixtralTopKRouter).
 *
 * Layer: x += attn(RMSNorm(x)); x += moe(RMSNorm(x)). Attention is GQA without biases, rotate_half
 * RoPE over the whole head, optional sliding window on every layer (config sliding_window, may be
 * null). Router: softmax over E logits, top-K, then the K weights renormalised to sum to 1
 * (`routing_weights /= routing_weights.sum(...)`, unconditional). router_jitter_noise only acts in
 * training. Experts are SwiGLU: w2(silu(w1 x) * w3 x).
 *
 * Checkpoint: model.layers.L.block_sparse_moe.gate.weight [E,H], ...experts.e.{w1,w3,w2}.weight;
 * transformers v5 in memory: mlp.gate.weight + mlp.experts.gate_up_proj [E,2I,H] / down_proj [E,H,I].
 */
import type { Architecture, ModelConfig } from './canonical.js';
import { baseConfig, checkModelType, readBase, readExpertCounts, swigluMoe, readRope, requireSilu, routing, standardAttention, uniformLayers, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, MIXTRAL_NAMES } from './hub-layout.js';

/** transformers MixtralConfig defaults (intermediate_size and the sizes are required here). */
export const MIXTRAL_DEFAULTS = {
  base: { ropeTheta: 1e6, normEps: 1e-5, maxPositions: 4096 * 32, kvHeads: 8, bos: 1, eos: 2 } satisfies BaseDefaults,
  numLocalExperts: 8,
  numExpertsPerTok: 2,
  slidingWindow: null,
};

export function parseMixtralConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, ['mixtral']);
  requireSilu(r);
  const b = readBase(r, MIXTRAL_DEFAULTS.base);
  const { E, K } = readExpertCounts(r, 'num_local_experts', MIXTRAL_DEFAULTS.numLocalExperts, MIXTRAL_DEFAULTS.numExpertsPerTok);
  return {
    ...baseConfig(modelType, 'mixtral', b),
    norm: 'rms',
    attention: standardAttention(b, { qkvBias: false, oBias: false }),
    rope: readRope(r, { defaultTheta: MIXTRAL_DEFAULTS.base.ropeTheta, headDim: b.headDim, style: 'half', maxPositions: b.maxPositions }),
    layers: uniformLayers(b.numLayers, 'moe', r.intOrNull('sliding_window', MIXTRAL_DEFAULTS.slidingWindow)),
    moe: swigluMoe(E, r.int('intermediate_size'), routing('softmax-topk', K, true)),
    denseIntermediate: 0,
    expertLayout: 'per-expert',
  };
}

export const mixtral: Architecture = {
  family: 'mixtral',
  modelTypes: ['mixtral'],
  parseConfig: parseMixtralConfig,
  ...layoutMapping(MIXTRAL_NAMES),
};

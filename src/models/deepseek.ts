/**
 * DeepSeek-V2 and V3 (model_type 'deepseek_v2', 'deepseek_v3'), checked against transformers
 * configuration_deepseek_v{2,3}.py and modular_deepseek_v{2,3}.py.
 *
 * Attention is multi-head latent attention: q = q_b(RMSNorm(q_a x)) (or q_proj when q_lora_rank is
 * null); kv_a_proj_with_mqa gives [kv_lora_rank | qk_rope_head_dim]; the latent part goes through
 * kv_a_layernorm and kv_b to [NH, nope + v]; the rope part is one shared key head. RoPE covers only
 * qk_rope_head_dim and rotates adjacent pairs (V2: complex multiply; V3: rope_interleave, default
 * true, else rotate_half). The latent norms use the RMSNorm default eps 1e-6. Softmax scale is
 * (nope+rope)^-0.5, times mscale^2 with mscale = 0.1·mscale_all_dim·ln(factor)+1 when a yarn
 * rope_scaling sets mscale_all_dim (as V3 and DeepSeek's own V2 code do).
 *
 * Routing: V2 softmax over E then top-K, 'greedy' or 'group_limited_greedy' (groups scored by their
 * max probability, keep topk_group of n_group), weights × routed_scaling_factor. transformers' V2
 * port never renormalises; DeepSeek's code does when norm_topk_prob (default false), which we follow.
 * V3 ('noaux_tc', always, in transformers): s = sigmoid(logits); groups scored by the sum of their
 * top-2 (s + e_score_correction_bias); top-K on the biased scores of kept groups; weights = s,
 * renormalised when norm_topk_prob (default true, + 1e-20), × routed_scaling_factor (default 2.5).
 * Shared experts: one ungated SwiGLU of width n_shared_experts × moe_intermediate_size. Layers
 * before first_k_dense_replace (and, in DeepSeek's code, layers with l % moe_layer_freq != 0) are
 * dense MLPs of intermediate_size.
 */
import type { Architecture, ModelConfig, RopeConfig, RoutingConfig } from './canonical.js';
import { baseConfig, checkModelType, checkTopK, readBase, readRope, requireSilu, routing, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, QWEN_NAMES } from './hub-layout.js';

interface DeepseekDefaults {
  base: BaseDefaults;
  firstKDenseReplace: number;
  kvLoraRank: number;
  qLoraRank: number | null;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  nRoutedExperts: number | null;
  nSharedExperts: number | null;
  /** null: required (V2's default None means a dense model, which is not an MoE to compress). */
  numExpertsPerTok: number | null;
  routedScalingFactor: number;
  nGroup: number | null;
  topkGroup: number | null;
  topkMethod: 'greedy' | 'group_limited_greedy' | 'noaux_tc';
  scoringFunc: 'softmax' | 'sigmoid';
  normTopkProb: boolean;
  ropeInterleave: boolean;
}

/** transformers DeepseekV2Config defaults (scoring_func / moe_layer_freq from DeepSeek's own config). */
export const DEEPSEEK_V2_DEFAULTS: DeepseekDefaults = {
  base: { ropeTheta: 10000, normEps: 1e-6, maxPositions: 2048, kvHeads: null, bos: 1, eos: 2 },
  firstKDenseReplace: 0,
  kvLoraRank: 512,
  qLoraRank: 1536,
  qkNopeHeadDim: 128,
  qkRopeHeadDim: 64,
  vHeadDim: 128,
  nRoutedExperts: 64,
  nSharedExperts: 2,
  numExpertsPerTok: null,
  routedScalingFactor: 1.0,
  nGroup: null,
  topkGroup: null,
  topkMethod: 'greedy',
  scoringFunc: 'softmax',
  normTopkProb: false,
  ropeInterleave: true,
};

/** transformers DeepseekV3Config defaults. */
export const DEEPSEEK_V3_DEFAULTS: DeepseekDefaults = {
  base: { ropeTheta: 10000, normEps: 1e-6, maxPositions: 4096, kvHeads: null, bos: 0, eos: 1 },
  firstKDenseReplace: 3,
  kvLoraRank: 512,
  qLoraRank: 1536,
  qkNopeHeadDim: 128,
  qkRopeHeadDim: 64,
  vHeadDim: 128,
  nRoutedExperts: 256,
  nSharedExperts: 1,
  numExpertsPerTok: 8,
  routedScalingFactor: 2.5,
  nGroup: 8,
  topkGroup: 4,
  topkMethod: 'noaux_tc',
  scoringFunc: 'sigmoid',
  normTopkProb: true,
  ropeInterleave: true,
};

function yarnMscale(scale: number, mscale: number): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** The routing enum from DeepSeek's scoring_func / topk_method pair. */
function readRouting(r: ConfigReader, d: DeepseekDefaults, v3: boolean, E: number): RoutingConfig {
  const K = d.numExpertsPerTok === null ? r.int('num_experts_per_tok') : r.int('num_experts_per_tok', d.numExpertsPerTok);
  checkTopK(r, 'num_experts_per_tok', K, E);
  const scoring = r.choice('scoring_func', ['softmax', 'sigmoid'], d.scoringFunc);
  const method = r.choice('topk_method', ['greedy', 'group_limited_greedy', 'noaux_tc'], d.topkMethod);
  // transformers' V3 always routes noaux_tc with sigmoid scores; V2 always softmax without bias.
  if (v3 && (scoring !== 'sigmoid' || method !== 'noaux_tc')) r.fail(v3 && scoring !== 'sigmoid' ? 'scoring_func' : 'topk_method', "'sigmoid' with topk_method 'noaux_tc' (the only DeepSeek-V3 routing)");
  if (!v3 && (scoring !== 'softmax' || method === 'noaux_tc')) r.fail(scoring !== 'softmax' ? 'scoring_func' : 'topk_method', "softmax scoring with 'greedy' or 'group_limited_greedy' (DeepSeek-V2 routing)");
  let nGroup = 1;
  let topKGroup = 1;
  if (method !== 'greedy') {
    nGroup = d.nGroup === null ? r.int('n_group') : r.int('n_group', d.nGroup);
    topKGroup = d.topkGroup === null ? r.int('topk_group') : r.int('topk_group', d.topkGroup);
    if (E % nGroup !== 0) r.fail('n_group', `a divisor of n_routed_experts (${E})`);
    if (topKGroup > nGroup) r.fail('topk_group', `at most n_group (${nGroup})`);
    // V3 scores a group by its top-2 sum, so each group needs 2 experts and K must fit in the kept groups.
    if (v3 && E / nGroup < 2) r.fail('n_group', `at most n_routed_experts / 2 (${E / 2})`);
    if ((E / nGroup) * topKGroup < K) r.fail('topk_group', `enough groups to hold num_experts_per_tok (${K}) experts`);
  }
  return routing(v3 ? 'sigmoid-topk' : 'softmax-topk', K, r.bool('norm_topk_prob', d.normTopkProb), {
    scale: r.num('routed_scaling_factor', d.routedScalingFactor),
    nGroup,
    topKGroup,
    groupScore: v3 ? 'top2-sum' : 'max',
  });
}

export function parseDeepseekConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, ['deepseek_v2', 'deepseek_v3']);
  const v3 = modelType === 'deepseek_v3';
  const d = v3 ? DEEPSEEK_V3_DEFAULTS : DEEPSEEK_V2_DEFAULTS;
  requireSilu(r);
  const nope = r.int('qk_nope_head_dim', d.qkNopeHeadDim, 0);
  const ropeDim = r.int('qk_rope_head_dim', d.qkRopeHeadDim);
  const qk = nope + ropeDim;
  // config.json's head_dim (transformers writes qk_rope_head_dim there) is not the q/k width: ignore it.
  const { head_dim: _ignored, ...withoutHeadDim } = json;
  const b = readBase(new ConfigReader(withoutHeadDim, file), { ...d.base, headDim: qk });
  const mla = {
    normEps: 1e-6,
    qLoraRank: r.intOrNull('q_lora_rank', d.qLoraRank),
    kvLoraRank: r.int('kv_lora_rank', d.kvLoraRank),
    qkNopeHeadDim: nope,
    qkRopeHeadDim: ropeDim,
    vHeadDim: r.int('v_head_dim', d.vHeadDim),
  };
  const interleave = v3 ? r.bool('rope_interleave', d.ropeInterleave) : true;
  const rope = readRope(r, { defaultTheta: d.base.ropeTheta, headDim: ropeDim, style: interleave ? 'interleaved' : 'half', maxPositions: b.maxPositions });

  const E = r.intOrNull('n_routed_experts', d.nRoutedExperts) ?? r.fail('n_routed_experts', 'a number of routed experts (a dense DeepSeek model has nothing to compress)');
  const firstDense = r.int('first_k_dense_replace', d.firstKDenseReplace, 0);
  const freq = r.int('moe_layer_freq', 1);
  const ffn = Array.from({ length: b.numLayers }, (_, l) => (l >= firstDense && l % freq === 0 ? ('moe' as const) : ('dense' as const)));
  const nShared = r.intOrNull('n_shared_experts', d.nSharedExperts, 0);
  const I = r.int('moe_intermediate_size');
  const bias = r.bool('attention_bias', false);
  return {
    ...baseConfig(modelType, 'deepseek', b),
    norm: 'rms',
    attention: {
      heads: b.heads,
      kvHeads: b.heads, // MLA: every head has its own k (nope part) and v
      headDim: qk,
      qkvBias: bias, // q_a_proj and kv_a_proj_with_mqa
      oBias: bias,
      qkNorm: 'none',
      sinks: false,
      scale: mlaScale(qk, rope),
      mla,
    },
    rope,
    layers: ffn.map((kind) => ({ ffn: kind, slidingWindow: null })),
    moe: {
      experts: E,
      intermediate: I,
      routing: readRouting(r, d, v3, E),
      activation: 'swiglu',
      expertBias: false,
      routerBias: false,
      shared: nShared ? { intermediate: I * nShared, gated: false } : null,
    },
    denseIntermediate: ffn.includes('dense') ? r.int('intermediate_size') : 0,
    expertLayout: 'per-expert',
  };
}

/** (nope+rope)^-0.5, corrected by yarn's mscale_all_dim like DeepseekV3Attention.scaling. */
function mlaScale(qk: number, rope: RopeConfig): number {
  const s = rope.scaling;
  let scale = 1 / Math.sqrt(qk);
  if (s.type === 'yarn' && s.mscaleAllDim) {
    const m = yarnMscale(s.factor, s.mscaleAllDim);
    scale *= m * m;
  }
  return scale;
}

export const deepseek: Architecture = {
  family: 'deepseek',
  modelTypes: ['deepseek_v2', 'deepseek_v3'],
  parseConfig: parseDeepseekConfig,
  ...layoutMapping({ ...QWEN_NAMES, shared: 'shared_experts' }),
};

/**
 * The Hugging Face decoder layout every family here shares (model.embed_tokens, model.layers.L.
 * {input_layernorm, self_attn, post_attention_layernorm, mlp}, model.norm, lm_head), written once as
 * mapping Units. Families differ only in their MoE module names (MoeNames) and their config.
 */
import { MoepressError } from '../io/errors.js';
import type { Architecture, ExpertLayout, ModelConfig } from './canonical.js';
import { canonicalSide, fusedGateUp, hubSide, ossGateUp, ossGateUpBias, same, stacked, transposed, type Unit } from './mapping.js';

/** Where a family keeps its MoE tensors in a checkpoint. */
export interface MoeNames {
  /** Module of router + per-expert tensors: 'block_sparse_moe' (Mixtral, Phi-MoE) or 'mlp'. */
  block: string;
  /** Router module inside block: 'gate' (nn.Linear [E,H]). */
  router: string;
  /** Per-expert projection names: Mixtral w1 (gate), w3 (up), w2 (down), or gate_proj/up_proj/down_proj. */
  proj: { gate: string; up: string; down: string };
  /** Router module in the fused (transformers v5) and GPT-OSS layouts, e.g. 'mlp.gate' or 'mlp.router'. */
  fusedRouter: string;
  /** Shared expert module ('shared_expert' Qwen2-MoE, 'shared_experts' DeepSeek) and its gate ('shared_expert_gate'). */
  shared?: string;
  sharedGate?: string;
}

export const QWEN_NAMES: MoeNames = {
  block: 'mlp',
  router: 'gate',
  proj: { gate: 'gate_proj', up: 'up_proj', down: 'down_proj' },
  fusedRouter: 'mlp.gate',
};

export const MIXTRAL_NAMES: MoeNames = {
  block: 'block_sparse_moe',
  router: 'gate',
  proj: { gate: 'w1', up: 'w3', down: 'w2' },
  fusedRouter: 'mlp.gate', // transformers v5 renames .block_sparse_moe.gate -> .mlp.gate
};

/** What the checkpoint holds beyond what the config says. */
export interface MapOptions {
  lmHead: boolean;
  layout: ExpertLayout;
}

export function defaultLayout(cfg: ModelConfig): ExpertLayout {
  return cfg.family === 'gpt-oss' ? 'gpt-oss' : 'per-expert';
}

/**
 * The expert layout of a checkpoint, from its tensor names: a fused `mlp.experts.gate_up_proj` in
 * the first MoE layer means transformers-v5 fused (or GPT-OSS's own layout), else per-expert.
 * Loaders call this (or registry.parseModelConfig(json, file, has)) so cfg.expertLayout is right for
 * writing the checkpoint back.
 */
export function detectExpertLayout(cfg: ModelConfig, has: (hubName: string) => boolean): ExpertLayout {
  const l = cfg.layers.findIndex((s) => s.ffn === 'moe');
  if (!cfg.moe || l < 0) return defaultLayout(cfg);
  const p = `model.layers.${l}.mlp.experts`;
  if (has(`${p}.gate_up_proj_blocks`)) {
    throw new MoepressError('experts are MXFP4-quantized (gate_up_proj_blocks/_scales); dequantize the checkpoint to bf16 first', {
      tensor: `${p}.gate_up_proj_blocks`,
    });
  }
  if (cfg.family === 'gpt-oss') return 'gpt-oss';
  return has(`${p}.gate_up_proj`) ? 'fused' : 'per-expert';
}

/** Options for hub -> canonical: decided by the checkpoint's names. */
export function optionsFromHub(cfg: ModelConfig, has: (hubName: string) => boolean): MapOptions {
  // Tied checkpoints may still store lm_head.weight; keep it when present.
  return { lmHead: has('lm_head.weight') || !cfg.tieEmbeddings, layout: detectExpertLayout(cfg, has) };
}

/** Options for canonical -> hub: decided by the canonical names and cfg.expertLayout. */
export function optionsFromCanonical(cfg: ModelConfig, has: (canonicalName: string) => boolean): MapOptions {
  return { lmHead: has('lm_head'), layout: cfg.expertLayout ?? defaultLayout(cfg) };
}

/** Every unit of the model, embeddings first and lm_head last (the order a layer-streaming loader wants). */
export function modelUnits(cfg: ModelConfig, opt: MapOptions, names: MoeNames): Unit[] {
  const H = cfg.hidden;
  const V = cfg.vocabSize;
  const units: Unit[] = [same(null, 'embed', 'model.embed_tokens.weight', [V, H])];
  for (let l = 0; l < cfg.numLayers; l++) {
    units.push(...normUnits(cfg, l), ...attentionUnits(cfg, l));
    if (cfg.layers[l].ffn === 'moe') units.push(...moeUnits(cfg, l, opt, names));
    else units.push(...mlpUnits(l, `model.layers.${l}.mlp`, `layers.${l}.mlp`, cfg.denseIntermediate, H));
  }
  units.push(same(null, 'norm.weight', 'model.norm.weight', [H]));
  if (cfg.norm === 'layer') units.push(same(null, 'norm.bias', 'model.norm.bias', [H]));
  if (opt.lmHead) units.push(same(null, 'lm_head', 'lm_head.weight', [V, H]));
  if (cfg.lmHeadBias) units.push(same(null, 'lm_head_bias', 'lm_head.bias', [V]));
  return units;
}

function normUnits(cfg: ModelConfig, l: number): Unit[] {
  const P = `model.layers.${l}`;
  const C = `layers.${l}`;
  const H = cfg.hidden;
  const out = [same(l, `${C}.attn_norm.weight`, `${P}.input_layernorm.weight`, [H]), same(l, `${C}.ffn_norm.weight`, `${P}.post_attention_layernorm.weight`, [H])];
  if (cfg.norm === 'layer') {
    out.push(same(l, `${C}.attn_norm.bias`, `${P}.input_layernorm.bias`, [H]), same(l, `${C}.ffn_norm.bias`, `${P}.post_attention_layernorm.bias`, [H]));
  }
  return out;
}

/** A linear layer [out, in] (+ bias [out]). */
function linear(l: number, canonical: string, hub: string, out: number, inp: number, bias: boolean): Unit[] {
  const u = [same(l, `${canonical}.weight`, `${hub}.weight`, [out, inp])];
  if (bias) u.push(same(l, `${canonical}.bias`, `${hub}.bias`, [out]));
  return u;
}

function attentionUnits(cfg: ModelConfig, l: number): Unit[] {
  const a = cfg.attention;
  const P = `model.layers.${l}.self_attn`;
  const C = `layers.${l}.attn`;
  const H = cfg.hidden;
  if (a.mla) return mlaUnits(cfg, l);
  const q = a.heads * a.headDim;
  const kv = a.kvHeads * a.headDim;
  const out = [
    ...linear(l, `${C}.q`, `${P}.q_proj`, q, H, a.qkvBias),
    ...linear(l, `${C}.k`, `${P}.k_proj`, kv, H, a.qkvBias),
    ...linear(l, `${C}.v`, `${P}.v_proj`, kv, H, a.qkvBias),
    ...linear(l, `${C}.o`, `${P}.o_proj`, H, q, a.oBias),
  ];
  if (a.qkNorm !== 'none') {
    // 'head' normalises each head over D (Qwen3); 'full' the whole projection (OLMoE: q over NH*D, k over NKV*D).
    const full = a.qkNorm === 'full';
    out.push(same(l, `${C}.q_norm.weight`, `${P}.q_norm.weight`, [full ? q : a.headDim]));
    out.push(same(l, `${C}.k_norm.weight`, `${P}.k_norm.weight`, [full ? kv : a.headDim]));
  }
  if (a.sinks) out.push(same(l, `${C}.sinks`, `${P}.sinks`, [a.heads]));
  return out;
}

/** DeepSeek multi-head latent attention (DeepseekV2Attention / DeepseekV3Attention). */
function mlaUnits(cfg: ModelConfig, l: number): Unit[] {
  const a = cfg.attention;
  const m = a.mla!;
  const P = `model.layers.${l}.self_attn`;
  const C = `layers.${l}.attn`;
  const H = cfg.hidden;
  const qk = m.qkNopeHeadDim + m.qkRopeHeadDim;
  const out: Unit[] = [];
  if (m.qLoraRank === null) out.push(...linear(l, `${C}.q`, `${P}.q_proj`, a.heads * qk, H, false));
  else {
    out.push(...linear(l, `${C}.q_a`, `${P}.q_a_proj`, m.qLoraRank, H, a.qkvBias));
    out.push(same(l, `${C}.q_a_norm.weight`, `${P}.q_a_layernorm.weight`, [m.qLoraRank]));
    out.push(...linear(l, `${C}.q_b`, `${P}.q_b_proj`, a.heads * qk, m.qLoraRank, false));
  }
  out.push(...linear(l, `${C}.kv_a`, `${P}.kv_a_proj_with_mqa`, m.kvLoraRank + m.qkRopeHeadDim, H, a.qkvBias));
  out.push(same(l, `${C}.kv_a_norm.weight`, `${P}.kv_a_layernorm.weight`, [m.kvLoraRank]));
  out.push(...linear(l, `${C}.kv_b`, `${P}.kv_b_proj`, a.heads * (m.qkNopeHeadDim + m.vHeadDim), m.kvLoraRank, false));
  out.push(...linear(l, `${C}.o`, `${P}.o_proj`, H, a.heads * m.vHeadDim, a.oBias));
  return out;
}

/** A SwiGLU MLP: gate/up [F,H], down [H,F] (dense layers, shared experts). */
function mlpUnits(l: number, hub: string, canonical: string, F: number, H: number): Unit[] {
  return [
    same(l, `${canonical}.gate`, `${hub}.gate_proj.weight`, [F, H]),
    same(l, `${canonical}.up`, `${hub}.up_proj.weight`, [F, H]),
    same(l, `${canonical}.down`, `${hub}.down_proj.weight`, [H, F]),
  ];
}

function moeUnits(cfg: ModelConfig, l: number, opt: MapOptions, n: MoeNames): Unit[] {
  const moe = cfg.moe!;
  const P = `model.layers.${l}`;
  const C = `layers.${l}.moe`;
  const [E, I, H] = [moe.experts, moe.intermediate, cfg.hidden];
  const router = opt.layout === 'per-expert' ? `${P}.${n.block}.${n.router}` : `${P}.${n.fusedRouter}`;
  const out = [same(l, `${C}.router.weight`, `${router}.weight`, [E, H])];
  if (moe.routerBias) out.push(same(l, `${C}.router.bias`, `${router}.bias`, [E]));
  // DeepSeek-V3 noaux_tc: a per-expert bias added to the scores for selection only.
  if (moe.routing.kind === 'sigmoid-topk') out.push(same(l, `${C}.router.correction_bias`, `${router}.e_score_correction_bias`, [E]));

  const X = `${C}.experts`;
  if (opt.layout === 'per-expert') {
    const per = (p: string) => Array.from({ length: E }, (_, e) => `${P}.${n.block}.experts.${e}.${p}.weight`);
    out.push(stacked(l, `${X}.gate`, per(n.proj.gate), [I, H]));
    out.push(stacked(l, `${X}.up`, per(n.proj.up), [I, H]));
    out.push(stacked(l, `${X}.down`, per(n.proj.down), [H, I]));
  } else if (opt.layout === 'fused') {
    out.push(fusedGateUp(l, `${X}.gate`, `${X}.up`, `${P}.mlp.experts.gate_up_proj`, E, I, H));
    out.push(same(l, `${X}.down`, `${P}.mlp.experts.down_proj`, [E, H, I]));
  } else {
    out.push(ossGateUp(l, `${X}.gate`, `${X}.up`, `${P}.mlp.experts.gate_up_proj`, E, I, H));
    out.push(transposed(l, `${X}.down`, `${P}.mlp.experts.down_proj`, [E, I, H]));
  }
  if (moe.expertBias) {
    if (opt.layout !== 'gpt-oss') throw new MoepressError(`layer ${l}: expert biases exist only in the GPT-OSS layout`);
    out.push(ossGateUpBias(l, `${X}.gate_bias`, `${X}.up_bias`, `${P}.mlp.experts.gate_up_proj_bias`, E, I));
    out.push(same(l, `${X}.down_bias`, `${P}.mlp.experts.down_proj_bias`, [E, H]));
  }

  if (moe.shared) {
    if (!n.shared) throw new MoepressError(`layer ${l}: family '${cfg.family}' has no shared-expert names`);
    out.push(...mlpUnits(l, `${P}.mlp.${n.shared}`, `${C}.shared`, moe.shared.intermediate, H));
    if (moe.shared.gated) out.push(same(l, `${C}.shared_gate.weight`, `${P}.mlp.${n.sharedGate ?? 'shared_expert_gate'}.weight`, [1, H]));
  }
  return out;
}

/** canonicalEntries / hubEntries for a family whose checkpoints follow this layout with `names`. */
export function layoutMapping(names: MoeNames): Pick<Architecture, 'canonicalEntries' | 'hubEntries'> {
  return {
    canonicalEntries: (cfg, has) => canonicalSide(modelUnits(cfg, optionsFromHub(cfg, has), names)),
    hubEntries: (cfg, has) => hubSide(modelUnits(cfg, optionsFromCanonical(cfg, has), names)),
  };
}

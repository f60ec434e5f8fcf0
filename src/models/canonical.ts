/**
 * The one canonical MoE model every architecture maps into (STYLE.md rule 1).
 *
 * Dimension glossary, used in shape comments everywhere:
 *   V vocab, H hidden, L layers, NH query heads, NKV key/value heads, D head dim,
 *   E routed experts, K experts per token (top-k), I expert intermediate,
 *   IS shared-expert intermediate, F dense-FFN intermediate, T tokens, S sequence length.
 *
 * Canonical tensor names (per layer prefix `layers.{l}.`), all weights in nn.Linear layout [out, in]:
 *   embed [V,H]   lm_head [V,H] (absent when tied)   lm_head_bias [V] (Phi-MoE lm_head_bias)
 *   norm.weight [H] (+ norm.bias for LayerNorm)
 *   layers.l.attn_norm.weight [H]            layers.l.ffn_norm.weight [H]     (+ .bias for LayerNorm)
 *   layers.l.attn.{q,k,v}.weight [NH*D|NKV*D, H] (+ .bias)   layers.l.attn.o.weight [H, NH*D] (+ .bias)
 *   layers.l.attn.q_norm.weight, attn.k_norm.weight : [D] (qkNorm 'head') or [NH*D]/[NKV*D] ('full')
 *   layers.l.attn.sinks [NH]                                   (GPT-OSS)
 *   layers.l.attn.{q_a,q_a_norm,q_b,kv_a,kv_a_norm,kv_b}.weight (DeepSeek multi-head latent attention;
 *     q_a [QR,H], q_a_norm [QR], q_b [NH*(nope+rope),QR], kv_a [KR+rope,H], kv_a_norm [KR],
 *     kv_b [NH*(nope+v),KR]; attn.q.weight [NH*(nope+rope),H] when q_lora_rank is null;
 *     q_a.bias / kv_a.bias / o.bias when attention_bias)
 *   layers.l.moe.router.weight [E,H] (+ moe.router.bias [E], moe.router.correction_bias [E])
 *   layers.l.moe.experts.gate [E,I,H]  moe.experts.up [E,I,H]  moe.experts.down [E,H,I]
 *   layers.l.moe.experts.{gate_bias,up_bias} [E,I]  moe.experts.down_bias [E,H]   (GPT-OSS)
 *   layers.l.moe.shared.{gate,up} [IS,H]  moe.shared.down [H,IS]  moe.shared_gate.weight [1,H]
 *   layers.l.mlp.{gate,up} [F,H]  layers.l.mlp.down [H,F]      (dense FFN layers and dense models)
 */
import type { RawTensor } from '../io/dtype.js';

/**
 * How a router turns logits [T,E] into K experts and weights per token. A small enum, not flags:
 *   softmax-topk : p = softmax(logits) over E, take top-K of p (Mixtral, OLMoE, Qwen-MoE, DeepSeek-V2)
 *   topk-softmax : take top-K logits, weights = softmax over those K (GPT-OSS)
 *   sigmoid-topk : s = sigmoid(logits); select by s + correction_bias (group-limited), weights = s (DeepSeek-V3)
 *   sparsemixer  : Phi-MoE's sparsemixer top-2 (at inference: masked softmax per pick)
 * Group-limited selection (nGroup > 1) scores each group by its max probability for softmax-topk
 * (DeepSeek-V2 group_limited_greedy) and by the sum of its top-2 biased scores for sigmoid-topk
 * (DeepSeek-V3 noaux_tc); groupScore states it explicitly.
 */
export type RoutingKind = 'softmax-topk' | 'topk-softmax' | 'sigmoid-topk' | 'sparsemixer';

export interface RoutingConfig {
  kind: RoutingKind;
  topK: number;
  /** Renormalise the K selected weights to sum to 1. */
  normTopK: boolean;
  /** Multiplies the final weights (DeepSeek routed_scaling_factor); 1 elsewhere. */
  scale: number;
  /** DeepSeek group-limited routing: experts split in nGroup groups, keep topKGroup groups. */
  nGroup: number;
  topKGroup: number;
  /** Phi-MoE sparsemixer jitter epsilon. */
  jitterEps: number;
  /** How a group is scored when nGroup > 1 (see above). Absent: 'max' for softmax-topk, 'top2-sum' otherwise. */
  groupScore?: 'max' | 'top2-sum';
}

/** Expert nonlinearity: SwiGLU, or GPT-OSS's clamped variant ((up+1) * gate*sigmoid(1.702*gate)). */
export type ExpertActivation = 'swiglu' | 'swiglu-oai';

export interface MoeConfig {
  experts: number; // E
  intermediate: number; // I
  routing: RoutingConfig;
  activation: ExpertActivation;
  expertBias: boolean; // experts carry gate/up/down biases (GPT-OSS)
  routerBias: boolean; // router has a bias (GPT-OSS)
  /** Always-on shared expert(s), fused into one FFN of width IS; gated by sigmoid(shared_gate·x) when gated. */
  shared: { intermediate: number; gated: boolean } | null;
  /** 'swiglu-oai' constants (GPT-OSS swiglu_alpha / swiglu_limit). Absent: alpha 1.702, limit 7. */
  oaiSwiglu?: { alpha: number; limit: number };
}

export interface RopeConfig {
  theta: number;
  /** Rotated dims per head (partial rotary); equals D (or qk_rope_head_dim for MLA) when full. */
  dim: number;
  /** 'half' = rotate_half on [x1,x2] halves (HF default); 'interleaved' = pairs (x0,x1),(x2,x3)... */
  style: 'half' | 'interleaved';
  scaling:
    | { type: 'default' }
    | { type: 'linear'; factor: number }
    | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
    | { type: 'yarn'; factor: number; originalMaxPositions: number; betaFast: number; betaSlow: number; mscale: number; mscaleAllDim: number; truncate: boolean;
        /** mscale / mscaleAllDim are 0 when config.json omits them: transformers' attention factor uses
         *  get_mscale(f, mscale) / get_mscale(f, mscale_all_dim) only when both are set, else 0.1 ln(f) + 1.
         *  attentionFactor: rope_parameters.attention_factor when stated (overrides that rule); else absent. */
        attentionFactor?: number }
    /** Phi-3/Phi-MoE longrope: per-frequency factors (length dim/2), short below originalMaxPositions, long above;
     *  cos/sin multiplied by shortMscale / longMscale accordingly (PhimoeRotaryEmbedding). */
    | { type: 'longrope'; shortFactor: number[]; longFactor: number[]; originalMaxPositions: number; shortMscale: number; longMscale: number };
}

export interface MlaConfig {
  /** Epsilon of q_a_norm / kv_a_norm. transformers builds them with the RMSNorm default 1e-6, not rms_norm_eps. */
  normEps?: number;
  qLoraRank: number | null;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
}

export interface AttentionConfig {
  heads: number; // NH
  kvHeads: number; // NKV
  headDim: number; // D
  qkvBias: boolean;
  oBias: boolean;
  /** 'head': RMSNorm over D per head (Qwen3); 'full': RMSNorm over the whole projection (OLMoE). */
  qkNorm: 'none' | 'head' | 'full';
  sinks: boolean;
  /** Softmax scale; usually 1/sqrt(D). */
  scale: number;
  /** OLMoE clip_qkv: q, k, v clamped to [-c, c] after projection (and q/k norm). Absent or null: no clamp. */
  clipQkv?: number | null;
  mla: MlaConfig | null;
}

export interface LayerSpec {
  ffn: 'moe' | 'dense';
  /** Sliding-window size for this layer's attention, null for full causal attention. */
  slidingWindow: number | null;
}

export interface ModelConfig {
  /** config.json model_type, e.g. 'mixtral'. */
  modelType: string;
  /** The architecture file that maps it, e.g. 'mixtral'. */
  family: string;
  vocabSize: number; // V
  hidden: number; // H
  numLayers: number; // L
  norm: 'rms' | 'layer';
  normEps: number;
  attention: AttentionConfig;
  rope: RopeConfig;
  layers: LayerSpec[];
  moe: MoeConfig | null;
  /** F: width of the dense FFN layers (dense models, DeepSeek's first layers); 0 when none. */
  denseIntermediate: number;
  tieEmbeddings: boolean;
  maxPositions: number;
  bosTokenId: number | null;
  eosTokenId: number | null;
  /** Every eos_token_id when config.json gives a list (eosTokenId is the first). */
  eosTokenIds?: number[];
  /** lm_head carries a bias (Phi-MoE lm_head_bias): canonical 'lm_head_bias' [V]. */
  lmHeadBias?: boolean;
  /**
   * How the checkpoint stores routed experts, so canonical -> hub reproduces it:
   *   'per-expert' : mlp.experts.{e}.{gate,up,down}_proj.weight (or Mixtral w1/w3/w2), one 2-D tensor each
   *   'fused'      : transformers-v5 mlp.experts.gate_up_proj [E,2I,H] (gate rows first) + down_proj [E,H,I]
   *   'gpt-oss'    : GPT-OSS gate_up_proj [E,H,2I] (gate/up interleaved on the last dim) + down_proj [E,I,H] + biases
   * parseConfig cannot see tensors, so it sets the family default; registry.detectExpertLayout(cfg, has)
   * (or parseModelConfig(json, file, has)) sets it from the hub names. canonicalEntries detects it from has()
   * itself; hubEntries follows this field. Absent: the family default.
   */
  expertLayout?: ExpertLayout;
}

export type ExpertLayout = 'per-expert' | 'fused' | 'gpt-oss';

/** How one canonical tensor is built from hub tensors. */
export interface CanonicalEntry {
  name: string;
  /** Layer index, or null for embeddings / final norm / lm_head. Lets callers stream layer by layer. */
  layer: number | null;
  /** The hub tensor names it reads. */
  hub: string[];
  /** Shape the loaded tensor will have (for allocation and checks). */
  shape?: number[];
  load(read: (hubName: string) => RawTensor): RawTensor;
}

/** How one hub tensor is rebuilt from canonical tensors (the inverse mapping). */
export interface HubEntry {
  name: string;
  layer: number | null;
  canonical: string[];
  /** Shape the built hub tensor will have. */
  shape?: number[];
  build(get: (canonicalName: string) => RawTensor): RawTensor;
}

export interface Architecture {
  family: string;
  modelTypes: readonly string[];
  /** Parse config.json (file is its path, for errors). Missing optional fields take the family's defaults. */
  parseConfig(json: Record<string, unknown>, file: string): ModelConfig;
  /** Every canonical tensor; has(hubName) tells which optional hub tensors the checkpoint holds. */
  canonicalEntries(cfg: ModelConfig, has: (hubName: string) => boolean): CanonicalEntry[];
  /** Every hub tensor, rebuilt from canonical ones; has(canonicalName) tells which exist. */
  hubEntries(cfg: ModelConfig, has: (canonicalName: string) => boolean): HubEntry[];
}

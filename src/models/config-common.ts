/**
 * The config.json fields every family shares (sizes, heads, norm eps, token ids, RoPE, sliding
 * windows), parsed once here with each family passing its transformers defaults. Family files add
 * their own MoE and attention fields on top.
 */
import { MoepressError } from '../io/errors.js';
import type { AttentionConfig, LayerSpec, ModelConfig, MoeConfig, RopeConfig, RoutingConfig, RoutingKind } from './canonical.js';
import type { ConfigReader } from './config-reader.js';

/** A family's transformers defaults for the shared fields (configuration_*.py). */
export interface BaseDefaults {
  ropeTheta: number;
  normEps: number;
  maxPositions: number;
  /** Default num_key_value_heads; null = num_attention_heads (the "for backward compatibility" rule). */
  kvHeads: number | null;
  bos: number | null;
  eos: number | null;
  /** Default head_dim; null = hidden_size / num_attention_heads. */
  headDim?: number | null;
}

export interface BaseFields {
  vocabSize: number;
  hidden: number;
  numLayers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  normEps: number;
  tieEmbeddings: boolean;
  maxPositions: number;
  bosTokenId: number | null;
  eosTokenId: number | null;
  eosTokenIds: number[];
}

/**
 * Sizes that define tensor shapes are required (a default would only turn a bad config into a shape
 * error later); behaviour fields take the family default.
 */
export function readBase(r: ConfigReader, d: BaseDefaults): BaseFields {
  const hidden = r.int('hidden_size');
  const heads = r.int('num_attention_heads');
  // transformers: a missing field takes the class default, an explicit null means "= num_attention_heads".
  const kvHeads = r.json.num_key_value_heads === null ? heads : r.int('num_key_value_heads', d.kvHeads ?? heads);
  if (heads % kvHeads !== 0) {
    const dflt = r.json.num_key_value_heads === undefined ? `; when missing, transformers uses this model type's default ${kvHeads}` : '';
    r.fail('num_key_value_heads', `a divisor of num_attention_heads (${heads})${dflt}`);
  }
  // Likewise head_dim: missing takes the class default (GPT-OSS 64), null or no default means hidden/heads.
  const defHead = r.json.head_dim === null ? null : (d.headDim ?? null);
  let headDim: number;
  if (r.has('head_dim')) headDim = r.int('head_dim');
  else if (defHead !== null) headDim = defHead;
  else {
    if (hidden % heads !== 0) r.fail('head_dim', `set when hidden_size (${hidden}) is not a multiple of num_attention_heads (${heads})`);
    headDim = hidden / heads;
  }
  const eos = r.tokenIds('eos_token_id', d.eos);
  const bos = r.tokenIds('bos_token_id', d.bos);
  return {
    vocabSize: r.int('vocab_size'),
    hidden,
    numLayers: r.int('num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    normEps: r.num('rms_norm_eps', d.normEps),
    tieEmbeddings: r.bool('tie_word_embeddings', false),
    maxPositions: r.int('max_position_embeddings', d.maxPositions),
    bosTokenId: bos.length ? bos[0] : null,
    eosTokenId: eos.length ? eos[0] : null,
    eosTokenIds: eos,
  };
}

/** Every family here uses SwiGLU with SiLU; anything else would silently compute the wrong function. */
export function requireSilu(r: ConfigReader): void {
  const act = r.str('hidden_act', 'silu');
  if (act !== 'silu' && act !== 'swish') r.fail('hidden_act', "'silu' (the only expert/MLP activation moepress implements)");
}

export interface RopeOptions {
  defaultTheta: number;
  /** Head dim the rotary dims are a fraction of (qk_rope_head_dim for MLA). */
  headDim: number;
  style: RopeConfig['style'];
  maxPositions: number;
  /** Scaling used when config.json gives none (GPT-OSS defaults to yarn). */
  defaultScaling?: Record<string, unknown>;
}

/**
 * RoPE from transformers-v5 `rope_parameters` (rope_theta and scaling in one dict), or the v4 form
 * (top-level rope_theta plus an optional `rope_scaling` dict whose kind is `rope_type` or `type`).
 */
export function readRope(r: ConfigReader, o: RopeOptions): RopeConfig {
  const params = r.nested('rope_parameters');
  const legacy = r.nested('rope_scaling');
  const src = params ?? legacy ?? null;
  if (src && !src.has('rope_type') && !src.has('type') && !src.has('rope_theta')) {
    const key = params ? 'rope_parameters' : 'rope_scaling';
    r.fail(key, 'one RoPE dict with rope_type (per-layer-type RoPE dicts are not supported)');
  }
  let theta = o.defaultTheta;
  if (params?.has('rope_theta')) theta = params.num('rope_theta');
  else if (r.has('rope_theta')) theta = r.num('rope_theta');
  else if (legacy?.has('rope_theta')) theta = legacy.num('rope_theta');
  if (!(theta > 0)) r.fail('rope_theta', 'a positive number');

  const partial = src?.has('partial_rotary_factor') ? src.num('partial_rotary_factor') : r.num('partial_rotary_factor', 1);
  const dim = Math.floor(o.headDim * partial);
  if (dim <= 0 || dim % 2 !== 0 || dim > o.headDim) r.fail('partial_rotary_factor', `a factor giving an even rotary dim <= ${o.headDim}`);

  const s = src && (src.has('rope_type') || src.has('type')) ? src : null;
  const dflt = !s && o.defaultScaling ? o.defaultScaling : null;
  const type = s ? (s.has('rope_type') ? s.str('rope_type') : s.str('type')) : ((dflt?.rope_type as string | undefined) ?? 'default');
  const get = (k: string): unknown => (s ? s.json[k] : dflt?.[k]);
  const num = (k: string, def?: number): number => {
    const v = get(k);
    if (v === undefined || v === null) {
      if (def === undefined) return (s ?? r).fail(k, `a number (required by rope type '${type}')`);
      return def;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) return (s ?? r).fail(k, 'a number');
    return v;
  };
  const base = { theta, dim, style: o.style };
  switch (type) {
    case 'default':
      return { ...base, scaling: { type: 'default' } };
    case 'linear':
      return { ...base, scaling: { type: 'linear', factor: num('factor') } };
    case 'llama3':
      return {
        ...base,
        scaling: {
          type: 'llama3',
          factor: num('factor'),
          lowFreqFactor: num('low_freq_factor'),
          highFreqFactor: num('high_freq_factor'),
          originalMaxPositions: num('original_max_position_embeddings'),
        },
      };
    case 'yarn': {
      const orig = num('original_max_position_embeddings', o.maxPositions);
      // transformers: a missing factor is max_position_embeddings / original_max_position_embeddings.
      const factor = num('factor', o.maxPositions / orig);
      const attentionFactor = get('attention_factor');
      return {
        ...base,
        scaling: {
          type: 'yarn',
          factor,
          originalMaxPositions: orig,
          // transformers uses `beta_fast or 32`, so 0 also means the default.
          betaFast: num('beta_fast', 32) || 32,
          betaSlow: num('beta_slow', 1) || 1,
          // 0 = absent: the attention factor rule applies mscale/mscale_all_dim only when both are set.
          mscale: num('mscale', 0),
          mscaleAllDim: num('mscale_all_dim', 0),
          truncate: get('truncate') === undefined || get('truncate') === null ? true : get('truncate') === true,
          ...(typeof attentionFactor === 'number' ? { attentionFactor } : {}),
        },
      };
    }
    case 'longrope':
      return { ...base, scaling: readLongrope(r, s!, dim, o.maxPositions) };
    default:
      return (s ?? r).fail(s?.has('rope_type') ? 'rope_type' : 'type', "a RoPE type moepress implements: 'default', 'linear', 'llama3', 'yarn', 'longrope'");
  }
}

/** Phi-3 / Phi-MoE longrope: factor lists of length dim/2 and the short/long cos-sin multipliers. */
function readLongrope(r: ConfigReader, s: ConfigReader, dim: number, maxPositions: number): RopeConfig['scaling'] {
  const list = (k: string): number[] => {
    const v = s.json[k];
    if (!Array.isArray(v) || v.length !== dim / 2 || !v.every((x) => typeof x === 'number' && x > 0)) {
      s.fail(k, `a list of ${dim / 2} positive numbers`);
    }
    return v as number[];
  };
  const orig = s.has('original_max_position_embeddings')
    ? s.int('original_max_position_embeddings')
    : r.int('original_max_position_embeddings', maxPositions);
  // Without explicit mscales, transformers' longrope attention factor sqrt(1 + ln(f)/ln(orig)).
  const f = maxPositions / orig;
  const derived = f <= 1 ? 1 : Math.sqrt(1 + Math.log(f) / Math.log(orig));
  const af = s.has('attention_factor') ? s.num('attention_factor') : derived;
  return {
    type: 'longrope',
    shortFactor: list('short_factor'),
    longFactor: list('long_factor'),
    originalMaxPositions: orig,
    shortMscale: s.has('short_mscale') ? s.num('short_mscale') : af,
    longMscale: s.has('long_mscale') ? s.num('long_mscale') : af,
  };
}

/**
 * Per-layer sliding windows from transformers' `layer_types` ('full_attention' | 'sliding_attention'),
 * validated against num_hidden_layers.
 */
export function windowsFromLayerTypes(r: ConfigReader, types: string[], numLayers: number, window: number | null): (number | null)[] {
  if (types.length !== numLayers) r.fail('layer_types', `a list of ${numLayers} entries (num_hidden_layers)`);
  return types.map((t) => {
    if (t === 'full_attention') return null;
    if (t === 'sliding_attention') {
      if (window === null) r.fail('sliding_window', "a window size, since layer_types has 'sliding_attention' layers");
      return window;
    }
    return r.fail('layer_types', "entries 'full_attention' or 'sliding_attention'");
  });
}

/**
 * Qwen-MoE's rule for which layers are sparse (Qwen2MoeDecoderLayer): not in mlp_only_layers, experts
 * exist, and (l + 1) % decoder_sparse_step == 0; the rest are dense MLPs of intermediate_size.
 */
export function qwenFfnKinds(r: ConfigReader, numLayers: number, experts: number): LayerSpec['ffn'][] {
  const step = r.int('decoder_sparse_step', 1);
  const mlpOnly = new Set(r.intList('mlp_only_layers', []));
  for (const l of mlpOnly) if (l >= numLayers) r.fail('mlp_only_layers', `layer indices < num_hidden_layers (${numLayers})`);
  return Array.from({ length: numLayers }, (_, l) => (!mlpOnly.has(l) && experts > 0 && (l + 1) % step === 0 ? 'moe' : 'dense'));
}

/** Fills the ModelConfig fields that come straight from BaseFields. */
export function baseConfig(
  modelType: string,
  family: string,
  b: BaseFields,
): Pick<ModelConfig, 'modelType' | 'family' | 'vocabSize' | 'hidden' | 'numLayers' | 'normEps' | 'tieEmbeddings' | 'maxPositions' | 'bosTokenId' | 'eosTokenId' | 'eosTokenIds'> {
  return {
    modelType,
    family,
    vocabSize: b.vocabSize,
    hidden: b.hidden,
    numLayers: b.numLayers,
    normEps: b.normEps,
    tieEmbeddings: b.tieEmbeddings,
    maxPositions: b.maxPositions,
    bosTokenId: b.bosTokenId,
    eosTokenId: b.eosTokenId,
    eosTokenIds: b.eosTokenIds,
  };
}

/** Routed experts E (read under eKey) and top-K (num_experts_per_tok), with K checked against E. */
export function readExpertCounts(r: ConfigReader, eKey: string, defaultE: number, defaultK: number): { E: number; K: number } {
  const E = r.int(eKey, defaultE);
  const K = r.int('num_experts_per_tok', defaultK);
  checkTopK(r, 'num_experts_per_tok', K, E);
  return { E, K };
}

/** The MoE block of a family with plain SwiGLU experts and no expert or router biases. */
export function swigluMoe(experts: number, intermediate: number, route: RoutingConfig, shared: MoeConfig['shared'] = null): MoeConfig {
  return { experts, intermediate, routing: route, activation: 'swiglu', expertBias: false, routerBias: false, shared };
}

/** topK must be between 1 and E. */
export function checkTopK(r: ConfigReader, key: string, topK: number, experts: number): void {
  if (topK > experts) r.fail(key, `at most the number of experts (${experts})`);
}

/** The model_type a family was asked to parse must be one it maps. */
export function checkModelType(r: ConfigReader, types: readonly string[]): string {
  const mt = r.str('model_type');
  if (!types.includes(mt)) {
    throw new MoepressError(`model_type '${mt}' is not handled by this architecture (expected ${types.join(', ')})`, { file: r.file });
  }
  return mt;
}

/** Standard multi-head / grouped-query attention from the base fields; scale 1/sqrt(D). */
export function standardAttention(
  b: BaseFields,
  o: { qkvBias: boolean; oBias: boolean; qkNorm?: AttentionConfig['qkNorm']; sinks?: boolean; clipQkv?: number | null },
): AttentionConfig {
  return {
    heads: b.heads,
    kvHeads: b.kvHeads,
    headDim: b.headDim,
    qkvBias: o.qkvBias,
    oBias: o.oBias,
    qkNorm: o.qkNorm ?? 'none',
    sinks: o.sinks ?? false,
    scale: 1 / Math.sqrt(b.headDim),
    mla: null,
    ...(o.clipQkv !== undefined ? { clipQkv: o.clipQkv } : {}),
  };
}

/** A RoutingConfig with the neutral values for the knobs a family does not use. */
export function routing(kind: RoutingKind, topK: number, normTopK: boolean, extra: Partial<RoutingConfig> = {}): RoutingConfig {
  return { kind, topK, normTopK, scale: 1, nGroup: 1, topKGroup: 1, jitterEps: 0, ...extra };
}

/** Every layer the same FFN kind and window. */
export function uniformLayers(numLayers: number, ffn: LayerSpec['ffn'], window: number | null): LayerSpec[] {
  return Array.from({ length: numLayers }, () => ({ ffn, slidingWindow: window }));
}

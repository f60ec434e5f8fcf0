/**
 * The config.json of the MoE a dense model is upcycled into: a Mixtral (model_type 'mixtral')
 * with E experts of the dense FFN's width, top-K routing, and every other field of the dense
 * model carried over. The mapping is checked by parsing the result back and comparing the
 * canonical configs, so a dense model Mixtral cannot express (attention biases, per-layer
 * windows) is refused instead of silently changed.
 */
import { join } from 'node:path';
import { MoepressError } from '../io/errors.js';
import type { ModelConfig } from '../models/canonical.js';
import { parseModelConfig } from '../models/registry.js';
import { unsupported } from './model.js';

/** Dense families upcycle starts from (models/dense.ts). */
export const DENSE_TYPES = ['llama', 'mistral', 'qwen2'];

/** Why this dense model cannot be upcycled into a Mixtral, or null when it can. */
export function notUpcyclable(cfg: ModelConfig): string | null {
  if (cfg.moe || cfg.layers.some((l) => l.ffn === 'moe')) {
    return `model_type '${cfg.modelType}' already has routed experts; upcycle starts from a dense model (${DENSE_TYPES.join(', ')})`;
  }
  if (!DENSE_TYPES.includes(cfg.modelType)) return `model_type '${cfg.modelType}' is not a dense model upcycle reads (${DENSE_TYPES.join(', ')})`;
  const why = unsupported(cfg);
  if (why) return why;
  const a = cfg.attention;
  if (a.qkvBias || a.oBias) return `${cfg.modelType} has attention biases, which a Mixtral checkpoint cannot hold`;
  if (a.qkNorm !== 'none') return 'q/k norms are not part of a Mixtral checkpoint';
  if (cfg.lmHeadBias) return 'an lm_head bias is not part of a Mixtral checkpoint';
  const w = cfg.layers[0].slidingWindow;
  if (cfg.layers.some((l) => l.slidingWindow !== w)) return 'layers with different sliding windows cannot be expressed by Mixtral (one sliding_window for all layers)';
  if (cfg.denseIntermediate <= 0) return 'the dense model has no FFN width (intermediate_size)';
  return null;
}

const ROPE_FIELDS = ['rope_parameters', 'rope_scaling', 'rope_theta', 'partial_rotary_factor'];

/**
 * raw: the dense config.json, cfg: it parsed; moe: experts E, top-K and the load-balancing
 * coefficient the run trains with. Returns the Mixtral config.json and its parsed
 * canonical config. Throws MoepressError naming the dense config file when the dense model
 * cannot be expressed.
 */
export function mixtralConfigFor(raw: Record<string, unknown>, cfg: ModelConfig, moe: { experts: number; topK: number; auxCoef: number }, dir: string): { json: Record<string, unknown>; config: ModelConfig } {
  const file = join(dir, 'config.json');
  const why = notUpcyclable(cfg);
  if (why) throw new MoepressError(`cannot upcycle: ${why}`, { file });
  const a = cfg.attention;
  const json: Record<string, unknown> = {
    architectures: ['MixtralForCausalLM'],
    model_type: 'mixtral',
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hidden,
    intermediate_size: cfg.denseIntermediate,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: a.heads,
    num_key_value_heads: a.kvHeads,
    head_dim: a.headDim,
    hidden_act: 'silu',
    max_position_embeddings: cfg.maxPositions,
    rms_norm_eps: cfg.normEps,
    sliding_window: cfg.layers[0].slidingWindow,
    tie_word_embeddings: cfg.tieEmbeddings,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenIds && cfg.eosTokenIds.length > 1 ? cfg.eosTokenIds : cfg.eosTokenId,
    num_local_experts: moe.experts,
    num_experts_per_tok: moe.topK,
    // transformers adds the load-balancing loss only with output_router_logits; the value is what
    // the upcycling run used, for anyone who continues training with it.
    output_router_logits: false,
    router_aux_loss_coef: moe.auxCoef,
    router_jitter_noise: 0.0,
    attention_dropout: 0.0,
    use_cache: true,
  };
  if (raw.pad_token_id !== undefined) json.pad_token_id = raw.pad_token_id;
  let hasTheta = raw.rope_theta !== undefined;
  for (const f of ROPE_FIELDS) if (raw[f] !== undefined && raw[f] !== null) json[f] = raw[f];
  for (const f of ['rope_parameters', 'rope_scaling']) {
    const d = raw[f];
    if (d && typeof d === 'object' && (d as Record<string, unknown>).rope_theta !== undefined) hasTheta = true;
  }
  // Mixtral's default theta (1e6) differs from the dense families' (1e4): always state it.
  if (!hasTheta) json.rope_theta = cfg.rope.theta;
  const config = parseModelConfig(json, join(dir, 'config.json (as Mixtral)'));
  check(cfg, config, file);
  return { json, config };
}

/** The Mixtral must compute what the dense model computes outside the FFN. */
function check(dense: ModelConfig, moe: ModelConfig, file: string): void {
  const same = (what: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      throw new MoepressError(`cannot upcycle: as a Mixtral config the ${what} would be ${JSON.stringify(b)} instead of ${JSON.stringify(a)}`, { file });
    }
  };
  same('vocabulary', dense.vocabSize, moe.vocabSize);
  same('hidden size', dense.hidden, moe.hidden);
  same('layer count', dense.numLayers, moe.numLayers);
  same('norm', [dense.norm, dense.normEps], [moe.norm, moe.normEps]);
  same('attention', dense.attention, moe.attention);
  same('RoPE', dense.rope, moe.rope);
  same('sliding windows', dense.layers.map((l) => l.slidingWindow), moe.layers.map((l) => l.slidingWindow));
  same('tied embeddings', dense.tieEmbeddings, moe.tieEmbeddings);
  same('max positions', dense.maxPositions, moe.maxPositions);
  same('expert width', dense.denseIntermediate, moe.moe!.intermediate);
}

/** The decoder stack: embeddings, layers (attention + dense FFN or MoE), final norm, LM head. */
import type { ModelConfig } from '../models/canonical.js';
import { linear } from '../tensor/gemm.js';
import { layerNorm, rmsNorm } from '../tensor/norm.js';
import { ropeTables, type RopeTables } from '../tensor/rope.js';
import { attentionBlock, attentionDims } from './attention-block.js';
import { DenseExpertBank, expertActivation, ffnForward, SWIGLU, type ExpertBank } from './experts.js';
import { KVCache } from './kv-cache.js';
import { denseFfnWeights, moeBlock, type RouteObserver } from './moe-block.js';
import type { Weights } from './weights.js';

export interface RunOptions {
  /** Override experts per token (K). */
  topK?: number;
  observe?: RouteObserver;
}

/** Dense banks over the canonical stacked expert tensors of every MoE layer (null for dense layers). */
export function denseBanks(cfg: ModelConfig, w: Weights, include: (layer: number) => boolean = () => true): (ExpertBank | null)[] {
  return cfg.layers.map((spec, l) => {
    if (spec.ffn !== 'moe' || !cfg.moe || !include(l)) return null;
    const p = `layers.${l}.moe.experts`;
    return new DenseExpertBank(cfg.moe.experts, cfg.moe.intermediate, cfg.hidden, {
      gate: w.get(`${p}.gate`).data,
      up: w.get(`${p}.up`).data,
      down: w.get(`${p}.down`).data,
      gateBias: w.opt(`${p}.gate_bias`),
      upBias: w.opt(`${p}.up_bias`),
      downBias: w.opt(`${p}.down_bias`),
    }, expertActivation(cfg.moe));
  });
}

/** Layer norm or RMS norm `name` (config's kind) of x: [T, H] -> [T, H]. */
export function normRows(cfg: ModelConfig, w: Weights, name: string, x: Float32Array, T: number): Float32Array {
  const g = w.get(`${name}.weight`).data;
  if (cfg.norm === 'layer') return layerNorm(x, g, w.opt(`${name}.bias`), T, cfg.hidden, cfg.normEps);
  return rmsNorm(x, g, T, cfg.hidden, cfg.normEps);
}

/** tokens: [T] -> their embedding rows [T, H]; embed: [V, H]. */
export function embedTokens(cfg: ModelConfig, embed: Float32Array, tokens: ArrayLike<number>): Float32Array {
  const H = cfg.hidden;
  const x = new Float32Array(tokens.length * H);
  for (let t = 0; t < tokens.length; t++) {
    const id = tokens[t];
    if (!(id >= 0 && id < cfg.vocabSize)) throw new Error(`forward: token id ${id} outside the vocabulary [0, ${cfg.vocabSize})`);
    x.set(embed.subarray(id * H, (id + 1) * H), t * H);
  }
  return x;
}

/** x: [B*S, H] += attention of layer l on its normed x (the residual update, in place). */
export async function attentionResidual(cfg: ModelConfig, w: Weights, l: number, x: Float32Array, B: number, S: number, rope: RopeTables, cache: KVCache | null): Promise<void> {
  const a = await attentionBlock(cfg, w, l, normRows(cfg, w, `layers.${l}.attn_norm`, x, B * S), B, S, rope, cache);
  for (let i = 0; i < x.length; i++) x[i] += a[i];
}

/** x: [T, H] += the FFN half of layer l on its normed x: routed experts through `bank`, or the dense FFN when null. */
export async function ffnResidual(cfg: ModelConfig, w: Weights, l: number, x: Float32Array, T: number, bank: ExpertBank | null, opts: RunOptions = {}): Promise<void> {
  const h = normRows(cfg, w, `layers.${l}.ffn_norm`, x, T);
  const f = bank
    ? await moeBlock(cfg, w, l, h, T, bank, opts.topK, opts.observe)
    : await ffnForward(denseFfnWeights(w, `layers.${l}.mlp`, cfg.hidden), h, T, SWIGLU);
  for (let i = 0; i < x.length; i++) x[i] += f[i];
}

/** hidden: [T, H] (after the final norm) -> logits [T, V] through lm_head (or the tied embedding). */
export function headLogits(cfg: ModelConfig, w: Weights, hidden: Float32Array, T: number): Promise<Float32Array> {
  const head = w.has('lm_head') ? w.get('lm_head').data : w.get('embed').data;
  return linear(hidden, head, T, cfg.vocabSize, cfg.hidden, w.opt('lm_head_bias') ?? undefined);
}

export class Transformer {
  readonly rope: RopeTables;
  constructor(
    readonly config: ModelConfig,
    readonly weights: Weights,
    readonly banks: (ExpertBank | null)[] = denseBanks(config, weights),
  ) {
    this.rope = ropeTables(config.rope, config.maxPositions);
  }

  newCache(capacity: number): KVCache {
    const d = attentionDims(this.config);
    return new KVCache(this.config.numLayers, capacity, d.kvHeads * d.dk, d.kvHeads * d.dv);
  }

  /** Bytes of routed-expert weights resident in memory. */
  expertBytes(): number {
    return this.banks.reduce((s, b) => s + (b?.residentBytes ?? 0), 0);
  }

  private norm(name: string, x: Float32Array, T: number): Float32Array {
    return normRows(this.config, this.weights, name, x, T);
  }

  /** tokens: [B*S] -> final hidden states [B*S, H] (after the final norm). */
  async hidden(tokens: ArrayLike<number>, B: number, S: number, cache: KVCache | null = null, opts: RunOptions = {}): Promise<Float32Array> {
    const cfg = this.config;
    const T = B * S;
    if (tokens.length !== T) throw new Error(`forward: ${tokens.length} tokens given for ${B} x ${S}`);
    const x = embedTokens(cfg, this.weights.get('embed').data, tokens);
    for (let l = 0; l < cfg.numLayers; l++) {
      await attentionResidual(cfg, this.weights, l, x, B, S, this.rope, cache);
      await ffnResidual(cfg, this.weights, l, x, T, this.banks[l], opts);
    }
    if (cache) cache.length += S;
    return this.norm('norm', x, T);
  }

  /** hidden: [T, H] -> logits [T, V]. */
  async logitsFromHidden(hidden: Float32Array, T: number): Promise<Float32Array> {
    return headLogits(this.config, this.weights, hidden, T);
  }

  /** tokens: [B*S] -> logits [B*S, V]. */
  async logits(tokens: ArrayLike<number>, B: number, S: number, cache: KVCache | null = null, opts: RunOptions = {}): Promise<Float32Array> {
    return this.logitsFromHidden(await this.hidden(tokens, B, S, cache, opts), B * S);
  }
}

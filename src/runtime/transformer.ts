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
    const cfg = this.config;
    const w = this.weights.get(`${name}.weight`).data;
    if (cfg.norm === 'layer') return layerNorm(x, w, this.weights.opt(`${name}.bias`), T, cfg.hidden, cfg.normEps);
    return rmsNorm(x, w, T, cfg.hidden, cfg.normEps);
  }

  /** tokens: [B*S] -> final hidden states [B*S, H] (after the final norm). */
  async hidden(tokens: ArrayLike<number>, B: number, S: number, cache: KVCache | null = null, opts: RunOptions = {}): Promise<Float32Array> {
    const cfg = this.config;
    const H = cfg.hidden;
    const T = B * S;
    if (tokens.length !== T) throw new Error(`forward: ${tokens.length} tokens given for ${B} x ${S}`);
    const embed = this.weights.get('embed').data;
    const x = new Float32Array(T * H);
    for (let t = 0; t < T; t++) {
      const id = tokens[t];
      if (!(id >= 0 && id < cfg.vocabSize)) throw new Error(`forward: token id ${id} outside the vocabulary [0, ${cfg.vocabSize})`);
      x.set(embed.subarray(id * H, (id + 1) * H), t * H);
    }
    for (let l = 0; l < cfg.numLayers; l++) {
      const a = await attentionBlock(cfg, this.weights, l, this.norm(`layers.${l}.attn_norm`, x, T), B, S, this.rope, cache);
      for (let i = 0; i < x.length; i++) x[i] += a[i];
      const h = this.norm(`layers.${l}.ffn_norm`, x, T);
      const bank = this.banks[l];
      const f = bank
        ? await moeBlock(cfg, this.weights, l, h, T, bank, opts.topK, opts.observe)
        : await ffnForward(denseFfnWeights(this.weights, `layers.${l}.mlp`, H), h, T, SWIGLU);
      for (let i = 0; i < x.length; i++) x[i] += f[i];
    }
    if (cache) cache.length += S;
    return this.norm('norm', x, T);
  }

  /** hidden: [T, H] -> logits [T, V]. */
  async logitsFromHidden(hidden: Float32Array, T: number): Promise<Float32Array> {
    const cfg = this.config;
    const head = this.weights.has('lm_head') ? this.weights.get('lm_head').data : this.weights.get('embed').data;
    return linear(hidden, head, T, cfg.vocabSize, cfg.hidden, this.weights.opt('lm_head_bias') ?? undefined);
  }

  /** tokens: [B*S] -> logits [B*S, V]. */
  async logits(tokens: ArrayLike<number>, B: number, S: number, cache: KVCache | null = null, opts: RunOptions = {}): Promise<Float32Array> {
    return this.logitsFromHidden(await this.hidden(tokens, B, S, cache, opts), B * S);
  }
}

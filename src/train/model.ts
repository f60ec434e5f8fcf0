/**
 * A trainable decoder over canonical weights, mirroring runtime/transformer.ts op for op:
 * embed -> L × (x += attn(rmsNorm x); x += ffn-or-moe(rmsNorm x)) -> rmsNorm -> lm_head.
 * Covers dense llama/mistral/qwen2 and softmax-then-top-k MoEs (Mixtral, OLMoE): RoPE (any
 * scaling), GQA, sliding windows, q/k/v/o biases, QK-norm ('head' or 'full'), clip_qkv, tied
 * embeddings, lm_head bias. Everything else is refused by `unsupported` with the reason.
 *
 * Parameters are Vars under their canonical names (float32 copies of the loaded weights, or
 * float64 for gradient checks). Routed experts are ExpertFns per layer (`experts[l]`), plain
 * SwiGLU over the stacked canonical tensors by default; a method replaces them to train another
 * parameterisation (METHODS.md Families 1 and 3).
 */
import type { ModelConfig } from '../models/canonical.js';
import { ropeTables, type RopeTables } from '../tensor/rope.js';
import { Weights } from '../runtime/weights.js';
import { add, clamp, embedding, reshape, rmsNorm, scale } from './ops/elementwise.js';
import { rope } from './ops/rope.js';
import { causalAttention } from './ops/attention.js';
import { linear } from './ops/linear.js';
import { moeLayer, stackedExperts, swigluFfn, type ExpertFn, type Router } from './ops/moe.js';
import { loadBalancingLoss, type Routing, type TopKOptions } from './ops/routing.js';
import { crossEntropy } from './ops/softmax.js';
import { allocBuf, Var, type DType, type Tape } from './tape.js';

/** Why the trainer cannot run this model, or null when it can. */
export function unsupported(cfg: ModelConfig): string | null {
  const a = cfg.attention;
  if (cfg.norm !== 'rms') return 'LayerNorm models (Phi-MoE) are not supported by the trainer';
  if (a.mla) return 'multi-head latent attention (DeepSeek) is not supported by the trainer';
  if (a.sinks) return 'attention sinks (GPT-OSS) are not supported by the trainer';
  if (cfg.layers.some((l) => l.ffn === 'moe')) {
    const m = cfg.moe!;
    if (m.routing.kind !== 'softmax-topk' || m.routing.nGroup > 1) return `routing '${m.routing.kind}'${m.routing.nGroup > 1 ? ' (group-limited)' : ''} is not supported by the trainer (softmax-topk only)`;
    if (m.activation !== 'swiglu' || m.expertBias) return 'GPT-OSS experts (clamped SwiGLU, biases) are not supported by the trainer';
    if (m.shared) return 'shared experts (Qwen-MoE, DeepSeek) are not supported by the trainer yet';
  }
  return null;
}

/** h: [T, H] of MoE layer l -> its output [T, H] and the routing (for the load-balancing loss). */
export type MoeLayerFn = (tape: Tape, l: number, h: Var, router: Router, opts: TopKOptions) => Promise<{ out: Var; routing: Routing }>;

export interface TrainableModelOptions {
  /** Parameter precision: 'f32' to train, 'f64' for gradient checks. Default 'f32'. */
  dtype?: DType;
  /** Which canonical tensors train (others are kept fixed). Default: all. */
  trainable?: (name: string) => boolean;
}

export interface ForwardResult {
  logits: Var; // [B·S, V]
  /** transformers' load-balancing loss over all MoE layers (unscaled); null for dense models. */
  aux: Var | null;
  routings: Routing[];
}

export interface LossResult {
  /** ce + auxCoef · aux: what backward runs on. */
  loss: Var;
  ce: Var;
  aux: Var | null;
}

export class TrainableModel {
  readonly params = new Map<string, Var>();
  readonly rope: RopeTables;
  /** Per layer: the routed experts (null for dense-FFN layers). Replace to change their form. */
  experts: (ExpertFn[] | null)[];
  /**
   * Runs MoE layer l (routing and experts): moeLayer over experts[l] unless replaced, e.g. by
   * compressed experts, which route differently (METHODS.md Family 3, ops/compressed-experts.ts).
   */
  moeLayer: MoeLayerFn = (tape, l, h, router, opts) => moeLayer(tape, h, router, this.experts[l]!, opts);

  constructor(readonly config: ModelConfig, weights: Weights, opts: TrainableModelOptions = {}) {
    const why = unsupported(config);
    if (why) throw new Error(`TrainableModel (${config.modelType}): ${why}`);
    const dtype = opts.dtype ?? 'f32';
    const trainable = opts.trainable ?? (() => true);
    for (const name of weights.names()) {
      const t = weights.get(name);
      const data = allocBuf(dtype, t.data.length);
      data.set(t.data); // a copy: training must not change the weights the caller loaded
      this.params.set(name, new Var(data, t.shape, trainable(name), name));
    }
    this.rope = ropeTables(config.rope, config.maxPositions);
    this.experts = config.layers.map((spec, l) => {
      if (spec.ffn !== 'moe') return null;
      const p = `layers.${l}.moe.experts`;
      return stackedExperts(this.p(`${p}.gate`), this.p(`${p}.up`), this.p(`${p}.down`));
    });
  }

  /** The parameter of a canonical name (throws when absent). */
  p(name: string): Var {
    const v = this.params.get(name);
    if (!v) throw new Error(`TrainableModel: canonical tensor '${name}' is not loaded`);
    return v;
  }

  private opt(name: string): Var | undefined {
    return this.params.get(name);
  }

  /** Parameters that train, in a stable order (for the optimizer). */
  parameters(): Var[] {
    return [...this.params.values()].filter((v) => v.requiresGrad);
  }

  /** x: [T, H] normed by the named RMSNorm (weight [N]; rows of N). */
  private norm(tape: Tape, name: string, x: Var): Var {
    return rmsNorm(tape, x, this.p(`${name}.weight`), this.config.normEps);
  }

  /** h: [B·S, H] -> [B·S, H], runtime/attention-block.ts without a cache. */
  private async attention(tape: Tape, l: number, h: Var, B: number, S: number, positions: Int32Array): Promise<Var> {
    const cfg = this.config;
    const a = cfg.attention;
    const p = `layers.${l}.attn`;
    const T = B * S;
    const D = a.headDim;
    const proj = (name: string, x: Var) => linear(tape, x, this.p(`${p}.${name}.weight`), this.opt(`${p}.${name}.bias`));
    let q = await proj('q', h); // [T, NH·D]
    let k = await proj('k', h); // [T, NKV·D]
    let v = await proj('v', h);
    const qn = this.opt(`${p}.q_norm.weight`);
    const kn = this.opt(`${p}.k_norm.weight`);
    // 'full' normalises rows of NH·D, 'head' rows of D: the norm weight's length decides the rows
    if (a.qkNorm !== 'none' && qn && kn) {
      q = rmsNorm(tape, q, qn, cfg.normEps);
      k = rmsNorm(tape, k, kn, cfg.normEps);
    }
    if (a.clipQkv != null) [q, k, v] = [clamp(tape, q, a.clipQkv), clamp(tape, k, a.clipQkv), clamp(tape, v, a.clipQkv)];
    const qr = rope(tape, reshape(tape, q, [T, a.heads, D]), positions, this.rope);
    const kr = rope(tape, reshape(tape, k, [T, a.kvHeads, D]), positions, this.rope);
    const att = await causalAttention(tape, qr, kr, reshape(tape, v, [T, a.kvHeads, D]), { B, S, scale: a.scale, window: cfg.layers[l].slidingWindow });
    return proj('o', reshape(tape, att, [T, a.heads * D]));
  }

  /** tokens: [B·S] -> logits [B·S, V], the aux loss and each MoE layer's routing. */
  async forward(tape: Tape, tokens: ArrayLike<number>, B: number, S: number, opts: { topK?: number } = {}): Promise<ForwardResult> {
    const cfg = this.config;
    const T = B * S;
    if (tokens.length !== T) throw new Error(`forward: ${tokens.length} tokens given for ${B} x ${S}`);
    if (S > cfg.maxPositions) throw new Error(`forward: sequence length ${S} exceeds max_position_embeddings ${cfg.maxPositions}`);
    const positions = new Int32Array(T);
    for (let t = 0; t < T; t++) positions[t] = t % S;
    let x = embedding(tape, tokens, this.p('embed'));
    const routings: Routing[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      x = add(tape, x, await this.attention(tape, l, this.norm(tape, `layers.${l}.attn_norm`, x), B, S, positions));
      const h = this.norm(tape, `layers.${l}.ffn_norm`, x);
      const experts = this.experts[l];
      let f: Var;
      if (experts) {
        const moe = cfg.moe!;
        const r = `layers.${l}.moe.router`;
        const res = await this.moeLayer(tape, l, h, { weight: this.p(`${r}.weight`), bias: this.opt(`${r}.bias`) }, {
          topK: opts.topK ?? moe.routing.topK,
          normTopK: moe.routing.normTopK,
          scale: moe.routing.scale,
        });
        routings.push(res.routing);
        f = res.out;
      } else {
        const m = `layers.${l}.mlp`;
        f = await swigluFfn(tape, h, { gate: this.p(`${m}.gate`), up: this.p(`${m}.up`), down: this.p(`${m}.down`) });
      }
      x = add(tape, x, f);
    }
    x = this.norm(tape, 'norm', x);
    const head = this.opt('lm_head') ?? this.p('embed');
    const logits = await linear(tape, x, head, this.opt('lm_head_bias'));
    const aux = routings.length ? loadBalancingLoss(tape, routings, cfg.moe!.experts) : null;
    return { logits, aux, routings };
  }

  /**
   * Next-token loss of one batch: mean cross-entropy over targets [B·S] (mask: [B·S], nonzero =
   * scored) plus auxCoef · aux. auxCoef defaults to 0, as transformers adds the router loss only
   * with output_router_logits (router_aux_loss_coef: Mixtral 0.001, OLMoE 0.01).
   */
  async loss(tape: Tape, batch: { inputs: ArrayLike<number>; targets: ArrayLike<number>; B: number; S: number; mask?: ArrayLike<number> }, opts: { auxCoef?: number; topK?: number } = {}): Promise<LossResult> {
    const { logits, aux } = await this.forward(tape, batch.inputs, batch.B, batch.S, { topK: opts.topK });
    const ce = await crossEntropy(tape, logits, batch.targets, batch.mask);
    const coef = opts.auxCoef ?? 0;
    const loss = aux && coef !== 0 ? add(tape, ce, scale(tape, aux, coef)) : ce;
    return { loss, ce, aux };
  }

  /** The current parameters as canonical float32 weights (for runtime/transformer.ts or saving). */
  toWeights(): Weights {
    const w = new Weights(new Map());
    for (const [name, v] of this.params) w.set(name, { shape: [...v.shape], data: Float32Array.from(v.data) });
    return w;
  }
}

/**
 * A TrainableModel routed through compressed experts (METHODS.md Family 3): per MoE layer the
 * vectors c0, c2 [E·H], c1 [E·I] as trainable Vars (initialised to ones), installed as the
 * model's moeLayer so forward/loss run ops/compressed-experts.ts; and the conversion back to the
 * runtime's CompressedExpertsLayer for saving or inference.
 *
 * The vectors may learn faster than the model tensors: the loop has one learning rate, so a
 * vector is trained in the coordinates v = 1 + (c − 1)/s and used as c = 1 + s·(v − 1). Adam's
 * steps are invariant to the gradient's scale, so a step of about lr in v is a step of about
 * s·lr in c: the vectors train at s times the model's rate (s = vectorLr / lr).
 */
import type { ModelConfig } from '../models/canonical.js';
import type { CompressedExpertsLayer } from '../runtime/compressed-experts.js';
import type { Weights } from '../runtime/weights.js';
import { add, scale } from './ops/elementwise.js';
import { compressedMoeLayer, type CompressedExpertVars } from './ops/compressed-experts.js';
import { TrainableModel } from './model.js';
import { allocBuf, constant, Var, type DType, type Tape } from './tape.js';

/** What trains besides nothing: the vectors only, the vectors and the routers, or everything. */
export type TrainMode = 'ce' | 'ce+router' | 'all';
export const TRAIN_MODES: readonly TrainMode[] = ['ce', 'ce+router', 'all'];

/** Whether a canonical model tensor trains under `mode` (the vectors always do). */
export function trainsModelTensor(mode: TrainMode, name: string): boolean {
  if (mode === 'all') return true;
  if (mode === 'ce+router') return /\.moe\.router\.(weight|bias)$/.test(name);
  return false;
}

export interface CompressedExpertsModel {
  model: TrainableModel;
  /** Per layer: the trained coordinates v of the vectors (null for dense-FFN layers). */
  vectors: (CompressedExpertVars | null)[];
  /** s: the vectors are c = 1 + s·(v − 1). */
  vectorScale: number;
  /** The vectors c as float32 runtime layers (copies), for writing or for the inference engine. */
  layers(): (CompressedExpertsLayer | null)[];
  /** Everything that trains, in a stable order: the vectors layer by layer, then model tensors. */
  params: Var[];
}

export interface CompressedExpertsModelOptions {
  m: number;
  train: TrainMode;
  dtype?: DType;
  /** Start from these vectors instead of ones (tests, or continuing from saved vectors). */
  init?: (CompressedExpertsLayer | null)[];
  /** s > 0: the vectors train at s times the learning rate of the model tensors. Default 1. */
  vectorScale?: number;
}

/** Trained coordinates v = 1 + (c − 1)/s of a vector c (ones when no c is given). */
function vector(dtype: DType, n: number, c: Float32Array | undefined, s: number, name: string): Var {
  const data = allocBuf(dtype, n);
  if (c) for (let i = 0; i < n; i++) data[i] = 1 + (c[i] - 1) / s;
  else data.fill(1);
  return new Var(data, [n], true, name);
}

/** v -> c = 1 + s·(v − 1) = s·v + (1 − s), on the tape. */
function unscale(tape: Tape, v: Var, s: number): Var {
  if (s === 1) return v;
  const shift = tape.alloc(v.size).fill(1 - s);
  return add(tape, scale(tape, v, s), constant(shift, v.shape));
}

/** A trainable model whose MoE layers run m compressed experts per token. */
export function compressedExpertsModel(config: ModelConfig, weights: Weights, o: CompressedExpertsModelOptions): CompressedExpertsModel {
  const moe = config.moe;
  if (!moe) throw new Error(`compressedExpertsModel: model_type '${config.modelType}' has no routed experts`);
  const K = moe.routing.topK;
  if (!(Number.isInteger(o.m) && o.m >= 1 && o.m < K)) throw new Error(`compressedExpertsModel: m = ${o.m} must be an integer with 1 <= m < K = ${K}`);
  const dtype = o.dtype ?? 'f32';
  const s = o.vectorScale ?? 1;
  if (!(s > 0 && Number.isFinite(s))) throw new Error(`compressedExpertsModel: vectorScale must be positive, got ${s}`);
  const model = new TrainableModel(config, weights, { dtype, trainable: (n) => trainsModelTensor(o.train, n) });
  const { experts: E, intermediate: I } = moe;
  const H = config.hidden;
  const vectors = config.layers.map((spec, l) => {
    if (spec.ffn !== 'moe') return null;
    const init = o.init?.[l] ?? undefined;
    return {
      c0: vector(dtype, E * H, init?.c0, s, `layers.${l}.ce.c0`),
      c1: vector(dtype, E * I, init?.c1, s, `layers.${l}.ce.c1`),
      c2: vector(dtype, E * H, init?.c2, s, `layers.${l}.ce.c2`),
    };
  });
  model.moeLayer = (tape, l, h, router, opts) => {
    const p = `layers.${l}.moe.experts`;
    const stacked = { gate: model.p(`${p}.gate`), up: model.p(`${p}.up`), down: model.p(`${p}.down`) };
    const v = vectors[l]!;
    const c = { c0: unscale(tape, v.c0, s), c1: unscale(tape, v.c1, s), c2: unscale(tape, v.c2, s) };
    return compressedMoeLayer(tape, h, router, stacked, c, o.m, opts);
  };
  const params = [...vectors.flatMap((v) => (v ? [v.c0, v.c1, v.c2] : [])), ...model.parameters()];
  return { model, vectors, vectorScale: s, params, layers: () => vectorsToLayers(vectors, o.m, s) };
}

/** Vectors c = 1 + s·(v − 1) from their trained coordinates v, as float32 runtime layers (copies). */
export function vectorsToLayers(vectors: (CompressedExpertVars | null)[], m: number, s = 1): (CompressedExpertsLayer | null)[] {
  const c = (v: Var) => Float32Array.from(v.data, (x) => 1 + s * (x - 1));
  return vectors.map((v) => (v ? { m, c0: c(v.c0), c1: c(v.c1), c2: c(v.c2) } : null));
}

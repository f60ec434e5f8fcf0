/**
 * The DeRS-upcycled MoE as a trainable model (METHODS.md Family 1, "DeRS upcycling"): every
 * dense FFN becomes E experts W_e = W_shared + F(Δ_e) and a new router.
 *
 *   W_shared  : [out, in] per matrix, initialised to the dense FFN, trained (one per layer)
 *   lowrank   : F(Δ_e) = A_e B_e, A_e [out, r] ~ N(0, 1/r), B_e [r, in] = 0          (`LM`)
 *   sparse    : F(Δ_e) = values at round(d·out·in) fixed seeded positions, values = 0 (`SM`)
 *   router    : [E, H] ~ N(0, 0.02²)
 * F starts at exactly zero, so every expert equals the dense FFN; with the K routing weights
 * renormalised to sum to 1 (Mixtral), the MoE computes the dense model's function at step 0.
 *
 * Why A ~ N(0, 1/r): each entry of A·B is a sum of r products, so with that variance an Adam
 * step of size lr on B moves the entries of W_e by about lr, as a full fine-tune of W_e would.
 *
 * The model is a TrainableModel over the Mixtral config whose stacked experts tensor holds the
 * shared base alone ([1, out, in]); `experts[l]` is replaced by the E delta experts.
 */
import { MATRICES, matrixShape, type MatrixName } from '../compress/parts.js';
import type { ModelConfig } from '../models/canonical.js';
import { Weights } from '../runtime/weights.js';
import { Rng } from '../tensor/random.js';
import { TrainableModel } from './model.js';
import { add, reshape, rows } from './ops/elementwise.js';
import { matmul } from './ops/linear.js';
import { expertSlice, swigluExpertFrom, type ExpertFn } from './ops/moe.js';
import { addAtPositions } from './ops/sparse.js';
import { allocBuf, Var, type DType, type Tape } from './tape.js';

export type DeltaForm = { kind: 'lowrank'; rank: number } | { kind: 'sparse'; density: number };

/** One matrix kind's trainable deltas for all E experts of a layer. */
export type MatrixDelta =
  | { kind: 'lowrank'; rank: number; left: Var /* [E, out, r] */; right: Var /* [E, r, in] */ }
  | { kind: 'sparse'; count: number; values: Var /* [E, nnz] */; positions: Int32Array[] /* E × [nnz], ascending flat positions */ };

export interface UpcycledLayer {
  /** W_shared per matrix: [1, out, in] (the TrainableModel's stacked-experts tensor). */
  base: Record<MatrixName, Var>;
  delta: Record<MatrixName, MatrixDelta>;
  /** Sparse form: the seed of this layer's position sampler. */
  positionsSeed: number | null;
}

export interface UpcycleSpec {
  experts: number; // E
  topK: number; // K
  delta: DeltaForm;
  seed: number;
}

export const ROUTER_INIT_STD = 0.02;

/** Seed of layer l's position sampler: the run's seed mixed with the layer (murmur3 finaliser). */
export function positionsSeed(seed: number, layer: number): number {
  let h = (seed ^ Math.imul(layer + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * Exactly `count` of the positions 0..n−1, uniformly at random without replacement, ascending
 * (Knuth's selection sampling, Algorithm S: O(n) time, O(count) memory).
 */
export function samplePositions(rng: Rng, n: number, count: number): Int32Array {
  if (!(count >= 0 && count <= n)) throw new Error(`samplePositions: ${count} of ${n}`);
  const out = new Int32Array(count);
  let k = 0;
  for (let i = 0; i < n && k < count; i++) {
    // select i with probability (still needed) / (still available); at the end this reaches 1
    if ((n - i) * rng.next() < count - k) out[k++] = i;
  }
  return out;
}

/** Entries per sparse delta matrix: round(d · out · in). */
export function sparseCount(density: number, I: number, H: number): number {
  return Math.round(density * I * H);
}

/**
 * Parameters the upcycled MoE adds to the dense model, by the formula: per layer
 * 3·E·r·(I+H) (lowrank) or 3·E·round(d·I·H) (sparse) for the deltas, plus E·H for the router.
 * `full` is what plain upcycling (E copies of the FFN) would add: 3·(E−1)·I·H + E·H per layer.
 */
export function addedParamsFormula(dense: ModelConfig, spec: UpcycleSpec): { value: number; text: string; full: number } {
  const L = dense.numLayers;
  const I = dense.denseIntermediate;
  const H = dense.hidden;
  const E = spec.experts;
  const router = E * H;
  const full = L * (3 * (E - 1) * I * H + router);
  if (spec.delta.kind === 'lowrank') {
    const r = spec.delta.rank;
    const value = L * (3 * E * r * (I + H) + router);
    return { value, full, text: `L·(3·E·r·(I+H) + E·H) = ${L}·(3·${E}·${r}·(${I}+${H}) + ${E}·${H}) = ${value}` };
  }
  const nnz = sparseCount(spec.delta.density, I, H);
  const value = L * (3 * E * nnz + router);
  return { value, full, text: `L·(3·E·round(d·I·H) + E·H) = ${L}·(3·${E}·round(${spec.delta.density}·${I}·${H}) + ${E}·${H}) = ${L}·(3·${E}·${nnz} + ${E}·${H}) = ${value}` };
}

export class UpcycledModel {
  readonly model: TrainableModel;
  readonly layers: UpcycledLayer[] = [];
  /** Parameters of the dense model it started from. */
  readonly denseParams: number;

  /**
   * dense: the dense model's config and canonical weights; config: the Mixtral config
   * (upcycle-config.ts) it becomes. Every random draw comes from spec.seed.
   */
  constructor(readonly dense: ModelConfig, readonly config: ModelConfig, denseWeights: Weights, readonly spec: UpcycleSpec, dtype: DType = 'f32') {
    const { experts: E } = spec;
    const H = config.hidden;
    const I = config.moe!.intermediate;
    const rng = new Rng(spec.seed);
    const w = new Weights(new Map());
    let denseParams = 0;
    for (const name of denseWeights.names()) {
      const t = denseWeights.get(name);
      denseParams += t.data.length;
      const mlp = /^layers\.(\d+)\.mlp\.(gate|up|down)$/.exec(name);
      if (mlp) w.set(`layers.${mlp[1]}.moe.experts.${mlp[2]}`, { shape: [1, ...t.shape], data: t.data });
      else w.set(name, t);
    }
    this.denseParams = denseParams;
    for (let l = 0; l < config.numLayers; l++) w.set(`layers.${l}.moe.router.weight`, { shape: [E, H], data: rng.normals(E * H, ROUTER_INIT_STD) });
    this.model = new TrainableModel(config, w, { dtype });

    for (let l = 0; l < config.numLayers; l++) {
      const base = {} as Record<MatrixName, Var>;
      const delta = {} as Record<MatrixName, MatrixDelta>;
      const pSeed = spec.delta.kind === 'sparse' ? positionsSeed(spec.seed, l) : null;
      const posRng = pSeed === null ? null : new Rng(pSeed);
      for (const m of MATRICES) {
        base[m] = this.model.p(`layers.${l}.moe.experts.${m}`);
        const [out, inp] = matrixShape(m, I, H);
        const p = `layers.${l}.moe.delta.${m}`;
        if (spec.delta.kind === 'lowrank') {
          const r = spec.delta.rank;
          const left = this.param(`${p}.left`, [E, out, r], dtype);
          left.data.set(rng.normals(left.size, 1 / Math.sqrt(r)));
          const right = this.param(`${p}.right`, [E, r, inp], dtype); // zeros: F(Δ_e) = 0 at step 0
          delta[m] = { kind: 'lowrank', rank: r, left, right };
        } else {
          const count = sparseCount(spec.delta.density, I, H);
          const values = this.param(`${p}.values`, [E, count], dtype); // zeros
          const positions = Array.from({ length: E }, () => samplePositions(posRng!, out * inp, count));
          delta[m] = { kind: 'sparse', count, values, positions };
        }
      }
      this.layers.push({ base, delta, positionsSeed: pSeed });
      this.model.experts[l] = Array.from({ length: E }, (_, e) => this.expert(l, e));
    }
  }

  /** A new trainable tensor of zeros, registered with the model (so parameters() includes it). */
  private param(name: string, shape: number[], dtype: DType): Var {
    const v = new Var(allocBuf(dtype, shape.reduce((a, b) => a * b, 1)), shape, true, name);
    this.model.params.set(name, v);
    return v;
  }

  /** Expert e of layer l: SwiGLU over W_shared + F(Δ_e), built on the tape at each call. */
  private expert(l: number, e: number): ExpertFn {
    return swigluExpertFrom(async (tape) => ({
      gate: await this.expertMatrix(tape, l, 'gate', e),
      up: await this.expertMatrix(tape, l, 'up', e),
      down: await this.expertMatrix(tape, l, 'down', e),
    }));
  }

  /** -> [out, in] = W_shared + F(Δ_e) of one matrix; gradients reach the base and the delta. */
  async expertMatrix(tape: Tape, l: number, m: MatrixName, e: number): Promise<Var> {
    const { base, delta } = this.layers[l];
    const w = expertSlice(tape, base[m], 0);
    const d = delta[m];
    if (d.kind === 'lowrank') return add(tape, w, await matmul(tape, expertSlice(tape, d.left, e), expertSlice(tape, d.right, e)));
    return addAtPositions(tape, w, reshape(tape, rows(tape, d.values, e, 1), [d.count]), d.positions[e]);
  }

  /** Parameters added over the dense model, counted from the tensors that exist. */
  addedParams(): number {
    let n = 0;
    for (const v of this.model.params.values()) n += v.size;
    return n - this.denseParams;
  }
}

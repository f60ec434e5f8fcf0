/**
 * The feed-forward half of a layer: a dense SwiGLU FFN, or routed experts (+ shared expert).
 *
 * The MoE block runs in phases so that two loop orders share the same arithmetic:
 *   planMoe (router, top-k)  ->  per expert: expertTokens, bank.run, addExpertOutput  ->  addShared
 * moeBlock runs them token-batch-outer (the in-memory engine); stream-forward.ts runs them
 * expert-outer over every batch of a layer so each expert is read from disk once. Per token the
 * contributions are added in the same order (experts 0..E−1, then the shared expert), so both
 * orders give the same bits.
 */
import type { ModelConfig } from '../models/canonical.js';
import { linear } from '../tensor/gemm.js';
import { route, type Routes } from '../tensor/router.js';
import { scalingFor, splitRoutes, type CompressedExpertsLayer, type CompressedRouting } from './compressed-experts.js';
import { ffnForward, SWIGLU, type ExpertBank, type ExpertScaling, type FfnWeights } from './experts.js';
import type { Weights } from './weights.js';

export function denseFfnWeights(w: Weights, prefix: string, H: number): FfnWeights {
  const gate = w.get(`${prefix}.gate`);
  return { gate: gate.data, up: w.get(`${prefix}.up`).data, down: w.get(`${prefix}.down`).data, F: gate.shape[0], H };
}

/**
 * Per-token routing statistics, for analysis (how often each expert is chosen); `h` is the block's
 * input [T, H] (after ffn_norm), the experts' input, for calibration (compress/calib/collect.ts).
 * Observers must not keep `h` beyond the call without copying it.
 */
export type RouteObserver = (layer: number, routes: Routes, T: number, h: Float32Array) => void;

/** One batch's routing: which experts run on which tokens with which gate (T tokens). */
export interface MoePlan {
  T: number;
  /** The (token, slot) pairs that run a full expert: the top-K, or with compressed experts the K − m best. */
  run: Routes;
  split: CompressedRouting | null;
}

/** h: [T, H] -> the routing of its tokens (router GEMM, top-k; compressed experts split off). */
export async function planMoe(cfg: ModelConfig, w: Weights, l: number, h: Float32Array, T: number, ce: CompressedExpertsLayer | undefined, topK: number | undefined, observe?: RouteObserver): Promise<MoePlan> {
  const moe = cfg.moe!;
  const H = cfg.hidden;
  const E = moe.experts;
  const p = `layers.${l}.moe`;
  const logits = await linear(h, w.get(`${p}.router.weight`).data, T, E, H, w.opt(`${p}.router.bias`) ?? undefined);
  const routes = route(logits, T, E, moe.routing, topK ?? moe.routing.topK, w.opt(`${p}.router.correction_bias`));
  observe?.(l, routes, T, h);
  const split = ce ? splitRoutes(routes, T, ce, H, moe.intermediate) : null;
  return { T, run: split ? split.full : routes, split };
}

/** The tokens sent to expert e (ascending), their gates and, with compressed experts, their scaling; null when none. */
export function expertTokens(cfg: ModelConfig, plan: MoePlan, e: number): { tokens: Int32Array; gates: Float32Array; scaling?: ExpertScaling } | null {
  const { run, T } = plan;
  const K = run.K;
  let n = 0;
  for (let i = 0; i < T * K; i++) if (run.experts[i] === e) n++;
  if (n === 0) return null;
  const tokens = new Int32Array(n);
  const gates = new Float32Array(n);
  let j = 0;
  for (let i = 0; i < T * K; i++) {
    if (run.experts[i] !== e) continue;
    tokens[j] = Math.floor(i / K);
    gates[j++] = run.weights[i];
  }
  const scaling = plan.split ? scalingFor(plan.split, tokens, cfg.hidden, cfg.moe!.intermediate) : undefined;
  return { tokens, gates, scaling };
}

/** h: [T, H] -> rows of the given tokens [n, H]. */
export function gatherRows(h: Float32Array, tokens: Int32Array, H: number): Float32Array {
  const x = new Float32Array(tokens.length * H);
  for (let r = 0; r < tokens.length; r++) x.set(h.subarray(tokens[r] * H, (tokens[r] + 1) * H), r * H);
  return x;
}

/** out[token] += gate · y[row] for the rows of one expert call; y: [n, H], out: [T, H]. */
export function addExpertOutput(out: Float32Array, y: Float32Array, tokens: Int32Array, gates: Float32Array, H: number): void {
  for (let r = 0; r < tokens.length; r++) {
    const o = tokens[r] * H;
    const g = gates[r];
    for (let i = 0; i < H; i++) out[o + i] += g * y[r * H + i];
  }
}

/** out [T, H] += the shared expert of layer l on h [T, H] (optionally sigmoid-gated); no-op without one. */
export async function addShared(cfg: ModelConfig, w: Weights, l: number, h: Float32Array, T: number, out: Float32Array): Promise<void> {
  const moe = cfg.moe!;
  if (!moe.shared) return;
  const H = cfg.hidden;
  const p = `layers.${l}.moe`;
  const s = await ffnForward(denseFfnWeights(w, `${p}.shared`, H), h, T, SWIGLU);
  const sg = moe.shared.gated ? await linear(h, w.get(`${p}.shared_gate.weight`).data, T, 1, H) : null;
  for (let t = 0; t < T; t++) {
    const g = sg ? 1 / (1 + Math.exp(-sg[t])) : 1;
    for (let i = 0; i < H; i++) out[t * H + i] += g * s[t * H + i];
  }
}

/**
 * h: [T, H] -> [T, H]. Tokens are grouped by expert so each expert runs one GEMM over its tokens.
 * A bank with compressed experts (METHODS.md Family 3, compressed-experts.ts) runs only the K − m
 * best of each token's top-K, scaled by the vectors of the other m; `observe` sees the top-K.
 */
export async function moeBlock(cfg: ModelConfig, w: Weights, l: number, h: Float32Array, T: number, bank: ExpertBank, topK: number | undefined, observe?: RouteObserver): Promise<Float32Array> {
  const H = cfg.hidden;
  const plan = await planMoe(cfg, w, l, h, T, bank.compressedExperts, topK, observe);
  const out = new Float32Array(T * H);
  for (let e = 0; e < cfg.moe!.experts; e++) {
    const sel = expertTokens(cfg, plan, e);
    if (!sel) continue;
    const y = await bank.run(e, gatherRows(h, sel.tokens, H), sel.tokens.length, sel.scaling);
    addExpertOutput(out, y, sel.tokens, sel.gates, H);
  }
  await addShared(cfg, w, l, h, T, out);
  return out;
}

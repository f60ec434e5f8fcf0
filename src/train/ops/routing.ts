/**
 * Differentiable routing for softmax-then-top-k (Mixtral, OLMoE; tensor/router.ts 'softmax-topk'):
 * p = softmax(logits); the K experts are chosen (not differentiable); their weights are the
 * chosen p, optionally renormalised to sum to 1, times a scale. Gradients flow from the weights
 * through p into the router logits, and from the load-balancing loss through p as well.
 */
import { accumulate, gradOf, Var, type Tape } from '../tape.js';
import { scale } from './elementwise.js';
import { softmax } from './softmax.js';

export interface Routing {
  K: number;
  /** Chosen experts, [T, K], best first. */
  experts: Int32Array;
  /** Their weights, [T, K]. */
  weights: Var;
  /** Router probabilities over all experts, [T, E] (the load-balancing loss reads them). */
  probs: Var;
}

export interface TopKOptions {
  topK: number;
  /** Renormalise the K chosen weights to sum to 1 (Mixtral: yes; OLMoE: norm_topk_prob). */
  normTopK: boolean;
  /** Multiplies the final weights; 1 for Mixtral and OLMoE. */
  scale?: number;
}

/**
 * logits: [T, E] -> the K best experts per row, ties to the lower index (as router.ts).
 * Ranked by the logits, which softmax orders identically, so the choice is exactly the
 * inference engine's for the same logits (no float32 rounding of p can reorder it).
 */
export function topKIndices(logits: ArrayLike<number>, T: number, E: number, K: number): Int32Array {
  if (K < 1 || K > E) throw new Error(`topKIndices: top-k ${K} must be between 1 and ${E}`);
  const out = new Int32Array(T * K);
  const idx = Array.from({ length: E }, (_, i) => i);
  for (let t = 0; t < T; t++) {
    const o = t * E;
    idx.sort((a, b) => logits[o + b] - logits[o + a] || a - b);
    // the comparator is a total order, so the result does not depend on the previous row's order
    for (let k = 0; k < K; k++) out[t * K + k] = idx[k];
  }
  return out;
}

/** x: [T, E], cols: [T, K] -> y: [T, K] = x[t, cols[t, k]]; the gradient scatter-adds back. */
export function gatherCols(tape: Tape, x: Var, cols: Int32Array): Var {
  tape.check('gatherCols', x);
  const E = x.shape[x.shape.length - 1];
  const T = x.size / E;
  const K = cols.length / T;
  if (!Number.isInteger(K)) throw new Error(`gatherCols: ${cols.length} indices for ${T} rows`);
  const y = tape.alloc(T * K);
  for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) y[t * K + k] = x.data[t * E + cols[t * K + k]];
  const out = new Var(y, [T, K]);
  return tape.record('gatherCols', out, [x], () => {
    const g = out.grad!;
    const dx = gradOf(x);
    for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) dx[t * E + cols[t * K + k]] += g[t * K + k];
  });
}

/** w: [T, K] -> w / Σ_k w per row. Backward: dw = (dy − Σ dy ⊙ y) / s. */
export function normalizeRows(tape: Tape, w: Var): Var {
  tape.check('normalizeRows', w);
  const K = w.shape[w.shape.length - 1];
  const T = w.size / K;
  const sums = new Float64Array(T);
  const y = tape.alloc(w.size);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += w.data[t * K + k];
    sums[t] = s;
    for (let k = 0; k < K; k++) y[t * K + k] = w.data[t * K + k] / s;
  }
  const out = new Var(y, w.shape);
  return tape.record('normalizeRows', out, [w], () => {
    const g = out.grad!;
    const dw = tape.alloc(w.size);
    for (let t = 0; t < T; t++) {
      let dot = 0;
      for (let k = 0; k < K; k++) dot += g[t * K + k] * y[t * K + k];
      for (let k = 0; k < K; k++) dw[t * K + k] = (g[t * K + k] - dot) / sums[t];
    }
    accumulate(w, dw, true);
  });
}

/** logits: [T, E] -> routing with differentiable weights [T, K] and probabilities [T, E]. */
export function softmaxTopK(tape: Tape, logits: Var, opts: TopKOptions): Routing {
  const E = logits.shape[logits.shape.length - 1];
  const T = logits.size / E;
  const K = opts.topK;
  const experts = topKIndices(logits.data, T, E, K);
  const probs = softmax(tape, logits);
  let weights = gatherCols(tape, probs, experts);
  if (opts.normTopK) weights = normalizeRows(tape, weights);
  if ((opts.scale ?? 1) !== 1) weights = scale(tape, weights, opts.scale!);
  return { K, experts, weights, probs };
}

/**
 * The auxiliary load-balancing loss exactly as transformers' load_balancing_loss_func (Mixtral,
 * OLMoE) computes it without an attention mask: over the tokens of every layer concatenated
 * (T' = Σ T_l rows),
 *   loss = E · Σ_e c_e · P_e,   c_e = (times e is among a row's top-K) / T',   P_e = mean_rows p[·, e].
 * transformers' tokens_per_expert is a [K, E] mean over rows summed over K, hence c_e / T' and not
 * the Switch fraction c_e / (T'·K): balanced routing gives K here, not 1. The counts are not
 * differentiable; the gradient reaches the router only through P_e:
 *   d loss / d p_l[t, e] = E · c_e / T'².
 */
export function loadBalancingLoss(tape: Tape, routings: Routing[], E: number): Var {
  if (routings.length === 0) throw new Error('loadBalancingLoss: no routed layers');
  const counts = new Float64Array(E);
  const probSum = new Float64Array(E);
  let rowsTotal = 0;
  for (const r of routings) {
    tape.check('loadBalancingLoss', r.probs);
    const T = r.probs.size / E;
    if (!Number.isInteger(T) || r.probs.shape[r.probs.shape.length - 1] !== E) throw new Error(`loadBalancingLoss: probabilities [${r.probs.shape}] are not rows of E=${E}`);
    for (let i = 0; i < r.experts.length; i++) counts[r.experts[i]]++;
    for (let i = 0; i < r.probs.size; i++) probSum[i % E] += r.probs.data[i];
    rowsTotal += T;
  }
  let loss = 0;
  for (let e = 0; e < E; e++) loss += (counts[e] / rowsTotal) * (probSum[e] / rowsTotal);
  const y = tape.alloc(1);
  y[0] = E * loss;
  const out = new Var(y, [1]);
  const probs = routings.map((r) => r.probs);
  return tape.record('loadBalancingLoss', out, probs, () => {
    const g = out.grad![0];
    for (const p of probs) {
      if (!p.needsGrad) continue;
      const dp = tape.alloc(p.size);
      for (let i = 0; i < dp.length; i++) dp[i] = (g * E * counts[i % E]) / (rowsTotal * rowsTotal);
      accumulate(p, dp, true);
    }
  });
}

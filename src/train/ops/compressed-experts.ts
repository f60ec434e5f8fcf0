/**
 * Compressed experts (METHODS.md Family 3) as differentiable ops, the training twin of
 * runtime/compressed-experts.ts + moe-block.ts:
 *   logits -> softmaxTopK (K experts, best first) -> slots 0..K−m−1 full, K−m..K−1 auxiliary ->
 *   c = Σ_j (w_j / Σ_aux w) · ces[j] per token -> the full experts on their rows, modulated by c,
 *   summed with their router weights w_e (not renormalised over the K − m: the paper's w_e).
 *
 * Gradients reach the vectors through the modulators, the router through both the full
 * experts' weights and the auxiliary shares w_j / Σ_aux w, and the experts through their rows.
 * Which of them train is decided by which Vars require a gradient (finetune.ts: ce|ce+router|all).
 *
 * The vectors are stored flat ([E·H], [E·I]): AdamW decays matrices (rank ≥ 2) toward 0 and
 * leaves vectors alone, and these scales, neutral at 1, must not decay toward 0.
 */
import { accumulate, gradOf, Var, type Tape } from '../tape.js';
import { linear } from './linear.js';
import { dispatch, expertSlice, gatherRows, swigluFfn, type Router, type SwigluWeights } from './moe.js';
import { gatherCols, normalizeRows, softmaxTopK, type Routing, type TopKOptions } from './routing.js';

/** One MoE layer's compressed-expert vectors, flat: c0, c2 [E·H], c1 [E·I]. */
export interface CompressedExpertVars {
  c0: Var;
  c1: Var;
  c2: Var;
}

/**
 * alpha: [T, m], idx: [T·m] rows of table: [E·N] (flat, rows of N) -> y: [T, N] with
 * y[t] = Σ_j alpha[t, j] · table[idx[t·m + j]]. Backward: dalpha[t, j] = dy[t] · table[idx],
 * dtable[idx] += alpha[t, j] · dy[t] (a row chosen twice sums both).
 */
export function mixRows(tape: Tape, alpha: Var, idx: Int32Array, table: Var, N: number): Var {
  tape.check('mixRows', alpha, table);
  const m = alpha.shape[alpha.shape.length - 1];
  const T = alpha.size / m;
  const E = table.size / N;
  if (idx.length !== T * m) throw new Error(`mixRows: ${idx.length} row indices for alpha [${alpha.shape}]`);
  if (!Number.isInteger(E)) throw new Error(`mixRows: table of ${table.size} values is not rows of N=${N}`);
  for (const e of idx) if (!(e >= 0 && e < E)) throw new Error(`mixRows: row ${e} outside [0, ${E})`);
  const y = tape.alloc(T * N);
  const a = alpha.data;
  const w = table.data;
  for (let t = 0; t < T; t++) {
    // summed in float64 and rounded once, as runtime/compressed-experts.ts splitRoutes does
    for (let i = 0; i < N; i++) {
      let s = 0;
      for (let j = 0; j < m; j++) s += a[t * m + j] * w[idx[t * m + j] * N + i];
      y[t * N + i] = s;
    }
  }
  const out = new Var(y, [T, N]);
  return tape.record('mixRows', out, [alpha, table], () => {
    const g = out.grad!;
    if (alpha.needsGrad) {
      const da = tape.alloc(alpha.size);
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < m; j++) {
          const o = idx[t * m + j] * N;
          let dot = 0;
          for (let i = 0; i < N; i++) dot += g[t * N + i] * w[o + i];
          da[t * m + j] = dot;
        }
      }
      accumulate(alpha, da, true);
    }
    if (table.needsGrad) {
      const dw = gradOf(table);
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < m; j++) {
          const s = a[t * m + j];
          const o = idx[t * m + j] * N;
          for (let i = 0; i < N; i++) dw[o + i] += s * g[t * N + i];
        }
      }
    }
  });
}

/** A top-K routing split into the K − m full experts and the m auxiliary ones, with their shares. */
export interface CompressedSplit {
  /** [T, K − m]: full experts, best first, and their router weights (a differentiable slice). */
  full: Pick<Routing, 'K' | 'experts' | 'weights'>;
  /** [T·m]: the auxiliary experts of each token. */
  auxExperts: Int32Array;
  /** [T, m]: w_j / Σ_aux w. */
  auxShares: Var;
}

/** routing: [T, K], best first (softmaxTopK) -> the split for m compressed experts. */
export function splitRouting(tape: Tape, routing: Pick<Routing, 'K' | 'experts' | 'weights'>, m: number): CompressedSplit {
  const { K, experts } = routing;
  if (!(Number.isInteger(m) && m >= 1 && m < K)) throw new Error(`splitRouting: m = ${m} compressed experts need top-k above m, got top-${K}`);
  const T = experts.length / K;
  const F = K - m;
  const fullCols = new Int32Array(T * F);
  const auxCols = new Int32Array(T * m);
  const fullExperts = new Int32Array(T * F);
  const auxExperts = new Int32Array(T * m);
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < K; k++) {
      if (k < F) {
        fullCols[t * F + k] = k;
        fullExperts[t * F + k] = experts[t * K + k];
      } else {
        auxCols[t * m + k - F] = k;
        auxExperts[t * m + k - F] = experts[t * K + k];
      }
    }
  }
  const full = { K: F, experts: fullExperts, weights: gatherCols(tape, routing.weights, fullCols) };
  return { full, auxExperts, auxShares: normalizeRows(tape, gatherCols(tape, routing.weights, auxCols)) };
}

/**
 * h: [T, H] -> { out: [T, H], routing (the whole top-K, for the load-balancing loss) }.
 * experts: the layer's stacked gate, up [E, I, H] and down [E, H, I]; ce: its vectors.
 */
export async function compressedMoeLayer(tape: Tape, h: Var, router: Router, experts: SwigluWeights, ce: CompressedExpertVars, m: number, opts: TopKOptions): Promise<{ out: Var; routing: Routing }> {
  const H = h.shape[h.shape.length - 1];
  const [E, I] = experts.gate.shape;
  if (router.weight.shape[0] !== E) throw new Error(`compressedMoeLayer: router scores ${router.weight.shape[0]} experts, ${E} given`);
  if (ce.c0.size !== E * H || ce.c2.size !== E * H || ce.c1.size !== E * I) {
    throw new Error(`compressedMoeLayer: vectors c0 [${ce.c0.shape}], c1 [${ce.c1.shape}], c2 [${ce.c2.shape}] do not fit E=${E}, H=${H}, I=${I}`);
  }
  const logits = await linear(tape, h, router.weight, router.bias); // [T, E]
  const routing = softmaxTopK(tape, logits, opts);
  const split = splitRouting(tape, routing, m);
  const c0 = mixRows(tape, split.auxShares, split.auxExperts, ce.c0, H); // [T, H]
  const c1 = mixRows(tape, split.auxShares, split.auxExperts, ce.c1, I); // [T, I]
  const c2 = mixRows(tape, split.auxShares, split.auxExperts, ce.c2, H); // [T, H]
  const fns = Array.from({ length: E }, (_, e) => async (t: Tape, x: Var, tokens: Int32Array) => swigluFfn(t, x, {
    gate: expertSlice(t, experts.gate, e),
    up: expertSlice(t, experts.up, e),
    down: expertSlice(t, experts.down, e),
  }, { c0: gatherRows(t, c0, tokens), c1: gatherRows(t, c1, tokens), c2: gatherRows(t, c2, tokens) }));
  return { out: await dispatch(tape, h, split.full, fns), routing };
}

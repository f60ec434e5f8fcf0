/**
 * A routed-expert layer (runtime/moe-block.ts, softmax-then-top-k routing) as differentiable ops:
 * router logits -> softmaxTopK -> per-expert gather of tokens -> expert -> weighted scatter-add.
 *
 * Experts are functions, so the caller chooses how an expert is parameterised: a plain SwiGLU
 * FFN (`swigluExpert`, `stackedExperts`), weights built on the tape per call
 * (`swigluExpertFrom`: e.g. W_shared + A_e·B_e, or W_shared + a sparse Δ_e on fixed positions,
 * METHODS.md Family 1), or inputs/intermediates modulated per token (`swigluFfn`'s c0, c1, c2 and
 * the `tokens` argument that says which rows of the layer input an expert received: Family 3).
 */
import { accumulate, gradOf, Var, type Buf, type Tape } from '../tape.js';
import { mul, reshape, rows, swiglu } from './elementwise.js';
import { linear } from './linear.js';
import { softmaxTopK, type Routing, type TopKOptions } from './routing.js';

/**
 * One expert. x: [n, H], the rows of the layer input routed to it; tokens: [n], their row indices
 * in the layer input [T, H] -> [n, H].
 */
export type ExpertFn = (tape: Tape, x: Var, tokens: Int32Array) => Promise<Var>;

/** A SwiGLU FFN's weights: gate, up [I, H], down [H, I] (nn.Linear layout). */
export interface SwigluWeights {
  gate: Var;
  up: Var;
  down: Var;
}

/**
 * Family 3 modulators, per row of x: c0, c2 [n, H] scale the gate and up inputs, c1 [n, I] the
 * intermediate: y = down((silu(gate(x ⊙ c0)) ⊙ up(x ⊙ c2)) ⊙ c1). Absent ones are 1.
 */
export interface FfnModulators {
  c0?: Var;
  c1?: Var;
  c2?: Var;
}

/** x: [n, H] -> [n, H] = down(silu(gate x) ⊙ up x), optionally modulated. */
export async function swigluFfn(tape: Tape, x: Var, w: SwigluWeights, mod: FfnModulators = {}): Promise<Var> {
  const g = await linear(tape, mod.c0 ? mul(tape, x, mod.c0) : x, w.gate);
  const u = await linear(tape, mod.c2 ? mul(tape, x, mod.c2) : x, w.up);
  const a = await swiglu(tape, g, u);
  return linear(tape, mod.c1 ? mul(tape, a, mod.c1) : a, w.down);
}

/** A plain SwiGLU expert with its own weights. */
export function swigluExpert(w: SwigluWeights): ExpertFn {
  return (tape, x) => swigluFfn(tape, x, w);
}

/** An expert whose weights are built on the tape at each call (shared base + trainable delta). */
export function swigluExpertFrom(build: (tape: Tape) => Promise<SwigluWeights> | SwigluWeights): ExpertFn {
  return async (tape, x) => swigluFfn(tape, x, await build(tape));
}

/** x: [E, A, B] -> expert e's [A, B] as a view; its gradient lands in that slice of x.grad. */
export function expertSlice(tape: Tape, x: Var, e: number): Var {
  return reshape(tape, rows(tape, x, e, 1), x.shape.slice(1));
}

/** The E plain experts of canonical stacked tensors gate, up: [E, I, H], down: [E, H, I]. */
export function stackedExperts(gate: Var, up: Var, down: Var): ExpertFn[] {
  return Array.from({ length: gate.shape[0] }, (_, e) => swigluExpertFrom((tape) => ({
    gate: expertSlice(tape, gate, e),
    up: expertSlice(tape, up, e),
    down: expertSlice(tape, down, e),
  })));
}

/** x: [T, N], idx: [n] -> [n, N] = x[idx]; the gradient scatter-adds (repeats sum). */
export function gatherRows(tape: Tape, x: Var, idx: Int32Array): Var {
  tape.check('gatherRows', x);
  const N = x.shape[x.shape.length - 1];
  const n = idx.length;
  const y = tape.alloc(n * N);
  for (let r = 0; r < n; r++) y.set(x.data.subarray(idx[r] * N, (idx[r] + 1) * N), r * N);
  const out = new Var(y, [n, N]);
  return tape.record('gatherRows', out, [x], () => {
    const g = out.grad!;
    const dx = gradOf(x);
    for (let r = 0; r < n; r++) {
      const o = idx[r] * N;
      for (let i = 0; i < N; i++) dx[o + i] += g[r * N + i];
    }
  });
}

/** One expert's share of a layer: its output rows and, per row, the token and the [T, K] slot. */
interface ExpertPart {
  y: Var; // [n, H]
  tokens: Int32Array; // [n]
  slots: Int32Array; // [n], index into the [T, K] routing weights
}

/**
 * out[t] = Σ over parts and rows r with tokens[r] = t of weights[slots[r]] · y[r], added expert by
 * expert in order, as moe-block.ts does. Backward: dy[r] = w · dout[t], dw[slot] = dout[t] · y[r].
 */
function weightedScatter(tape: Tape, T: number, H: number, weights: Var, parts: ExpertPart[]): Var {
  const out = tape.alloc(T * H);
  const w = weights.data;
  for (const { y, tokens, slots } of parts) {
    for (let r = 0; r < tokens.length; r++) {
      const o = tokens[r] * H;
      const g = w[slots[r]];
      for (let i = 0; i < H; i++) out[o + i] += g * y.data[r * H + i];
    }
  }
  const res = new Var(out, [T, H]);
  return tape.record('weightedScatter', res, [weights, ...parts.map((p) => p.y)], () => {
    const d = res.grad!;
    const dw = weights.needsGrad ? gradOf(weights) : null;
    for (const { y, tokens, slots } of parts) {
      const dy: Buf | null = y.needsGrad ? tape.alloc(y.size) : null;
      for (let r = 0; r < tokens.length; r++) {
        const o = tokens[r] * H;
        const g = w[slots[r]];
        let dot = 0;
        for (let i = 0; i < H; i++) {
          dot += d[o + i] * y.data[r * H + i];
          if (dy) dy[r * H + i] = g * d[o + i];
        }
        if (dw) dw[slots[r]] += dot;
      }
      if (dy) accumulate(y, dy, true);
    }
  });
}

/**
 * h: [T, H], routing over E experts -> [T, H]: each expert runs once on the rows routed to it.
 * Experts no token chose are not called (and get no gradient).
 */
export async function dispatch(tape: Tape, h: Var, routing: Pick<Routing, 'K' | 'experts' | 'weights'>, experts: ExpertFn[]): Promise<Var> {
  const H = h.shape[h.shape.length - 1];
  const T = h.size / H;
  const { K, experts: chosen } = routing;
  if (chosen.length !== T * K || routing.weights.size !== T * K) throw new Error(`dispatch: routing for ${chosen.length / K} tokens, input has ${T}`);
  const E = experts.length;
  const counts = new Int32Array(E);
  for (let i = 0; i < T * K; i++) {
    if (!(chosen[i] >= 0 && chosen[i] < E)) throw new Error(`dispatch: expert ${chosen[i]} outside [0, ${E})`);
    counts[chosen[i]]++;
  }
  const parts: ExpertPart[] = [];
  for (let e = 0; e < E; e++) {
    if (counts[e] === 0) continue;
    const tokens = new Int32Array(counts[e]);
    const slots = new Int32Array(counts[e]);
    let j = 0;
    for (let i = 0; i < T * K; i++) {
      if (chosen[i] !== e) continue;
      tokens[j] = Math.floor(i / K);
      slots[j++] = i;
    }
    const y = await experts[e](tape, gatherRows(tape, h, tokens), tokens);
    if (y.size !== tokens.length * H) throw new Error(`dispatch: expert ${e} returned [${y.shape}] for ${tokens.length} rows of H=${H}`);
    parts.push({ y, tokens, slots });
  }
  return weightedScatter(tape, T, H, routing.weights, parts);
}

export interface Router {
  weight: Var; // [E, H]
  bias?: Var; // [E]
}

/** h: [T, H] -> { out: [T, H], routing } for softmax-then-top-k routing. */
export async function moeLayer(tape: Tape, h: Var, router: Router, experts: ExpertFn[], opts: TopKOptions): Promise<{ out: Var; routing: Routing }> {
  const E = router.weight.shape[0];
  if (experts.length !== E) throw new Error(`moeLayer: router scores ${E} experts, ${experts.length} given`);
  const logits = await linear(tape, h, router.weight, router.bias); // [T, E]
  const routing = softmaxTopK(tape, logits, opts);
  return { out: await dispatch(tape, h, routing, experts), routing };
}

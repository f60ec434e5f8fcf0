/** The feed-forward half of a layer: a dense SwiGLU FFN, or routed experts (+ shared expert). */
import type { ModelConfig } from '../models/canonical.js';
import { linear } from '../tensor/gemm.js';
import { route, type Routes } from '../tensor/router.js';
import { scalingFor, splitRoutes, type CompressedRouting } from './compressed-experts.js';
import { ffnForward, SWIGLU, type ExpertBank, type FfnWeights } from './experts.js';
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

/**
 * h: [T, H] -> [T, H]. Tokens are grouped by expert so each expert runs one GEMM over its tokens.
 * A bank with compressed experts (METHODS.md Family 3, compressed-experts.ts) runs only the K − m
 * best of each token's top-K, scaled by the vectors of the other m; `observe` sees the top-K.
 */
export async function moeBlock(cfg: ModelConfig, w: Weights, l: number, h: Float32Array, T: number, bank: ExpertBank, topK: number | undefined, observe?: RouteObserver): Promise<Float32Array> {
  const moe = cfg.moe!;
  const H = cfg.hidden;
  const E = moe.experts;
  const p = `layers.${l}.moe`;
  const logits = await linear(h, w.get(`${p}.router.weight`).data, T, E, H, w.opt(`${p}.router.bias`) ?? undefined);
  const routes = route(logits, T, E, moe.routing, topK ?? moe.routing.topK, w.opt(`${p}.router.correction_bias`));
  observe?.(l, routes, T, h);
  const split: CompressedRouting | null = bank.compressedExperts ? splitRoutes(routes, T, bank.compressedExperts, H, moe.intermediate) : null;
  const run = split ? split.full : routes;
  const K = run.K;
  // Bucket (token, slot) pairs by expert.
  const counts = new Int32Array(E);
  for (let i = 0; i < T * K; i++) counts[run.experts[i]]++;
  const out = new Float32Array(T * H);
  for (let e = 0; e < E; e++) {
    const n = counts[e];
    if (n === 0) continue;
    const tokens = new Int32Array(n);
    const gates = new Float32Array(n);
    let j = 0;
    for (let i = 0; i < T * K; i++) {
      if (run.experts[i] !== e) continue;
      tokens[j] = Math.floor(i / K);
      gates[j++] = run.weights[i];
    }
    const x = new Float32Array(n * H);
    for (let r = 0; r < n; r++) x.set(h.subarray(tokens[r] * H, (tokens[r] + 1) * H), r * H);
    const y = await bank.run(e, x, n, split ? scalingFor(split, tokens, H, moe.intermediate) : undefined);
    for (let r = 0; r < n; r++) {
      const o = tokens[r] * H;
      const g = gates[r];
      for (let i = 0; i < H; i++) out[o + i] += g * y[r * H + i];
    }
  }
  if (moe.shared) {
    const s = await ffnForward(denseFfnWeights(w, `${p}.shared`, H), h, T, SWIGLU);
    const sg = moe.shared.gated ? await linear(h, w.get(`${p}.shared_gate.weight`).data, T, 1, H) : null;
    for (let t = 0; t < T; t++) {
      const g = sg ? 1 / (1 + Math.exp(-sg[t])) : 1;
      for (let i = 0; i < H; i++) out[t * H + i] += g * s[t * H + i];
    }
  }
  return out;
}

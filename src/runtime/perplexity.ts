/**
 * Perplexity exactly as ../shared/README.md defines it: the whole text tokenized without special
 * tokens, cut into consecutive non-overlapping windows of 256 tokens (incomplete tail dropped,
 * optionally only the first N), tokens 1..255 of each window predicted from their in-window prefix.
 */
import type { ProgressFn } from '../progress.js';
import { Rng } from '../tensor/random.js';
import type { RunOptions, Transformer } from './transformer.js';

export interface PerplexityOptions extends RunOptions {
  windowSize?: number;
  /** Keep only the first N windows. */
  windows?: number;
  /** Windows per forward pass. */
  batch?: number;
  /** Also return every scored token's NLL (PerplexityResult.tokenNll). */
  tokenNll?: boolean;
  onProgress?: ProgressFn;
}

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood (nats per token). */
  nll: number;
  /** Tokens scored: windows × (window size − 1). */
  tokens: number;
  windows: number;
  windowSize: number;
  seconds: number;
  tokensPerSecond: number;
  /** With options.tokenNll: the NLL of every scored token, window by window, positions 1..S−1. */
  tokenNll?: Float64Array;
}

/** A seeded stream of n uniform token ids in [0, V): an evaluation input for models without a tokenizer (speed and memory runs). */
export function randomTokenIds(n: number, V: number, seed: number): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(V));
}

export function cutWindows(ids: ArrayLike<number>, windowSize: number, limit?: number): number {
  const n = Math.floor(ids.length / windowSize);
  return limit === undefined ? n : Math.min(n, limit);
}

/** Sum over rows of -log softmax(logits[t])[target[t]]; logits: [T, V]. Float64 accumulation; each row's term also into `each` when given. */
export function sumNll(logits: Float32Array, V: number, targets: ArrayLike<number>, rows: number[], each?: Float64Array): number {
  let total = 0;
  for (let r = 0; r < rows.length; r++) {
    const t = rows[r];
    const o = t * V;
    let m = -Infinity;
    for (let i = 0; i < V; i++) if (logits[o + i] > m) m = logits[o + i];
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(logits[o + i] - m);
    const nll = Math.log(s) + m - logits[o + targets[t]];
    if (each) each[r] = nll;
    total += nll;
  }
  return total;
}

/** The token ids of windows w0 .. w0+B−1: [B*S]. */
export function windowTokens(ids: ArrayLike<number>, w0: number, B: number, S: number): Int32Array {
  const tokens = new Int32Array(B * S);
  for (let i = 0; i < B * S; i++) tokens[i] = ids[w0 * S + i];
  return tokens;
}

/**
 * Scores B windows: logits [B*S, V] of tokens [B*S] -> summed NLL of positions 1..S−1 predicted
 * from their prefix; each token's NLL into `each` (length B·(S−1)) when given.
 */
export function scoreWindows(logits: Float32Array, V: number, tokens: Int32Array, B: number, S: number, each?: Float64Array): { nll: number; scored: number } {
  const targets = new Int32Array(B * S);
  const rows: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < S - 1; t++) {
      rows.push(b * S + t);
      targets[b * S + t] = tokens[b * S + t + 1];
    }
  }
  return { nll: sumNll(logits, V, targets, rows, each), scored: rows.length };
}

/** Window count and the per-token NLL buffer, checked alike by both engines. */
export function planWindows(ids: ArrayLike<number>, opts: PerplexityOptions): { S: number; W: number; batch: number; each: Float64Array | undefined } {
  const S = opts.windowSize ?? 256;
  const W = cutWindows(ids, S, opts.windows);
  if (W === 0) throw new Error(`perplexity: the text has ${ids.length} tokens, fewer than one window of ${S}`);
  return { S, W, batch: opts.batch ?? 4, each: opts.tokenNll ? new Float64Array(W * (S - 1)) : undefined };
}

export function perplexityResult(nllSum: number, scored: number, W: number, S: number, start: number, each?: Float64Array): PerplexityResult {
  const seconds = (performance.now() - start) / 1000;
  const nll = nllSum / scored;
  return { perplexity: Math.exp(nll), nll, tokens: scored, windows: W, windowSize: S, seconds, tokensPerSecond: (W * S) / seconds, ...(each ? { tokenNll: each } : {}) };
}

/** Perplexity with the whole model in memory (Transformer), a batch of windows at a time through every layer. */
export async function perplexity(model: Transformer, ids: ArrayLike<number>, opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const { S, W, batch, each } = planWindows(ids, opts);
  const V = model.config.vocabSize;
  const start = performance.now();
  let nllSum = 0;
  let scored = 0;
  for (let w0 = 0; w0 < W; w0 += batch) {
    const B = Math.min(batch, W - w0);
    const tokens = windowTokens(ids, w0, B, S);
    const logits = await model.logits(tokens, B, S, null, opts);
    const r = scoreWindows(logits, V, tokens, B, S, each?.subarray(w0 * (S - 1)));
    nllSum += r.nll;
    scored += r.scored;
    opts.onProgress?.({ task: 'eval', done: w0 + B, total: W, unit: 'windows' });
  }
  return perplexityResult(nllSum, scored, W, S, start, each);
}

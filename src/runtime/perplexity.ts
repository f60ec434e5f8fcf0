/**
 * Perplexity exactly as ../shared/README.md defines it: the whole text tokenized without special
 * tokens, cut into consecutive non-overlapping windows of 256 tokens (incomplete tail dropped,
 * optionally only the first N), tokens 1..255 of each window predicted from their in-window prefix.
 */
import type { ProgressFn } from '../progress.js';
import type { RunOptions, Transformer } from './transformer.js';

export interface PerplexityOptions extends RunOptions {
  windowSize?: number;
  /** Keep only the first N windows. */
  windows?: number;
  /** Windows per forward pass. */
  batch?: number;
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
}

export function cutWindows(ids: ArrayLike<number>, windowSize: number, limit?: number): number {
  const n = Math.floor(ids.length / windowSize);
  return limit === undefined ? n : Math.min(n, limit);
}

/** Sum over rows of -log softmax(logits[t])[target[t]]; logits: [T, V]. Float64 accumulation. */
export function sumNll(logits: Float32Array, V: number, targets: ArrayLike<number>, rows: number[]): number {
  let total = 0;
  for (const t of rows) {
    const o = t * V;
    let m = -Infinity;
    for (let i = 0; i < V; i++) if (logits[o + i] > m) m = logits[o + i];
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(logits[o + i] - m);
    total += Math.log(s) + m - logits[o + targets[t]];
  }
  return total;
}

export async function perplexity(model: Transformer, ids: ArrayLike<number>, opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const S = opts.windowSize ?? 256;
  const W = cutWindows(ids, S, opts.windows);
  if (W === 0) throw new Error(`perplexity: the text has ${ids.length} tokens, fewer than one window of ${S}`);
  const batch = opts.batch ?? 4;
  const V = model.config.vocabSize;
  const start = performance.now();
  let nllSum = 0;
  let scored = 0;
  for (let w0 = 0; w0 < W; w0 += batch) {
    const B = Math.min(batch, W - w0);
    const tokens = new Int32Array(B * S);
    for (let i = 0; i < B * S; i++) tokens[i] = ids[w0 * S + i];
    const logits = await model.logits(tokens, B, S, null, opts);
    const targets = new Int32Array(B * S);
    const rows: number[] = [];
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < S - 1; t++) {
        rows.push(b * S + t);
        targets[b * S + t] = tokens[b * S + t + 1];
      }
    }
    nllSum += sumNll(logits, V, targets, rows);
    scored += rows.length;
    opts.onProgress?.({ task: 'eval', done: w0 + B, total: W, unit: 'windows' });
  }
  const seconds = (performance.now() - start) / 1000;
  const nll = nllSum / scored;
  return { perplexity: Math.exp(nll), nll, tokens: scored, windows: W, windowSize: S, seconds, tokensPerSecond: (W * S) / seconds };
}

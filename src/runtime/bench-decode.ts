/**
 * Batch-1 decode speed of a model directory: greedy generation after a prompt, timing only the
 * decode steps (the prompt pass and graph building are outside the clock), best of a few repeats.
 */
import { Rng } from '../tensor/random.js';
import { FastDecoder, fastDecoderFailure, fastDecoderFor } from './fast-decoder.js';
import { generate } from './generate.js';
import { loadModel } from './load-model.js';
import { loadOffloaded } from './offload-model.js';
import { loadTokenizer } from './tokenizer.js';
import { Transformer } from './transformer.js';

export interface BenchDecodeOptions {
  /** Tokens to decode after the prompt (default 64). */
  tokens?: number;
  /** Prompt: token ids, a text (tokenized with the model's tokenizer) or a length of seeded ids (default 16). */
  prompt?: number | string | number[];
  /** Timed runs; the best is reported (default 3). */
  repeats?: number;
  /** false: the TS engine only (the pre-graph decoder), for comparison. Default: the fast path when supported. */
  fast?: boolean;
  /** Seed of the prompt ids when prompt is a length (default 0). */
  seed?: number;
}

export interface BenchDecodeResult {
  tokensPerSecond: number;
  /** Seconds of the best run's `tokens` decode steps. */
  seconds: number;
  tokens: number;
  promptTokens: number;
  /** 'graph': one ORT call per token (fast-decoder.ts); 'ts': the TS engine. */
  engine: 'graph' | 'ts';
  /** Why the graph was not used (null when it was, or when fast was false). */
  fallbackReason: string | null;
  /** Weight bytes one graph step reads (null on the TS engine). */
  bytesPerToken: number | null;
  /** Per layer, how the graph stores the routed experts (e.g. float, q4, base+q2; null: dense FFN). */
  expertFormats: (string | null)[] | null;
  /** Every timed run's tokens/s. */
  runs: number[];
}

function promptIds(dir: string, prompt: BenchDecodeOptions['prompt'], V: number, seed: number): number[] {
  if (Array.isArray(prompt)) return prompt;
  if (typeof prompt === 'string') return loadTokenizer(dir).encode(prompt);
  const rng = new Rng(seed);
  return Array.from({ length: prompt ?? 16 }, () => rng.int(V));
}

/** Decode tokens/s of the model in `dir` (see BenchDecodeOptions). */
export async function benchDecode(dir: string, opts: BenchDecodeOptions = {}): Promise<BenchDecodeResult> {
  const m = loadModel(dir);
  const engine = new Transformer(m.config, m.weights, m.banks);
  const tokens = opts.tokens ?? 64;
  const prompt = promptIds(dir, opts.prompt, m.config.vocabSize, opts.seed ?? 0);
  if (prompt.length === 0) throw new Error('benchDecode: the prompt must hold at least one token');
  if (!(Number.isInteger(tokens) && tokens >= 1)) throw new Error(`benchDecode: tokens must be a positive integer, got ${tokens}`);
  const fast = opts.fast !== false;
  const decoder = fast ? await fastDecoderFor(engine) : null;
  const runs: number[] = [];
  let best = Infinity;
  for (let r = 0; r < (opts.repeats ?? 3); r++) {
    // The first token comes from the prompt pass; the clock covers the next `tokens` steps.
    let t0 = 0;
    let n = 0;
    for await (const _ of generate(engine, prompt, { maxTokens: tokens + 1, fast })) {
      if (n++ === 0) t0 = performance.now();
    }
    const s = (performance.now() - t0) / 1000;
    runs.push(tokens / s);
    best = Math.min(best, s);
  }
  await decoder?.release();
  return {
    tokensPerSecond: tokens / best,
    seconds: best,
    tokens,
    promptTokens: prompt.length,
    engine: decoder ? 'graph' : 'ts',
    fallbackReason: fast && !decoder ? (FastDecoder.unsupported(engine) ?? fastDecoderFailure(engine)?.message ?? null) : null,
    bytesPerToken: decoder?.bytesPerToken ?? null,
    expertFormats: decoder?.expertFormats ?? null,
    runs,
  };
}

export interface OffloadedDecodeOptions {
  /** The expert cache's capacity as a share of every routed expert's bytes (default 0.25). */
  cacheFraction?: number;
  tokens?: number;
  prompt?: number | string | number[];
  repeats?: number;
  seed?: number;
}

export interface OffloadedDecodeResult {
  /** The cache's capacity, and every routed expert's bytes as cache entries. */
  cacheBytes: number;
  expertBytes: number;
  tokensPerSecond: number;
  tokens: number;
  promptTokens: number;
  /** Over the best run's decode steps: expert runs served from the cache, and stored bytes read per token. */
  hitRate: number;
  bytesReadPerToken: number;
  runs: number[];
}

/**
 * Decode tokens/s with the routed experts offloaded (offload-model.ts) to a cache of
 * cacheFraction of the expert bytes, on the TS engine. Each run starts from an empty cache (a
 * fresh model): the prompt pass warms it, and the clock and the cache statistics cover the decode steps.
 */
export async function benchOffloadedDecode(dir: string, opts: OffloadedDecodeOptions = {}): Promise<OffloadedDecodeResult> {
  const tokens = opts.tokens ?? 64;
  const probe = loadOffloaded(dir, { cacheBytes: Number.MAX_SAFE_INTEGER });
  const { totalBytes, minCacheBytes } = probe.footprint;
  const V = probe.config.vocabSize;
  probe.close();
  const cacheBytes = Math.max(minCacheBytes, Math.round(totalBytes * (opts.cacheFraction ?? 0.25)));
  const prompt = promptIds(dir, opts.prompt, V, opts.seed ?? 0);
  const runs: number[] = [];
  let best: { seconds: number; hitRate: number; bytesRead: number } | null = null;
  for (let r = 0; r < (opts.repeats ?? 3); r++) {
    const m = loadOffloaded(dir, { cacheBytes });
    try {
      const engine = new Transformer(m.config, m.weights, m.banks);
      let t0 = 0;
      let n = 0;
      let before = m.cache.stats();
      for await (const _ of generate(engine, prompt, { maxTokens: tokens + 1, fast: false })) {
        if (n++ === 0) {
          before = m.cache.stats();
          t0 = performance.now();
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      const after = m.cache.stats();
      const hits = after.hits - before.hits;
      const runsOfExperts = hits + after.misses - before.misses;
      runs.push(tokens / seconds);
      if (!best || seconds < best.seconds) best = { seconds, hitRate: runsOfExperts ? hits / runsOfExperts : 0, bytesRead: after.bytesRead - before.bytesRead };
    } finally {
      m.close();
    }
  }
  if (!best) throw new Error('benchOffloadedDecode: repeats must be at least 1');
  return { cacheBytes, expertBytes: totalBytes, tokensPerSecond: tokens / best.seconds, tokens, promptTokens: prompt.length, hitRate: best.hitRate, bytesReadPerToken: best.bytesRead / tokens, runs };
}

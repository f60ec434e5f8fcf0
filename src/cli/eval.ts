/**
 * moepress eval MODEL (--text FILE | --random-tokens N) [--windows N] [--top-k K] [--batch B]
 *   [--window-size S] [--seed S] [--in-memory] [--json]
 *
 * Streams by default (runtime/stream-forward.ts): one layer of weights in memory at a time, the
 * routed experts one at a time, so a checkpoint larger than memory can be evaluated. --in-memory
 * loads the whole model in float32 first (the engine generate uses); both give the same numbers.
 */
import { readFileSync } from 'node:fs';
import { MoepressError } from '../io/errors.js';
import { estimateEval, type EvalEstimate } from '../runtime/eval-estimate.js';
import { loadModel, openModel } from '../runtime/load-model.js';
import { cutWindows, perplexity, randomTokenIds, type PerplexityOptions } from '../runtime/perplexity.js';
import { streamedPerplexity } from '../runtime/stream-forward.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { modelArg, parse, UsageError } from './args.js';
import { fmtBytes } from './format.js';
import { progressRenderer } from './progress.js';

export function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new MoepressError(`cannot read the text file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { file });
  }
}

/** Estimates above this are printed before the run (as compress does). */
const BIG_RUN_BYTES = 2 ** 30;

/** Peak resident set of this process so far (maxRSS is in KiB). */
function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}

export async function evalCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    text: { type: 'string' },
    'random-tokens': { type: 'string' },
    seed: { type: 'string' },
    windows: { type: 'string' },
    'window-size': { type: 'string' },
    'top-k': { type: 'string' },
    batch: { type: 'string' },
    'in-memory': { type: 'boolean' },
    json: { type: 'boolean' },
  });
  const dir = modelArg(p, 'eval');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const randomWindows = p.int('random-tokens');
  if ((randomWindows === undefined) === (p.str('text') === undefined)) throw new UsageError('eval: give exactly one of --text FILE or --random-tokens N (N windows of seeded random token ids)');
  if (randomWindows !== undefined && !(randomWindows >= 1)) throw new UsageError(`--random-tokens expects a positive number of windows, got ${randomWindows}`);
  const windowSize = p.int('window-size') ?? 256;
  if (!(windowSize >= 2)) throw new UsageError(`--window-size must be at least 2, got ${windowSize}`);
  const opts: PerplexityOptions = { windows: p.int('windows'), windowSize, topK: p.int('top-k'), batch: p.int('batch'), onProgress: progress };
  const src = openModel(dir);
  const config = src.config;
  src.checkpoint.close();
  const ids = randomWindows !== undefined ? randomTokenIds(randomWindows * windowSize, config.vocabSize, p.int('seed') ?? 0) : loadTokenizer(dir).encode(readText(p.req('text')));
  const inMemory = p.flag('in-memory');

  let estimate: EvalEstimate | null = null;
  if (!inMemory) {
    estimate = estimateEval(dir, { windows: Math.max(1, cutWindows(ids, windowSize, opts.windows)), windowSize, batch: opts.batch ?? 4 });
    if (!json && estimate.peakBytes >= BIG_RUN_BYTES) {
      const ws = estimate.workingSet.map((w) => `${w.what} ${fmtBytes(w.bytes)}`).join(', ');
      process.stderr.write(`estimate: peak memory ~${fmtBytes(estimate.peakBytes)} streamed (${ws}); --in-memory would hold ${fmtBytes(estimate.inMemoryWeightBytes)} of float32 weights\n`);
    }
  }

  let r;
  let expertBytes: number;
  if (inMemory) {
    const model = loadModel(dir, { onProgress: progress });
    const engine = new Transformer(model.config, model.weights, model.banks);
    r = await perplexity(engine, ids, opts);
    expertBytes = engine.expertBytes();
  } else {
    r = await streamedPerplexity(dir, ids, opts);
    expertBytes = r.expertBytes;
  }
  progress.end();
  const topK = p.int('top-k') ?? config.moe?.routing.topK ?? null;
  const rss = peakRss();
  const input = randomWindows !== undefined ? { randomTokens: randomWindows, seed: p.int('seed') ?? 0 } : { text: p.req('text') };
  if (json) {
    const { tokenNll: _, ...rest } = r;
    process.stdout.write(JSON.stringify({ model: dir, ...input, ...rest, topK, engine: inMemory ? 'in-memory' : 'streamed', expertBytes, peakRssBytes: rss, estimatedPeakBytes: estimate?.peakBytes ?? null }) + '\n');
    return;
  }
  const resident = inMemory ? 'expert weights in memory' : 'expert weights in memory at once';
  process.stdout.write(
    `perplexity ${r.perplexity.toFixed(3)}  (${r.windows} windows of ${r.windowSize}, ${r.tokens} tokens scored${topK !== null ? `, top-${topK}` : ''}${randomWindows !== undefined ? ', random token ids' : ''})\n` +
      `${r.seconds.toFixed(1)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s, ${inMemory ? 'in memory' : 'streamed'}: ${resident} ${fmtBytes(expertBytes)}, peak RSS ${fmtBytes(rss)}\n`,
  );
}

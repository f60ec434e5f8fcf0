/**
 * moepress generate MODEL --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P] [--seed S]
 *   [--top-k K] [--int8-activations] [--expert-cache SIZE] [--json]
 *
 * Before loading, the peak memory is estimated (offload-estimate.ts) and printed to stderr with
 * the mode: in memory when the model fits, else (or with --expert-cache) routed experts offloaded
 * to an expert cache of SIZE bytes (offload-model.ts).
 */
import { fastDecoderFor } from '../runtime/fast-decoder.js';
import { generate } from '../runtime/generate.js';
import { openForGenerate } from '../runtime/generate-model.js';
import type { GenerateEstimate, GeneratePlan } from '../runtime/offload-estimate.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { modelArg, parse, UsageError } from './args.js';
import { fmtBytes, parseBytes } from './format.js';
import { progressRenderer } from './progress.js';

function describePlan(est: GenerateEstimate, plan: GeneratePlan): string {
  const kv = `KV cache ${fmtBytes(est.kvCacheBytes)}`;
  const what = plan.mode === 'offloaded'
    ? `routed experts offloaded (${plan.reason}): resident weights ${fmtBytes(est.residentWeightBytes)} + expert cache ${fmtBytes(plan.cacheBytes!)} of ${fmtBytes(est.expertBytes)} + ${kv}`
    : `in memory (${plan.reason}): weights ${fmtBytes(est.residentWeightBytes + est.expertBytes)}${est.graphBytes ? ` + decode graph ${fmtBytes(est.graphBytes)}` : ''} + ${kv}`;
  const warn = plan.fits ? '' : `; more than the ${fmtBytes(plan.usableBytes)} usable`;
  return `estimate: peak memory ~${fmtBytes(plan.peakBytes)}, ${what}${warn}\n`;
}

export async function generateCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    prompt: { type: 'string' },
    'max-tokens': { type: 'string' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    seed: { type: 'string' },
    'top-k': { type: 'string' },
    'int8-activations': { type: 'boolean' },
    'expert-cache': { type: 'string' },
    json: { type: 'boolean' },
  });
  const dir = modelArg(p, 'generate');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const tok = loadTokenizer(dir);
  const prompt = tok.encode(p.req('prompt'));
  if (prompt.length === 0) throw new UsageError('--prompt must not be empty');
  const maxTokens = p.int('max-tokens') ?? 64;
  const cacheArg = p.str('expert-cache');
  const expertCacheBytes = cacheArg === undefined ? undefined : parseBytes(cacheArg);
  if (expertCacheBytes === null || expertCacheBytes === 0) throw new UsageError(`--expert-cache expects a size such as 512MiB, 4GiB or a byte count, got '${cacheArg}'`);
  const model = openForGenerate(dir, { promptTokens: prompt.length, maxTokens, expertCacheBytes, onProgress: progress, onPlan: (e, plan) => process.stderr.write(describePlan(e, plan)) });
  progress.end();
  const { estimate, plan } = model;
  const engine = model.engine;
  // Build the one-graph decoder (when the model supports it) before the clock starts.
  const int8Activations = p.flag('int8-activations');
  await fastDecoderFor(engine, { int8Activations });
  const ids: number[] = [];
  let printed = '';
  const t0 = performance.now();
  const opts = {
    maxTokens,
    temperature: p.num('temperature') ?? 0,
    topP: p.num('top-p') ?? 1,
    seed: p.int('seed') ?? 0,
    topK: p.int('top-k'),
    stopToken: engine.config.eosTokenId,
    int8Activations,
  };
  if (!json) process.stdout.write(p.req('prompt'));
  for await (const id of generate(engine, prompt, opts)) {
    ids.push(id);
    if (!json) {
      // Decode the whole continuation each time: byte-level BPE tokens may split a character.
      const text = tok.decode(ids);
      if (!text.endsWith('\uFFFD')) {
        process.stdout.write(text.slice(printed.length));
        printed = text;
      }
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  model.close();
  const cache = model.cache?.stats() ?? null;
  if (json) {
    const memory = { mode: plan.mode, estimatedPeakBytes: plan.peakBytes, estimate, peakRssBytes: process.resourceUsage().maxRSS * 1024 };
    process.stdout.write(JSON.stringify({ model: dir, prompt: p.req('prompt'), text: tok.decode(ids), tokens: ids, seconds, tokensPerSecond: ids.length / seconds, ...opts, ...memory, expertCache: cache }) + '\n');
  } else {
    process.stdout.write(tok.decode(ids).slice(printed.length) + '\n');
    process.stderr.write(`${ids.length} tokens in ${seconds.toFixed(2)} s (${(ids.length / seconds).toFixed(1)} tokens/s)\n`);
    if (cache) {
      const runs = cache.hits + cache.misses;
      process.stderr.write(`expert cache: ${cache.hits} hits, ${cache.misses} misses (hit rate ${runs ? ((100 * cache.hits) / runs).toFixed(0) : 0}%), ${fmtBytes(cache.bytesRead)} read, peak ${fmtBytes(cache.peakCachedBytes)} of ${fmtBytes(cache.capacityBytes)}\n`);
    }
  }
}

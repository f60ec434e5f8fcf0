/**
 * llama.cpp as a reference engine, through node-llama-cpp, for `moepress bench`. node-llama-cpp is
 * not a dependency of moepress (it is ~725 MB with its prebuilt binaries): it lives in the separate
 * package bench/llama-cpp, which `npm run bench` installs on demand. When it is missing, loading
 * says why instead of failing, and the bench reports null with that reason.
 *
 * Nothing here downloads or builds: getLlama runs with build 'never' and the CPU backend, so only
 * the prebuilt binaries shipped as npm packages (@node-llama-cpp/<platform>) are used.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The slice of node-llama-cpp's API used here (its types are not available without the package). */
interface LlamaSequence {
  controlledEvaluate(input: (number | [number, { generateNext: { probabilities: true } }])[]): Promise<({ next?: { probabilities?: Map<number, number> } } | undefined)[]>;
  evaluate(tokens: number[], options: { temperature: number }): AsyncGenerator<number, void, void>;
  clearHistory(): Promise<void>;
}
interface LlamaContext { getSequence(): LlamaSequence; dispose(): Promise<void> }
interface ContextOptions {
  contextSize: number;
  threads: { ideal: number; min: number };
  batchSize: number;
  sequences: number;
  experimentalKvCacheKeyType?: 'F32';
  experimentalKvCacheValueType?: 'F32';
  flashAttention?: boolean;
}
interface LlamaModel { createContext(o: ContextOptions): Promise<LlamaContext>; dispose(): Promise<void> }
interface Llama { loadModel(o: { modelPath: string; gpuLayers: number }): Promise<LlamaModel>; buildType: string; llamaCppRelease: { repo: string; release: string }; dispose(): Promise<void> }
interface NodeLlamaCpp { getLlama(o: { gpu: false; build: 'never'; logLevel: 'error'; maxThreads: number }): Promise<Llama> }

/** The bench package's directory: <package root>/bench/llama-cpp. */
export function llamaCppBenchDir(): string {
  return resolve(fileURLToPath(new URL('../../../bench/llama-cpp', import.meta.url)));
}

export type LlamaCppModule = { ok: true; module: NodeLlamaCpp; version: string } | { ok: false; reason: string };

export async function loadNodeLlamaCpp(benchDir = llamaCppBenchDir()): Promise<LlamaCppModule> {
  const pkg = join(benchDir, 'node_modules', 'node-llama-cpp', 'package.json');
  if (!existsSync(pkg)) return { ok: false, reason: `node-llama-cpp is not installed (run \`npm --prefix ${benchDir} ci --ignore-scripts\`, or \`npm run bench\`, which does it)` };
  try {
    const req = createRequire(join(benchDir, 'package.json'));
    const version = (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
    const module = (await import(pathToFileURL(req.resolve('node-llama-cpp')).href)) as NodeLlamaCpp;
    return { ok: true, module, version };
  } catch (e) {
    return { ok: false, reason: `node-llama-cpp failed to load: ${(e as Error).message}` };
  }
}

/** Per-token timestamps of one greedy continuation. */
export interface DecodeRun {
  tokens: number[];
  /** Prompt processing + the first token, seconds. */
  firstTokenSeconds: number;
  /** (n - 1) tokens after the first over the time they took: decode alone, without the prefill. */
  decodeTokensPerSecond: number;
}

/** Times a token stream: the first token closes the prefill, the rest are decode steps. */
export async function timeTokens(stream: AsyncIterable<number>, maxTokens: number): Promise<DecodeRun> {
  const t0 = performance.now();
  const tokens: number[] = [];
  const times: number[] = [];
  for await (const t of stream) {
    tokens.push(t);
    times.push(performance.now());
    if (tokens.length >= maxTokens) break;
  }
  const n = tokens.length;
  return {
    tokens,
    firstTokenSeconds: n ? (times[0] - t0) / 1000 : 0,
    decodeTokensPerSecond: n > 1 ? (n - 1) / ((times[n - 1] - times[0]) / 1000) : 0,
  };
}

/** The best of several runs (highest decode rate); every run's rate is kept. */
export function bestRun(runs: DecodeRun[]): DecodeRun & { runsTokensPerSecond: number[] } {
  const best = runs.reduce((a, b) => (b.decodeTokensPerSecond > a.decodeTokensPerSecond ? b : a));
  return { ...best, runsTokensPerSecond: runs.map((r) => r.decodeTokensPerSecond) };
}

/** Something that decodes greedily at batch 1 and can be timed run after run. */
export interface Decoder {
  /** What runs, e.g. 'generate()' or 'llama.cpp'. */
  engine: string;
  /** One greedy continuation of `newTokens` tokens after `prompt`, from an empty cache. */
  run(prompt: number[], newTokens: number): Promise<DecodeRun>;
  close(): Promise<void>;
}

/**
 * Runs the decoders' repeats interleaved (A B A B ...), so load from other processes on a shared
 * machine hits both alike, and keeps each one's best run.
 */
export async function interleavedBest(decoders: Decoder[], prompt: number[], newTokens: number, repeats: number): Promise<(DecodeRun & { runsTokensPerSecond: number[] })[]> {
  const runs: DecodeRun[][] = decoders.map(() => []);
  for (let r = 0; r < repeats; r++) {
    for (let i = 0; i < decoders.length; i++) runs[i].push(await decoders[i].run(prompt, newTokens));
  }
  return runs.map(bestRun);
}

export interface LlamaCppEngine {
  version: string;
  llamaCppRelease: string;
  buildType: string;
  /** One decoder per thread count asked for (engine 'llama.cpp, N threads'), in that order. */
  decoders: (Decoder & { threads: number })[];
  /**
   * Next-token log-probabilities at every position of `prompt`: [S, V], NaN where llama.cpp gave
   * none, with an F32 KV cache. (node-llama-cpp 3.21 exposes probabilities, not raw logits; log p
   * is the logits less a per-position constant, so it checks them just as well.)
   */
  promptLogProbs(prompt: number[], vocabSize: number): Promise<Float64Array>;
  close(): Promise<void>;
}

/**
 * Loads `gguf` on the CPU with one context (up to `contextSize` tokens) per thread count: on a
 * small shared machine llama.cpp's spinning thread pool can be far slower with more threads, so
 * the bench times several and keeps llama.cpp's best.
 */
export async function openLlamaCpp(lib: { module: NodeLlamaCpp; version: string }, gguf: string, opts: { contextSize: number; threads: number[] }): Promise<LlamaCppEngine> {
  const llama = await lib.module.getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: Math.max(...opts.threads) });
  const size = opts.contextSize;
  const contextOptions = (threads: number) => ({ contextSize: size, threads: { ideal: threads, min: threads }, batchSize: size, sequences: 1 });
  let model: LlamaModel | null = null;
  const contexts: LlamaContext[] = [];
  const close = async () => {
    for (const c of contexts) await c.dispose();
    await model?.dispose();
    await llama.dispose();
  };
  try {
    model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
    // Decode is timed with llama.cpp's defaults (F16 KV cache, flash attention 'auto').
    for (const t of opts.threads) contexts.push(await model.createContext(contextOptions(t)));
  } catch (e) {
    await close();
    throw e;
  }
  const m = model;
  const rel = llama.llamaCppRelease;
  return {
    version: lib.version,
    llamaCppRelease: `${rel.repo}@${rel.release}`,
    buildType: llama.buildType,
    decoders: contexts.map((c, i) => {
      const seq = c.getSequence();
      return {
        engine: `llama.cpp, ${opts.threads[i]} threads`,
        threads: opts.threads[i],
        async run(prompt: number[], newTokens: number) {
          await seq.clearHistory();
          return timeTokens(seq.evaluate(prompt, { temperature: 0 }), newTokens);
        },
        close: async () => {},
      };
    }),
    async promptLogProbs(prompt, vocabSize) {
      // An F32 KV cache without flash attention, as moepress computes: llama.cpp's default F16
      // cache alone moves the logits by ~1e-3 relative and would hide real mapping errors.
      const check = await m.createContext({ ...contextOptions(opts.threads[0]), experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false });
      try {
        const out = await check.getSequence().controlledEvaluate(prompt.map((t) => [t, { generateNext: { probabilities: true } }]));
        const logp = new Float64Array(prompt.length * vocabSize).fill(NaN);
        out.forEach((r, i) => {
          for (const [tok, p] of r?.next?.probabilities ?? []) if (tok < vocabSize && p > 0) logp[i * vocabSize + tok] = Math.log(p);
        });
        return logp;
      } finally {
        await check.dispose();
      }
    },
    close,
  };
}

/** How close another engine's next-token distributions are to ours, position by position. */
export interface LogProbAgreement {
  positions: number;
  /** Largest |log p_ours - log p_other| over every token the other engine gave a probability. */
  maxAbsLogProbDiff: number;
  /** Largest |p_ours - p_other|. */
  maxAbsProbDiff: number;
  /** Positions where both pick the same most likely token. */
  argmaxAgree: number;
  /** Positions where the other engine gave no probabilities (counted as disagreement). */
  missing: number;
}

/** ours: logits [S, V]; other: log-probabilities [S, V] (NaN where absent). */
export function compareLogProbs(ours: Float32Array, other: Float64Array, S: number, V: number): LogProbAgreement {
  let maxLog = 0;
  let maxP = 0;
  let agree = 0;
  let missing = 0;
  for (let s = 0; s < S; s++) {
    const row = ours.subarray(s * V, (s + 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(row[v] - row[best]);
    const lse = row[best] + Math.log(sum);
    let seen = 0;
    let otherBest = -1;
    for (let v = 0; v < V; v++) {
      const b = other[s * V + v];
      if (Number.isNaN(b)) continue;
      seen++;
      const a = row[v] - lse;
      maxLog = Math.max(maxLog, Math.abs(a - b));
      maxP = Math.max(maxP, Math.abs(Math.exp(a) - Math.exp(b)));
      if (otherBest < 0 || b > other[s * V + otherBest]) otherBest = v;
    }
    if (seen === 0) missing++;
    else if (otherBest === best) agree++;
  }
  return { positions: S, maxAbsLogProbDiff: maxLog, maxAbsProbDiff: maxP, argmaxAgree: agree, missing };
}

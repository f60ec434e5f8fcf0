/**
 * `moepress bench` decode section: moepress and llama.cpp on the same dense model, same prompt
 * token ids, same machine, in one run. The dense fixture is exported to GGUF (F32, as loaded), both
 * engines decode greedily at batch 1 (16 prompt tokens + 64 new, best of 3, runs interleaved), and
 * llama.cpp's next-token distributions over the prompt are compared with moepress's, with the greedy
 * continuations.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { exportGguf } from '../export/export-gguf.js';
import { compareLogProbs, interleavedBest, loadNodeLlamaCpp, openLlamaCpp, timeTokens, type DecodeRun, type Decoder, type LlamaCppEngine, type LogProbAgreement } from '../export/llama-cpp.js';
import { generate } from '../runtime/generate.js';
import { loadModel } from '../runtime/load-model.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { ortThreads } from '../tensor/ort.js';
import { readText } from './eval.js';
import { skipped, type BenchContext, type BenchSection, type SectionResult } from './bench-section.js';

export const PROMPT_TOKENS = 16;
export const NEW_TOKENS = 64;
export const REPEATS = 3;
/** The issue's floor: moepress decode at least half of llama.cpp's on the same dense model. */
export const DECODE_VS_LLAMA_CPP_FLOOR = 0.5;

/**
 * How moepress decode runs. Hook: a faster decode engine replaces this function (same contract:
 * greedy, batch 1, each run from an empty cache), e.g. via setMoepressDecoder.
 */
let openMoepressDecoder = async (dir: string): Promise<Decoder> => {
  const m = loadModel(dir);
  const engine = new Transformer(m.config, m.weights, m.banks);
  return {
    engine: 'generate()',
    run: (prompt, newTokens) => timeTokens(generate(engine, prompt, { maxTokens: newTokens }), newTokens),
    close: async () => {},
  };
};

export function setMoepressDecoder(open: (dir: string) => Promise<Decoder>): void {
  openMoepressDecoder = open;
}

const KEYS = ['decodeTokensPerSecond', 'llamaCppDecodeTokensPerSecond', 'decodeVsLlamaCpp', 'decodeVsLlamaCppFloor', 'llamaCppLogProbsMaxAbsDiff', 'llamaCppProbsMaxAbsDiff', 'llamaCppArgmaxAgreement', 'llamaCppGreedyTokensEqual'];
const LLAMA_KEYS = KEYS.filter((k) => k !== 'decodeTokensPerSecond' && k !== 'decodeVsLlamaCppFloor');

type Best = DecodeRun & { runsTokensPerSecond: number[] };

interface LlamaCppDetail {
  version: string;
  llamaCppRelease: string;
  buildType: string;
  threads: number;
  gguf: { dtype: 'F32'; bytes: number; exportSeconds: number };
  /** The best thread count's runs, and every thread count's. */
  decode: Best;
  byThreads: (Best & { threads: number })[];
  logits: LogProbAgreement;
  greedyTokensEqual: boolean;
  /** First index where the greedy continuations differ, null when equal. */
  firstDifferentToken: number | null;
}

function firstDifference(a: number[], b: number[]): number | null {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return null;
}

/** Reference logits over the prompt from the plain forward pass (what the GGUF must reproduce). */
async function referenceLogits(dir: string, prompt: number[]): Promise<{ logits: Float32Array; V: number }> {
  const m = loadModel(dir);
  const logits = await new Transformer(m.config, m.weights, m.banks).logits(prompt, 1, prompt.length);
  return { logits, V: m.config.vocabSize };
}

/** moepress alone, or moepress and llama.cpp interleaved; a string says why llama.cpp did not run. */
async function measure(ctx: BenchContext, dir: string, prompt: number[], tmp: string): Promise<{ ours: Best & { engine: string }; lc: LlamaCppDetail | string }> {
  const moepress = await openMoepressDecoder(dir);
  try {
    const lib = ctx.quick ? null : await loadNodeLlamaCpp();
    if (!lib || !lib.ok) {
      const [ours] = await interleavedBest([moepress], prompt, NEW_TOKENS, REPEATS);
      return { ours: { ...ours, engine: moepress.engine }, lc: lib ? lib.reason : 'skipped with --quick' };
    }
    const gguf = join(tmp, 'dense.gguf');
    const ex = exportGguf(dir, gguf, { dtype: 'F32' });
    let llama: LlamaCppEngine;
    try {
      llama = await openLlamaCpp(lib, gguf, { contextSize: prompt.length + NEW_TOKENS + 8, threads: ctx.threads });
    } catch (e) {
      const [ours] = await interleavedBest([moepress], prompt, NEW_TOKENS, REPEATS);
      return { ours: { ...ours, engine: moepress.engine }, lc: `llama.cpp failed to load the GGUF: ${(e as Error).message}` };
    }
    try {
      const ref = await referenceLogits(dir, prompt);
      const logits = compareLogProbs(ref.logits, await llama.promptLogProbs(prompt, ref.V), prompt.length, ref.V);
      ctx.onProgress({ task: 'bench', done: 0, total: REPEATS, unit: 'decode rounds', detail: 'moepress and llama.cpp, interleaved' });
      const [ours, ...theirs] = await interleavedBest([moepress, ...llama.decoders], prompt, NEW_TOKENS, REPEATS);
      const perThreads = theirs.map((t, i) => ({ threads: llama.decoders[i].threads, ...t }));
      // llama.cpp's best thread count is the baseline: the comparison never rests on a slow setting.
      const best = perThreads.reduce((x, y) => (y.decodeTokensPerSecond > x.decodeTokensPerSecond ? y : x));
      const first = firstDifference(ours.tokens, best.tokens);
      return {
        ours: { ...ours, engine: moepress.engine },
        lc: {
          version: llama.version, llamaCppRelease: llama.llamaCppRelease, buildType: llama.buildType, threads: best.threads,
          gguf: { dtype: 'F32', bytes: ex.dataBytes, exportSeconds: ex.seconds },
          decode: best, byThreads: perThreads, logits, greedyTokensEqual: first === null, firstDifferentToken: first,
        },
      };
    } finally {
      await llama.close();
    }
  } finally {
    await moepress.close();
  }
}

async function run(ctx: BenchContext): Promise<SectionResult> {
  const dir = resolve(ctx.shared, 'fixtures', 'dense');
  const textFile = resolve(ctx.shared, 'corpus', 'test.txt');
  if (!existsSync(dir) || !existsSync(textFile)) return skipped(KEYS, `${dir} or ${textFile} not found`);
  const prompt = loadTokenizer(dir).encode(readText(textFile).slice(0, 4000)).slice(0, PROMPT_TOKENS);
  const tmp = mkdtempSync(join(os.tmpdir(), 'moepress-gguf-'));
  let r: Awaited<ReturnType<typeof measure>>;
  try {
    r = await measure(ctx, dir, prompt, tmp);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const { ours, lc } = r;
  const moepress = { ...ours, ortThreads: ortThreads() };
  const detail = { model: dir, promptTokens: prompt.length, newTokens: NEW_TOKENS, repeats: REPEATS, interleaved: true, prompt, moepress, llamaCpp: typeof lc === 'string' ? { unavailable: lc } : lc };
  const summary: SectionResult['summary'] = { decodeTokensPerSecond: ours.decodeTokensPerSecond, decodeVsLlamaCppFloor: DECODE_VS_LLAMA_CPP_FLOOR };
  const lines = [`decode, dense fixture, batch 1, greedy, ${prompt.length}-token prompt + ${NEW_TOKENS} new tokens, best of ${REPEATS} (engines interleaved):`];
  lines.push(`  moepress (${ours.engine}, ${moepress.ortThreads} ORT threads): ${ours.decodeTokensPerSecond.toFixed(1)} tokens/s (runs ${ours.runsTokensPerSecond.map((x) => x.toFixed(0)).join(', ')})`);
  if (typeof lc === 'string') {
    for (const k of LLAMA_KEYS) summary[k] = null;
    lines.push(`  llama.cpp: not measured (${lc})`);
    return { summary, unavailable: Object.fromEntries(LLAMA_KEYS.map((k) => [k, lc])), detail, text: lines.join('\n') + '\n' };
  }
  const ratio = ours.decodeTokensPerSecond / lc.decode.decodeTokensPerSecond;
  Object.assign(summary, {
    llamaCppDecodeTokensPerSecond: lc.decode.decodeTokensPerSecond,
    decodeVsLlamaCpp: ratio,
    llamaCppLogProbsMaxAbsDiff: lc.logits.maxAbsLogProbDiff,
    llamaCppProbsMaxAbsDiff: lc.logits.maxAbsProbDiff,
    llamaCppArgmaxAgreement: lc.logits.argmaxAgree / lc.logits.positions,
    llamaCppGreedyTokensEqual: lc.greedyTokensEqual,
  });
  for (const t of lc.byThreads) {
    lines.push(`  llama.cpp (node-llama-cpp ${lc.version}, ${lc.llamaCppRelease}, ${lc.buildType} CPU, ${t.threads} threads, GGUF F32): ${t.decodeTokensPerSecond.toFixed(1)} tokens/s (runs ${t.runsTokensPerSecond.map((x) => x.toFixed(0)).join(', ')})${t.threads === lc.threads ? ' <- baseline (best)' : ''}`);
  }
  lines.push(`  moepress / llama.cpp = ${ratio.toFixed(2)} (floor ${DECODE_VS_LLAMA_CPP_FLOOR}: ${ratio >= DECODE_VS_LLAMA_CPP_FLOOR ? 'met' : 'NOT met'})`);
  const g = lc.logits;
  lines.push(`  agreement (llama.cpp with an F32 KV cache), next-token distributions at the ${g.positions} prompt positions: max |diff| of log p ${g.maxAbsLogProbDiff.toExponential(2)}, ` +
    `of p ${g.maxAbsProbDiff.toExponential(2)}; argmax equal at ${g.argmaxAgree}/${g.positions}${g.missing ? ` (${g.missing} positions MISSING from llama.cpp)` : ''}; ` +
    `greedy ${NEW_TOKENS} tokens ${lc.greedyTokensEqual ? 'identical' : `differ from token ${lc.firstDifferentToken}`}`);
  return { summary, detail, text: lines.join('\n') + '\n' };
}

export const decodeSection: BenchSection = { name: 'decode', keys: KEYS, run };

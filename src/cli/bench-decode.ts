/**
 * `moepress bench` decode section: moepress and llama.cpp on the same weights, same prompt token
 * ids, same machine, in one run. Three models: the dense fixture (GGUF F32, as loaded), the mixtral
 * fixture (GGUF F32) and the mixtral fixture compressed with `quant` at q4s-g32, whose GGUF holds
 * the same 4-bit expert blocks repacked as Q4_0 (export-gguf.ts): llama.cpp then moves as few expert
 * bytes per token as moepress does. Both engines decode greedily at batch 1 (16 prompt tokens + 64
 * new, best of 3, runs interleaved), and llama.cpp's next-token distributions over the prompt are
 * compared with moepress's, with the greedy continuations. On the 4-bit models moepress also runs
 * with int8Activations (8-bit activations in the expert products, as llama.cpp's Q4_0 kernels).
 * Last, the mixtral fixture with its routed experts offloaded to an expert cache (measureOffloaded).
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { exportGguf } from '../export/export-gguf.js';
import { compareLogProbs, interleavedBest, loadNodeLlamaCpp, openLlamaCpp, timeTokens, type DecodeRun, type Decoder, type LlamaCppEngine, type LogProbAgreement } from '../export/llama-cpp.js';
import { compress } from '../compress/compress.js';
import { writeSyntheticMoe } from '../compress/synthetic.js';
import type { DecodeGraphOptions } from '../runtime/decode-graph.js';
import { fastDecoderFailure, fastDecoderFor } from '../runtime/fast-decoder.js';
import { generate } from '../runtime/generate.js';
import { benchDecode, benchOffloadedDecode, type OffloadedDecodeResult } from '../runtime/bench-decode.js';
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
 * The `quant` budget that selects q4s-g32 (round-to-nearest, f16 scale per 32 weights): 18 bytes
 * per 32 weights = 4.5 bits = 0.28125 of bf16, the largest codec that fits (quant/select.ts). Its
 * blocks are GGML Q4_0's, so llama.cpp runs exactly the weights moepress runs.
 */
export const COMPRESSED_BUDGET = 0.28125;
/**
 * With --decode-synthetic: a Mixtral-shaped MoE big enough that expert bytes, not per-token
 * overhead, set the decode rate (top-2 of 8 experts: 69M expert weights per token, 39 MB at q4s-g32,
 * 277 MB in F32). Random weights, vocabulary of the mixtral fixture's tokenizer.
 */
const SYNTHETIC = { layers: 4, E: 8, I: 2816, H: 1024, vocab: 4096, heads: 16, kvHeads: 4, seed: 1, experts: 'random' } as const;

/**
 * How moepress decode runs. Hook: a faster decode engine replaces this function (same contract:
 * greedy, batch 1, each run from an empty cache), e.g. via setMoepressDecoder.
 */
let openMoepressDecoder = async (dir: string, opts: DecodeGraphOptions = {}): Promise<Decoder> => {
  const m = loadModel(dir);
  const engine = new Transformer(m.config, m.weights, m.banks);
  const fast = await fastDecoderFor(engine, opts);
  const int8 = opts.int8Activations ? ', 8-bit activations in the 4-bit expert products' : '';
  return {
    engine: fast ? `generate(), one ONNX graph per token${int8}` : `generate(), TS engine (${fastDecoderFailure(engine, opts)?.message ?? 'no fast decoder for this model'})`,
    run: (prompt, newTokens) => timeTokens(generate(engine, prompt, { maxTokens: newTokens, int8Activations: opts.int8Activations }), newTokens),
    close: async () => {},
  };
};

export function setMoepressDecoder(open: (dir: string, opts?: DecodeGraphOptions) => Promise<Decoder>): void {
  openMoepressDecoder = open;
}

/** One model both engines decode, and the headline keys its numbers go to (moepress, llama.cpp, and the rest). */
interface Row {
  name: 'dense' | 'mixtral' | 'compressed' | 'synthetic';
  label: string;
  ours: string;
  theirs: string;
  /** Keys filled only when llama.cpp ran, and their values (the same keys, in this order). */
  extraKeys: string[];
  extra: (lc: LlamaCppDetail, ratio: number) => (number | boolean)[];
  /** Also moepress with int8Activations (interleaved with the others): its tokens/s and ratio keys. */
  int8?: { ours: string; ratio: string };
}

const ROWS: Row[] = [
  {
    name: 'dense', label: 'dense fixture', ours: 'decodeTokensPerSecond', theirs: 'llamaCppDecodeTokensPerSecond',
    extraKeys: ['decodeVsLlamaCpp', 'llamaCppLogProbsMaxAbsDiff', 'llamaCppProbsMaxAbsDiff', 'llamaCppArgmaxAgreement', 'llamaCppGreedyTokensEqual'],
    extra: (lc, ratio) => [ratio, lc.logits.maxAbsLogProbDiff, lc.logits.maxAbsProbDiff, lc.logits.argmaxAgree / lc.logits.positions, lc.greedyTokensEqual],
  },
  { name: 'mixtral', label: 'mixtral fixture', ours: 'mixtralDecodeTokensPerSecond', theirs: 'llamaCppMixtralDecodeTokensPerSecond', extraKeys: ['mixtralDecodeVsLlamaCpp'], extra: (_lc, ratio) => [ratio] },
  {
    name: 'compressed', label: `mixtral fixture compressed with quant q4s-g32 (budget ${COMPRESSED_BUDGET}), experts Q4_0 in the GGUF`,
    ours: 'compressedDecodeTokensPerSecond', theirs: 'llamaCppCompressedDecodeTokensPerSecond',
    extraKeys: ['compressedDecodeVsLlamaCpp', 'compressedLlamaCppProbsMaxAbsDiff', 'compressedLlamaCppArgmaxAgreement', 'compressedLlamaCppGreedyTokensEqual'],
    extra: (lc, ratio) => [ratio, lc.logits.maxAbsProbDiff, lc.logits.argmaxAgree / lc.logits.positions, lc.greedyTokensEqual],
    int8: { ours: 'compressedInt8DecodeTokensPerSecond', ratio: 'compressedInt8DecodeVsLlamaCpp' },
  },
  {
    name: 'synthetic', label: `synthetic Mixtral-shaped MoE (H ${SYNTHETIC.H}, I ${SYNTHETIC.I}, ${SYNTHETIC.E} experts, ${SYNTHETIC.layers} layers, random weights) compressed with quant q4s-g32, experts Q4_0 in the GGUF`,
    ours: 'syntheticCompressedDecodeTokensPerSecond', theirs: 'llamaCppSyntheticCompressedDecodeTokensPerSecond',
    extraKeys: ['syntheticCompressedDecodeVsLlamaCpp'], extra: (_lc, ratio) => [ratio],
    int8: { ours: 'syntheticCompressedInt8DecodeTokensPerSecond', ratio: 'syntheticCompressedInt8DecodeVsLlamaCpp' },
  },
];
/** The offloaded-decode measurement (measureOffloaded): cache sizes as shares of the expert bytes, and its headline keys. */
const OFFLOAD_FRACTIONS = [0.25, 1] as const;
const OFFLOAD_KEYS = ['mixtralOffloadedDecodeTokensPerSecond', 'mixtralOffloadedHitRate', 'mixtralOffloadedBytesReadPerToken', 'mixtralOffloadedFullCacheDecodeTokensPerSecond'];
const ROW_KEYS = (r: Row) => [r.ours, r.theirs, ...r.extraKeys, ...(r.int8 ? [r.int8.ours, r.int8.ratio] : [])];
/** Every headline key, in the order the JSON object lists them (the floor beside the dense ratio). */
const KEYS = [...ROWS.flatMap(ROW_KEYS).flatMap((k) => (k === 'decodeVsLlamaCpp' ? [k, 'decodeVsLlamaCppFloor'] : [k])), ...OFFLOAD_KEYS];

/**
 * The mixtral fixture decoded with its routed experts offloaded (runtime/offload-model.ts), TS
 * engine, at an expert cache of 25% of the expert bytes and at 100%: tokens/s, cache hit rate and
 * stored bytes read per token over the decode steps (runtime/bench-decode.ts benchOffloadedDecode).
 */

async function measureOffloaded(ctx: BenchContext, prompt: number[]): Promise<{ summary: Record<string, number>; detail: { caches: OffloadedDecodeResult[]; inMemoryTsEngineTokensPerSecond: number }; lines: string[] } | string> {
  const dir = resolve(ctx.shared, 'fixtures', 'mixtral');
  if (!existsSync(dir)) return `${dir} not found`;
  const detail: OffloadedDecodeResult[] = [];
  for (const f of OFFLOAD_FRACTIONS) {
    ctx.onProgress({ task: 'bench', done: detail.length, total: OFFLOAD_FRACTIONS.length, unit: 'cache sizes', detail: `offloaded decode, cache ${f * 100}%` });
    detail.push(await benchOffloadedDecode(dir, { cacheFraction: f, prompt, tokens: NEW_TOKENS, repeats: REPEATS }));
  }
  // The same engine with every expert in memory: what offloading costs beyond the graph's speed-up.
  const inMemory = await benchDecode(dir, { fast: false, prompt, tokens: NEW_TOKENS, repeats: REPEATS });
  const [small, full] = detail;
  const lines = detail.map((r, i) => `  cache ${OFFLOAD_FRACTIONS[i] * 100}% (${(r.cacheBytes / 2 ** 20).toFixed(1)} of ${(r.expertBytes / 2 ** 20).toFixed(1)} MiB): ${r.tokensPerSecond.toFixed(1)} tokens/s, hit rate ${(100 * r.hitRate).toFixed(0)}%, ${(r.bytesReadPerToken / 2 ** 20).toFixed(2)} MiB read per token`);
  return {
    summary: { mixtralOffloadedDecodeTokensPerSecond: small.tokensPerSecond, mixtralOffloadedHitRate: small.hitRate, mixtralOffloadedBytesReadPerToken: small.bytesReadPerToken, mixtralOffloadedFullCacheDecodeTokensPerSecond: full.tokensPerSecond },
    detail: { caches: detail, inMemoryTsEngineTokensPerSecond: inMemory.tokensPerSecond },
    lines: ['mixtral fixture, routed experts offloaded to an LRU expert cache (TS engine, each run from an empty cache):', ...lines, `  in memory, same TS engine: ${inMemory.tokensPerSecond.toFixed(1)} tokens/s`],
  };
}

type Best = DecodeRun & { runsTokensPerSecond: number[] };

interface LlamaCppDetail {
  version: string;
  llamaCppRelease: string;
  buildType: string;
  threads: number;
  gguf: { dtype: string; bytes: number; exportSeconds: number };
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

/**
 * moepress alone, or moepress and llama.cpp interleaved on `dir` exported to GGUF in tmp; a string
 * says why llama.cpp did not run. Exported for one-off comparisons on other models.
 */
export async function measureDecode(ctx: BenchContext, dir: string, prompt: number[], tmp: string, name: string, withInt8 = false): Promise<Measured> {
  const moepress = await openMoepressDecoder(dir);
  const int8 = withInt8 ? await openMoepressDecoder(dir, { int8Activations: true }) : null;
  const mine = int8 ? [moepress, int8] : [moepress];
  /** moepress's runs (the first mine.length of `runs`) as the result's ours / int8. */
  const label = (runs: Best[]) => ({ ours: { ...runs[0], engine: moepress.engine }, ...(int8 ? { int8: { ...runs[1], engine: int8.engine } } : {}) });
  try {
    const lib = ctx.quick ? null : await loadNodeLlamaCpp();
    if (!lib || !lib.ok) {
      return { ...label(await interleavedBest(mine, prompt, NEW_TOKENS, REPEATS)), lc: lib ? lib.reason : 'skipped with --quick' };
    }
    const gguf = join(tmp, `${name}.gguf`);
    const ex = exportGguf(dir, gguf, { dtype: 'F32' });
    let llama: LlamaCppEngine;
    try {
      llama = await openLlamaCpp(lib, gguf, { contextSize: prompt.length + NEW_TOKENS + 8, threads: ctx.threads });
    } catch (e) {
      return { ...label(await interleavedBest(mine, prompt, NEW_TOKENS, REPEATS)), lc: `llama.cpp failed to load the GGUF: ${(e as Error).message}` };
    }
    try {
      const ref = await referenceLogits(dir, prompt);
      const logits = compareLogProbs(ref.logits, await llama.promptLogProbs(prompt, ref.V), prompt.length, ref.V);
      ctx.onProgress({ task: 'bench', done: 0, total: REPEATS, unit: 'decode rounds', detail: 'moepress and llama.cpp, interleaved' });
      const all = await interleavedBest([...mine, ...llama.decoders], prompt, NEW_TOKENS, REPEATS);
      const ours = all[0];
      const theirs = all.slice(mine.length);
      const perThreads = theirs.map((t, i) => ({ threads: llama.decoders[i].threads, ...t }));
      // llama.cpp's best thread count is the baseline: the comparison never rests on a slow setting.
      const best = perThreads.reduce((x, y) => (y.decodeTokensPerSecond > x.decodeTokensPerSecond ? y : x));
      const first = firstDifference(ours.tokens, best.tokens);
      return {
        ...label(all),
        lc: {
          version: llama.version, llamaCppRelease: llama.llamaCppRelease, buildType: llama.buildType, threads: best.threads,
          gguf: { dtype: ex.expertType ? `F32, experts ${ex.expertType}` : 'F32', bytes: ex.dataBytes, exportSeconds: ex.seconds },
          decode: best, byThreads: perThreads, logits, greedyTokensEqual: first === null, firstDifferentToken: first,
        },
      };
    } finally {
      await llama.close();
    }
  } finally {
    await moepress.close();
    await int8?.close();
  }
}

type Measured = { ours: Best & { engine: string }; int8?: Best & { engine: string }; lc: LlamaCppDetail | string };

/** The model directory of a row: a fixture, or the mixtral fixture compressed into tmp. */
async function rowDir(ctx: BenchContext, row: Row, tmp: string): Promise<string | { why: string }> {
  const fixture = resolve(ctx.shared, 'fixtures', row.name === 'dense' ? 'dense' : 'mixtral');
  if (row.name === 'synthetic' && !ctx.options['decode-synthetic']) return { why: 'not measured without --decode-synthetic (a 0.6 GB synthetic model; minutes)' };
  if (!existsSync(fixture)) return { why: `${fixture} not found` };
  if (row.name === 'dense' || row.name === 'mixtral') return fixture;
  let model = fixture;
  if (row.name === 'synthetic') {
    ctx.onProgress({ task: 'bench', done: 0, total: 1, unit: 'models', detail: 'writing the synthetic MoE' });
    model = writeSyntheticMoe(join(tmp, 'synthetic'), SYNTHETIC).dir;
    copyFileSync(join(fixture, 'tokenizer.json'), join(model, 'tokenizer.json'));
  }
  const out = join(tmp, `${row.name}-quant-q4s-g32`);
  ctx.onProgress({ task: 'bench', done: 0, total: 1, unit: 'models', detail: `compressing ${model} with quant at ${COMPRESSED_BUDGET}` });
  await compress({ model, out, method: 'quant', budget: COMPRESSED_BUDGET });
  if (model !== fixture) rmSync(model, { recursive: true, force: true });
  return out;
}

type RowResult = ({ row: Row; dir: string; prompt: number[] } & Measured) | { row: Row; unavailable: string };

async function run(ctx: BenchContext): Promise<SectionResult> {
  const textFile = resolve(ctx.shared, 'corpus', 'test.txt');
  if (!existsSync(textFile)) return skipped(KEYS, `${textFile} not found`);
  const text = readText(textFile).slice(0, 4000);
  const tmp = mkdtempSync(join(os.tmpdir(), 'moepress-gguf-'));
  const results: RowResult[] = [];
  try {
    for (const row of ROWS) {
      const dir = await rowDir(ctx, row, tmp);
      if (typeof dir !== 'string') {
        results.push({ row, unavailable: dir.why });
        continue;
      }
      const prompt = loadTokenizer(dir).encode(text).slice(0, PROMPT_TOKENS);
      results.push({ row, dir, prompt, ...(await measureDecode(ctx, dir, prompt, tmp, row.name, row.int8 !== undefined)) });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const summary: SectionResult['summary'] = { decodeVsLlamaCppFloor: DECODE_VS_LLAMA_CPP_FLOOR };
  const unavailable: Record<string, string> = {};
  const detail: Record<string, unknown> = { promptTokens: PROMPT_TOKENS, newTokens: NEW_TOKENS, repeats: REPEATS, interleaved: true, ortThreads: ortThreads() };
  const lines = [`decode, batch 1, greedy, ${PROMPT_TOKENS}-token prompt + ${NEW_TOKENS} new tokens, best of ${REPEATS} (engines interleaved), moepress with ${ortThreads()} ORT threads:`];
  for (const r of results) {
    const keys = ROW_KEYS(r.row);
    if ('unavailable' in r) {
      for (const k of keys) [summary[k], unavailable[k]] = [null, r.unavailable];
      detail[r.row.name] = { unavailable: r.unavailable };
      lines.push(`${r.row.label}: not measured (${r.unavailable})`);
      continue;
    }
    const { ours, int8, lc } = r;
    const int8Detail = int8 ? { moepressInt8Activations: { ...int8, greedyTokensEqualToExact: firstDifference(int8.tokens, ours.tokens) === null } } : {};
    detail[r.row.name] = { model: r.dir, prompt: r.prompt, moepress: ours, ...int8Detail, llamaCpp: typeof lc === 'string' ? { unavailable: lc } : lc };
    summary[r.row.ours] = ours.decodeTokensPerSecond;
    lines.push(`${r.row.label}:`);
    lines.push(`  moepress (${ours.engine}): ${ours.decodeTokensPerSecond.toFixed(1)} tokens/s (runs ${ours.runsTokensPerSecond.map((x) => x.toFixed(0)).join(', ')})`);
    if (int8 && r.row.int8) {
      summary[r.row.int8.ours] = int8.decodeTokensPerSecond;
      const first = firstDifference(int8.tokens, ours.tokens);
      lines.push(`  moepress (${int8.engine}): ${int8.decodeTokensPerSecond.toFixed(1)} tokens/s (runs ${int8.runsTokensPerSecond.map((x) => x.toFixed(0)).join(', ')}); ` +
        `greedy ${NEW_TOKENS} tokens ${first === null ? 'identical to' : `differ from token ${first} from`} the exact path's`);
    }
    const int8Keys = r.row.int8 ? [r.row.int8.ours, r.row.int8.ratio] : [];
    if (typeof lc === 'string') {
      for (const k of keys.slice(1)) if (k !== int8Keys[0]) [summary[k], unavailable[k]] = [null, lc];
      lines.push(`  llama.cpp: not measured (${lc})`);
      continue;
    }
    const ratio = ours.decodeTokensPerSecond / lc.decode.decodeTokensPerSecond;
    summary[r.row.theirs] = lc.decode.decodeTokensPerSecond;
    r.row.extra(lc, ratio).forEach((v, i) => (summary[r.row.extraKeys[i]] = v));
    if (int8 && r.row.int8) summary[r.row.int8.ratio] = int8.decodeTokensPerSecond / lc.decode.decodeTokensPerSecond;
    for (const t of lc.byThreads) {
      lines.push(`  llama.cpp (node-llama-cpp ${lc.version}, ${lc.llamaCppRelease}, ${lc.buildType} CPU, ${t.threads} threads, GGUF ${lc.gguf.dtype}): ${t.decodeTokensPerSecond.toFixed(1)} tokens/s (runs ${t.runsTokensPerSecond.map((x) => x.toFixed(0)).join(', ')})${t.threads === lc.threads ? ' <- baseline (best)' : ''}`);
    }
    const floor = r.row.name === 'dense' ? ` (floor ${DECODE_VS_LLAMA_CPP_FLOOR}: ${ratio >= DECODE_VS_LLAMA_CPP_FLOOR ? 'met' : 'NOT met'})` : '';
    lines.push(`  moepress / llama.cpp = ${ratio.toFixed(2)}${floor}${int8 ? `; with 8-bit activations ${(int8.decodeTokensPerSecond / lc.decode.decodeTokensPerSecond).toFixed(2)}` : ''}`);
    const g = lc.logits;
    lines.push(`  agreement (llama.cpp with an F32 KV cache), next-token distributions at the ${g.positions} prompt positions: max |diff| of log p ${g.maxAbsLogProbDiff.toExponential(2)}, ` +
      `of p ${g.maxAbsProbDiff.toExponential(2)}; argmax equal at ${g.argmaxAgree}/${g.positions}${g.missing ? ` (${g.missing} positions MISSING from llama.cpp)` : ''}; ` +
      `greedy ${NEW_TOKENS} tokens ${lc.greedyTokensEqual ? 'identical' : `differ from token ${lc.firstDifferentToken}`}`);
    if (lc.gguf.dtype.includes('Q4_0')) lines.push('  (llama.cpp rounds activations to 8 bits inside its Q4_0 products; moepress multiplies them in float32, so the two differ by more than on F32 weights)');
  }
  const mixtral = results.find((r) => r.row.name === 'mixtral');
  const offloaded = mixtral && 'prompt' in mixtral ? await measureOffloaded(ctx, mixtral.prompt) : 'the mixtral fixture was not measured';
  if (typeof offloaded === 'string') {
    for (const k of OFFLOAD_KEYS) [summary[k], unavailable[k]] = [null, offloaded];
    lines.push(`mixtral fixture, experts offloaded: not measured (${offloaded})`);
  } else {
    Object.assign(summary, offloaded.summary);
    detail.offloaded = offloaded.detail;
    lines.push(...offloaded.lines);
  }
  const ordered = Object.fromEntries(KEYS.map((k) => [k, summary[k] ?? null]));
  return { summary: ordered, unavailable, detail, text: lines.join('\n') + '\n' };
}

export const decodeSection: BenchSection = { name: 'decode', keys: KEYS, run };

/**
 * `moepress bench` sections other than decode: GEMM throughput, the engines' eval speed on the
 * trained fixtures, and compressing a real-size synthetic MoE layer (bench-scale.ts).
 */
import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { runScaleBench } from '../compress/scale-bench.js';
import { timeTokens } from '../export/llama-cpp.js';
import { generate } from '../runtime/generate.js';
import { loadModel } from '../runtime/load-model.js';
import { perplexity } from '../runtime/perplexity.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { benchGemm } from '../tensor/gemm-bench.js';
import { render as renderScale } from './bench-scale.js';
import { skipped, type BenchContext, type BenchSection, type SectionResult } from './bench-section.js';
import { readText } from './eval.js';
import { grid } from './format.js';

export const gemmSection: BenchSection = {
  name: 'gemm',
  keys: ['gemmGflops'],
  async run(ctx: BenchContext): Promise<SectionResult> {
    const rows = await benchGemm({ seconds: ctx.quick ? 0.2 : 1 });
    const best = rows.reduce((a, b) => (b.gflops > a.gflops ? b : a), rows[0]);
    return {
      summary: { gemmGflops: best?.gflops ?? null },
      unavailable: best ? undefined : { gemmGflops: 'no GEMM backend ran' },
      detail: rows,
      text: grid(['GEMM backend', 'M', 'N', 'K', 'GFLOP/s', 'ms/call'], rows.map((g) => [g.backend, String(g.M), String(g.N), String(g.K), g.gflops.toFixed(1), g.msPerCall.toFixed(3)])) + '\n',
    };
  },
};

interface EngineResult {
  fixture: string;
  evalTokensPerSecond: number;
  evalWindows: number;
  perplexity: number;
  decodeTokensPerSecond: number;
}

async function benchEngine(dir: string, text: string, windows: number): Promise<EngineResult> {
  const m = loadModel(dir);
  const engine = new Transformer(m.config, m.weights, m.banks);
  const ids = loadTokenizer(dir).encode(text);
  const r = await perplexity(engine, ids, { windows });
  const d = await timeTokens(generate(engine, ids.slice(0, 16), { maxTokens: 32 }), 32);
  return { fixture: basename(dir), evalTokensPerSecond: r.tokensPerSecond, evalWindows: r.windows, perplexity: r.perplexity, decodeTokensPerSecond: d.decodeTokensPerSecond };
}

export const engineSection: BenchSection = {
  name: 'engines',
  keys: ['evalTokensPerSecond'],
  async run(ctx: BenchContext): Promise<SectionResult> {
    const textFile = resolve(ctx.shared, 'corpus/test.txt');
    if (!existsSync(textFile)) return skipped(['evalTokensPerSecond'], `${textFile} not found`);
    const text = readText(textFile);
    const engines: EngineResult[] = [];
    for (const f of ['mixtral', 'olmoe', 'dense']) {
      const dir = resolve(ctx.shared, 'fixtures', f);
      if (!existsSync(dir)) continue;
      ctx.onProgress({ task: 'bench', done: engines.length, total: 3, unit: 'fixtures', detail: `eval ${f}` });
      engines.push(await benchEngine(dir, text, ctx.quick ? 4 : 16));
    }
    // The headline is the first MoE fixture's eval speed (mixtral), named in the table.
    return {
      summary: { evalTokensPerSecond: engines[0]?.evalTokensPerSecond ?? null },
      unavailable: engines.length ? undefined : { evalTokensPerSecond: 'no fixture found' },
      detail: engines,
      text: grid(['fixture', 'eval tokens/s', 'windows', 'perplexity', 'decode tokens/s'], engines.map((e) => [e.fixture, e.evalTokensPerSecond.toFixed(0), String(e.evalWindows), e.perplexity.toFixed(3), e.decodeTokensPerSecond.toFixed(1)])) + '\n',
    };
  },
};

const SCALE_KEYS = ['compressPeakRssBytes', 'compressSeconds', 'compressLayerSeconds', 'compressFloorSeconds', 'compressGemmFloorSeconds', 'compressIoFloorSeconds', 'alignGemmGflops', 'diskReadMBps', 'diskWriteMBps', 'compressWithinRssLimit'];

export const scaleSection: BenchSection = {
  name: 'scale',
  keys: SCALE_KEYS,
  async run(ctx: BenchContext): Promise<SectionResult> {
    if (ctx.quick) return skipped(SCALE_KEYS, 'skipped with --quick (a Mixtral-8x7B-shaped layer takes minutes; run `moepress bench` or `moepress bench --scale`)');
    const methods = typeof ctx.options['scale-methods'] === 'string' ? ctx.options['scale-methods'].split(',').map((s) => s.trim()).filter(Boolean) : undefined;
    const r = await runScaleBench({ methods, onProgress: ctx.onProgress });
    return {
      summary: {
        compressPeakRssBytes: r.compressPeakRssBytes,
        compressSeconds: r.compressSeconds,
        compressLayerSeconds: r.layerSeconds,
        compressFloorSeconds: r.floorSeconds,
        compressGemmFloorSeconds: r.gemmFloorSeconds,
        compressIoFloorSeconds: r.ioFloorSeconds,
        alignGemmGflops: r.rates.gemm.gflops,
        diskReadMBps: r.rates.disk.readMBps,
        diskWriteMBps: r.rates.disk.writeMBps,
        compressWithinRssLimit: r.withinLimit,
      },
      detail: r,
      text: renderScale(r),
    };
  },
};

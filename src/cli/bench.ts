/**
 * moepress bench [--json] [--quick]: kernel GFLOP/s and engine tokens/s on this machine, side by side.
 * moepress bench --scale [...]: compressing a real-size synthetic MoE layer (see bench-scale.ts).
 */
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { resolve } from 'node:path';
import os from 'node:os';
import { benchGemm } from '../tensor/gemm-bench.js';
import { loadModel } from '../runtime/load-model.js';
import { perplexity } from '../runtime/perplexity.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { generate } from '../runtime/generate.js';
import { benchTraining, type TrainingBench } from '../train/bench.js';
import { parse } from './args.js';
import { grid } from './format.js';
import { readText } from './eval.js';

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
  const t0 = performance.now();
  let n = 0;
  for await (const _ of generate(engine, ids.slice(0, 16), { maxTokens: 32 })) n++;
  return { fixture: basename(dir), evalTokensPerSecond: r.tokensPerSecond, evalWindows: r.windows, perplexity: r.perplexity, decodeTokensPerSecond: n / ((performance.now() - t0) / 1000) };
}

export async function benchCommand(argv: string[]): Promise<void> {
  if (argv.includes('--scale')) return (await import('./bench-scale.js')).benchScaleCommand(argv);
  const p = parse(argv, { json: { type: 'boolean' }, quick: { type: 'boolean' }, shared: { type: 'string' } });
  const quick = p.flag('quick');
  const shared = resolve(p.str('shared') ?? '../shared');
  const gemm = await benchGemm({ seconds: quick ? 0.2 : 1 });
  const engines: EngineResult[] = [];
  const training: TrainingBench[] = [];
  const textFile = resolve(shared, 'corpus/test.txt');
  if (existsSync(textFile)) {
    const text = readText(textFile);
    for (const f of ['mixtral', 'olmoe', 'dense']) {
      const dir = resolve(shared, 'fixtures', f);
      if (existsSync(dir)) engines.push(await benchEngine(dir, text, quick ? 4 : 16));
    }
    // training steps (forward, backward, AdamW; every tensor trains) on a dense model and an MoE
    for (const f of ['dense', 'mixtral']) {
      const dir = resolve(shared, 'fixtures', f);
      if (existsSync(dir)) training.push(await benchTraining(dir, { text, ...(quick ? { batch: 2, steps: 1 } : {}) }));
    }
  }
  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memoryBytes: os.totalmem(), node: process.version };
  if (p.flag('json')) {
    process.stdout.write(JSON.stringify({ machine, gemm, engines, training: training.map(({ ops: _, ...t }) => t) }, null, 2) + '\n');
    return;
  }
  process.stdout.write(`machine: ${machine.cpu}, ${machine.cpus} cores, ${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB, Node ${machine.node}\n\n`);
  process.stdout.write(grid(['GEMM backend', 'M', 'N', 'K', 'GFLOP/s', 'ms/call'], gemm.map((g) => [g.backend, String(g.M), String(g.N), String(g.K), g.gflops.toFixed(1), g.msPerCall.toFixed(3)])) + '\n\n');
  if (engines.length) {
    process.stdout.write(grid(['fixture', 'eval tokens/s', 'windows', 'perplexity', 'decode tokens/s'], engines.map((e) => [e.fixture, e.evalTokensPerSecond.toFixed(0), String(e.evalWindows), e.perplexity.toFixed(3), e.decodeTokensPerSecond.toFixed(1)])) + '\n');
  }
  if (training.length) {
    process.stdout.write('\n' + grid(['training step', 'batch x seq', 'train tokens/s', 'ms/step (fwd/bwd/AdamW)', 'GEMM share', 'GEMM GFLOP/s'], training.map((t) => [
      t.fixture, `${t.batch} x ${t.seq}`, t.tokensPerSecond.toFixed(0), `${t.msPerStep.toFixed(0)} (${t.forwardMs.toFixed(0)}/${t.backwardMs.toFixed(0)}/${t.optimizerMs.toFixed(0)})`,
      `${(100 * t.gemmShare).toFixed(1)}%`, t.gemmGflops.toFixed(1),
    ])) + '\n');
  }
}

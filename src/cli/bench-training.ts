/**
 * `moepress bench` training section: full training steps (forward, backward, AdamW; every tensor
 * trains) on the dense and mixtral fixtures, with the share of the step spent in GEMM.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { benchTraining, type TrainingBench } from '../train/bench.js';
import { skipped, type BenchContext, type BenchSection, type SectionResult } from './bench-section.js';
import { readText } from './eval.js';
import { grid } from './format.js';

const KEYS = ['trainTokensPerSecond', 'trainGemmShare'];

export const trainingSection: BenchSection = {
  name: 'training',
  keys: KEYS,
  async run(ctx: BenchContext): Promise<SectionResult> {
    const textFile = resolve(ctx.shared, 'corpus/test.txt');
    const text = existsSync(textFile) ? readText(textFile) : undefined;
    const rows: TrainingBench[] = [];
    for (const f of ['dense', 'mixtral']) {
      const dir = resolve(ctx.shared, 'fixtures', f);
      if (!existsSync(dir)) continue;
      ctx.onProgress({ task: 'bench', done: rows.length, total: 2, unit: 'fixtures', detail: `training step ${f}` });
      rows.push(await benchTraining(dir, { text, ...(ctx.quick ? { batch: 2, steps: 1 } : {}) }));
    }
    if (!rows.length) return skipped(KEYS, `no fixture found under ${resolve(ctx.shared, 'fixtures')}`);
    // The headline is the dense fixture's step (the first row), named in the table.
    return {
      summary: { trainTokensPerSecond: rows[0].tokensPerSecond, trainGemmShare: rows[0].gemmShare },
      detail: rows.map(({ ops: _, ...t }) => t),
      text: grid(['training step', 'batch x seq', 'train tokens/s', 'ms/step (fwd/bwd/AdamW)', 'GEMM share', 'GEMM GFLOP/s'], rows.map((t) => [
        t.fixture, `${t.batch} x ${t.seq}`, t.tokensPerSecond.toFixed(0), `${t.msPerStep.toFixed(0)} (${t.forwardMs.toFixed(0)}/${t.backwardMs.toFixed(0)}/${t.optimizerMs.toFixed(0)})`,
        `${(100 * t.gemmShare).toFixed(1)}%`, t.gemmGflops.toFixed(1),
      ])) + '\n',
    };
  },
};

/**
 * benchTraining (the training row of `moepress bench`): on tiny dense and MoE models it reports a
 * consistent step breakdown and a GEMM share inside (0, 1]; text goes through the model's
 * tokenizer. No timing is asserted (speed belongs to the benchmark, not to tests).
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { benchTraining, type TrainingBench } from '../src/train/bench.js';
import { SHARED, TEST_TEXT } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');

function checkRow(r: TrainingBench, dir: string, batch: number, seq: number): void {
  assert.equal(r.fixture, basename(dir));
  assert.deepEqual([r.batch, r.seq, r.tokensPerStep], [batch, seq, batch * seq]);
  assert.ok(Number.isFinite(r.tokensPerSecond) && r.tokensPerSecond > 0, `tokens/s ${r.tokensPerSecond}`);
  assert.ok(Math.abs(r.forwardMs + r.backwardMs + r.optimizerMs - r.msPerStep) < 1e-9 * r.msPerStep + 1e-9, 'the step is forward + backward + AdamW');
  assert.ok(r.gemmCalls > 0 && r.gemmMs > 0, 'GEMMs were counted');
  assert.ok(r.gemmShare > 0 && r.gemmShare <= 1, `GEMM share ${r.gemmShare}`);
  assert.ok(r.ops.some((o) => o.op === 'linear' && o.gemmMs > 0), 'per-op profile names the linear layers');
}

for (const family of ['mistral', 'mixtral'] as const) {
  test(`benchTraining: ${family} tiny model, random tokens`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[family], { seed: 3 });
    try {
      const r = await benchTraining(dir, { batch: 2, seq: 8, steps: 2, warmup: 1 });
      checkRow(r, dir, 2, 8);
      assert.equal(r.steps, 2);
      if (family === 'mixtral') assert.ok(r.ops.some((o) => /scatter|gather|dispatch/i.test(o.op)), `MoE ops profiled: ${r.ops.map((o) => o.op).join(', ')}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('benchTraining: text is tokenized with the model\'s tokenizer; too short a text is refused', { skip: existsSync(TOKENIZER) && existsSync(TEST_TEXT) ? false : 'needs ../shared/corpus' }, async () => {
  const { dir } = writeTinyModel({ ...TINY_CONFIGS.mistral, vocab_size: 4096 }, { seed: 3 });
  try {
    copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
    checkRow(await benchTraining(dir, { text: readFileSync(TEST_TEXT, 'utf8').slice(0, 4000), batch: 2, seq: 16, steps: 1 }), dir, 2, 16);
    await assert.rejects(benchTraining(dir, { text: 'a b', batch: 1, seq: 16, steps: 1 }), /fewer than the 17 one window of S=16 needs/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * The shared training loop: a run interrupted after a checkpoint (by an exception from its
 * progress callback) and resumed ends with exactly the parameters and losses of an uninterrupted
 * run, with and without gradient accumulation; a resume with other options is refused.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../src/runtime/load-model.js';
import { Rng } from '../src/tensor/random.js';
import { WindowSampler } from '../src/train/data.js';
import { trainLoop, type LoopOptions, type LoopResult } from '../src/train/loop.js';
import { TrainableModel } from '../src/train/model.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const work = mkdtempSync(join(os.tmpdir(), 'moepress-loop-'));
const tiny = loadModel(writeTinyModel(TINY_CONFIGS.mixtral, { seed: 4 }).dir);
const r = new Rng(9);
// a periodic stream with some noise: learnable, so the runs compared really train
const stream = Int32Array.from({ length: 400 }, (_, i) => (r.next() < 0.1 ? r.int(64) : (i * 7) % 23));

/** One run: a fresh model from the same weights, a fresh sampler; returns the loop result and the final parameters. */
async function run(dir: string, o: Partial<LoopOptions>): Promise<{ res: LoopResult; params: Float32Array[] }> {
  const model = new TrainableModel(tiny.config, tiny.weights);
  const sampler = new WindowSampler(stream, 8, 1);
  const res = await trainLoop(model.parameters(), sampler, async (tape, batch) => (await model.loss(tape, batch, { auxCoef: 0.01 })).loss, {
    steps: 7, batch: 2, lr: 3e-3, checkpointEvery: 2, checkpointDir: dir, runKey: 'loop-test', ...o,
  });
  return { res, params: model.parameters().map((p) => Float32Array.from(p.data)) };
}

for (const accumulate of [1, 2]) {
  test(`resume after an interruption equals the uninterrupted run (accumulate ${accumulate})`, async () => {
    const full = await run(join(work, `full-${accumulate}`), { accumulate });
    assert.equal(full.res.resumedFrom, 0);
    assert.equal(full.res.losses.length, 7);
    const dir = join(work, `cut-${accumulate}`);
    // stop inside step 6: the last checkpoint is the one after step 4
    await assert.rejects(run(dir, { accumulate, onProgress: (e) => { if (e.done === 5) throw new Error('interrupted'); } }), /interrupted/);
    assert.ok(existsSync(join(dir, 'train-state.json')));
    const resumed = await run(dir, { accumulate, resume: true });
    assert.equal(resumed.res.resumedFrom, 4);
    assert.deepEqual(resumed.res.losses, full.res.losses, 'losses');
    assert.equal(resumed.res.finalLoss, full.res.finalLoss);
    resumed.params.forEach((p, i) => assert.deepEqual(p, full.params[i], `parameter ${i}`));
    // the losses went down: the comparison is between runs that trained
    assert.ok(full.res.losses[6] < full.res.losses[0]);
  });
}

test('resume without a checkpoint starts from step 0; with other options it is refused', async () => {
  const dir = join(work, 'fresh');
  const a = await run(dir, { resume: true, checkpointEvery: 0 });
  assert.equal(a.res.resumedFrom, 0);
  const b = join(work, 'other');
  await assert.rejects(run(b, { onProgress: (e) => { if (e.done === 3) throw new Error('stop'); } }), /stop/);
  await assert.rejects(run(b, { resume: true, runKey: 'another run' }), /different options/);
});

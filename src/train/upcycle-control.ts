/**
 * The control run for upcycling (`moepress upcycle --control`): the dense model trained alone,
 * every tensor, with the settings an upcycling run uses (text, steps, learning rate and schedule,
 * batch, window length, accumulation, seed — so the same windows in the same order), written as a
 * plain dense checkpoint in the source's dtypes. An upcycled model that beats its dense source
 * might only be profiting from the extra training; beating this control shows the experts help.
 */
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { WindowSampler } from './data.js';
import { writeModelFiles } from './finetune-output.js';
import { trainLoop, type LoopResult } from './loop.js';
import { TrainableModel } from './model.js';
import { outputPaths, publishOutput } from './output-dir.js';
import { checkTrainingOptions, openDense, readTokens, trainingSettings, type TrainingOptions } from './upcycle.js';

/** Everything of an upcycling run but the experts (and the load-balancing loss, which needs routers). */
export type ControlOptions = Omit<TrainingOptions, 'auxCoef'>;

/** The loop's result (finalLoss is plain cross-entropy here: no routers, no auxiliary loss) and what was written. */
export interface ControlResult extends LoopResult {
  out: string;
  /** Trained parameters (all of the dense model's). */
  params: number;
  files: string[];
}

export async function trainDenseControl(denseDir: string, o: ControlOptions): Promise<ControlResult> {
  checkTrainingOptions(o);
  const opt = trainingSettings(o);
  const dense = openDense(denseDir, null, opt.seqLen);
  const paths = outputPaths(o);
  const { out, partial, stateDir } = paths;
  const tokens = await readTokens(o, denseDir, dense.config.vocabSize);
  const sampler = new WindowSampler(tokens, opt.seqLen, opt.seed, o.text);
  const model = new TrainableModel(dense.config, dense.weights);
  const params = model.parameters();

  const runKey = JSON.stringify({
    control: true, dense: resolve(denseDir), text: resolve(o.text), steps: o.steps, lr: opt.lr, warmup: o.warmup ?? null,
    batch: opt.batch, seqLen: opt.seqLen, accumulate: opt.accumulate, seed: opt.seed,
  });
  mkdirSync(partial, { recursive: true });
  const r = await trainLoop(params, sampler, async (tape, batch) => (await model.loss(tape, batch)).loss, {
    steps: o.steps, batch: opt.batch, accumulate: opt.accumulate, lr: opt.lr, warmup: o.warmup,
    checkpointEvery: opt.checkpointEvery, checkpointDir: stateDir, resume: o.resume, runKey, onProgress: o.onProgress,
  });

  o.onProgress?.({ task: 'write', done: 0, total: 1, unit: 'checkpoints', detail: out });
  const files = writeModelFiles(dense, model.toWeights(), partial);
  dense.checkpoint.close();
  publishOutput(paths);
  o.onProgress?.({ task: 'write', done: 1, total: 1, unit: 'checkpoints', detail: out });
  return {
    out,
    steps: r.steps,
    finalLoss: r.finalLoss,
    losses: r.losses,
    seconds: r.seconds,
    tokensPerSecond: r.tokensPerSecond,
    resumedFrom: r.resumedFrom,
    params: params.reduce((n, p) => n + p.size, 0),
    files,
  };
}

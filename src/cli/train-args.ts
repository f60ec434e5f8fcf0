/** The options every training command reads the same way (upcycle, finetune, heal): train/run-options.ts. */
import type { ProgressFn } from '../progress.js';
import type { TrainRunOptions } from '../train/run-options.js';
import type { Parsed } from './args.js';

export function trainRunArgs(p: Parsed, onProgress: ProgressFn): TrainRunOptions {
  return {
    batch: p.int('batch'),
    seqLen: p.int('seq'),
    accumulate: p.int('accumulate'),
    seed: p.int('seed'),
    warmup: p.int('warmup'),
    checkpointEvery: p.int('checkpoint-every'),
    resume: p.flag('resume'),
    overwrite: p.flag('overwrite'),
    onProgress,
  };
}

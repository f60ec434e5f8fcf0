/** Options every training command takes (upcycle, finetune, heal): batching, seed, warm-up, checkpoints, resume. */
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';

export interface TrainRunOptions {
  /** Windows per micro-batch (default 8). */
  batch?: number;
  /** Window length S (default 256). */
  seqLen?: number;
  /** Micro-batches per optimizer step (default 1). */
  accumulate?: number;
  seed?: number;
  /** Warm-up steps (default min(10, steps / 10)). */
  warmup?: number;
  /** Save a training checkpoint every N steps (default 50; 0: never). */
  checkpointEvery?: number;
  /** Continue an interrupted run from its last checkpoint. */
  resume?: boolean;
  /** Replace an existing output directory. */
  overwrite?: boolean;
  onProgress?: ProgressFn;
}

export function positiveInt(name: string, v: number, min = 1): void {
  if (!(Number.isInteger(v) && v >= min)) throw new MoepressError(`${name} must be an integer >= ${min}, got ${v}`);
}

/** The batching and seed of a run with their defaults (8 windows of 256, one micro-batch, seed 0), checked. */
export function runShape(o: TrainRunOptions): { batch: number; seqLen: number; accumulate: number; seed: number } {
  const r = { batch: o.batch ?? 8, seqLen: o.seqLen ?? 256, accumulate: o.accumulate ?? 1, seed: o.seed ?? 0 };
  positiveInt('--batch', r.batch);
  positiveInt('--seq', r.seqLen, 2);
  positiveInt('--accumulate', r.accumulate);
  return r;
}

/** Options every training command takes (upcycle, finetune, heal): batching, seed, warm-up, checkpoints, resume. */
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

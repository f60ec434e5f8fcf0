/**
 * Where a training command (upcycle, its control, finetune) builds its output: in `${out}.partial`,
 * with the loop's checkpoints in `train-state/` inside it, renamed into place only when complete.
 */
import { existsSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MoepressError } from '../io/errors.js';

export interface OutputPaths {
  out: string;
  partial: string;
  /** The training loop's checkpoints (removed before the output is published). */
  stateDir: string;
}

/** Resolves the paths and refuses an existing output (without --overwrite) or a leftover partial run (without --resume). */
export function outputPaths(o: { out: string; overwrite?: boolean; resume?: boolean }): OutputPaths {
  const out = resolve(o.out);
  if (existsSync(out) && !o.overwrite) throw new MoepressError('output directory already exists; choose another --out or pass --overwrite', { file: out });
  const partial = `${out}.partial`;
  if (existsSync(partial) && !o.resume) throw new MoepressError('an interrupted run left this directory; pass --resume to continue it or delete it', { file: partial });
  return { out, partial, stateDir: join(partial, 'train-state') };
}

/** Drops the training checkpoints and renames the finished partial directory to the output (replacing an old one). */
export function publishOutput(p: OutputPaths): void {
  rmSync(p.stateDir, { recursive: true, force: true });
  if (existsSync(p.out)) rmSync(p.out, { recursive: true, force: true });
  renameSync(p.partial, p.out);
}

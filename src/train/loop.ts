/**
 * The training loop both training commands share: optimizer steps over seeded random windows,
 * warm-up + cosine schedule, clipping, accumulation, progress events, atomic checkpoints of the
 * parameters and AdamW moments every N steps, and resume (the sampler is replayed to its position,
 * so a resumed run sees the same batches as an uninterrupted one).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile } from '../io/safetensors.js';
import { writeSafetensors } from '../io/safetensors-writer.js';
import type { RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';
import type { Batch, WindowSampler } from './data.js';
import { AdamW, Trainer, warmupCosine } from './optim.js';
import type { Tape, Var } from './tape.js';

export interface LoopOptions {
  steps: number;
  /** Windows per micro-batch. */
  batch: number;
  accumulate?: number;
  lr: number;
  warmup?: number;
  minLrRatio?: number;
  clip?: number | null;
  weightDecay?: number;
  /** Save a checkpoint every N optimizer steps into checkpointDir (0: only at the end). */
  checkpointEvery?: number;
  checkpointDir: string;
  resume?: boolean;
  /** Identifies the run: a resume with other options is refused. */
  runKey: string;
  onProgress?: ProgressFn;
}

export interface LoopResult {
  steps: number;
  /** Mean training loss over the last 10% of steps (at least one). */
  finalLoss: number;
  losses: number[];
  seconds: number;
  tokensPerSecond: number;
  resumedFrom: number;
}

const STATE = 'train-state.safetensors';
const META = 'train-state.json';

function f32(x: ArrayLike<number>): Uint8Array {
  const a = Float32Array.from(x);
  return new Uint8Array(a.buffer);
}

function save(dir: string, params: Var[], opt: AdamW, step: number, losses: number[], runKey: string): void {
  const tensors = new Map<string, RawTensor>();
  params.forEach((p, i) => tensors.set(`param.${i}`, { dtype: 'F32', shape: [p.size], data: f32(p.data) }));
  for (const s of opt.exportState()) {
    tensors.set(`adam.m.${s.index}`, { dtype: 'F32', shape: [s.m.length], data: f32(s.m) });
    tensors.set(`adam.v.${s.index}`, { dtype: 'F32', shape: [s.v.length], data: f32(s.v) });
  }
  const steps = Object.fromEntries(opt.exportState().map((s) => [s.index, s.step]));
  writeSafetensors(join(dir, `${STATE}.tmp`), tensors);
  writeFileSync(join(dir, `${META}.tmp`), JSON.stringify({ step, losses, runKey, adamSteps: steps, names: params.map((p) => p.name) }));
  // the tensors first, then the metadata that points at them: a crash between leaves the old pair readable
  renameSync(join(dir, `${STATE}.tmp`), join(dir, STATE));
  renameSync(join(dir, `${META}.tmp`), join(dir, META));
}

function load(dir: string, params: Var[], opt: AdamW, runKey: string): { step: number; losses: number[] } | null {
  const metaFile = join(dir, META);
  if (!existsSync(metaFile)) return null;
  const meta = JSON.parse(readFileSync(metaFile, 'utf8'));
  if (meta.runKey !== runKey) throw new MoepressError('--resume: the interrupted run used different options', { file: metaFile });
  const f = SafetensorsFile.open(join(dir, STATE));
  const read = (n: string) => {
    const t = f.read(n);
    return new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
  };
  params.forEach((p, i) => p.data.set(read(`param.${i}`)));
  opt.importState(Object.entries(meta.adamSteps as Record<string, number>).map(([i, step]) => ({ index: Number(i), m: read(`adam.m.${i}`), v: read(`adam.v.${i}`), step })));
  f.close();
  return { step: meta.step, losses: meta.losses };
}

/** lossFn builds one micro-batch's scalar loss. Parameters are updated in place. */
export async function trainLoop(params: Var[], sampler: WindowSampler, lossFn: (tape: Tape, batch: Batch) => Promise<Var>, o: LoopOptions): Promise<LoopResult> {
  const accumulate = o.accumulate ?? 1;
  const opt = new AdamW(params, { lr: o.lr, weightDecay: o.weightDecay ?? 0.01 });
  const trainer = new Trainer(opt, {
    accumulate,
    clip: o.clip === undefined ? 1.0 : o.clip,
    schedule: warmupCosine({ peak: o.lr, warmup: o.warmup ?? Math.min(10, Math.floor(o.steps / 10)), total: o.steps, floor: o.lr * (o.minLrRatio ?? 0.1) }),
  });
  mkdirSync(o.checkpointDir, { recursive: true });
  let losses: number[] = [];
  let start = 0;
  if (o.resume) {
    const r = load(o.checkpointDir, params, opt, o.runKey);
    if (r) {
      start = r.step;
      losses = r.losses;
      trainer.step = start;
      for (let i = 0; i < start * accumulate; i++) sampler.next(o.batch); // replay the data stream
    }
  }
  const t0 = performance.now();
  let tokens = 0;
  const every = o.checkpointEvery ?? 0;
  for (let step = start; step < o.steps; step++) {
    let sum = 0;
    for (let m = 0; m < accumulate; m++) {
      const batch = sampler.next(o.batch);
      const r = await trainer.microStep((tape) => lossFn(tape, batch));
      sum += r.loss;
      tokens += batch.B * batch.S;
    }
    losses.push(sum / accumulate);
    const secs = (performance.now() - t0) / 1000;
    o.onProgress?.({ task: 'train', done: step + 1, total: o.steps, unit: 'steps', detail: `loss ${losses[losses.length - 1].toFixed(4)}, ${(tokens / secs).toFixed(0)} tokens/s` });
    if (every > 0 && (step + 1) % every === 0 && step + 1 < o.steps) save(o.checkpointDir, params, opt, step + 1, losses, o.runKey);
  }
  const seconds = (performance.now() - t0) / 1000;
  const tail = losses.slice(-Math.max(1, Math.floor(losses.length / 10)));
  return { steps: o.steps, finalLoss: tail.reduce((a, b) => a + b, 0) / tail.length, losses, seconds, tokensPerSecond: tokens / Math.max(seconds, 1e-9), resumedFrom: start };
}

/**
 * Where a training step's time goes: tokens/s of forward + backward + AdamW, the share spent in
 * GEMM calls (kernels.ts gemmStats), and per-op forward/backward times (Tape profile).
 * benchTraining runs it on a model directory (`moepress bench`).
 */
import { basename } from 'node:path';
import { loadModel } from '../runtime/load-model.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Rng } from '../tensor/random.js';
import { gemmStats, resetGemmStats } from './kernels.js';
import { TrainableModel } from './model.js';
import { AdamW } from './optim.js';
import { Tape, type OpProfile } from './tape.js';
import { WindowSampler, type Batch } from './data.js';

export interface OpTime {
  op: string;
  calls: number;
  fwdMs: number;
  bwdMs: number;
  /** Of fwdMs + bwdMs, the time inside GEMM calls. */
  gemmMs: number;
}

export interface TrainStepBench {
  steps: number;
  tokensPerStep: number;
  msPerStep: number;
  tokensPerSecond: number;
  forwardMs: number; // per step
  backwardMs: number;
  optimizerMs: number;
  gemmMs: number; // per step
  gemmShare: number; // gemmMs / msPerStep
  gemmCalls: number; // per step
  /** Achieved GEMM rate, 2 flops per multiply-add. */
  gemmGflops: number;
  /** Per op, per step, largest first. */
  ops: OpTime[];
}

/**
 * Runs `warmup` untimed then `steps` timed training steps (loss, backward, AdamW) on batches from
 * `next`. Profiling adds two clock reads per op (negligible at these sizes).
 */
export async function benchTrainStep(model: TrainableModel, opt: AdamW, next: () => Batch, opts: { steps?: number; warmup?: number; auxCoef?: number } = {}): Promise<TrainStepBench> {
  const steps = opts.steps ?? 3;
  const one = async (profile: boolean) => {
    const batch = next();
    const tape = new Tape({ profile });
    const t0 = performance.now();
    tape.mark();
    const { loss } = await model.loss(tape, batch, { auxCoef: opts.auxCoef });
    const t1 = performance.now();
    await tape.backward(loss);
    const t2 = performance.now();
    opt.step();
    opt.zeroGrad();
    const t3 = performance.now();
    return { fwd: t1 - t0, bwd: t2 - t1, opt: t3 - t2, tokens: batch.B * batch.S, profile: tape.profile! };
  };
  for (let i = 0; i < (opts.warmup ?? 1); i++) await one(false);
  resetGemmStats();
  let fwd = 0, bwd = 0, optMs = 0, tokens = 0;
  const ops = new Map<string, OpTime>();
  for (let i = 0; i < steps; i++) {
    const r = await one(true);
    fwd += r.fwd;
    bwd += r.bwd;
    optMs += r.opt;
    tokens = r.tokens;
    merge(ops, r.profile);
  }
  const ms = (fwd + bwd + optMs) / steps;
  return {
    steps,
    tokensPerStep: tokens,
    msPerStep: ms,
    tokensPerSecond: tokens / (ms / 1000),
    forwardMs: fwd / steps,
    backwardMs: bwd / steps,
    optimizerMs: optMs / steps,
    gemmMs: gemmStats.ms / steps,
    gemmShare: gemmStats.ms / steps / ms,
    gemmCalls: gemmStats.calls / steps,
    gemmGflops: (2 * gemmStats.macs) / (gemmStats.ms / 1000) / 1e9,
    ops: [...ops.values()].map((o) => ({ ...o, calls: o.calls / steps, fwdMs: o.fwdMs / steps, bwdMs: o.bwdMs / steps, gemmMs: o.gemmMs / steps })).sort((a, b) => b.fwdMs + b.bwdMs - a.fwdMs - a.bwdMs),
  };
}

function merge(into: Map<string, OpTime>, p: OpProfile): void {
  for (const [op, e] of p) {
    const o = into.get(op) ?? { op, calls: 0, fwdMs: 0, bwdMs: 0, gemmMs: 0 };
    o.calls += e.calls;
    o.fwdMs += e.fwdMs;
    o.bwdMs += e.bwdMs;
    o.gemmMs += e.fwdGemmMs + e.bwdGemmMs;
    into.set(op, o);
  }
}

export interface TrainingBenchOptions {
  /** Text to train on, tokenized with the model's tokenizer.json; default seeded random token ids. */
  text?: string;
  /** Windows per step (default 8) and window length (default 256), as finetune and upcycle. */
  batch?: number;
  seq?: number;
  /** Timed steps (default 3) after `warmup` untimed ones (default 1). */
  steps?: number;
  warmup?: number;
  seed?: number;
}

export interface TrainingBench extends TrainStepBench {
  /** The model directory's name. */
  fixture: string;
  batch: number;
  seq: number;
}

/**
 * Training speed of the model in `dir`: full steps (forward, backward, AdamW) with every tensor
 * trainable, in float32, on random windows. GEMM share = time inside GEMM calls / step time.
 */
export async function benchTraining(dir: string, o: TrainingBenchOptions = {}): Promise<TrainingBench> {
  const batch = o.batch ?? 8;
  const seq = o.seq ?? 256;
  const seed = o.seed ?? 0;
  const m = loadModel(dir);
  const V = m.config.vocabSize;
  const tokens = o.text !== undefined
    ? Int32Array.from(loadTokenizer(dir).encode(o.text))
    : (() => {
        const r = new Rng(seed);
        return Int32Array.from({ length: batch * seq + 1 }, () => r.int(V));
      })();
  const sampler = new WindowSampler(tokens, seq, seed, o.text !== undefined ? 'text' : 'random tokens');
  const model = new TrainableModel(m.config, m.weights);
  m.checkpoint.close();
  const opt = new AdamW(model.parameters(), { lr: 1e-5 });
  const r = await benchTrainStep(model, opt, () => sampler.next(batch), { steps: o.steps, warmup: o.warmup });
  return { fixture: basename(dir), batch, seq, ...r };
}

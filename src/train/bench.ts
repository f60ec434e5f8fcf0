/**
 * Where a training step's time goes: tokens/s of forward + backward + AdamW, the share spent in
 * GEMM calls (kernels.ts gemmStats), and per-op forward/backward times (Tape profile).
 */
import { gemmStats, resetGemmStats } from './kernels.js';
import type { TrainableModel } from './model.js';
import type { AdamW } from './optim.js';
import { Tape, type OpProfile } from './tape.js';
import type { Batch } from './data.js';

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

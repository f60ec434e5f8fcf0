/**
 * Optimisation: AdamW exactly as torch.optim.AdamW updates (decoupled weight decay, bias
 * correction), the warm-up + cosine learning-rate schedule, global-norm gradient clipping as
 * torch.nn.utils.clip_grad_norm_, and a Trainer that accumulates micro-batches.
 */
import { allocBuf, Tape, type Buf, type Var } from './tape.js';

export interface AdamWOptions {
  lr: number;
  beta1?: number; // default 0.9
  beta2?: number; // default 0.999
  eps?: number; // default 1e-8
  /** Decoupled decay: p ← p·(1 − lr·wd) before the Adam update. Default 0.01 (torch's). */
  weightDecay?: number;
  /** Which parameters decay. Default: matrices only (shape rank ≥ 2), so norms and biases do not. */
  decay?: (p: Var) => boolean;
}

/** Matrices decay; vectors (norm weights, biases) do not. */
export const decayMatrices = (p: Var): boolean => p.shape.length >= 2;

interface Moments {
  m: Buf;
  v: Buf;
  step: number;
}

export class AdamW {
  lr: number;
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly wd: number;
  private readonly decay: (p: Var) => boolean;
  private readonly state = new Map<Var, Moments>();

  constructor(readonly params: Var[], opts: AdamWOptions) {
    for (const p of params) if (!p.requiresGrad) throw new Error(`AdamW: parameter ${p.name} does not require a gradient`);
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.wd = opts.weightDecay ?? 0.01;
    this.decay = opts.decay ?? decayMatrices;
  }

  /** One update of every parameter that has a gradient (torch skips those without one too). */
  step(lr = this.lr): void {
    const { beta1: b1, beta2: b2, eps } = this;
    for (const p of this.params) {
      const g = p.grad;
      if (g === null) continue;
      let s = this.state.get(p);
      if (!s) this.state.set(p, (s = { m: allocBuf(p.dtype, p.size), v: allocBuf(p.dtype, p.size), step: 0 }));
      s.step++;
      const bc1 = 1 - b1 ** s.step;
      const sqrtBc2 = Math.sqrt(1 - b2 ** s.step);
      const keep = this.decay(p) ? 1 - lr * this.wd : 1;
      const x = p.data;
      const { m, v } = s;
      for (let i = 0; i < x.length; i++) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        x[i] = x[i] * keep - (lr / bc1) * (m[i] / (Math.sqrt(v[i]) / sqrtBc2 + eps));
      }
    }
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }

  /** Moments and step count per parameter index, for training checkpoints. */
  exportState(): { index: number; m: Buf; v: Buf; step: number }[] {
    return this.params.flatMap((p, index) => {
      const s = this.state.get(p);
      return s ? [{ index, m: s.m, v: s.v, step: s.step }] : [];
    });
  }

  importState(entries: { index: number; m: ArrayLike<number>; v: ArrayLike<number>; step: number }[]): void {
    for (const e of entries) {
      const p = this.params[e.index];
      if (!p || p.size !== e.m.length) throw new Error(`AdamW: saved state for parameter ${e.index} does not match the model`);
      const m = allocBuf(p.dtype, p.size);
      const v = allocBuf(p.dtype, p.size);
      m.set(e.m);
      v.set(e.v);
      this.state.set(p, { m, v, step: e.step });
    }
  }
}

export interface ScheduleOptions {
  peak: number;
  /** Optimizer steps of linear warm-up from 0 to peak. */
  warmup: number;
  /** Step at which the cosine reaches the floor (and stays). */
  total: number;
  /** Final learning rate; default 0. */
  floor?: number;
}

/**
 * lr(step) for step = optimizer steps already taken (0 first): peak·step/warmup during warm-up
 * (transformers' get_cosine_schedule_with_warmup), then floor + (peak − floor)·(1 + cos(π·progress))/2.
 */
export function warmupCosine(o: ScheduleOptions): (step: number) => number {
  const floor = o.floor ?? 0;
  if (!(o.total > o.warmup && o.warmup >= 0)) throw new Error(`warmupCosine: total ${o.total} must exceed warmup ${o.warmup}`);
  return (step) => {
    if (step < o.warmup) return (o.peak * step) / o.warmup;
    const progress = Math.min(1, (step - o.warmup) / (o.total - o.warmup));
    return floor + ((o.peak - floor) * (1 + Math.cos(Math.PI * progress))) / 2;
  };
}

/**
 * Scale all gradients together so their global L2 norm is at most maxNorm; returns the norm before
 * clipping. As torch: coef = maxNorm / (norm + 1e-6), applied only when below 1.
 */
export function clipGradNorm(params: Var[], maxNorm: number): number {
  let ss = 0;
  for (const p of params) if (p.grad) for (let i = 0; i < p.grad.length; i++) ss += p.grad[i] * p.grad[i];
  const norm = Math.sqrt(ss);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const p of params) if (p.grad) for (let i = 0; i < p.grad.length; i++) p.grad[i] *= coef;
  return norm;
}

export interface TrainerOptions {
  /** Micro-batches per optimizer step; each contributes 1/N of the gradient. Default 1. */
  accumulate?: number;
  /** Clip the global gradient norm to this before each step; null: no clipping. */
  clip?: number | null;
  /** Learning rate per optimizer step; default: the optimizer's fixed lr. */
  schedule?: (step: number) => number;
  /** Tape precision; default 'f32'. */
  dtype?: 'f32' | 'f64';
}

export interface MicroStepResult {
  /** This micro-batch's loss (before the 1/N scaling). */
  loss: number;
  /** Whether this call ended an accumulation cycle and updated the parameters. */
  stepped: boolean;
  lr?: number;
  gradNorm?: number;
}

/** Runs micro-batches, accumulates their gradients, and steps the optimizer every N of them. */
export class Trainer {
  /** Optimizer steps taken. */
  step = 0;
  private micro = 0;
  private readonly n: number;

  constructor(readonly opt: AdamW, private readonly opts: TrainerOptions = {}) {
    this.n = opts.accumulate ?? 1;
    if (!(Number.isInteger(this.n) && this.n >= 1)) throw new Error(`Trainer: accumulate must be a positive integer, got ${this.n}`);
  }

  /** lossFn builds one micro-batch's scalar loss on the tape it is given. */
  async microStep(lossFn: (tape: Tape) => Promise<Var>): Promise<MicroStepResult> {
    const tape = new Tape({ dtype: this.opts.dtype ?? 'f32' });
    const loss = await lossFn(tape);
    const value = loss.item();
    if (!Number.isFinite(value)) throw new Error(`Trainer: loss is ${value} at step ${this.step}; lower the learning rate or clip gradients`);
    // Seeding 1/N makes the accumulated gradient the mean over the N micro-batches.
    await tape.backward(loss, 1 / this.n);
    if (++this.micro % this.n !== 0) return { loss: value, stepped: false };
    const params = this.opt.params;
    const gradNorm = this.opts.clip != null ? clipGradNorm(params, this.opts.clip) : undefined;
    if (gradNorm !== undefined && !Number.isFinite(gradNorm)) throw new Error(`Trainer: gradient norm is ${gradNorm} at step ${this.step}`);
    const lr = this.opts.schedule ? this.opts.schedule(this.step) : this.opt.lr;
    this.opt.step(lr);
    this.opt.zeroGrad();
    this.step++;
    return { loss: value, stepped: true, lr, gradNorm };
  }
}

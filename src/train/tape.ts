/**
 * The reverse-mode core: a Var (a tensor that may carry a gradient) and a Tape that records the
 * backward closure of every op in the order they ran and replays them in reverse.
 *
 * Precision: a tape is 'f32' (Float32Array storage, GEMMs through onnxruntime: training) or 'f64'
 * (Float64Array storage, float64 naive GEMMs: the finite-difference checks, where float32 rounding
 * would drown the comparison). Ops are written once over `Buf` and take their products from
 * `tape.kernels`, so both precisions run the same op code.
 *
 * Ownership: a Var's data is never written after the op that made it returns (views share it).
 * Gradients accumulate (+=) into `grad`, so a parameter used twice (tied embeddings) or over
 * several micro-batches sums its contributions until the optimizer clears it.
 */
import { gemmStats, kernelsFor, type Kernels } from './kernels.js';

export type Buf = Float32Array | Float64Array;
export type DType = 'f32' | 'f64';

export function allocBuf(dtype: DType, n: number): Buf {
  return dtype === 'f64' ? new Float64Array(n) : new Float32Array(n);
}

export function dtypeOf(b: Buf): DType {
  return b instanceof Float64Array ? 'f64' : 'f32';
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export class Var {
  grad: Buf | null = null;
  /** True when a gradient must flow into this Var: a trainable parameter or computed from one. */
  needsGrad: boolean;
  constructor(
    readonly data: Buf,
    readonly shape: readonly number[],
    /** Trainable parameter: keeps its grad across tapes until the optimizer clears it. */
    readonly requiresGrad = false,
    /** Canonical or descriptive name (the optimizer's weight-decay predicate reads it). */
    readonly name = '',
  ) {
    if (data.length !== numel(shape)) throw new Error(`Var ${name || ''}: shape [${shape}] needs ${numel(shape)} values, got ${data.length}`);
    this.needsGrad = requiresGrad;
  }
  get size(): number {
    return this.data.length;
  }
  get dtype(): DType {
    return dtypeOf(this.data);
  }
  /** The single value of a scalar Var (a loss). */
  item(): number {
    if (this.data.length !== 1) throw new Error(`item: Var of shape [${this.shape}] is not a scalar`);
    return this.data[0];
  }
}

/** A trainable parameter. data is kept (not copied): the optimizer updates it in place. */
export function param(data: Buf, shape: readonly number[], name = ''): Var {
  return new Var(data, shape, true, name);
}

/** A value no gradient flows into (inputs, fixed tensors). */
export function constant(data: Buf, shape: readonly number[], name = ''): Var {
  return new Var(data, shape, false, name);
}

/**
 * Add g into v.grad. `owned` says g is a fresh array nobody else holds, so the first contribution
 * can be adopted without a copy (most op gradients are).
 */
export function accumulate(v: Var, g: Buf, owned = false): void {
  if (!v.needsGrad) return;
  if (g.length !== v.data.length) throw new Error(`accumulate: gradient has ${g.length} values for Var [${v.shape}]`);
  if (v.grad === null) {
    if (owned && dtypeOf(g) === v.dtype) {
      v.grad = g;
      return;
    }
    v.grad = allocBuf(v.dtype, v.data.length);
  }
  const d = v.grad;
  for (let i = 0; i < d.length; i++) d[i] += g[i];
}

/** v.grad, allocated as zeros if absent (for ops that scatter into part of it). */
export function gradOf(v: Var): Buf {
  if (v.grad === null) v.grad = allocBuf(v.dtype, v.data.length);
  return v.grad;
}

type Backward = () => void | Promise<void>;

export interface TapeOptions {
  dtype?: DType;
  /** false: record nothing (evaluation, finite differences); ops still compute forward. */
  grad?: boolean;
  /** Collect per-op time (see OpProfile). */
  profile?: boolean;
}

/**
 * Time per op name, forward and backward, and the part of it spent in GEMM calls. An op's forward
 * time is the wall time since the previous op was recorded (ops compute, then record), so glue code
 * between ops (the model's own loops) is charged to the next op.
 */
export type OpProfile = Map<string, { calls: number; fwdMs: number; bwdMs: number; fwdGemmMs: number; bwdGemmMs: number }>;

export class Tape {
  readonly dtype: DType;
  readonly recording: boolean;
  readonly kernels: Kernels;
  readonly profile: OpProfile | null;
  private nodes: { op: string; out: Var; back: Backward }[] = [];
  private lastMark = { t: performance.now(), gemm: gemmStats.ms };

  constructor(opts: TapeOptions = {}) {
    this.dtype = opts.dtype ?? 'f32';
    this.recording = opts.grad ?? true;
    this.kernels = kernelsFor(this.dtype);
    this.profile = opts.profile ? new Map() : null;
  }

  private entry(op: string) {
    let e = this.profile!.get(op);
    if (!e) this.profile!.set(op, (e = { calls: 0, fwdMs: 0, bwdMs: 0, fwdGemmMs: 0, bwdGemmMs: 0 }));
    return e;
  }

  /** Start timing from now (call before the first op when profiling). */
  mark(): void {
    this.lastMark = { t: performance.now(), gemm: gemmStats.ms };
  }

  alloc(n: number): Buf {
    return allocBuf(this.dtype, n);
  }

  /** Refuse a Var of the other precision: mixing would silently round or widen. */
  check(op: string, ...vs: Var[]): void {
    for (const v of vs) {
      if (v.dtype !== this.dtype) throw new Error(`${op}: ${v.name || 'input'} is ${v.dtype} on a ${this.dtype} tape`);
    }
  }

  /** Record op's `back` (which reads out.grad) when a gradient must reach any of `inputs`. */
  record(op: string, out: Var, inputs: Var[], back: Backward): Var {
    if (this.profile) {
      const e = this.entry(op);
      const now = performance.now();
      e.calls++;
      e.fwdMs += now - this.lastMark.t;
      e.fwdGemmMs += gemmStats.ms - this.lastMark.gemm;
      this.lastMark = { t: now, gemm: gemmStats.ms };
    }
    if (!this.recording || !inputs.some((v) => v.needsGrad)) return out;
    out.needsGrad = true;
    this.nodes.push({ op, out, back });
    return out;
  }

  /** Ops recorded so far. */
  get length(): number {
    return this.nodes.length;
  }

  /**
   * loss: a scalar Var. Seeds d loss = seed (1/N to average N accumulated micro-batches) and runs
   * every recorded backward in reverse. The tape is spent afterwards: its nodes are dropped so
   * intermediate activations and gradients can be collected.
   */
  async backward(loss: Var, seed = 1): Promise<void> {
    if (!this.recording) throw new Error('backward: this tape was made with grad: false and recorded nothing');
    if (loss.size !== 1) throw new Error(`backward: loss must be a scalar, got shape [${loss.shape}]`);
    if (!loss.needsGrad) throw new Error('backward: the loss does not depend on any parameter that requires a gradient');
    loss.grad = this.alloc(1);
    loss.grad[0] = seed;
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const { op, out, back } = this.nodes[i];
      if (out.grad === null) continue; // nothing downstream used it
      if (this.profile) {
        const t0 = performance.now();
        const g0 = gemmStats.ms;
        await back();
        const e = this.entry(op);
        e.bwdMs += performance.now() - t0;
        e.bwdGemmMs += gemmStats.ms - g0;
      } else await back();
      // Intermediate grads are dead once propagated; parameters keep theirs.
      if (!out.requiresGrad) out.grad = null;
    }
    this.nodes = [];
  }
}

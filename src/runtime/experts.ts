/**
 * Expert banks: how the MoE block runs one routed expert on the tokens sent to it. The dense bank
 * reads stacked canonical weights; compressed formats provide their own banks with the same interface.
 */
import type { MoeConfig } from '../models/canonical.js';
import { swiglu, swigluOai } from '../tensor/activation.js';
import { swigluFfn } from '../tensor/ffn-ort.js';
import { linear } from '../tensor/gemm.js';
import type { CompressedExpertsLayer } from './compressed-experts.js';

/**
 * Per-row scaling of one expert call (METHODS.md Family 3): c0, c2: [n, H] multiply the input
 * before the gate and the up projection respectively, c1: [n, I] the intermediate before down:
 * y = down((act(gate(x ⊙ c0), up(x ⊙ c2))) ⊙ c1).
 */
export interface ExpertScaling {
  c0: Float32Array;
  c1: Float32Array;
  c2: Float32Array;
}

export interface ExpertBank {
  readonly count: number; // E
  /** x: [n, H] -> [n, H], expert e's output for n tokens, optionally scaled per row. */
  run(e: number, x: Float32Array, n: number, scaling?: ExpertScaling): Promise<Float32Array>;
  /** Bytes of expert weights this bank holds in memory. */
  readonly residentBytes: number;
  /** Compressed experts of this layer (METHODS.md Family 3): moe-block.ts then routes through them. */
  readonly compressedExperts?: CompressedExpertsLayer;
  /** True when the experts are read on demand into an expert cache (cached-banks.ts), not held. */
  readonly offloaded?: boolean;
}

/** x ⊙ c elementwise (both [n, N]) into a new array: the bank's input is never written. */
export function scaleRows(x: Float32Array, c: Float32Array): Float32Array {
  if (x.length !== c.length) throw new Error(`scaleRows: ${x.length} values scaled by ${c.length}`);
  const y = new Float32Array(x.length);
  for (let i = 0; i < y.length; i++) y[i] = x[i] * c[i];
  return y;
}

/** a ⊙= c elementwise, in place (a is the bank's own intermediate). */
export function scaleInPlace(a: Float32Array, c: Float32Array): Float32Array {
  if (a.length !== c.length) throw new Error(`scaleInPlace: ${a.length} values scaled by ${c.length}`);
  for (let i = 0; i < a.length; i++) a[i] *= c[i];
  return a;
}

/** A SwiGLU FFN: y = down(act(gate x, up x)). gate/up: [F, H], down: [H, F]; biases optional. */
export interface FfnWeights {
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
  gateBias?: Float32Array;
  upBias?: Float32Array;
  downBias?: Float32Array;
  F: number;
  H: number;
}

/** The expert nonlinearity of a MoE config (plain SwiGLU for dense FFNs and shared experts). */
export type Activation = { kind: 'swiglu' } | { kind: 'swiglu-oai'; alpha: number; limit: number };

export const SWIGLU: Activation = { kind: 'swiglu' };

export function expertActivation(moe: MoeConfig): Activation {
  if (moe.activation === 'swiglu') return SWIGLU;
  return { kind: 'swiglu-oai', alpha: moe.oaiSwiglu?.alpha ?? 1.702, limit: moe.oaiSwiglu?.limit ?? 7 };
}

/** x: [n, H] -> [n, H]; with scaling, gate and up see differently scaled inputs (three calls). */
export async function ffnForward(f: FfnWeights, x: Float32Array, n: number, act: Activation, scaling?: ExpertScaling): Promise<Float32Array> {
  if (scaling) {
    const g = await linear(scaleRows(x, scaling.c0), f.gate, n, f.F, f.H, f.gateBias);
    const u = await linear(scaleRows(x, scaling.c2), f.up, n, f.F, f.H, f.upBias);
    if (act.kind === 'swiglu') swiglu(g, u, g);
    else swigluOai(g, u, g, act.alpha, act.limit);
    return linear(scaleInPlace(g, scaling.c1), f.down, n, f.H, f.F, f.downBias);
  }
  // Plain SwiGLU runs as one fused ORT graph; the clamped GPT-OSS variant keeps the three calls.
  if (act.kind === 'swiglu') return swigluFfn(x, f.gate, f.up, f.down, n, f.H, f.F, { gate: f.gateBias, up: f.upBias, down: f.downBias });
  const g = await linear(x, f.gate, n, f.F, f.H, f.gateBias);
  const u = await linear(x, f.up, n, f.F, f.H, f.upBias);
  swigluOai(g, u, g, act.alpha, act.limit);
  return linear(g, f.down, n, f.H, f.F, f.downBias);
}

/** Dense experts stacked [E, I, H] (gate, up) and [E, H, I] (down); per-expert views, no copies. */
export class DenseExpertBank implements ExpertBank {
  readonly residentBytes: number;
  constructor(
    readonly count: number,
    private readonly I: number,
    private readonly H: number,
    private readonly w: { gate: Float32Array; up: Float32Array; down: Float32Array; gateBias: Float32Array | null; upBias: Float32Array | null; downBias: Float32Array | null },
    private readonly act: Activation,
  ) {
    this.residentBytes = 4 * (w.gate.length + w.up.length + w.down.length + (w.gateBias?.length ?? 0) + (w.upBias?.length ?? 0) + (w.downBias?.length ?? 0));
  }
  expert(e: number): FfnWeights {
    const { I, H, w } = this;
    const m = I * H;
    return {
      gate: w.gate.subarray(e * m, (e + 1) * m),
      up: w.up.subarray(e * m, (e + 1) * m),
      down: w.down.subarray(e * m, (e + 1) * m),
      gateBias: w.gateBias?.subarray(e * I, (e + 1) * I),
      upBias: w.upBias?.subarray(e * I, (e + 1) * I),
      downBias: w.downBias?.subarray(e * H, (e + 1) * H),
      F: I,
      H,
    };
  }
  run(e: number, x: Float32Array, n: number, scaling?: ExpertScaling): Promise<Float32Array> {
    return ffnForward(this.expert(e), x, n, this.act, scaling);
  }
}

/**
 * An expert bank that holds one routed expert at a time, read by position from the checkpoint
 * (compress/experts-io.ts ExpertSource) when the MoE block first asks for it. Run expert-outer
 * (stream-forward.ts) every expert of a layer is read exactly once; its float32 weights go into
 * one set of buffers reused for the whole layer (and across layers when the caller passes them), so the bank's resident size is one expert:
 * 3·I·H·4 bytes (704 MB for Mixtral-8x7B) instead of the layer's E times that.
 */
import { expertBuffers, readExpert, type ExpertSource } from '../compress/experts-io.js';
import type { ExpertWeights } from '../compress/barycenter.js';
import { ffnForward, type Activation, type ExpertBank, type ExpertScaling, type FfnWeights } from './experts.js';

/** Canonical expert biases of the layer (GPT-OSS): gate/up [E, I], down [E, H]; null when absent. */
export interface ExpertBiases {
  gate: Float32Array | null;
  up: Float32Array | null;
  down: Float32Array | null;
}

/** Expert e's float32 matrices with its slices of the layer's biases, as ffnForward takes them. */
export function expertFfn(w: ExpertWeights, b: ExpertBiases, e: number, I: number, H: number): FfnWeights {
  return {
    gate: w.gate, up: w.up, down: w.down, F: I, H,
    gateBias: b.gate?.subarray(e * I, (e + 1) * I),
    upBias: b.up?.subarray(e * I, (e + 1) * I),
    downBias: b.down?.subarray(e * H, (e + 1) * H),
  };
}

export class StreamedExpertBank implements ExpertBank {
  readonly count: number;
  readonly residentBytes: number;
  /** Experts read from disk so far (each read replaces the resident one). */
  reads = 0;
  private current = -1;
  private readonly buffers: ExpertWeights;

  /** buffers: one expert's float32 matrices, passed in to reuse them across layers (stream-forward.ts does). */
  constructor(private readonly source: ExpertSource, private readonly biases: ExpertBiases, private readonly act: Activation, buffers?: ExpertWeights) {
    this.count = source.E;
    this.buffers = buffers ?? expertBuffers(source);
    const b = biases;
    this.residentBytes = 4 * (3 * source.I * source.H + (b.gate?.length ?? 0) + (b.up?.length ?? 0) + (b.down?.length ?? 0));
  }

  /** x: [n, H] -> [n, H]; reads expert e first unless it is the resident one. */
  run(e: number, x: Float32Array, n: number, scaling?: ExpertScaling): Promise<Float32Array> {
    const { I, H } = this.source;
    if (e !== this.current) {
      readExpert(this.source, e, this.buffers);
      this.current = e;
      this.reads++;
    }
    return ffnForward(expertFfn(this.buffers, this.biases, e, I, H), x, n, this.act, scaling);
  }

  close(): void {
    this.source.close();
  }
}

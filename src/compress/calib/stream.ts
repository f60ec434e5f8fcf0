/**
 * Calibration one layer at a time (issue 6: bounded memory; llm-compressor's sequential pipeline):
 * the hidden states of every calibration window, x: [W·S, H] float32, stay resident, and the
 * model's weights go through them layer by layer, as streaming eval does (runtime/stream-forward.ts):
 *
 *   const s = CalibrationStream.start(src, ids, opts)   embeds the seeded windows
 *   for each layer l:
 *     await s.attention(l)             reads layer l's non-expert weights, runs its attention
 *     const lc = await s.collect(l)    statistics of its routed experts (calib/types.ts), experts read one at a time
 *     await s.ffn(l, bank?)            its FFN half: the original experts, or `bank` (the layer as compressed)
 *   or, for that loop over the layers 0 .. max(layers):
 *     await s.walk(layers, visit)      visit(l) between attention(l) and ffn(l, its result) for l in layers
 *
 * Peak memory: x, one layer's non-expert weights, one expert, and one layer's statistics
 * (E·H² float64 + Σ aaᵀ), never the model. With `bank` set to each compressed layer, the next
 * layer is calibrated on the inputs the compressed model will really see (`sequential` mode, as
 * GPTQ does); without, on the original model's (`original` mode, equal to collectCalibration over a
 * loaded model: test/calib-stream.test.ts).
 */
import { MoepressError } from '../../io/errors.js';
import type { CanonicalEntry } from '../../models/canonical.js';
import type { ProgressFn } from '../../progress.js';
import { ropeTables, type RopeTables } from '../../tensor/rope.js';
import { expertBuffers, isExpertWeight, openExpertSource, readExpert } from '../experts-io.js';
import { expertActivation, type ExpertBank } from '../../runtime/experts.js';
import { modelEntries, type ModelSource } from '../../runtime/load-model.js';
import { gatherRows, planMoe } from '../../runtime/moe-block.js';
import { windowTokens } from '../../runtime/perplexity.js';
import { loadWeights, moeResidualAll, type Batch } from '../../runtime/stream-forward.js';
import { StreamedExpertBank } from '../../runtime/streamed-bank.js';
import { attentionResidual, embedTokens, ffnResidual, normRows } from '../../runtime/transformer.js';
import type { Weights } from '../../runtime/weights.js';
import type { Routes } from '../../tensor/router.js';
import { accumulateExpert, CALIB_WINDOWS, calibrationWindows, emptyExpert, routedRows } from './collect.js';
import type { LayerCalib } from './types.js';

export interface StreamOptions {
  windows?: number;
  windowSize?: number;
  seed?: number;
  /** Keep the full Σ a aᵀ of down's input only up to this I (default 4096); above, its diagonal. */
  maxFullI?: number;
  /** Windows per attention call (default 4, as collectCalibration). */
  batch?: number;
  onProgress?: ProgressFn;
}

export class CalibrationStream {
  readonly windows: number;
  readonly windowSize: number;
  readonly seed: number;
  private readonly maxFullI: number;
  private readonly batches: Batch[];
  private readonly entries: CanonicalEntry[];
  private readonly rope: RopeTables;
  /** The layer whose attention has run, and its non-expert weights; -1 before the first. */
  private layer = -1;
  private w: Weights | null = null;
  /** Layers whose FFN half has run. */
  private done = -1;

  private constructor(private readonly src: ModelSource, private readonly x: Float32Array, opts: Required<Omit<StreamOptions, 'onProgress'>>, batches: Batch[]) {
    this.windows = opts.windows;
    this.windowSize = opts.windowSize;
    this.seed = opts.seed;
    this.maxFullI = opts.maxFullI;
    this.batches = batches;
    this.entries = modelEntries(src, new Map()).filter((e) => !isExpertWeight(e.name) && e.layer !== null);
    this.rope = ropeTables(src.config.rope, src.config.maxPositions);
  }

  /** Embeds the seeded windows of `ids` (the calibration text's tokens). */
  static start(src: ModelSource, ids: ArrayLike<number>, opts: StreamOptions = {}): CalibrationStream {
    const cfg = src.config;
    if (!cfg.moe) throw new MoepressError(`model_type '${cfg.modelType}' has no routed experts to calibrate`);
    const full = { windows: opts.windows ?? CALIB_WINDOWS, windowSize: opts.windowSize ?? 256, seed: opts.seed ?? 0, maxFullI: opts.maxFullI ?? 4096, batch: opts.batch ?? 4 };
    const S = full.windowSize;
    const starts = calibrationWindows(ids.length, full.windows, S, full.seed);
    const tokens = new Int32Array(full.windows * S);
    starts.forEach((s0, w) => {
      for (let i = 0; i < S; i++) tokens[w * S + i] = ids[s0 + i];
    });
    const batches: Batch[] = [];
    for (let w0 = 0; w0 < full.windows; w0 += full.batch) batches.push({ w0, B: Math.min(full.batch, full.windows - w0) });
    const H = cfg.hidden;
    const x = new Float32Array(full.windows * S * H);
    const embed = loadWeights(src, modelEntries(src, new Map()).filter((e) => e.name === 'embed')).get('embed').data;
    for (const b of batches) x.set(embedTokens(cfg, embed, windowTokens(tokens, b.w0, b.B, S)), b.w0 * S * H);
    return new CalibrationStream(src, x, full, batches);
  }

  /** Bytes of the resident hidden states. */
  get residentBytes(): number {
    return this.x.byteLength;
  }

  private rows(b: Batch): Float32Array {
    const n = this.windowSize * this.src.config.hidden;
    return this.x.subarray(b.w0 * n, (b.w0 + b.B) * n);
  }

  /** Runs layer l's attention (layers before l must be finished with ffn()). */
  async attention(l: number): Promise<void> {
    if (l !== this.done + 1 || this.layer === l) throw new Error(`CalibrationStream: attention(${l}) called after layer ${this.done} finished and layer ${this.layer} started`);
    this.layer = l;
    this.w = loadWeights(this.src, this.entries.filter((e) => e.layer === l));
    for (const b of this.batches) await attentionResidual(this.src.config, this.w, l, this.rows(b), b.B, this.windowSize, this.rope, null);
  }

  private started(l: number, what: string): Weights {
    if (this.layer !== l || this.done === l || !this.w) throw new Error(`CalibrationStream: ${what}(${l}) needs attention(${l}) first`);
    return this.w;
  }

  /** Statistics of layer l's routed experts on the windows' current hidden states (after attention(l)). */
  async collect(l: number): Promise<LayerCalib> {
    const w = this.started(l, 'collect');
    const cfg = this.src.config;
    if (cfg.layers[l].ffn !== 'moe') throw new MoepressError(`layer ${l} has no routed experts to calibrate`);
    const { experts: E, intermediate: I } = cfg.moe!;
    const H = cfg.hidden;
    const S = this.windowSize;
    const lc: LayerCalib = { layer: l, E, I, H, tokens: 0, experts: Array.from({ length: E }, () => emptyExpert(H, I, I <= this.maxFullI)) };
    // route every batch as the MoE block will (top-K of the router on ffn_norm(x))
    const hs: Float32Array[] = [];
    const rows: Int32Array[][] = [];
    for (const b of this.batches) {
      const T = b.B * S;
      const h = normRows(cfg, w, `layers.${l}.ffn_norm`, this.rows(b), T);
      let routes: Routes | null = null;
      await planMoe(cfg, w, l, h, T, undefined, undefined, (_l, r) => (routes = r));
      hs.push(h);
      rows.push(routedRows(lc, routes!, T));
    }
    const source = openExpertSource(this.src, l);
    const act = expertActivation(cfg.moe!);
    const p = `layers.${l}.moe.experts`;
    const gateBias = w.opt(`${p}.gate_bias`);
    const upBias = w.opt(`${p}.up_bias`);
    try {
      const buf = expertBuffers(source);
      for (let e = 0; e < E; e++) {
        if (rows.every((r) => r[e].length === 0)) continue;
        const ew = readExpert(source, e, buf);
        const inp = { gate: ew.gate, up: ew.up, gateBias: gateBias?.subarray(e * I, (e + 1) * I), upBias: upBias?.subarray(e * I, (e + 1) * I) };
        for (let i = 0; i < hs.length; i++) await accumulateExpert(lc.experts[e], gatherRows(hs[i], rows[i][e], H), rows[i][e].length, inp, I, H, act);
      }
    } finally {
      source.close();
    }
    return lc;
  }

  /**
   * Layers 0 .. max(layers) in order: attention(l); for the layers in `layers`, visit(l), which may
   * collect(l) and returns the bank the FFN half runs through (the layer as compressed) or
   * undefined for the original experts; then ffn(l, bank).
   */
  async walk(layers: number[], visit: (l: number) => Promise<ExpertBank | undefined>): Promise<void> {
    const last = Math.max(...layers);
    for (let l = 0; l <= last; l++) {
      await this.attention(l);
      const bank = layers.includes(l) ? await visit(l) : undefined;
      await this.ffn(l, bank);
    }
  }

  /** Layer l's FFN half over every window: the original experts (read one at a time), or `bank`. Drops the layer's weights. */
  async ffn(l: number, bank?: ExpertBank): Promise<void> {
    const w = this.started(l, 'ffn');
    const cfg = this.src.config;
    const S = this.windowSize;
    if (cfg.layers[l].ffn !== 'moe') {
      for (const b of this.batches) await ffnResidual(cfg, w, l, this.rows(b), b.B * S, null);
    } else {
      const p = `layers.${l}.moe.experts`;
      const original = bank ? null : new StreamedExpertBank(openExpertSource(this.src, l), { gate: w.opt(`${p}.gate_bias`), up: w.opt(`${p}.up_bias`), down: w.opt(`${p}.down_bias`) }, expertActivation(cfg.moe!));
      try {
        await moeResidualAll(this.src, w, l, this.x, this.batches, S, bank ?? original!, {});
      } finally {
        original?.close();
      }
    }
    this.done = l;
    this.w = null;
  }
}

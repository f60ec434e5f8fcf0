/**
 * Before a long run: the peak memory and time compress should take, from the layer shapes, the
 * method and this machine's measured GEMM and disk rates. Returned as data; the CLI prints it.
 *
 * Memory model (bytes), per layer, with n = I·H (one matrix) and N = 3n (one expert), float32
 * unless said: the streaming methods hold, at their peak,
 *   barycenter iteration   barycenter 4N + float64 sum 8N + one expert cloud 4N
 *                          + sketches / candidate lists (small)                        = 16N
 *   residual pass          rounded barycenter 4N + expert 4N + residual 4N
 *   (resmoe-prune)         + |residual| copy for the selection 4N + one matrix rebuilt 8n
 *   delta pass (ders-*)    rounded base 4N + expert 4N + delta, rebuilt matrix 12n
 *   mean base              float64 sum of one matrix 8n + one matrix 4n + base so far 4N
 * plus the runtime (Node, onnxruntime) and garbage not yet collected, PROCESS_BYTES and
 * GC_SLACK. Measured on a Mixtral-8x7B layer (bench --scale, budget 0.25): resmoe-prune peaked
 * at 3.36 GiB (model 3.57), ders-quant at 2.05 GiB (model 2.38).
 *
 * Time model: alignment GEMMs at the measured rate (fast mode: FAST_GEMM_PASSES [I, d]·[d, I]
 * products per alignment with d = 256; exact: one [I, 3H]·[3H, I]) for at most alignIters
 * iterations (the iteration stops early when no assignment changes: random Mixtral-shaped
 * experts converged in 2), plus per-weight JavaScript work at rates measured on the 2-core dev
 * machine (JS_NS_PER_WEIGHT, ALIGN_NS_PER_WEIGHT), plus reading the layer's bf16 experts once
 * from disk and writing the stored bytes (spill, then the layer's file).
 */
import { DTYPE_BYTES } from '../io/dtype.js';
import { openModel } from '../runtime/load-model.js';
import { DEFAULT_SKETCH_DIM, EXACT_MAX_N } from './align/align.js';
import { expertHubNames } from './experts-io.js';
import type { BaseKind } from './method.js';

export interface EstimateShape {
  /** MoE layers to compress. */
  layers: number;
  E: number;
  I: number;
  H: number;
  /** Bytes per stored expert weight in the source (2 for bf16). */
  sourceBytes?: number;
}

export interface EstimateRates {
  /** GEMM throughput for the alignment's shapes, GFLOP/s. */
  gemmGflops: number;
  /** Sequential read and write rates of the disk, MB/s (1e6 bytes). */
  readMBps: number;
  writeMBps: number;
}

export interface EstimateOptions {
  budget: number;
  alignIters?: number;
  base?: BaseKind;
  /** With --calib: the calibration tokens (windows × window size), experts per token K, and the full-Σaaᵀ limit. */
  calib?: CalibrationShape;
}

export interface CalibrationShape {
  tokens: number;
  topK: number;
  maxFullI?: number;
  /** The model's layers (attention and FFN run over the tokens for each one up to the last compressed). */
  modelLayers: number;
}

/**
 * Calibration (calib/stream.ts), resident through each layer: the tokens' hidden states (x, its
 * normed copy, the FFN output), one layer's sums Σxxᵀ (and Σaaᵀ, or its diagonal) in float64, the
 * rows routed to one expert and its intermediates. Time: the layer's forward over the tokens
 * (attention ≈ 8H² and the routed experts 2·3·I·H per token and expert, twice: statistics and
 * FFN) and the Gram products, at the GEMM rate.
 */
export function calibrationCost(c: CalibrationShape, E: number, I: number, H: number): { workingSet: { what: string; bytes: number }[]; flopsPerLayer: number } {
  const full = I <= (c.maxFullI ?? 4096);
  const routed = c.tokens * c.topK;
  return {
    workingSet: [
      { what: 'calibration hidden states', bytes: 3 * 4 * c.tokens * H },
      { what: 'calibration sums (float64)', bytes: 8 * E * (H * H + (full ? I * I : I)) },
      { what: 'routed rows and intermediates', bytes: 4 * Math.ceil(routed / E) * (H + 2 * I) },
    ],
    flopsPerLayer: c.tokens * 2 * 8 * H * H + routed * (2 * 2 * 3 * I * H + 2 * H * H + (full ? 2 * I * I : 0)),
  };
}

export interface CompressEstimate {
  method: string;
  layers: number;
  E: number;
  I: number;
  H: number;
  /** Estimated peak resident memory of the process, and the working set it is made of. */
  peakBytes: number;
  workingSet: { what: string; bytes: number }[];
  /** Estimated seconds per layer and for every layer, and their parts (barycenter methods: with all alignIters iterations, an upper bound). */
  secondsPerLayer: number;
  seconds: number;
  parts: { gemmSeconds: number; jsSeconds: number; ioSeconds: number };
  /** Alignment and calibration FLOPs per layer (0 for methods without either). */
  gemmFlopsPerLayer: number;
  /** Bytes read from and written to disk per layer. */
  readBytesPerLayer: number;
  writeBytesPerLayer: number;
}

/** Node + onnxruntime + code, measured idle (RSS). */
export const PROCESS_BYTES = 200 * 2 ** 20;
/** Freed buffers the GC has not returned yet, and small buffers not modelled, as a fraction of the working set. */
export const GC_SLACK = 0.1;

/**
 * Nanoseconds per expert weight outside the alignment, on the 2-core dev machine: reading and
 * decoding, the method's selection or quantization, storing, and rebuilding each matrix for the
 * error measurement. Measured at I = 14336, H = 4096 (bench --scale): ders-quant 71 (1-bit
 * codec search), resmoe-prune 55 (top-k over the [I, 3H] residual); the others are rough
 * figures from their relative cost on small layers.
 */
export const JS_NS_PER_WEIGHT: Record<string, number> = {
  'ders-quant': 71,
  'ders-drop': 30,
  'ders-magnitude': 45,
  'resmoe-prune': 55,
  'resmoe-svd': 45,
  merge: 15,
  prune: 40,
  quant: 25,
  svd: 35,
};
/**
 * Alignment nanoseconds per expert weight per barycenter iteration besides the GEMMs (fast mode:
 * scans, exact candidate costs, the assignment, loading clouds, mean update). Measured: 141 s
 * per iteration at I = 14336, H = 4096, E = 8, of which ~70 s GEMM at 35 GFLOP/s.
 */
export const ALIGN_NS_PER_WEIGHT = 50;
/** [I, d]·[d, I] sketch products per fast alignment: the candidates plus ~2 certificate rounds (measured 2.9). */
export const FAST_GEMM_PASSES = 3;

function usesBarycenter(method: string, base: BaseKind | undefined): boolean {
  return method.startsWith('resmoe') || method === 'merge' || (method.startsWith('ders') && base === 'aligned');
}

/** Estimated peak memory and time of `compress` for this shape, method and machine. */
export function estimateCompress(shape: EstimateShape, method: string, opts: EstimateOptions, rates: EstimateRates): CompressEstimate {
  const { E, I, H, layers } = shape;
  const n = I * H;
  const N = 3 * n;
  const f32 = 4;
  const bary = usesBarycenter(method, opts.base);
  const ws: { what: string; bytes: number }[] = [];
  let phase: { what: string; bytes: number }[];
  if (bary) {
    phase = [
      { what: 'barycenter', bytes: f32 * N },
      { what: 'float64 sum of aligned experts', bytes: 8 * N },
      { what: 'one expert cloud', bytes: f32 * N },
    ];
    ws.push(...phase);
  }
  const residual = method === 'resmoe-prune'
    ? [{ what: 'rounded base', bytes: f32 * N }, { what: 'one expert', bytes: f32 * N }, { what: 'its residual', bytes: f32 * N }, { what: '|residual| for the top-k', bytes: f32 * N }, { what: 'one matrix rebuilt', bytes: 2 * f32 * n }]
    : method === 'resmoe-svd'
      ? [{ what: 'rounded base', bytes: f32 * N }, { what: 'one expert', bytes: f32 * N }, { what: 'residual + points', bytes: 2 * f32 * N }, { what: 'one matrix rebuilt', bytes: 2 * f32 * n }]
      : method.startsWith('ders') || method === 'merge' || method === 'd2-moe'
        ? [{ what: 'rounded base', bytes: f32 * N }, { what: 'one expert', bytes: f32 * N }, { what: 'delta + rebuilt matrix', bytes: 3 * f32 * n }]
        : [{ what: 'one expert', bytes: f32 * N }, { what: 'one matrix rebuilt + codec scratch', bytes: 3 * f32 * n }];
  const meanBase = !bary && ((method.startsWith('ders') && (opts.base ?? 'mean') === 'mean') || method === 'd2-moe')
    ? [{ what: 'float64 sum of one matrix', bytes: 8 * n }, { what: 'one matrix', bytes: f32 * n }, { what: 'base', bytes: f32 * N }]
    : [];
  const total = (list: { bytes: number }[]) => list.reduce((s, x) => s + x.bytes, 0);
  const phases = [bary ? total(ws) : 0, total(residual), total(meanBase)];
  const worst = Math.max(...phases);
  const calib = opts.calib ? calibrationCost(opts.calib, E, I, H) : null;
  const workingSet = [...(worst === phases[0] ? ws : worst === phases[1] ? residual : meanBase), ...(calib?.workingSet ?? [])];
  const peakBytes = Math.round(PROCESS_BYTES + total(workingSet) * (1 + GC_SLACK));

  const iters = opts.alignIters ?? 8;
  let gemmFlopsPerLayer = 0;
  let alignJs = 0;
  if (bary) {
    const fast = I > EXACT_MAX_N;
    const perAlignment = fast ? 2 * I * I * Math.min(DEFAULT_SKETCH_DIM, 3 * H) * FAST_GEMM_PASSES : 2 * I * I * 3 * H;
    gemmFlopsPerLayer = iters * E * perAlignment;
    alignJs = (iters * E * N * ALIGN_NS_PER_WEIGHT) / 1e9;
  }
  // the calibration forward runs through every model layer up to the last one compressed; spread over the compressed layers
  if (calib) gemmFlopsPerLayer += (calib.flopsPerLayer * Math.max(opts.calib!.modelLayers, layers)) / Math.max(layers, 1);
  const gemmSeconds = gemmFlopsPerLayer / (rates.gemmGflops * 1e9);
  const jsSeconds = alignJs + (E * N * (JS_NS_PER_WEIGHT[method] ?? 40)) / 1e9;
  const readBytesPerLayer = E * N * (shape.sourceBytes ?? 2);
  const writeBytesPerLayer = Math.round(opts.budget * E * N * 2);
  // Re-reads of the layer come from the page cache; the disk sees each byte once.
  const ioSeconds = readBytesPerLayer / (rates.readMBps * 1e6) + (2 * writeBytesPerLayer) / (rates.writeMBps * 1e6);
  const secondsPerLayer = gemmSeconds + jsSeconds + ioSeconds;
  return {
    method, layers, E, I, H, peakBytes, workingSet,
    secondsPerLayer, seconds: secondsPerLayer * layers,
    parts: { gemmSeconds: gemmSeconds * layers, jsSeconds: jsSeconds * layers, ioSeconds: ioSeconds * layers },
    gemmFlopsPerLayer, readBytesPerLayer, writeBytesPerLayer,
  };
}

/** Rates assumed before anything is measured: a modest 2-core machine and an SSD. */
export const DEFAULT_RATES: EstimateRates = { gemmGflops: 50, readMBps: 500, writeMBps: 250 };

/**
 * The estimate for compressing `model` (its config is read, no weights), with the given rates or
 * DEFAULT_RATES. Returns null when the model has no routed experts.
 */
export function estimateForModel(model: string, req: { method: string; budget: number; alignIters?: number; base?: BaseKind; layers?: number[]; calibTokens?: number }, rates: EstimateRates = DEFAULT_RATES): CompressEstimate | null {
  const src = openModel(model);
  try {
    const cfg = src.config;
    if (!cfg.moe) return null;
    const moeLayers = cfg.layers.filter((l) => l.ffn === 'moe').length;
    const first = cfg.layers.findIndex((l) => l.ffn === 'moe');
    const hub = [...expertHubNames(src, [first])][0];
    const sourceBytes = hub ? DTYPE_BYTES[src.checkpoint.info(hub).dtype] : 2;
    const calib = req.calibTokens ? { tokens: req.calibTokens, topK: cfg.moe.routing.topK, modelLayers: req.layers ? Math.max(...req.layers) + 1 : cfg.numLayers } : undefined;
    return estimateCompress({ layers: req.layers?.length ?? moeLayers, E: cfg.moe.experts, I: cfg.moe.intermediate, H: cfg.hidden, sourceBytes }, req.method, { ...req, calib }, rates);
  } finally {
    src.checkpoint.close();
  }
}

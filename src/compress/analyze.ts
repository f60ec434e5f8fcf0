/**
 * analyze: how alike are a MoE's routed experts, and so which compression family fits them
 * (METHODS.md: the delta family needs experts that share one initialisation and stay close to it;
 * the barycenter family aligns neurons first; with neither, compress each expert on its own).
 *
 * Streams one MoE layer at a time, and within a layer one block of rows of every expert (the
 * similarity statistics) or one expert (the barycenter and its residuals) at a time, so memory
 * stays bounded for real-size layers. Every sum is accumulated in float64; the weights stay float32.
 * Dimension letters: E experts, I intermediate neurons, H hidden size; gate/up [I, H], down [H, I].
 */
import { join } from 'node:path';
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';
import { openModel, type ModelSource } from '../runtime/load-model.js';
import type { Base } from './base.js';
import { expertBuffers, openExpertSource, readDenseFfn, readExpert, type ExpertSource } from './experts-io.js';
import { alignedBase, permuteMatrix } from './methods/aligned.js';
import { MATRICES, matrixShape, type MatrixName } from './parts.js';

export interface Stats { mean: number; min: number; max: number }

/** What the experts look like: one shared initialisation kept (upcycled), drifted, or none. */
export type Verdict = 'upcycled' | 'partly-shared' | 'from-scratch';
/** The compression family predicted to do best (METHODS.md Family 1, Family 2, baselines). */
export type Family = 'delta' | 'barycenter' | 'per-expert';

export interface Recommendation {
  family: Family;
  /** `compress` methods to try first, best first. */
  methods: string[];
  /** Extra `compress` flags, e.g. '--base mean'. */
  flags: string;
  reason: string;
}

/**
 * Why these numbers. With experts W_e = B + Δ_e and ‖Δ_e‖ = r‖B‖, pairwise cosine ≈ 1 − r², so
 * cos 0.99 ⇔ r ≈ 0.1: both upcycled tests say the same thing, and both are kept so that experts that
 * differ only in scale cannot pass. Upcycled MoEs sit far inside (cos > 0.999, METHODS.md).
 * The others are break-evens against `quant`, measured at budget 0.25 on variants of the mixtral
 * fixture (E = 8) whose experts are expert 0 (neuron-shuffled or not) plus noise: quant (3-bit) has
 * relative error 0.174 whatever the experts; ders-quant pays 1/E of the bytes for the bf16 base and
 * is left with 1-bit deltas, error ≈ 0.59 × the delta, so it wins below 0.174 / 0.59 ≈ 0.3
 * ('partly-shared'); resmoe-prune keeps ≈ 0.83 × the aligned residual as error (resmoe-svd 0.90),
 * so it wins below 0.174 / 0.83 ≈ 0.2, and beats the delta family only when alignment shrinks the
 * residual below 0.59 / 0.83 ≈ 0.7 of the mean-base delta. Predictions matched the measured best
 * method at every point tried (deltas 0.1 to 0.45). With more experts the base costs less (1/64
 * for OLMoE-1B-7B), so the delta and barycenter families win up to larger residuals there.
 */
export const THRESHOLDS = {
  upcycledCos: 0.99,
  upcycledDelta: 0.1,
  sharedDelta: 0.3,
  alignedDelta: 0.2,
  alignGain: 0.7,
} as const;

export interface LayerAnalysis {
  layer: number;
  /** Cosine between two experts' flattened weights over the E(E−1)/2 pairs, per matrix and all three together. */
  pairwiseCos: Record<MatrixName | 'all', Stats>;
  /** Each expert against the element-wise mean expert (the delta family's `--base mean`), over experts. */
  meanBase: { cos: Stats; relDelta: Stats };
  /** ‖P_e W_e − W_bar‖ / ‖W_e‖ with the barycenter (ResMoE); moved = fraction of neurons not at their own slot. */
  aligned: { relDelta: Stats; iters: number; moved: number };
  /** Each expert against the dense FFN of the same layer (--base-from), or null. */
  denseBase: { cos: Stats; relDelta: Stats } | null;
  verdict: Verdict;
  recommendation: Recommendation;
}

export interface Analysis {
  model: string;
  modelType: string;
  experts: number;
  intermediate: number;
  hidden: number;
  baseFrom: string | null;
  layers: LayerAnalysis[];
  /** Layer means of the per-layer means, classified with the same rule as a layer. */
  summary: {
    pairwiseCos: number;
    meanRelDelta: number;
    alignedRelDelta: number;
    denseRelDelta: number | null;
    layerVerdicts: Record<Verdict, number>;
    verdict: Verdict;
    recommendation: Recommendation;
  };
  thresholds: typeof THRESHOLDS;
}

export interface AnalyzeOptions {
  /** MoE layers to analyze (default: all). */
  layers?: number[];
  /** The dense model the MoE was upcycled from, to measure the experts against its FFN. */
  baseFrom?: string;
  seed?: number;
  alignIters?: number;
  onProgress?: ProgressFn;
}

export async function analyzeModel(dir: string, opts: AnalyzeOptions = {}): Promise<Analysis> {
  const src = openModel(dir);
  const cfg = src.config;
  if (!cfg.moe) throw new MoepressError(`model_type '${cfg.modelType}' has no routed experts to analyze`, { file: join(dir, 'config.json') });
  const moeLayers = cfg.layers.flatMap((l, i) => (l.ffn === 'moe' ? [i] : []));
  const layers = opts.layers ?? moeLayers;
  for (const l of layers) if (!moeLayers.includes(l)) throw new MoepressError(`--layers: layer ${l} is not a MoE layer (MoE layers: ${moeLayers.join(', ')})`);
  const dense = opts.baseFrom ? openDense(opts.baseFrom, src, layers) : null;
  const out: LayerAnalysis[] = [];
  try {
    for (const [i, layer] of layers.entries()) {
      const x = openExpertSource(src, layer);
      try {
        out.push(await analyzeLayer(x, dense ? readDenseFfn(dense, layer) : null, opts));
      } finally {
        x.close();
      }
      opts.onProgress?.({ task: 'analyze', done: i + 1, total: layers.length, unit: 'layers', detail: `layer ${layer}` });
    }
  } finally {
    src.checkpoint.close();
    dense?.checkpoint.close();
  }
  return {
    model: dir, modelType: cfg.modelType, experts: cfg.moe.experts, intermediate: cfg.moe.intermediate, hidden: cfg.hidden,
    baseFrom: opts.baseFrom ?? null, layers: out, summary: summarize(out, cfg.moe.experts, opts.baseFrom !== undefined), thresholds: THRESHOLDS,
  };
}

/** One layer's numbers; `denseFfn` is the dense model's FFN of the same layer, when given. */
export async function analyzeLayer(x: ExpertSource, denseFfn: Base | null, opts: Pick<AnalyzeOptions, 'seed' | 'alignIters' | 'onProgress'> = {}): Promise<LayerAnalysis> {
  const { E, I } = x;
  const s = similarity(x, denseFfn);
  // G[m][e·E + f] = <W_e, W_f> per matrix: gives every pairwise cosine and the experts' norms.
  const gAll = new Float64Array(E * E).map((_, k) => s.G[0][k] + s.G[1][k] + s.G[2][k]);
  const norm2 = Array.from({ length: E }, (_, e) => gAll[e * E + e]);
  const pairwiseCos = { all: pairStats(gAll, E) } as Record<MatrixName | 'all', Stats>;
  MATRICES.forEach((m, k) => (pairwiseCos[m] = pairStats(s.G[k], E)));

  const meanBase = baseStats(s.mean, norm2);
  const denseBase = s.dense ? baseStats(s.dense, norm2) : null;

  const al = await alignedBase(x, { seed: opts.seed ?? 0, alignIters: opts.alignIters ?? 8, onProgress: opts.onProgress });
  const buf = expertBuffers(x);
  const alignedRel = Array.from({ length: E }, (_, e) => {
    const w = readExpert(x, e, buf);
    const d = MATRICES.reduce((acc, m) => acc + diff2(permuteMatrix(w[m], al.perms[e], m, x.I, x.H), al.base[m]), 0);
    return rel(d, norm2[e]);
  });
  let moved = 0;
  for (const p of al.perms) for (let j = 0; j < I; j++) if (p[j] !== j) moved++;
  const aligned = { relDelta: stats(alignedRel), iters: al.iters, moved: moved / (E * I) };

  const verdict = classify(pairwiseCos.all.mean, meanBase.relDelta.mean);
  const recommendation = recommend(verdict, E, meanBase.relDelta.mean, aligned.relDelta.mean, denseBase?.relDelta.mean ?? null);
  return { layer: x.layer, pairwiseCos, meanBase, aligned, denseBase, verdict, recommendation };
}

export function classify(pairwiseCos: number, meanRelDelta: number): Verdict {
  if (pairwiseCos >= THRESHOLDS.upcycledCos && meanRelDelta <= THRESHOLDS.upcycledDelta) return 'upcycled';
  if (meanRelDelta <= THRESHOLDS.sharedDelta) return 'partly-shared';
  return 'from-scratch';
}

/** The predicted best family from the measured residual sizes (see THRESHOLDS for the reasoning). */
export function recommend(verdict: Verdict, E: number, meanDelta: number, alignedDelta: number, denseDelta: number | null): Recommendation {
  const f = (v: number) => v.toFixed(3);
  const alignWins = alignedDelta <= THRESHOLDS.alignedDelta && alignedDelta <= THRESHOLDS.alignGain * meanDelta;
  if (verdict !== 'upcycled' && alignWins) {
    return { family: 'barycenter', methods: ['resmoe-prune', 'resmoe-svd'], flags: '', reason: `aligning neurons shrinks the residual from ${f(meanDelta)} to ${f(alignedDelta)} of the weights` };
  }
  if (verdict !== 'from-scratch') {
    // The mean minimises the summed squared deltas, so the dense FFN never has smaller ones; for
    // experts = dense FFN + independent deltas (DeRS's model) they are larger by sqrt(E/(E−1)).
    // Prefer the dense FFN, the principled base at the same bytes, while that model fits (5% slack).
    const dense = denseDelta !== null && denseDelta <= 1.05 * Math.sqrt(E / Math.max(E - 1, 1)) * meanDelta;
    const flags = dense ? '--base-from DENSE_DIR' : '--base mean';
    const what = verdict === 'upcycled' ? 'experts stay within' : 'experts still share their neuron order; deltas are';
    return { family: 'delta', methods: ['ders-quant', 'ders-drop'], flags, reason: `${what} ${f(dense ? denseDelta! : meanDelta)} of the weights from the ${dense ? 'dense FFN' : 'mean expert'}` };
  }
  return { family: 'per-expert', methods: ['quant'], flags: '', reason: `no shared structure: residuals are ${f(meanDelta)} (mean base) and ${f(alignedDelta)} (aligned) of the weights` };
}

function summarize(layers: LayerAnalysis[], E: number, withDense: boolean): Analysis['summary'] {
  const avg = (f: (l: LayerAnalysis) => number) => layers.reduce((s, l) => s + f(l), 0) / Math.max(layers.length, 1);
  const pairwiseCos = avg((l) => l.pairwiseCos.all.mean);
  const meanRelDelta = avg((l) => l.meanBase.relDelta.mean);
  const alignedRelDelta = avg((l) => l.aligned.relDelta.mean);
  const denseRelDelta = withDense ? avg((l) => l.denseBase!.relDelta.mean) : null;
  const layerVerdicts: Record<Verdict, number> = { upcycled: 0, 'partly-shared': 0, 'from-scratch': 0 };
  for (const l of layers) layerVerdicts[l.verdict]++;
  const verdict = classify(pairwiseCos, meanRelDelta);
  return { pairwiseCos, meanRelDelta, alignedRelDelta, denseRelDelta, layerVerdicts, verdict, recommendation: recommend(verdict, E, meanRelDelta, alignedRelDelta, denseRelDelta) };
}

/** Sums over every expert against one base: Σ <W_e, B>, Σ ‖W_e − B‖², ‖B‖² (all three matrices). */
interface BaseTerms {
  dots: Float64Array;
  d2: Float64Array;
  b2: number;
}

/** Chunk of the flattened matrices over which Gram products are summed before being added to G. */
const GRAM_CHUNK = 4096;

/** About 64 MB of float32 rows read per block, over all experts together. */
const BLOCK_BYTES = 64 * 1024 * 1024;

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * One pass over row blocks of every expert: the Gram matrix of each matrix kind, and each
 * expert's terms against the element-wise mean expert (kept in float64 so the tiny deltas of
 * near-identical experts do not round away) and against the dense FFN. Blocks hold a multiple of
 * GRAM_CHUNK values, so every sum runs in the same order as over the whole matrix at once.
 */
function similarity(x: ExpertSource, dense: Base | null): { G: Float64Array[]; mean: BaseTerms; dense: BaseTerms | null } {
  const { E } = x;
  const terms = (): BaseTerms => ({ dots: new Float64Array(E), d2: new Float64Array(E), b2: 0 });
  const mean = terms();
  const dn = dense ? terms() : null;
  const G = MATRICES.map((m) => {
    const [rows, cols] = matrixShape(m, x.I, x.H);
    const G = new Float64Array(E * E);
    // Running per-matrix sums, carried across blocks, added to the totals once per matrix.
    const run = { mean: terms(), dense: terms() };
    const align = GRAM_CHUNK / gcd(GRAM_CHUNK, cols);
    const want = Math.min(x.blockRows(m), Math.floor(BLOCK_BYTES / (4 * cols * E)));
    const step = Math.min(rows, Math.max(align, want - (want % align)));
    for (let r0 = 0; r0 < rows; r0 += step) {
      const count = Math.min(step, rows - r0);
      const ws = Array.from({ length: E }, (_, e) => x.rows(m, e, r0, count));
      gramAdd(G, ws);
      const avg = new Float64Array(count * cols);
      for (const w of ws) for (let i = 0; i < avg.length; i++) avg[i] += w[i];
      for (let i = 0; i < avg.length; i++) avg[i] /= E;
      addTerms(run.mean, ws, avg);
      if (dense) addTerms(run.dense, ws, dense[m].subarray(r0 * cols, (r0 + count) * cols));
    }
    for (let e = 0; e < E; e++) for (let f = 0; f < e; f++) G[e * E + f] = G[f * E + e];
    sumInto(mean, run.mean);
    if (dn) sumInto(dn, run.dense);
    return G;
  });
  return { G, mean, dense: dn };
}

/** G[e·E + f] (f ≥ e) += <u_e, v_f> over the block, chunk by chunk. */
function gramAdd(G: Float64Array, ws: Float32Array[]): void {
  const E = ws.length;
  const n = ws[0].length;
  // Chunks keep the E slices in cache while every pair visits them (E = 64, I·H = 2M in real models).
  for (let a = 0; a < n; a += GRAM_CHUNK) {
    const b = Math.min(n, a + GRAM_CHUNK);
    for (let e = 0; e < E; e++) {
      const u = ws[e];
      for (let f = e; f < E; f++) {
        const v = ws[f];
        let s = 0;
        for (let i = a; i < b; i++) s += u[i] * v[i];
        G[e * E + f] += s;
      }
    }
  }
}

/** Running sums of <w_e, b>, ‖w_e − b‖² and ‖b‖² over one block (sequential, as over the whole matrix). */
function addTerms(t: BaseTerms, ws: Float32Array[], b: ArrayLike<number>): void {
  let bb = t.b2;
  for (let i = 0; i < b.length; i++) bb += b[i] * b[i];
  t.b2 = bb;
  ws.forEach((w, e) => {
    let dot = t.dots[e];
    let d2 = t.d2[e];
    for (let i = 0; i < b.length; i++) {
      dot += w[i] * b[i];
      const d = w[i] - b[i];
      d2 += d * d;
    }
    t.dots[e] = dot;
    t.d2[e] = d2;
  });
}

function sumInto(total: BaseTerms, one: BaseTerms): void {
  total.b2 += one.b2;
  for (let e = 0; e < total.dots.length; e++) {
    total.dots[e] += one.dots[e];
    total.d2[e] += one.d2[e];
  }
}

/** Cosine and relative delta of every expert to one base, from its summed terms. */
function baseStats(t: BaseTerms, norm2: number[]): { cos: Stats; relDelta: Stats } {
  const cos = Array.from(t.dots, (v, e) => cosine(v, norm2[e], t.b2));
  const relDelta = Array.from(t.d2, (v, e) => rel(v, norm2[e]));
  return { cos: stats(cos), relDelta: stats(relDelta) };
}

function pairStats(G: Float64Array, E: number): Stats {
  const c: number[] = [];
  for (let e = 0; e < E; e++) for (let f = e + 1; f < E; f++) c.push(cosine(G[e * E + f], G[e * E + e], G[f * E + f]));
  // A single expert is trivially identical to itself.
  return c.length ? stats(c) : { mean: 1, min: 1, max: 1 };
}

/** Cosine from a dot product and two squared norms; 0 when either vector is zero. */
function cosine(ab: number, aa: number, bb: number): number {
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

/** ‖Δ‖ / ‖W‖ from squared norms; a zero expert has no meaningful relative delta, reported as 0 only when Δ is 0 too. */
function rel(delta2: number, w2: number): number {
  return w2 > 0 ? Math.sqrt(delta2 / w2) : delta2 > 0 ? Infinity : 0;
}

function stats(v: number[]): Stats {
  return { mean: v.reduce((s, x) => s + x, 0) / v.length, min: Math.min(...v), max: Math.max(...v) };
}

function diff2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

/** The dense model of --base-from, checked to have an FFN of the experts' shape at every analyzed layer. */
function openDense(dir: string, moe: ModelSource, layers: number[]): ModelSource {
  const d = openModel(dir);
  const I = moe.config.moe!.intermediate;
  const bad = (why: string) => {
    d.checkpoint.close();
    return new MoepressError(`--base-from: ${why}`, { file: join(dir, 'config.json') });
  };
  if (d.config.hidden !== moe.config.hidden) throw bad(`hidden size ${d.config.hidden} differs from the MoE's ${moe.config.hidden}`);
  if (d.config.denseIntermediate !== I) throw bad(`intermediate_size ${d.config.denseIntermediate} differs from the experts' ${I}`);
  for (const l of layers) if (d.config.layers[l]?.ffn !== 'dense') throw bad(`layer ${l} has no dense FFN`);
  return d;
}

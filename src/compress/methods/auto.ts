/**
 * auto: per expert matrix, the encoding (codec, bits, group size; direct or as a delta from a
 * shared base) that minimises the layer's estimated output error under the byte budget, with
 * bits allocated by measured sensitivity and, with calibration, by how often and how strongly the
 * router uses each expert (auto/weighting.ts). Three passes over the layer's experts, one expert in
 * memory at a time:
 *   1. measure every direct candidate of every matrix (auto/candidates.ts), accumulate the mean
 *   2. only when the experts are similar (spread < SIMILAR_SPREAD, as in upcycled MoEs): measure
 *      the delta candidates against the mean as a shared base, stored in bf16 or quantized
 *      (BASE_CODECS, those that fit the cap)
 *   3. allocate bytes (auto/allocate.ts) without and with each base form, keep the lowest
 *      estimated error, and encode the chosen candidates
 * The budget is a hard cap on the bytes stored for the layer, checked on the bytes written: the
 * budget × the layer's bf16 bytes, or the cap a model-wide allocation gave it (opts.capBytes,
 * compress/global-plan.ts), measured beforehand by `measureLayer`.
 */
import { MoepressError } from '../../io/errors.js';
import { fromFloat32, toFloat32 } from '../../tensor/convert.js';
import { allocate, type Allocation } from '../auto/allocate.js';
import { candidateLabel, cheapestFraction, COMPOUNDING, DEFAULT_FAMILY, measureCandidates, type Candidate } from '../auto/candidates.js';
import { calibratedWeighting, codecImportance, dataFreeWeighting, layerContext, weightedError, type ExpertWeighting, type ProxyKind } from '../auto/weighting.js';
import { gptqApplies, gptqQuantize } from '../calib/gptq.js';
import { refitHeaders } from '../calib/refit.js';
import { diagonalImportance, hessianDiagonal, hessianErrorDiag, hessianErrorFast, hessianFor } from '../calib/hessian.js';
import type { LayerCalib } from '../calib/types.js';
import { expertBuffers, readExpert, type ExpertSource } from '../experts-io.js';
import { budgetError, referenceBytes, type LayerMeasure, type LayerStore, type Method, type MethodOptions } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts, type MatrixName, type MatrixPart } from '../parts.js';
import { codecById, storedBytes, type BlockCodec } from '../quant/codec.js';
import { RecordBuilder } from './record.js';
import { storeBase, subtract } from './store-helpers.js';

/** Σ‖W_e − mean‖² / Σ‖W_e‖² below which the shared-base candidates are measured (from-scratch experts: ≈ 1 − 1/E). */
export const SIMILAR_SPREAD = 0.5;

/** This layer's calibration (MethodOptions.calib), checked against the experts' shape; null: data-free. */
function layerCalib(opts: MethodOptions, x: ExpertSource): LayerCalib | null {
  const l = (opts as { calib?: LayerCalib | null }).calib ?? null;
  if (!l) return null;
  if (l.layer !== x.layer || l.E !== x.E || l.I !== x.I || l.H !== x.H) {
    throw new MoepressError(`calibration for layer ${l.layer} has experts [E=${l.E}, I=${l.I}, H=${l.H}], but layer ${x.layer} has [E=${x.E}, I=${x.I}, H=${x.H}]`);
  }
  return l;
}

function check(E: number, I: number, H: number, budget: number): void {
  const n = I * H;
  const cheapestBase = Math.min(...BASE_CODECS.map((c) => (c ? storedBytes(codecById(c), n) : 2 * n))) / (2 * n * E);
  const min = Math.min(cheapestFraction(DEFAULT_FAMILY, n), cheapestBase);
  if (budget < min) throw budgetError('auto', budget, min, 'the cheapest codec (or a shared base alone)');
}

/**
 * How the shared base may be stored: bf16 (null), or quantized with one of these codecs (GPTQ-coded
 * against the layer's summed expert Hessians when calibrated, then header-refit). A quantized base
 * is what lets an upcycled MoE keep its shared structure below budget 1/E: on the upcycled mixtral
 * (4 experts) the bf16 base alone is 0.25 of the budget.
 */
export const BASE_CODECS: readonly (string | null)[] = [null, 'q8s-g64', 'q4s-g64', 'q3s-g64'];

/** A stored form of the layer's mean: its values as the deltas see them and, when quantized, its bytes. */
interface BaseForm {
  codec: string | null;
  /** Bytes of the three stored matrices. */
  bytes: number;
  values: Record<MatrixName, Float32Array>;
  packed: Record<MatrixName, Uint8Array> | null;
}

type SummedHessian = { hess: Float64Array | null; diag: Float64Array | null };

/**
 * Σ over the layer's calibrated experts of each matrix kind's Hessian (full, or its diagonal for
 * down above maxFullI); nulls without calibration. gate and up share one (both see Σ x xᵀ), so the
 * sum, and GPTQ's inverse factor cached per array, are computed once for the two and every base form.
 */
function summedHessians(calib: LayerCalib | null): Record<MatrixName, SummedHessian> {
  const gate = summedHessian(calib, 'gate');
  return { gate, up: gate, down: summedHessian(calib, 'down') };
}

function summedHessian(calib: LayerCalib | null, m: MatrixName): SummedHessian {
  if (!calib) return { hess: null, diag: null };
  let hess: Float64Array | null = null;
  let diag: Float64Array | null = null;
  for (const ec of calib.experts) {
    const d = hessianDiagonal(ec, m);
    const h = d ? null : hessianFor(ec, m);
    if (d) {
      diag ??= new Float64Array(d.length);
      for (let i = 0; i < d.length; i++) diag[i] += d[i];
    } else if (h) {
      hess ??= new Float64Array(h.length);
      for (let i = 0; i < h.length; i++) hess[i] += h[i];
    }
  }
  return diag ? { hess: null, diag } : { hess, diag: null };
}

/** The mean (float32, unrounded) stored as `codec`: bf16 when null, else quantized and decoded. */
async function baseForm(mean: Record<MatrixName, Float32Array>, codec: string | null, I: number, H: number, hessians: () => Record<MatrixName, SummedHessian>): Promise<BaseForm> {
  const n = I * H;
  const values = {} as Record<MatrixName, Float32Array>;
  if (codec === null) {
    for (const m of MATRICES) values[m] = toFloat32({ dtype: 'BF16', shape: [n], data: fromFloat32(mean[m], 'BF16') });
    return { codec, bytes: 3 * n * 2, values, packed: null };
  }
  const c = codecById(codec);
  const packed = {} as Record<MatrixName, Uint8Array>;
  for (const m of MATRICES) {
    const [out, inp] = matrixShape(m, I, H);
    const { hess, diag } = hessians()[m];
    packed[m] = (await encodeMatrix(mean[m], out, inp, c, undefined, hess, diag)).packed;
    values[m] = c.dequantize(packed[m], n);
  }
  return { codec, bytes: 3 * storedBytes(c, n), values, packed };
}

interface Plan {
  /** items[e * 3 + mi]: the candidates of expert e's matrix MATRICES[mi]. */
  items: Candidate[][];
  alloc: Allocation;
  base: BaseForm | null;
}

/**
 * The stored bytes of one matrix (or delta) v: [out, in]. With a Hessian (a calibrated expert)
 * and a codec whose blocks tile rows, GPTQ's error-compensated codes when their output error
 * tr(ΔW H ΔWᵀ) is lower than the plain codec's (it nearly always is), else the codec's own; then
 * the block headers refit by least squares on that error with the codes fixed (calib/refit.ts;
 * measured on the mixtral fixture at budget 0.125: 15.28 -> 14.98).
 */
async function encodeMatrix(v: Float32Array, out: number, inp: number, codec: BlockCodec, importance: Float32Array | undefined, hess: Float64Array | null, diag: Float64Array | null): Promise<{ packed: Uint8Array; gptq: boolean }> {
  const plain = codec.quantize(v, importance);
  if (diag && gptqApplies(codec, inp)) {
    // a diagonal Hessian (down above maxFullI): GPTQ reduces to the codec with importances diag
    const g = codec.quantize(v, diagonalImportance(diag, out));
    const better = hessianErrorDiag(v, codec.dequantize(g, out * inp), diag) < hessianErrorDiag(v, codec.dequantize(plain, out * inp), diag);
    return { packed: (await refitHeaders(better ? g : plain, codec, v, out, inp, diag)).packed, gptq: better };
  }
  if (!hess || !gptqApplies(codec, inp)) return { packed: plain, gptq: false };
  const g = await gptqQuantize(v, out, inp, hess, codec);
  const plainErr = await hessianErrorFast(v, codec.dequantize(plain, out * inp), hess);
  const gptqErr = await hessianErrorFast(v, g.dequantized, hess);
  const best = gptqErr < plainErr ? { packed: g.packed, gptq: true } : { packed: plain, gptq: false };
  return { packed: (await refitHeaders(best.packed, codec, v, out, inp, hess)).packed, gptq: best.gptq };
}

async function compressAuto(x: ExpertSource, store: LayerStore, opts: MethodOptions) {
  const { E, I, H } = x;
  const n = I * H;
  const cap = opts.capBytes ?? Math.floor(opts.budget * referenceBytes(E, I, H));
  const calib = layerCalib(opts, x);
  const ctx = calib ? layerContext(calib) : null;
  const proxy: ProxyKind = ctx ? 'calibrated-diag-hessian' : 'data-free-relative-frobenius';
  const family = DEFAULT_FAMILY;
  const weightings: ExpertWeighting[] = [];
  const buf = expertBuffers(x);

  // pass 1: direct candidates; the mean of the experts (float64) and their energy
  const direct: Candidate[][] = [];
  const acc: Record<MatrixName, Float64Array> = { gate: new Float64Array(n), up: new Float64Array(n), down: new Float64Array(n) };
  let energy = 0;
  for (let e = 0; e < E; e++) {
    const w = readExpert(x, e, buf);
    const wt = ctx ? calibratedWeighting(ctx, e, w) : dataFreeWeighting(w);
    weightings.push(wt);
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, I, H);
      const known = opts.measured?.[e * 3 + MATRICES.indexOf(m)] as Candidate[] | undefined;
      direct.push(known ?? measureCandidates(w[m], w[m], null, out, inp, wt[m], family));
      const a = acc[m];
      const v = w[m];
      for (let i = 0; i < n; i++) {
        a[i] += v[i];
        energy += v[i] * v[i];
      }
    }
    opts.onProgress?.({ task: `auto layer ${x.layer}: measure`, done: e + 1, total: E, unit: 'experts' });
  }
  const mean = {} as Record<MatrixName, Float32Array>;
  let meanEnergy = 0;
  for (const m of MATRICES) {
    mean[m] = Float32Array.from(acc[m], (v) => v / E);
    acc[m] = new Float64Array(0); // the float64 sums are done with: free them before the base forms are built
    for (let i = 0; i < n; i++) meanEnergy += mean[m][i] * mean[m][i];
  }
  const spread = energy > 0 ? (energy - E * meanEnergy) / energy : 0;

  // Budgets below the cheapest codec but above the cheapest base fit only with a base (the check allows them).
  const minDirect = direct.reduce((sum, c) => sum + Math.min(...c.map((o) => o.bytes)), 0);
  let plan: Plan | null = minDirect <= cap ? { items: direct, alloc: allocate(direct, cap), base: null } : null;
  const directError = plan?.alloc.error ?? null;
  const baseErrors: Record<string, number> = {};
  if (E >= 2 && (spread < SIMILAR_SPREAD || !plan)) {
    // pass 2: delta candidates against each stored form of the shared base that fits, beside the direct ones
    let sums: Record<MatrixName, SummedHessian> | null = null;
    const hessians = () => (sums ??= summedHessians(calib));
    for (const codec of BASE_CODECS) {
      const bytes = codec ? 3 * storedBytes(codecById(codec), n) : 3 * n * 2;
      if (bytes > cap) continue;
      const form = await baseForm(mean, codec, I, H, hessians);
      const items: Candidate[][] = [];
      for (let e = 0; e < E; e++) {
        const w = readExpert(x, e, buf);
        MATRICES.forEach((m, mi) => {
          const [out, inp] = matrixShape(m, I, H);
          items.push([...direct[e * 3 + mi], ...measureCandidates(w[m], subtract(w[m], form.values[m]), form.values[m], out, inp, weightings[e][m], family)]);
        });
      }
      const alloc = allocate(items, cap - form.bytes);
      baseErrors[codec ?? 'bf16'] = alloc.error;
      if (!plan || alloc.error < plan.alloc.error) plan = { items, alloc, base: form };
    }
  }
  const cheapestBase = 3 * Math.min(n * 2, ...BASE_CODECS.filter((c) => c !== null).map((c) => storedBytes(codecById(c!), n)));
  if (!plan) throw budgetError('auto', opts.budget, Math.min(minDirect, cheapestBase) / referenceBytes(E, I, H), 'the cheapest codec on every matrix (or a shared base alone)');
  const chosen = plan;

  // pass 3: encode the chosen candidates
  const builder = new RecordBuilder(x, store, 'auto', null);
  let shared: Record<MatrixName, MatrixPart> | null = null;
  let rounded: Record<MatrixName, Float32Array> | null = null;
  if (chosen.base?.packed) {
    // a quantized base: one quant part per matrix, shared by every expert that takes a delta
    const b = chosen.base;
    shared = {} as Record<MatrixName, MatrixPart>;
    for (const m of MATRICES) {
      const ref = store.put(`base.${m}.q`, { dtype: 'U8', shape: [b.packed![m].length], data: b.packed![m] });
      shared[m] = { kind: 'quant', codec: b.codec!, ref };
    }
    rounded = b.values;
  } else if (chosen.base) {
    const s = storeBase(store, 'base', mean, I, H);
    for (const m of MATRICES) builder.share(s.refs[m], s.rounded[m]);
    shared = s.parts;
    rounded = s.rounded;
  }
  const labels: string[][] = [];
  let gptqMatrices = 0;
  const bits: Record<MatrixName, number> = { gate: 0, up: 0, down: 0 };
  for (let e = 0; e < E; e++) {
    const w = readExpert(x, e, buf);
    const parts: ExpertParts = { gate: [], up: [], down: [] };
    const row: string[] = [];
    for (const [mi, m] of MATRICES.entries()) {
      const [out, inp] = matrixShape(m, I, H);
      const c = chosen.items[e * 3 + mi][chosen.alloc.choice[e * 3 + mi]];
      row.push(candidateLabel(c));
      bits[m] += (8 * c.bytes) / (n * E);
      if (c.delta) parts[m].push(shared![m]);
      if (c.codec === null) continue;
      const codec = codecById(c.codec);
      const v = c.delta ? subtract(w[m], rounded![m]) : w[m];
      const diag = calib ? hessianDiagonal(calib.experts[e], m) : null;
      const hess = calib && !diag ? hessianFor(calib.experts[e], m) : null;
      const enc = await encodeMatrix(v, out, inp, codec, codecImportance(weightings[e][m], out, inp), hess, diag);
      if (enc.gptq) gptqMatrices++;
      const data = enc.packed;
      const ref = store.put(`e${e}.${m}.q`, { dtype: 'U8', shape: [storedBytes(codec, n)], data });
      parts[m].push({ kind: 'quant', codec: codec.id, ref });
    }
    labels.push(row);
    builder.add(e, parts, w);
    opts.onProgress?.({ task: `auto layer ${x.layer}: encode`, done: e + 1, total: E, unit: 'experts' });
  }
  if (store.bytes() > cap) throw new Error(`auto: layer ${x.layer} stored ${store.bytes()} bytes, over its cap of ${cap}`);
  return builder.finish({
    proxy,
    compounding: COMPOUNDING,
    base: chosen.base ? (chosen.base.codec ? `mean:${chosen.base.codec}` : 'mean') : null,
    spread,
    capBytes: cap,
    plan: labels,
    bitsPerWeight: bits,
    ...(ctx ? { gptqMatrices } : {}),
    estimatedError: { chosen: chosen.alloc.error, direct: directError, withBase: baseErrors },
    ...(ctx ? { calibTokens: calib!.tokens, unreachedExperts: calib!.experts.flatMap((c, e) => (c.tokens === 0 ? [e] : [])) } : {}),
  });
}

/**
 * The direct candidates of every matrix of the layer (pass 1's measuring alone) and the layer's
 * energy (the error of storing nothing), for the model-wide allocation (global-plan.ts): with
 * calibration the errors are Σ over calibration tokens of the squared change in the expert's
 * contribution to the residual stream (same units in every layer); data-free, each matrix's
 * relative error.
 */
async function measureAuto(x: ExpertSource, opts: MethodOptions): Promise<LayerMeasure> {
  const { E, I, H } = x;
  const calib = layerCalib(opts, x);
  const ctx = calib ? layerContext(calib) : null;
  const buf = expertBuffers(x);
  const items: Candidate[][] = [];
  let energy = 0;
  const zero = new Float32Array(I * H);
  for (let e = 0; e < E; e++) {
    const w = readExpert(x, e, buf);
    const wt = ctx ? calibratedWeighting(ctx, e, w) : dataFreeWeighting(w);
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, I, H);
      energy += weightedError(wt[m], w[m], zero, out, inp);
      items.push(measureCandidates(w[m], w[m], null, out, inp, wt[m], DEFAULT_FAMILY));
    }
    opts.onProgress?.({ task: `auto layer ${x.layer}: measure`, done: e + 1, total: E, unit: 'experts' });
  }
  return { items, energy };
}

export const auto: Method = {
  name: 'auto',
  summary: 'per expert matrix, the codec/bits/group (direct or base + delta) minimising estimated error under the budget; calibration-weighted when given',
  check,
  compressLayer: compressAuto,
  measureLayer: measureAuto,
};

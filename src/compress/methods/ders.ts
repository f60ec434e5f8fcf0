/**
 * DeRS (Decompose, Replace, Synthesis) for upcycled MoEs: one shared base per layer plus a light
 * delta per expert. ders-drop keeps a seeded random subset of delta entries rescaled by 1/keep
 * (DARE-style; the mask is regenerated from the seed, never stored), ders-magnitude keeps the
 * largest |Δ| (with --calib: the largest |Δ_oj|·‖x_j‖, Wanda-style), ders-quant stores Δ
 * block-quantized (with --calib: GPTQ).
 *
 * Two passes over the experts: one for the base (a streaming mean, a median over row blocks, or
 * the barycenter iteration), then one expert at a time for the deltas, each stored as soon as it
 * is made; the base (bf16-rounded) and one expert are what stays in memory.
 */
import { baseLabel, computeBase, type Base } from '../base.js';
import { expertBuffers, readExpert, type ExpertSource } from '../experts-io.js';
import { budgetError, derivedSeed, referenceBytes, type LayerStore, type Method, type MethodOptions } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts, type MatrixName, type MatrixPart } from '../parts.js';
import { chooseCodec, chooseScaleDtype, minimumBudget } from '../quant/select.js';
import { storedBytes, type BlockCodec } from '../quant/codec.js';
import { seededPositions } from '../sparse.js';
import { CalibratedQuantizer } from '../calib/quantize.js';
import { inputScales, topScaledPositions } from '../calib/scales.js';
import type { LayerCalib } from '../calib/types.js';
import { RecordBuilder } from './record.js';
import { sparseCapacity, storeBase, storeSparse, storeTopMagnitude, subtract } from './store-helpers.js';
import { alignedBase, permuteMatrix } from './aligned.js';

type Delta = 'drop' | 'magnitude' | 'quant';

function check(kind: Delta) {
  return (E: number, I: number, H: number, budget: number): void => {
    const left = budget - 1 / E;
    const min = kind === 'quant' ? 1 / E + minQuantFraction() : 1 / E;
    if (left <= (kind === 'quant' ? minQuantFraction() : 0)) throw budgetError(`ders-${kind}`, budget, min, `the shared base (1/${E} of the experts) plus any delta`);
    void H;
    void I;
  };
}

function minQuantFraction(): number {
  // the cheapest codec: 1 bit per value plus a scale per block, as a fraction of 16 bits
  return minimumBudget();
}

/** How each delta matrix is stored, fixed for the layer before the expert pass. */
type DeltaPlan =
  | { kind: 'drop'; q: number }
  | { kind: 'magnitude'; count: number; calib: LayerCalib | null; uncalibrated: Set<number> }
  | { kind: 'quant'; codec: BlockCodec | null; bytes: number; quantizer: CalibratedQuantizer };

function planDeltas(kind: Delta, x: ExpertSource, opts: MethodOptions, left: number, overhead: number, choices: Record<string, unknown>): DeltaPlan {
  const n = x.I * x.H;
  const ref = referenceBytes(x.E, x.I, x.H);
  if (kind === 'drop') {
    // keep fraction q with a 4-sigma margin on the total kept count of the layer's 3E matrices
    const r = left / (2 * 3 * x.E * n);
    const q = Math.min(1, r - 4 * Math.sqrt((r * (1 - r)) / (3 * x.E * n)));
    if (q <= 0) throw budgetError('ders-drop', opts.budget, overhead / ref, 'the shared base plus a non-empty delta');
    choices.keep = q;
    return { kind, q };
  }
  if (kind === 'magnitude') {
    const count = sparseCapacity(n, Math.floor(left / (3 * x.E)));
    choices.density = count / n;
    // With calibration: Wanda-style, the entries of largest |Δ_oj|·‖x_j‖ (calib/scales.ts).
    return { kind, count, calib: opts.calib ?? null, uncalibrated: new Set() };
  }
  // The codec is chosen on expert 0's gate delta, when the expert pass reaches it.
  // With calibration the deltas are quantized by GPTQ against each expert's own inputs.
  return { kind, codec: null, bytes: left, quantizer: new CalibratedQuantizer(opts.calib ?? null, x.I, x.H) };
}

async function compressDers(kind: Delta, x: ExpertSource, store: LayerStore, opts: MethodOptions) {
  const ref = referenceBytes(x.E, x.I, x.H);
  const aligned = opts.base === 'aligned' && !opts.denseBase;
  let iters = 0;
  let perms: Int32Array[] | null = null;
  let base: Base;
  if (aligned) ({ base, perms, iters } = await alignedBase(x, opts));
  else base = computeBase(x, opts.base as Exclude<typeof opts.base, 'aligned'>, opts.denseBase);
  const builder = new RecordBuilder(x, store, `ders-${kind}`, perms);
  // from here on only the bf16-rounded base is used (computeBase's object is ours to consume)
  const { parts: shared, refs, rounded } = storeBase(store, 'base', base, x.I, x.H);
  for (const m of MATRICES) builder.share(refs[m], rounded[m]);
  const permBytes = perms ? x.E * x.I * (x.I > 65536 ? 4 : 2) : 0;
  const left = opts.budget * ref - store.bytes() - permBytes; // bytes for all deltas of the layer
  if (left <= 0) throw budgetError(`ders-${kind}`, opts.budget, (store.bytes() + permBytes) / ref, 'the shared base');
  const choices: Record<string, unknown> = { base: baseLabel(opts.base, opts.denseBase !== null) };
  if (aligned) choices.alignIters = iters;
  // Aligned experts are permuted along I, their down inputs with them: the collected Σ a aᵀ would
  // need the same permutation, so alignment runs data-free for now (recorded).
  if (aligned && opts.calib) choices.calib = 'not used with --base aligned';
  const plan = planDeltas(kind, x, aligned ? { ...opts, calib: null } : opts, left, store.bytes() + permBytes, choices);
  const n = x.I * x.H;
  const buf = expertBuffers(x); // one expert's buffers, reused for every expert
  for (let e = 0; e < x.E; e++) {
    const w = readExpert(x, e, buf);
    const parts: ExpertParts = { gate: [shared.gate], up: [shared.up], down: [shared.down] };
    for (const [mi, m] of MATRICES.entries()) {
      const v = perms ? permuteMatrix(w[m], perms[e], m, x.I, x.H) : w[m];
      const delta = subtract(v, rounded[m]);
      parts[m].push(await storeDelta(plan, store, x, opts, e, m, mi, delta, choices, n));
    }
    builder.add(e, parts, w);
  }
  const calib = plan.kind === 'quant' ? plan.quantizer.choices() : null;
  if (calib) choices.calib = calib;
  if (plan.kind === 'magnitude' && plan.calib) choices.calib = { mode: 'wanda', uncalibrated: [...plan.uncalibrated].sort((a, b) => a - b) };
  return builder.finish(choices);
}

/** One delta matrix, stored as the plan says. */
async function storeDelta(plan: DeltaPlan, store: LayerStore, x: ExpertSource, opts: MethodOptions, e: number, m: MatrixName, mi: number, delta: Float32Array, choices: Record<string, unknown>, n: number): Promise<MatrixPart> {
  const local = `e${e}.${m}.delta`;
  if (plan.kind === 'drop') {
    // positions are regenerated from the seed: nothing stored for them
    const seed = derivedSeed(opts.seed, x.layer, e, mi);
    return storeSparse(store, local, delta, seededPositions(seed, plan.q, n), 1 / plan.q, { seed, keep: plan.q });
  }
  if (plan.kind === 'magnitude') {
    const [out, inp] = matrixShape(m, x.I, x.H);
    const s = plan.calib ? inputScales(plan.calib.experts[e], m, inp) : null;
    if (plan.calib && !s) plan.uncalibrated.add(e);
    return s ? storeSparse(store, local, delta, topScaledPositions(delta, out, inp, s, plan.count)) : storeTopMagnitude(store, local, delta, plan.count);
  }
  if (plan.codec === null) {
    // Deltas of upcycled experts can be ~1e-5: pick bf16 block scales when f16 would underflow.
    // Expert 0's gate delta is the probe (the first delta of the pass).
    plan.codec = chooseCodec(plan.bytes / referenceBytes(x.E, x.I, x.H), { n, scaleDtype: chooseScaleDtype(delta, 4, 64) });
    choices.codec = plan.codec.id;
  }
  const ref = store.put(`${local}.q`, { dtype: 'U8', shape: [storedBytes(plan.codec, n)], data: await plan.quantizer.quantize(delta, m, e, plan.codec) });
  return { kind: 'quant', codec: plan.codec.id, ref };
}

function dersMethod(kind: Delta, summary: string): Method {
  return { name: `ders-${kind}`, summary, check: check(kind), compressLayer: (x, store, opts) => compressDers(kind, x, store, opts) };
}

export const dersDrop = dersMethod('drop', 'shared base + random-drop delta, rescaled; mask regenerated from the seed (upcycled MoEs)');
export const dersMagnitude = dersMethod('magnitude', 'shared base + the largest-magnitude delta entries (upcycled MoEs)');
export const dersQuant = dersMethod('quant', 'shared base + k-bit quantized deltas, MSE-fitted group scales (upcycled MoEs)');

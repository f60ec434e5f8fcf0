/**
 * D²-MoE (delta decompression, Gu et al. 2025), the parts of it that fit a byte budget: one shared
 * base per layer, the importance-weighted mean of the experts, plus each expert's delta
 * Δ_e = W_e − base stored as a rank-r factorisation whitened by that matrix's own inputs
 * (calib/whiten.ts: gate/up by Σ x xᵀ, down by Σ a aᵀ or its diagonal). Not included: D²-MoE's
 * semi-dynamic structured pruning of the base.
 *
 * Importance (D²-MoE weights experts by Fisher information; calibration records no gradients, so
 * a proxy): c_e = weightSq_e · tr(Σ x xᵀ)_e / (H · tokens_e), i.e. the routing weight² summed over
 * the expert's tokens times their mean input energy per dimension. The gradient of expert e's
 * weights on a token is the routing weight times (output gradient ⊗ input), so its squared norm
 * grows with r² and ‖x‖²; the output gradient, unknown without a backward pass, is taken as equal.
 * Unreached experts get c_e = 0. Data-free (or no expert reached): the plain mean.
 *
 * Rank per matrix from the budget after the bf16 base: r = ⌊bytes left / (3E · 2(I + H))⌋, bf16
 * factors; uncalibrated experts (fewer tokens than the matrix has inputs, hessianFor) get the plain
 * truncated SVD of their delta, as the svd baseline does.
 *
 * Two passes: one for the base (one matrix of one expert in memory at a time), then one expert at
 * a time for its deltas, each stored as soon as it is made.
 */
import { fromFloat32 } from '../../tensor/convert.js';
import { accurateSvdOptions, lowRank } from '../../tensor/svd.js';
import { computeBase, weightedMeanBase } from '../base.js';
import { hessianFor } from '../calib/hessian.js';
import type { LayerCalib } from '../calib/types.js';
import { whitenedLowRank } from '../calib/whiten.js';
import { expertBuffers, readExpert, type ExpertSource } from '../experts-io.js';
import { budgetError, referenceBytes, type LayerStore, type Method, type MethodOptions } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts } from '../parts.js';
import { RecordBuilder } from './record.js';
import { storeBase, subtract } from './store-helpers.js';

/** The rank r of every delta factorisation: bf16 left [out, r] and right [r, in] per matrix. */
function deltaRank(bytesLeft: number, E: number, I: number, H: number): number {
  return Math.floor(bytesLeft / (3 * E * 2 * (I + H)));
}

/**
 * Fisher proxy per expert (see the header): c_e = weightSq · tr(xtx) / (H · tokens); null when no
 * expert was reached (the plain mean is used then).
 */
export function fisherProxy(calib: LayerCalib, H: number): Float64Array | null {
  const c = new Float64Array(calib.E);
  let total = 0;
  calib.experts.forEach((x, e) => {
    if (x.tokens === 0) return;
    let tr = 0;
    for (let j = 0; j < H; j++) tr += x.xtx[j * H + j];
    c[e] = (x.weightSq * tr) / (H * x.tokens);
    total += c[e];
  });
  return total > 0 ? c : null;
}

async function compressD2(x: ExpertSource, store: LayerStore, opts: MethodOptions) {
  const ref = referenceBytes(x.E, x.I, x.H);
  const c = opts.calib ? fisherProxy(opts.calib, x.H) : null;
  const base = c ? weightedMeanBase(x, c) : computeBase(x, 'mean', null);
  const builder = new RecordBuilder(x, store, 'd2-moe', null);
  const { parts: shared, refs, rounded } = storeBase(store, 'base', base, x.I, x.H);
  for (const m of MATRICES) builder.share(refs[m], rounded[m]);
  const rank = deltaRank(opts.budget * ref - store.bytes(), x.E, x.I, x.H);
  if (rank < 1) throw budgetError('d2-moe', opts.budget, (store.bytes() + 3 * x.E * 2 * (x.I + x.H)) / ref, 'the shared base plus a rank-1 delta per matrix');
  const choices: Record<string, unknown> = { base: c ? 'fisher-weighted mean' : 'mean', rank };
  if (c) {
    const total = c.reduce((s, v) => s + v, 0);
    choices.baseWeights = Array.from(c, (v) => v / total);
  }
  const uncalibrated = new Set<number>();
  const buf = expertBuffers(x); // one expert's buffers, reused for every expert
  for (let e = 0; e < x.E; e++) {
    const w = readExpert(x, e, buf);
    const parts: ExpertParts = { gate: [shared.gate], up: [shared.up], down: [shared.down] };
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, x.I, x.H);
      const delta = subtract(w[m], rounded[m]);
      const hess = opts.calib ? hessianFor(opts.calib.experts[e], m, inp) : null;
      if (opts.calib && !hess) uncalibrated.add(e);
      const f = hess ? await whitenedLowRank(delta, out, inp, hess, rank, { seed: opts.seed + e })
        : await lowRank(delta, out, inp, rank, accurateSvdOptions(rank, out, inp, opts.seed + e));
      const left = store.put(`e${e}.${m}.delta.left`, { dtype: 'BF16', shape: [out, rank], data: fromFloat32(f.left, 'BF16') });
      const right = store.put(`e${e}.${m}.delta.right`, { dtype: 'BF16', shape: [rank, inp], data: fromFloat32(f.right, 'BF16') });
      parts[m].push({ kind: 'lowrank', left, right, rank, transposed: false });
    }
    builder.add(e, parts, w);
  }
  if (opts.calib) {
    const mode = opts.calib.experts.some((ec) => ec.ata === null) ? 'whitened (down: diagonal Σ a aᵀ)' : 'whitened';
    choices.calib = { mode, importance: 'weightSq · tr(xtx) / (H · tokens)', uncalibrated: [...uncalibrated].sort((a, b) => a - b) };
  }
  return builder.finish(choices);
}

function check(E: number, I: number, H: number, budget: number): void {
  const ref = referenceBytes(E, I, H);
  const baseBytes = 3 * I * H * 2;
  if (deltaRank(budget * ref - baseBytes, E, I, H) < 1) throw budgetError('d2-moe', budget, (baseBytes + 3 * E * 2 * (I + H)) / ref, 'the shared base plus a rank-1 delta per matrix');
}

export const d2moe: Method = {
  name: 'd2-moe',
  summary: 'D²-MoE: mean base + rank-r delta per expert matrix; with --calib: Fisher-proxy-weighted base, activation-whitened deltas',
  check,
  compressLayer: compressD2,
};

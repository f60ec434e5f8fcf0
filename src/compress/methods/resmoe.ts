/**
 * ResMoE: experts aligned to their Wasserstein barycenter, then each expert's residual
 * Δ_e = P_e W_e − W_bar compressed: resmoe-prune keeps the largest entries of the whole [I, 3H]
 * residual (one threshold across gate, up and down), resmoe-svd keeps a rank-r SVD of it (one left
 * factor [I, r] shared by the three right factors [r, H]). Also `merge`: every expert replaced by
 * the barycenter.
 *
 * With --calib: resmoe-prune ranks residual entries Wanda-style by |Δ_oj|·‖x_j‖ (the input-side
 * Hessian diagonal of each matrix, normalised so one threshold still spans the three), and
 * resmoe-svd factorises the residual weighted by the experts' activations (calib/residual.ts).
 */
import { fromFloat32 } from '../../tensor/convert.js';
import { expertBuffers, readExpert, type ExpertSource } from '../experts-io.js';
import { budgetError, referenceBytes, type LayerStore, type Method, type MethodOptions } from '../method.js';
import { MATRICES, type ExpertParts, type MatrixName, type MatrixPart } from '../parts.js';
import { topMagnitudePositions } from '../sparse.js';
import { alignedBase } from './aligned.js';
import { RecordBuilder } from './record.js';
import { sparseCapacity, storeBase, storeSparse } from './store-helpers.js';
import { residualLowRank, type ResidualWeights } from '../calib/residual.js';
import { inputScales, scaledMagnitudes } from '../calib/scales.js';
import type { LayerCalib } from '../calib/types.js';

const permBytes = (E: number, I: number) => E * I * (I > 65536 ? 4 : 2);

/** Barycenter + permutations as a fraction of the reference bytes. */
function overhead(E: number, I: number, H: number): number {
  return (3 * I * H * 2 + permBytes(E, I)) / referenceBytes(E, I, H);
}

type Kind = 'prune' | 'svd' | 'merge';

/**
 * Two passes over the experts: the barycenter iteration (one expert cloud at a time), then one
 * expert at a time for its residual, stored as soon as it is made. In memory: the bf16-rounded
 * barycenter, one expert and its residual.
 */
async function compressResMoe(kind: Kind, x: ExpertSource, store: LayerStore, opts: MethodOptions) {
  const ref = referenceBytes(x.E, x.I, x.H);
  const { base, perms, iters } = await alignedBase(x, opts);
  const builder = new RecordBuilder(x, store, kind === 'merge' ? 'merge' : `resmoe-${kind}`, perms);
  // from here on only the bf16-rounded barycenter is used
  const { parts: shared, refs, rounded } = storeBase(store, 'bary', base, x.I, x.H);
  for (const m of MATRICES) builder.share(refs[m], rounded[m]);
  const left = opts.budget * ref - store.bytes() - permBytes(x.E, x.I);
  const choices: Record<string, unknown> = { alignIters: iters };
  const n = x.I * x.H;
  let count = 0;
  let rank = 0;
  if (kind === 'prune') {
    count = sparseCapacity(3 * n, Math.floor(left / x.E));
    choices.density = count / (3 * n);
  } else if (kind === 'svd') {
    rank = Math.floor(left / x.E / (2 * (x.I + 3 * x.H)));
    if (rank < 1) throw budgetError('resmoe-svd', opts.budget, overhead(x.E, x.I, x.H) + (x.E * 2 * (x.I + 3 * x.H)) / ref, 'the barycenter, permutations and a rank-1 residual');
    choices.rank = rank;
  }
  // One expert, its residual and the selection's scratch, reused for every expert of the layer.
  const buf = expertBuffers(x);
  const all = kind === 'prune' ? new Float32Array(3 * n) : null;
  const scratch = kind === 'prune' ? new Float32Array(3 * n) : undefined;
  const scores = kind === 'prune' && opts.calib ? new Float32Array(3 * n) : null;
  const uncalibrated: number[] = [];
  for (let e = 0; e < x.E; e++) {
    const w = readExpert(x, e, buf);
    const parts: ExpertParts = { gate: [shared.gate], up: [shared.up], down: [shared.down] };
    if (all) {
      // one threshold over the whole residual [gate | up | down] of the expert
      MATRICES.forEach((m, i) => residualInto(all.subarray(i * n, (i + 1) * n), w[m], perms[e], rounded[m], m, x.I, x.H));
      const s = opts.calib ? expertScales(opts.calib, e, perms[e], x.I, x.H) : null;
      if (opts.calib && !s) uncalibrated.push(e);
      if (s && scores) {
        // Wanda-style: |Δ_oj| · s_j, each block with its own input scales [cols]
        MATRICES.forEach((m, i) => {
          const [rows, cols] = m === 'down' ? [x.H, x.I] : [x.I, x.H];
          scaledMagnitudes(all.subarray(i * n, (i + 1) * n), rows, cols, m === 'down' ? s.down : s.gateUp, scores.subarray(i * n, (i + 1) * n));
        });
      }
      const pos = topMagnitudePositions(s && scores ? scores : all, count, scratch);
      MATRICES.forEach((m, i) => {
        const mine = pos.filter((p) => p >= i * n && p < (i + 1) * n).map((p) => p - i * n);
        parts[m].push(storeSparse(store, `e${e}.${m}.residual`, all.subarray(i * n, (i + 1) * n), mine));
      });
    } else if (kind === 'svd') {
      const d = MATRICES.map((m) => residualInto(new Float32Array(n), w[m], perms[e], rounded[m], m, x.I, x.H));
      const r = Math.min(rank, x.I, 3 * x.H);
      const weights = opts.calib ? residualWeights(opts.calib, e, perms[e], x.I, x.H) : null;
      if (opts.calib && !weights) uncalibrated.push(e);
      const { left: L, right: R } = await residualLowRank({ gate: d[0], up: d[1], down: d[2] }, x.I, x.H, r, opts.seed + e, weights);
      const lref = store.put(`e${e}.residual.left`, { dtype: 'BF16', shape: [x.I, r], data: fromFloat32(L, 'BF16') });
      MATRICES.forEach((m) => {
        const rref = store.put(`e${e}.residual.right.${m}`, { dtype: 'BF16', shape: [r, x.H], data: fromFloat32(R[m], 'BF16') });
        // gate/up: Δ = L·R_m [I, H]; down: Δ = (L·R_down)ᵀ [H, I]
        parts[m].push({ kind: 'lowrank', left: lref, right: rref, rank: r, transposed: m === 'down' } satisfies MatrixPart);
      });
    }
    builder.add(e, parts, w);
  }
  if (opts.calib && kind !== 'merge') choices.calib = { mode: kind === 'prune' ? 'wanda' : 'whitened-residual', uncalibrated };
  return builder.finish(choices);
}

/**
 * Expert e's Wanda scales (calib/scales.ts): gate/up on H, down on I moved into barycenter order
 * (slot j holds neuron perm[j]); null when the expert is uncalibrated for either.
 */
function expertScales(calib: LayerCalib, e: number, perm: Int32Array, I: number, H: number): { gateUp: Float64Array; down: Float64Array } | null {
  const gateUp = inputScales(calib.experts[e], 'gate', H);
  const down = inputScales(calib.experts[e], 'down', I);
  if (!gateUp || !down) return null;
  return { gateUp, down: Float64Array.from(perm, (p) => down[p]) };
}

/** Expert e's residual weights (calib/residual.ts): Σ x xᵀ and the down scales as row weights, barycenter order. */
function residualWeights(calib: LayerCalib, e: number, perm: Int32Array, I: number, H: number): ResidualWeights | null {
  const s = expertScales(calib, e, perm, I, H);
  return s ? { xtx: calib.experts[e].xtx, rows: s.down } : null;
}

/**
 * out = P w − rounded for one matrix: w moved into barycenter order (slot j takes neuron perm[j])
 * minus the stored barycenter, without materialising P w. out: [out, in], returned.
 */
function residualInto(out: Float32Array, w: Float32Array, perm: Int32Array, rounded: Float32Array, m: MatrixName, I: number, H: number): Float32Array {
  if (m === 'down') {
    for (let h = 0; h < H; h++) {
      const o = h * I;
      for (let j = 0; j < I; j++) out[o + j] = w[o + perm[j]] - rounded[o + j];
    }
  } else {
    for (let j = 0; j < I; j++) {
      const s = perm[j] * H;
      const o = j * H;
      for (let h = 0; h < H; h++) out[o + h] = w[s + h] - rounded[o + h];
    }
  }
  return out;
}

function check(kind: Kind) {
  return (E: number, I: number, H: number, budget: number): void => {
    const min = overhead(E, I, H);
    if (budget < min || (kind !== 'merge' && budget <= min)) throw budgetError(kind === 'merge' ? 'merge' : `resmoe-${kind}`, budget, min, 'the barycenter expert and the permutations');
  };
}

function method(kind: Kind, summary: string): Method {
  return { name: kind === 'merge' ? 'merge' : `resmoe-${kind}`, summary, check: check(kind), compressLayer: (x, s, o) => compressResMoe(kind, x, s, o) };
}

export const resmoePrune = method('prune', 'barycenter expert + largest entries of each aligned [I, 3H] residual (any MoE)');
export const resmoeSvd = method('svd', 'barycenter expert + rank-r SVD of each aligned residual, shared left factor (any MoE)');
export const merge = method('merge', 'baseline: every expert replaced by the aligned mean (barycenter) of its layer');

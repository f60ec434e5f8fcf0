/**
 * ResMoE: experts aligned to their Wasserstein barycenter, then each expert's residual
 * Δ_e = P_e W_e − W_bar compressed: resmoe-prune keeps the largest entries of the whole [I, 3H]
 * residual (one threshold across gate, up and down), resmoe-svd keeps a rank-r SVD of it (one left
 * factor [I, r] shared by the three right factors [r, H]). Also `merge`: every expert replaced by
 * the barycenter.
 */
import { fromFloat32 } from '../../tensor/convert.js';
import { accurateSvdOptions, lowRank } from '../../tensor/svd.js';
import { expertPoints } from '../barycenter.js';
import { budgetError, expertMatrix, referenceBytes, type LayerExperts, type LayerStore, type Method, type MethodOptions } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts, type MatrixPart } from '../parts.js';
import { topMagnitudePositions } from '../sparse.js';
import { alignedBase } from './aligned.js';
import { makeRecord } from './record.js';
import { sparseCapacity, storeDense, storeSparse, subtract } from './store-helpers.js';

const permBytes = (E: number, I: number) => E * I * (I > 65536 ? 4 : 2);

/** Barycenter + permutations as a fraction of the reference bytes. */
function overhead(E: number, I: number, H: number): number {
  return (3 * I * H * 2 + permBytes(E, I)) / referenceBytes(E, I, H);
}

type Kind = 'prune' | 'svd' | 'merge';

async function compressResMoe(kind: Kind, x: LayerExperts, store: LayerStore, opts: MethodOptions) {
  const ref = referenceBytes(x.E, x.I, x.H);
  const { base, perms, view, iters } = await alignedBase(x, opts);
  const parts: ExpertParts[] = Array.from({ length: x.E }, () => ({ gate: [], up: [], down: [] }));
  const rounded: Record<string, Float32Array> = {};
  for (const m of MATRICES) {
    const [out, inp] = matrixShape(m, x.I, x.H);
    const d = storeDense(store, `bary.${m}`, base[m], out, inp);
    rounded[m] = d.rounded;
    for (const p of parts) p[m].push(d.part);
  }
  const left = opts.budget * ref - store.bytes() - permBytes(x.E, x.I);
  const choices: Record<string, unknown> = { alignIters: iters };
  const n = x.I * x.H;
  if (kind === 'prune') {
    const count = sparseCapacity(3 * n, Math.floor(left / x.E));
    choices.density = count / (3 * n);
    for (let e = 0; e < x.E; e++) {
      const deltas = MATRICES.map((m) => subtract(expertMatrix(view, m, e), rounded[m]));
      // one threshold over the whole residual of the expert
      const all = new Float32Array(3 * n);
      deltas.forEach((d, i) => all.set(d, i * n));
      const pos = topMagnitudePositions(all, count);
      MATRICES.forEach((m, i) => {
        const mine = pos.filter((p) => p >= i * n && p < (i + 1) * n).map((p) => p - i * n);
        parts[e][m].push(storeSparse(store, `e${e}.${m}.residual`, deltas[i], mine));
      });
    }
  } else if (kind === 'svd') {
    const rank = Math.floor(left / x.E / (2 * (x.I + 3 * x.H)));
    if (rank < 1) throw budgetError('resmoe-svd', opts.budget, overhead(x.E, x.I, x.H) + (x.E * 2 * (x.I + 3 * x.H)) / ref, 'the barycenter, permutations and a rank-1 residual');
    choices.rank = rank;
    for (let e = 0; e < x.E; e++) {
      const d = MATRICES.map((m) => subtract(expertMatrix(view, m, e), rounded[m]));
      const pts = expertPoints(d[0], d[1], d[2], x.I, x.H); // [I, 3H]
      const r0 = Math.min(rank, x.I, 3 * x.H);
      const { left: L, right: R } = await lowRank(pts, x.I, 3 * x.H, r0, accurateSvdOptions(r0, x.I, 3 * x.H, opts.seed + e));
      const r = Math.min(rank, x.I, 3 * x.H);
      const lref = store.put(`e${e}.residual.left`, { dtype: 'BF16', shape: [x.I, r], data: fromFloat32(L, 'BF16') });
      MATRICES.forEach((m, i) => {
        const Rm = new Float32Array(r * x.H);
        for (let k = 0; k < r; k++) Rm.set(R.subarray(k * 3 * x.H + i * x.H, k * 3 * x.H + (i + 1) * x.H), k * x.H);
        const rref = store.put(`e${e}.residual.right.${m}`, { dtype: 'BF16', shape: [r, x.H], data: fromFloat32(Rm, 'BF16') });
        // gate/up: Δ = L·R_m [I, H]; down: Δ = (L·R_down)ᵀ [H, I]
        parts[e][m].push({ kind: 'lowrank', left: lref, right: rref, rank: r, transposed: m === 'down' } satisfies MatrixPart);
      });
    }
  }
  return makeRecord(x, store, kind === 'merge' ? 'merge' : `resmoe-${kind}`, parts, perms, choices);
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

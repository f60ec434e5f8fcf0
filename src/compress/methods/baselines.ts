/**
 * Baselines users compare against: per-matrix magnitude pruning, per-matrix truncated SVD at rank
 * budget·I·H/(I+H), and round-to-nearest int-k with group-wise scales. No shared base.
 */
import { fromFloat32 } from '../../tensor/convert.js';
import { accurateSvdOptions, lowRank } from '../../tensor/svd.js';
import { expertBuffers, readExpert, type ExpertSource } from '../experts-io.js';
import { budgetError, type LayerStore, type Method, type MethodOptions } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts } from '../parts.js';
import { storedBytes } from '../quant/codec.js';
import { chooseCodec, minimumBudget } from '../quant/select.js';
import { hessianFor } from '../calib/hessian.js';
import { CalibratedQuantizer, GPTQ_GROUPS } from '../calib/quantize.js';
import { whitenedLowRank } from '../calib/whiten.js';
import { RecordBuilder } from './record.js';
import { sparseCapacity, storeTopMagnitude } from './store-helpers.js';

type Kind = 'prune' | 'svd' | 'quant';

function svdRank(I: number, H: number, budget: number): number {
  return Math.floor((budget * I * H) / (I + H));
}

/** One expert at a time: each matrix compressed and stored on its own. */
async function compressBaseline(kind: Kind, x: ExpertSource, store: LayerStore, opts: MethodOptions) {
  const n = x.I * x.H;
  const choices: Record<string, unknown> = {};
  // With calibration: GPTQ onto MSE-fitted group scales, groups down to 16 values so the budget is
  // spent; data-free: the round-to-nearest baseline.
  const calibrated = kind === 'quant' && !!opts.calib;
  const codec = kind === 'quant' ? chooseCodec(opts.budget, calibrated ? { n, groupSizes: GPTQ_GROUPS } : { rtn: true, n }) : null;
  const quantizer = new CalibratedQuantizer(calibrated ? opts.calib! : null, x.I, x.H);
  const rank = svdRank(x.I, x.H, opts.budget);
  const count = sparseCapacity(n, Math.floor(opts.budget * 2 * n));
  if (codec) choices.codec = codec.id;
  if (kind === 'svd') choices.rank = rank;
  if (kind === 'prune') choices.density = count / n;
  const uncalibrated = new Set<number>();
  const builder = new RecordBuilder(x, store, kind, null);
  const buf = expertBuffers(x); // one expert's buffers, reused for every expert
  for (let e = 0; e < x.E; e++) {
    const w = readExpert(x, e, buf);
    const parts: ExpertParts = { gate: [], up: [], down: [] };
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, x.I, x.H);
      if (kind === 'prune') parts[m].push(storeTopMagnitude(store, `e${e}.${m}`, w[m], count));
      else if (kind === 'quant') {
        const ref = store.put(`e${e}.${m}.q`, { dtype: 'U8', shape: [storedBytes(codec!, n)], data: await quantizer.quantize(w[m], m, e, codec!) });
        parts[m].push({ kind: 'quant', codec: codec!.id, ref });
      } else {
        // With calibration: the rank-r factors that minimise the output error on the expert's own
        // inputs (calib/whiten.ts); uncalibrated experts and data-free runs: the plain SVD.
        const hess = kind === 'svd' && opts.calib ? hessianFor(opts.calib.experts[e], m, inp) : null;
        if (kind === 'svd' && opts.calib && !hess) uncalibrated.add(e);
        const f = hess ? await whitenedLowRank(w[m], out, inp, hess, rank, { seed: opts.seed + e })
          : await lowRank(w[m], out, inp, rank, accurateSvdOptions(rank, out, inp, opts.seed + e));
        const left = store.put(`e${e}.${m}.left`, { dtype: 'BF16', shape: [out, rank], data: fromFloat32(f.left, 'BF16') });
        const right = store.put(`e${e}.${m}.right`, { dtype: 'BF16', shape: [rank, inp], data: fromFloat32(f.right, 'BF16') });
        parts[m].push({ kind: 'lowrank', left, right, rank, transposed: false });
      }
    }
    builder.add(e, parts, w);
  }
  const calib = quantizer.choices();
  if (calib) choices.calib = calib;
  if (kind === 'svd' && opts.calib) choices.calib = { mode: 'whitened', uncalibrated: [...uncalibrated].sort((a, b) => a - b) };
  return builder.finish(choices);
}

const checks: Record<Kind, (E: number, I: number, H: number, budget: number) => void> = {
  prune: (_E, I, H, b) => {
    if (sparseCapacity(I * H, Math.floor(b * 2 * I * H)) < 1) throw budgetError('prune', b, 1 / 16, 'a bitmask of positions');
  },
  svd: (_E, I, H, b) => {
    if (svdRank(I, H, b) < 1) throw budgetError('svd', b, (I + H) / (I * H), 'rank 1 per matrix');
  },
  quant: (_E, _I, _H, b) => {
    const min = minimumBudget({ rtn: true });
    if (b < min) throw budgetError('quant', b, min, 'the cheapest round-to-nearest codec');
  },
};

function baseline(kind: Kind, summary: string): Method {
  return { name: kind, summary, check: checks[kind], compressLayer: (x, s, o) => compressBaseline(kind, x, s, o) };
}

export const prune = baseline('prune', 'baseline: keep the largest-magnitude weights of each expert matrix');
export const svd = baseline('svd', 'baseline: truncated SVD of each expert matrix at rank budget·I·H/(I+H); with --calib: activation-whitened');
export const quant = baseline('quant', 'baseline: round-to-nearest int-k with group-wise scales; with --calib: GPTQ onto MSE-fitted scales');

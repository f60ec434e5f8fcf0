/**
 * DeRS (Decompose, Replace, Synthesis) for upcycled MoEs: one shared base per layer plus a light
 * delta per expert. ders-drop keeps a seeded random subset of delta entries rescaled by 1/keep
 * (DARE-style; the mask is regenerated from the seed, never stored), ders-magnitude keeps the
 * largest |Δ|, ders-quant stores Δ block-quantized.
 */
import { computeBase } from '../base.js';
import { budgetError, derivedSeed, expertMatrix, referenceBytes, type LayerExperts, type LayerStore, type Method, type MethodOptions } from '../method.js';
import { MATRICES, matrixShape, type ExpertParts, type MatrixPart } from '../parts.js';
import { chooseCodec, chooseScaleDtype, minimumBudget } from '../quant/select.js';
import { storedBytes } from '../quant/codec.js';
import { seededPositions } from '../sparse.js';
import { baseLabel } from '../base.js';
import { makeRecord } from './record.js';
import { sparseCapacity, storeDense, storeSparse, storeTopMagnitude, subtract } from './store-helpers.js';
import { alignedBase } from './aligned.js';

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

async function compressDers(kind: Delta, x: LayerExperts, store: LayerStore, opts: MethodOptions) {
  const ref = referenceBytes(x.E, x.I, x.H);
  const aligned = opts.base === 'aligned' && !opts.denseBase;
  const { base, perms, view, iters } = aligned ? await alignedBase(x, opts) : { base: computeBase(x, opts.base as Exclude<typeof opts.base, 'aligned'>, opts.denseBase), perms: null, view: x, iters: 0 };
  const parts: ExpertParts[] = Array.from({ length: x.E }, () => ({ gate: [], up: [], down: [] }));
  const rounded: Record<string, Float32Array> = {};
  for (const m of MATRICES) {
    const [out, inp] = matrixShape(m, x.I, x.H);
    const d = storeDense(store, `base.${m}`, base[m], out, inp);
    rounded[m] = d.rounded;
    for (const p of parts) p[m].push(d.part);
  }
  const permBytes = perms ? x.E * x.I * (x.I > 65536 ? 4 : 2) : 0;
  const left = opts.budget * ref - store.bytes() - permBytes; // bytes for all deltas of the layer
  if (left <= 0) throw budgetError(`ders-${kind}`, opts.budget, (store.bytes() + permBytes) / ref, 'the shared base');
  const n = x.I * x.H;
  const choices: Record<string, unknown> = { base: baseLabel(opts.base, opts.denseBase !== null) };
  if (aligned) choices.alignIters = iters;
  if (kind === 'drop') {
    // keep fraction q with a 4-sigma margin on the total kept count of the layer's 3E matrices
    const r = left / (2 * 3 * x.E * n);
    const q = Math.min(1, r - 4 * Math.sqrt((r * (1 - r)) / (3 * x.E * n)));
    if (q <= 0) throw budgetError('ders-drop', opts.budget, (store.bytes() + permBytes) / ref, 'the shared base plus a non-empty delta');
    choices.keep = q;
    MATRICES.forEach((m, mi) => {
      for (let e = 0; e < x.E; e++) {
        const delta = subtract(expertMatrix(view, m, e), rounded[m]);
        const seed = derivedSeed(opts.seed, x.layer, e, mi);
        const pos = seededPositions(seed, q, n);
        const part = storeSparse(store, `e${e}.${m}.delta`, delta, pos, 1 / q);
        // positions are regenerated from the seed: drop the stored index
        if (part.kind === 'sparse' && part.index.kind !== 'seeded') {
          store.tensors.delete(part.index.ref);
          part.index = { kind: 'seeded', seed, keep: q };
        }
        parts[e][m].push(part);
      }
    });
  } else if (kind === 'magnitude') {
    const count = sparseCapacity(n, Math.floor(left / (3 * x.E)));
    choices.density = count / n;
    for (const m of MATRICES) {
      for (let e = 0; e < x.E; e++) parts[e][m].push(storeTopMagnitude(store, `e${e}.${m}.delta`, subtract(expertMatrix(view, m, e), rounded[m]), count));
    }
  } else {
    // Deltas of upcycled experts can be ~1e-5: pick bf16 block scales when f16 would underflow.
    const probe = subtract(expertMatrix(view, 'gate', 0), rounded.gate);
    const codec = chooseCodec(left / ref, { n, scaleDtype: chooseScaleDtype(probe, 4, 64) });
    choices.codec = codec.id;
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, x.I, x.H);
      for (let e = 0; e < x.E; e++) {
        const delta = subtract(expertMatrix(view, m, e), rounded[m]);
        const ref2 = store.put(`e${e}.${m}.delta.q`, { dtype: 'U8', shape: [storedBytes(codec, n)], data: codec.quantize(delta) });
        parts[e][m].push({ kind: 'quant', codec: codec.id, ref: ref2 } satisfies MatrixPart);
        void out;
        void inp;
      }
    }
  }
  return makeRecord(x, store, `ders-${kind}`, parts, perms, choices);
}

function dersMethod(kind: Delta, summary: string): Method {
  return { name: `ders-${kind}`, summary, check: check(kind), compressLayer: (x, store, opts) => compressDers(kind, x, store, opts) };
}

export const dersDrop = dersMethod('drop', 'shared base + random-drop delta, rescaled; mask regenerated from the seed (upcycled MoEs)');
export const dersMagnitude = dersMethod('magnitude', 'shared base + the largest-magnitude delta entries (upcycled MoEs)');
export const dersQuant = dersMethod('quant', 'shared base + k-bit quantized deltas, MSE-fitted group scales (upcycled MoEs)');

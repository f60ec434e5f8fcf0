/** Aligning a layer's experts to their barycenter (ResMoE), shared by resmoe-*, merge and --base aligned. */
import { barycenterOfClouds, splitPoints } from '../barycenter.js';
import type { Base } from '../base.js';
import type { ExpertSource } from '../experts-io.js';
import type { MethodOptions } from '../method.js';
import type { MatrixName } from '../parts.js';

export interface Aligned {
  /** The barycenter expert. */
  base: Base;
  /** perms[e][j] = neuron of expert e stored at slot j. */
  perms: Int32Array[];
  iters: number;
}

/**
 * The barycenter from the experts' point clouds, read one expert at a time (the objective pass is
 * skipped: nothing here reports it). Alignment time goes to opts.profile when given.
 */
export async function alignedBase(x: ExpertSource, opts: Pick<MethodOptions, 'seed' | 'alignIters' | 'onProgress' | 'profile'>): Promise<Aligned> {
  const t0 = performance.now();
  const r = await barycenterOfClouds({ count: x.E, n: x.I, dim: 3 * x.H, cloud: (e, into) => x.cloud(e, into) }, { maxIters: opts.alignIters, seed: opts.seed, objective: false, onProgress: opts.onProgress });
  const p = opts.profile;
  if (p) {
    p.alignMs += performance.now() - t0;
    for (const it of r.history) {
      for (const a of it.alignments) {
        p.gemmMs += a.timings.gemmMs;
        p.gemmFlops += a.timings.gemmFlops;
        p.assignMs += a.timings.assignMs;
        p.refineMs += a.timings.refineMs;
      }
    }
  }
  return { base: splitPoints(r.bary, x.I, x.H), perms: r.perms, iters: r.iters };
}

/**
 * Matrix m of an expert moved into barycenter order: slot j takes neuron perm[j] (gate/up rows,
 * down columns), as permuteExpert does for the three together. w: [out, in] -> same shape.
 */
export function permuteMatrix(w: Float32Array, perm: Int32Array, m: MatrixName, I: number, H: number): Float32Array {
  const out = new Float32Array(w.length);
  if (m === 'down') {
    for (let h = 0; h < H; h++) {
      const o = h * I;
      for (let j = 0; j < I; j++) out[o + j] = w[o + perm[j]];
    }
  } else {
    for (let j = 0; j < I; j++) out.set(w.subarray(perm[j] * H, (perm[j] + 1) * H), j * H);
  }
  return out;
}

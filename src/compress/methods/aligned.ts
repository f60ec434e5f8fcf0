/** Aligning a layer's experts to their barycenter (ResMoE), shared by resmoe-*, merge and --base aligned. */
import { computeBarycenter, permuteExpert } from '../barycenter.js';
import type { Base } from '../base.js';
import { expertMatrix, type LayerExperts, type MethodOptions } from '../method.js';

export interface Aligned {
  /** The barycenter expert. */
  base: Base;
  /** perms[e][j] = neuron of expert e stored at slot j. */
  perms: Int32Array[];
  /** The experts permuted into barycenter order (same function, aligned neurons). */
  view: LayerExperts;
  iters: number;
}

export async function alignedBase(x: LayerExperts, opts: Pick<MethodOptions, 'seed' | 'alignIters' | 'onProgress'>): Promise<Aligned> {
  const experts = Array.from({ length: x.E }, (_, e) => ({ gate: expertMatrix(x, 'gate', e), up: expertMatrix(x, 'up', e), down: expertMatrix(x, 'down', e) }));
  const r = await computeBarycenter(experts, x.I, x.H, { maxIters: opts.alignIters, seed: opts.seed });
  const n = x.I * x.H;
  const view: LayerExperts = { ...x, gate: new Float32Array(x.E * n), up: new Float32Array(x.E * n), down: new Float32Array(x.E * n) };
  experts.forEach((w, e) => {
    const p = permuteExpert(w, r.perms[e], x.I, x.H);
    view.gate.set(p.gate, e * n);
    view.up.set(p.up, e * n);
    view.down.set(p.down, e * n);
  });
  return { base: r.bary, perms: r.perms, view, iters: r.iters };
}

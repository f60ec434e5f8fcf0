/**
 * ResMoE's barycenter expert (METHODS.md, Family 2): align every expert of a layer to a common
 * neuron order and average them, so each expert becomes barycenter + residual.
 *
 * Dimension letters: E experts, I intermediate neurons, H hidden size, D = 3H point features.
 * Expert layout (canonical, [out, in]): gate, up: [I, H]; down: [H, I].
 *
 * An expert is a cloud of I points z_j = [gate[j, :], up[j, :], down[:, j]ᵀ] ∈ R^{3H}; permuting
 * neurons (gate/up rows and down columns together) leaves its function unchanged. The
 * barycenter is the free-support Wasserstein-2 barycenter with uniform weights: start from
 * expert 0, then alternate (a) align each expert to the barycenter (an exact assignment,
 * align/align.ts) and (b) set the barycenter to the mean of the aligned experts, until no
 * assignment changes. Both steps lower the objective F = mean_e,j ‖x_j − z_e,perm_e[j]‖², so the
 * iteration is monotone; it converges to a local minimum, not necessarily the global one.
 */
import type { ProgressFn } from '../progress.js';
import {
  type AlignMode, type AlignOptions, type AlignResult, DEFAULT_SKETCH_DIM, EXACT_MAX_N, alignExpert,
} from './align/align.js';
import { type PointCloud, makeSketch, prepareCloud } from './align/cloud.js';

export { alignExpert, type AlignMode, type AlignOptions, type AlignResult } from './align/align.js';
export type { PointCloud } from './align/cloud.js';

export interface ExpertWeights {
  gate: Float32Array; // [I, H]
  up: Float32Array; // [I, H]
  down: Float32Array; // [H, I]
}

function checkExpert(fn: string, w: ExpertWeights, I: number, H: number, which = 'expert'): void {
  if (w.gate.length !== I * H) throw new Error(`${fn}: ${which} gate [I=${I}, H=${H}] needs ${I * H} values, got ${w.gate.length}`);
  if (w.up.length !== I * H) throw new Error(`${fn}: ${which} up [I=${I}, H=${H}] needs ${I * H} values, got ${w.up.length}`);
  if (w.down.length !== H * I) throw new Error(`${fn}: ${which} down [H=${H}, I=${I}] needs ${H * I} values, got ${w.down.length}`);
}

/** gate, up: [I, H], down: [H, I] -> points: [I, 3H], row j = [gate[j,:], up[j,:], down[:,j]]. */
export function expertPoints(gate: Float32Array, up: Float32Array, down: Float32Array, I: number, H: number): Float32Array {
  checkExpert('expertPoints', { gate, up, down }, I, H);
  const D = 3 * H;
  const p = new Float32Array(I * D);
  for (let j = 0; j < I; j++) {
    p.set(gate.subarray(j * H, (j + 1) * H), j * D);
    p.set(up.subarray(j * H, (j + 1) * H), j * D + H);
  }
  // down is read row by row (contiguous) and scattered into the points' last third.
  for (let h = 0; h < H; h++) {
    const o = h * I;
    for (let j = 0; j < I; j++) p[j * D + 2 * H + h] = down[o + j];
  }
  return p;
}

/** points: [I, 3H] -> gate, up: [I, H], down: [H, I] (inverse of expertPoints). */
export function splitPoints(points: Float32Array, I: number, H: number): ExpertWeights {
  const D = 3 * H;
  if (points.length !== I * D) throw new Error(`splitPoints: points [I=${I}, 3H=${D}] needs ${I * D} values, got ${points.length}`);
  const gate = new Float32Array(I * H);
  const up = new Float32Array(I * H);
  const down = new Float32Array(H * I);
  for (let j = 0; j < I; j++) {
    gate.set(points.subarray(j * D, j * D + H), j * H);
    up.set(points.subarray(j * D + H, j * D + 2 * H), j * H);
  }
  for (let h = 0; h < H; h++) {
    const o = h * I;
    for (let j = 0; j < I; j++) down[o + j] = points[j * D + 2 * H + h];
  }
  return { gate, up, down };
}

function checkPerm(fn: string, perm: Int32Array, n: number): void {
  if (perm.length !== n) throw new Error(`${fn}: perm needs ${n} entries, got ${perm.length}`);
  const seen = new Uint8Array(n);
  for (let j = 0; j < n; j++) {
    const p = perm[j];
    if (!(p >= 0 && p < n) || seen[p]) throw new Error(`${fn}: perm is not a permutation of 0..${n - 1} (entry ${j} = ${p})`);
    seen[p] = 1;
  }
}

/**
 * Neuron j of the result is neuron perm[j] of w: gate/up rows and down columns move together,
 * so the expert computes the same function.
 */
export function permuteExpert(w: ExpertWeights, perm: Int32Array, I: number, H: number): ExpertWeights {
  checkExpert('permuteExpert', w, I, H);
  checkPerm('permuteExpert', perm, I);
  const gate = new Float32Array(I * H);
  const up = new Float32Array(I * H);
  const down = new Float32Array(H * I);
  for (let j = 0; j < I; j++) {
    const s = perm[j] * H;
    gate.set(w.gate.subarray(s, s + H), j * H);
    up.set(w.up.subarray(s, s + H), j * H);
  }
  for (let h = 0; h < H; h++) {
    const o = h * I;
    for (let j = 0; j < I; j++) down[o + j] = w.down[o + perm[j]];
  }
  return { gate, up, down };
}

/** Δ = P W − W_bar: the expert in barycenter order minus the barycenter, same layout. */
export function expertResidual(w: ExpertWeights, perm: Int32Array, bary: ExpertWeights, I: number, H: number): ExpertWeights {
  checkExpert('expertResidual', bary, I, H, 'barycenter');
  const p = permuteExpert(w, perm, I, H);
  for (let k = 0; k < I * H; k++) { p.gate[k] -= bary.gate[k]; p.up[k] -= bary.up[k]; p.down[k] -= bary.down[k]; }
  return p;
}

export interface BarycenterOptions {
  /** Alternations at most (default 10). */
  maxIters?: number;
  /** Alignment mode; default chosen per size by alignExpert. */
  mode?: AlignMode;
  seed?: number;
  /** Further alignment options (sketch size, candidates, certificate rounds). */
  align?: Omit<AlignOptions, 'mode' | 'seed' | 'fallback'>;
  /**
   * Compute the objective F after every mean update (default true). From a streaming source it
   * costs one more pass over the experts per iteration; the iteration itself never needs it
   * (convergence is "no assignment changed"), so compress turns it off and records NaN.
   */
  objective?: boolean;
  onProgress?: ProgressFn;
}

/** One alternation: the alignments (without their permutations) and the objective. */
export interface IterationRecord {
  alignments: Omit<AlignResult, 'perm'>[];
  /** F with the old barycenter and the new permutations (after step a). */
  alignCost: number;
  /** F after the mean update (step b): costHistory's entry; NaN when not computed. */
  cost: number;
  /** Milliseconds of the mean update. */
  updateMs: number;
  /** Milliseconds getting the experts' clouds (reading and rearranging them, streaming sources). */
  loadMs: number;
}

export interface CloudBarycenter {
  bary: Float32Array; // [I, D]
  /** perms[e][j] = row of expert e that goes to barycenter slot j. */
  perms: Int32Array[];
  iters: number;
  converged: boolean;
  /** Objective F = mean over experts and slots of ‖x_j − z_e,perm_e[j]‖² after each iteration. */
  costHistory: number[];
  history: IterationRecord[];
  /** Milliseconds spent once per layer on the experts' norms and sketches. */
  prepareMs: number;
}

export interface BarycenterResult extends Omit<CloudBarycenter, 'bary'> {
  bary: ExpertWeights;
}

/**
 * E expert clouds [n, D], handed out one at a time: the barycenter iteration holds the barycenter,
 * a float64 accumulator and one expert cloud, never all of them (a Mixtral layer's eight clouds
 * are 5.6 GB). `cloud(e, into)` fills `into` (the one buffer the iteration reuses for every
 * expert) or returns a view of its own; the iteration never modifies what it gets.
 */
export interface CloudSource {
  count: number;
  n: number;
  dim: number;
  /** True when cloud() returns views of clouds held anyway (no buffer needed). */
  inMemory?: boolean;
  cloud(e: number, into?: Float32Array): Float32Array;
}

/** experts: E × {gate, up: [I, H], down: [H, I]} -> barycenter expert and permutations. */
export async function computeBarycenter(experts: ExpertWeights[], I: number, H: number, opts: BarycenterOptions = {}): Promise<BarycenterResult> {
  experts.forEach((w, e) => checkExpert('computeBarycenter', w, I, H, `expert ${e}`));
  const clouds = experts.map((w) => ({ data: expertPoints(w.gate, w.up, w.down, I, H), n: I, dim: 3 * H }));
  const r = await barycenterOfClouds(clouds, opts);
  return { ...r, bary: splitPoints(r.bary, I, H) };
}

/**
 * clouds: E × [n, D] (in memory, or a CloudSource read one expert at a time) -> the barycenter
 * cloud [n, D] (the iteration, in point form).
 */
export async function barycenterOfClouds(clouds: PointCloud[] | CloudSource, opts: BarycenterOptions = {}): Promise<CloudBarycenter> {
  const src = Array.isArray(clouds) ? arraySource(clouds) : clouds;
  const { n, dim, count: E } = src;
  const maxIters = opts.maxIters ?? 10;
  const seed = opts.seed ?? 0;
  const alignOpts: AlignOptions = { ...opts.align, mode: opts.mode, seed };
  const fast = (opts.mode ?? (n <= EXACT_MAX_N ? 'exact' : 'fast')) === 'fast';
  // Norms and sketches of the experts never change: computed on first load, kept for every
  // iteration (n floats and n·d floats per expert, small next to the clouds).
  const d = Math.min(alignOpts.sketchDim ?? DEFAULT_SKETCH_DIM, dim);
  const sk = fast && n > 0 ? makeSketch(dim, d, seed) : undefined;
  const cache: ({ norms?: Float64Array; sketch?: PointCloud['sketch'] } | undefined)[] = new Array(E);
  let prepareMs = 0;
  let loadMs = 0;
  // Streaming sources fill this one buffer for every expert: no cloud-sized garbage per load.
  const buffer = src.inMemory ? undefined : new Float32Array(n * dim);
  const load = (e: number): PointCloud => {
    let t = performance.now();
    const data = src.cloud(e, buffer);
    if (data.length !== n * dim) throw new Error(`barycenterOfClouds: every expert must be [${n}, ${dim}]`);
    loadMs += performance.now() - t;
    if (cache[e]) return { data, n, dim, ...cache[e] };
    t = performance.now();
    const c = prepareCloud({ data, n, dim }, sk);
    cache[e] = { norms: c.norms, sketch: c.sketch };
    prepareMs += performance.now() - t;
    return c;
  };

  let bary: Float32Array = load(0).data.slice();
  let perms: Int32Array[] = Array.from({ length: E }, () => identity(n));
  const acc = new Float64Array(n * dim); // Σ_e aligned experts, then their mean
  const costHistory: number[] = [];
  const history: IterationRecord[] = [];
  let converged = false;
  let iters = 0;
  for (let it = 0; it < maxIters; it++) {
    iters = it + 1;
    loadMs = 0;
    // Sketched once per iteration, shared by the E alignments.
    let baryCloud: PointCloud | null = prepareCloud({ data: bary, n, dim }, sk);
    const next: Int32Array[] = [];
    const alignments: Omit<AlignResult, 'perm'>[] = [];
    let alignCost = 0;
    let updateMs = 0;
    acc.fill(0);
    for (let e = 0; e < E; e++) {
      const z = load(e);
      const r = await alignExpert(baryCloud, z, { ...alignOpts, fallback: perms[e] });
      next.push(r.perm);
      const { perm: _perm, ...rest } = r;
      alignments.push(rest);
      alignCost += r.cost;
      const t = performance.now();
      addAligned(acc, z.data, r.perm, n, dim);
      updateMs += performance.now() - t;
      opts.onProgress?.({ task: 'barycenter', done: it * E + e + 1, total: maxIters * E, unit: 'alignments', detail: `iteration ${it + 1}, expert ${e}` });
    }
    baryCloud = null;
    const unchanged = it > 0 && next.every((p, e) => samePerm(p, perms[e]));
    perms = next;
    let t = performance.now();
    for (let i = 0; i < acc.length; i++) acc[i] /= E;
    updateMs += performance.now() - t;
    const objective = opts.objective === false ? NaN : objectiveOf(acc, perms, load, n, dim);
    t = performance.now();
    bary.set(acc); // float64 mean rounded to float32, in the barycenter's own buffer
    updateMs += performance.now() - t;
    history.push({ alignments, alignCost: alignCost / (E * Math.max(n, 1)), cost: objective, updateMs, loadMs });
    costHistory.push(objective);
    if (unchanged) { converged = true; break; }
  }
  return { bary, perms, iters, converged, costHistory, history, prepareMs };
}

/** In-memory clouds as a source (views, no copies). */
function arraySource(clouds: PointCloud[]): CloudSource {
  if (clouds.length === 0) throw new Error('barycenterOfClouds: needs at least one expert');
  const { n, dim } = clouds[0];
  for (const c of clouds) {
    if (c.n !== n || c.dim !== dim || c.data.length !== n * dim) throw new Error(`barycenterOfClouds: every expert must be [${n}, ${dim}]`);
  }
  return { count: clouds.length, n, dim, inMemory: true, cloud: (e) => clouds[e].data };
}

function identity(n: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => i);
}

function samePerm(a: Int32Array, b: Int32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * acc[j] += z[perm[j]] for every slot j (rows of D values), in float64. Summed expert by expert
 * in order 0..E−1, then divided by E: per element the same operations as a per-row mean.
 */
function addAligned(acc: Float64Array, z: Float32Array, perm: Int32Array, n: number, dim: number): void {
  for (let j = 0; j < n; j++) {
    const o = perm[j] * dim;
    const a = j * dim;
    for (let k = 0; k < dim; k++) acc[a + k] += z[o + k];
  }
}

/**
 * F = mean_e,j ‖mean_j − z_e,perm_e[j]‖² against the float64 mean (a second pass over the
 * experts, no cancellation).
 */
function objectiveOf(mean: Float64Array, perms: Int32Array[], load: (e: number) => PointCloud, n: number, dim: number): number {
  let total = 0;
  for (let e = 0; e < perms.length; e++) {
    const z = load(e).data;
    const perm = perms[e];
    for (let j = 0; j < n; j++) {
      const o = perm[j] * dim;
      const a = j * dim;
      for (let k = 0; k < dim; k++) { const t = z[o + k] - mean[a + k]; total += t * t; }
    }
  }
  return total / (perms.length * Math.max(n, 1));
}

/**
 * Cost of one barycenter iteration (align E experts, then average) on a synthetic layer whose
 * answer is known, split into cost GEMMs, assignment and the rest. Returns numbers, never prints.
 *
 * Synthetic layer: a base cloud [I, 3H] of standard normals; expert e's row l is base row
 * σ_e(l) plus Gaussian noise of standard deviation `noise`. Starting from expert 0, the right
 * permutation for expert e is perm[j] = σ_e⁻¹(σ_0(j)).
 *
 * Measured on the 2-core dev machine (shared with other jobs, load 2-4), H = 4096 (D = 12288),
 * E = 8, noise 0.1, one iteration, default options, seconds:
 *   I = 2048   exact: total 14.6 (GEMM 11.9, assignment 0.7, other 2.0)
 *              fast:  total 5.4  (GEMM wait 0.5, assignment 0.04, other 4.9: exact candidate
 *                     costs 2.4, mean update 1.0, expert sketches 0.9)
 *   I = 14336  fast:  total 59   (GEMM wait 14, assignment 0.2, other 45: candidate costs 15,
 *                     mean update 6.8, expert sketches 8.0), planted answer recovered and proven
 *   I = 14336  exact: one pair 39 (GEMM 35, JV 2.8), so ~320 for the iteration.
 */
import type { ProgressFn } from '../progress.js';
import { type AlignMode, type AlignOptions, type AlignResult, alignExpert } from './align/align.js';
import { type PointCloud, permutedDistance } from './align/cloud.js';
import { barycenterOfClouds } from './barycenter.js';
import { Rng } from '../tensor/random.js';

export interface AlignBenchOptions {
  I: number;
  H: number;
  E: number;
  seed?: number;
  mode: AlignMode;
  /** Noise standard deviation relative to the base's (default 0.1). */
  noise?: number;
  sketchDim?: number;
  candidates?: number;
  rounds?: number;
  onProgress?: ProgressFn;
}

export interface AlignBenchTimings {
  /** ORT GEMMs (dense cost, or sketch scores and certificate passes). */
  gemmMs: number;
  /** Dense or sparse LAPJV. */
  assignMs: number;
  /** Everything else in the iteration: norms, sketches, scans, exact candidate costs, mean update. */
  otherMs: number;
  /** Part of otherMs: exact costs on candidate edges (fast mode). */
  refineMs: number;
  /** Part of otherMs: the barycenter mean update. */
  updateMs: number;
  /** Part of otherMs: the experts' norms and sketches, computed once per layer (not per iteration). */
  prepareMs: number;
  totalMs: number;
}

export interface AlignBenchResult {
  I: number;
  H: number;
  E: number;
  mode: AlignMode;
  noise: number;
  timings: AlignBenchTimings;
  /** Per-expert alignment figures (timings, certificate, edges, cost, lower bound). */
  perExpert: { totalMs: number; gemmMs: number; assignMs: number; refineMs: number; certified: boolean; violations: number; edges: number; cost: number; lowerBound: number }[];
  /** Fraction of (expert, slot) pairs where the alignment found the planted answer. */
  recovered: number;
  /** Every alignment proven optimal. */
  certified: boolean;
  /** Building the synthetic layer (not part of totalMs). */
  setupMs: number;
}

/** Normals two at a time (both Box–Muller outputs): the layer at Mixtral size is 1.4e9 values. */
function fillNormals(a: Float32Array, rng: Rng, scale: number, addTo?: Float32Array): void {
  for (let i = 0; i < a.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rng.next())) * scale;
    const th = 2 * Math.PI * rng.next();
    a[i] = (addTo ? addTo[i] : 0) + r * Math.cos(th);
    if (i + 1 < a.length) a[i + 1] = (addTo ? addTo[i + 1] : 0) + r * Math.sin(th);
  }
}

function shuffled(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const r = rng.int(i + 1);
    const t = p[i]; p[i] = p[r]; p[r] = t;
  }
  return p;
}

export async function benchAlignment(opts: AlignBenchOptions): Promise<AlignBenchResult> {
  const { I, H, E, mode } = opts;
  const seed = opts.seed ?? 0;
  const noise = opts.noise ?? 0.1;
  const D = 3 * H;
  const rng = new Rng(seed);
  const t0 = performance.now();
  const base = new Float32Array(I * D);
  fillNormals(base, rng, 1);
  const sigmas: Int32Array[] = [];
  const clouds: PointCloud[] = [];
  const row = new Float32Array(D);
  for (let e = 0; e < E; e++) {
    const s = shuffled(I, rng);
    sigmas.push(s);
    const data = new Float32Array(I * D);
    for (let l = 0; l < I; l++) {
      fillNormals(row, rng, noise, base.subarray(s[l] * D, (s[l] + 1) * D));
      data.set(row, l * D);
    }
    clouds.push({ data, n: I, dim: D });
  }
  const setupMs = performance.now() - t0;

  const t1 = performance.now();
  const r = await barycenterOfClouds(clouds, {
    maxIters: 1, mode, seed,
    align: { sketchDim: opts.sketchDim, candidates: opts.candidates, rounds: opts.rounds },
    onProgress: opts.onProgress,
  });
  const totalMs = performance.now() - t1;

  const it = r.history[0];
  const sum = (f: (a: (typeof it.alignments)[number]) => number) => it.alignments.reduce((s, a) => s + f(a), 0);
  const gemmMs = sum((a) => a.timings.gemmMs);
  const assignMs = sum((a) => a.timings.assignMs);
  const refineMs = sum((a) => a.timings.refineMs);
  let hits = 0;
  for (let e = 0; e < E; e++) {
    const inv = new Int32Array(I);
    for (let l = 0; l < I; l++) inv[sigmas[e][l]] = l;
    for (let j = 0; j < I; j++) if (r.perms[e][j] === inv[sigmas[0][j]]) hits++;
  }
  return {
    I, H, E, mode, noise,
    timings: { gemmMs, assignMs, refineMs, updateMs: it.updateMs, prepareMs: r.prepareMs, otherMs: totalMs - gemmMs - assignMs, totalMs },
    perExpert: it.alignments.map((a) => ({
      totalMs: a.timings.totalMs, gemmMs: a.timings.gemmMs, assignMs: a.timings.assignMs, refineMs: a.timings.refineMs,
      certified: a.certified, violations: a.violations, edges: a.edges, cost: a.cost, lowerBound: a.lowerBound,
    })),
    recovered: hits / (E * I),
    certified: it.alignments.every((a) => a.certified),
    setupMs,
  };
}

export interface AlignCompareResult {
  n: number;
  dim: number;
  exactMs: number;
  fastMs: number;
  exactCost: number;
  fastCost: number;
  /** (fast − exact) / exact, in percent. */
  gapPct: number;
  /** (fast − exact) / (identity − exact), in percent: the share of the possible gain lost. */
  gapOfGainPct: number;
  /** Fraction of slots where both modes chose the same row. */
  identical: number;
  certified: boolean;
  /** (fast − proven lower bound) / fast, in percent: the gap fast mode can vouch for itself. */
  provenGapPct: number;
  fast: AlignResult;
}

/** Aligns one pair both ways and reports how far the fast answer is from the exact one. */
export async function compareAlignment(x: PointCloud, z: PointCloud, fastOpts: AlignOptions = {}): Promise<AlignCompareResult> {
  const exact = await alignExpert(x, z, { mode: 'exact' });
  const fast = await alignExpert(x, z, { ...fastOpts, mode: 'fast' });
  const identityCost = permutedDistance(x, z, Int32Array.from({ length: x.n }, (_, i) => i));
  let same = 0;
  for (let j = 0; j < x.n; j++) if (exact.perm[j] === fast.perm[j]) same++;
  return {
    n: x.n, dim: x.dim, exactMs: exact.timings.totalMs, fastMs: fast.timings.totalMs,
    exactCost: exact.cost, fastCost: fast.cost,
    gapPct: (100 * (fast.cost - exact.cost)) / exact.cost,
    gapOfGainPct: identityCost > exact.cost ? (100 * (fast.cost - exact.cost)) / (identityCost - exact.cost) : 0,
    identical: same / x.n,
    certified: fast.certified,
    provenGapPct: Math.max(0, (100 * (fast.cost - fast.lowerBound)) / fast.cost),
    fast,
  };
}

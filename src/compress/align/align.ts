/**
 * Align one expert to the barycenter: the permutation p minimising Σ_j ‖x_j − z_p(j)‖² between
 * barycenter rows x_j and expert rows z_l (both [n, D], D = 3H).
 *
 * 'exact': the full [n, n] cost by GEMM (2n²D flops) and dense LAPJV. At Mixtral size
 *   (n = 14336, D = 12288) that is ~5 TFLOP and an 822 MB matrix per expert per iteration.
 * 'fast': candidates from a sketch, exact costs only on them, sparse LAPJV, and a certificate:
 *   1. sketch both clouds with an orthonormal count-sketch Q (d ≪ D features, O(nD));
 *   2. score every pair by ‖x‖² + ‖z‖² − 2(D/d)·Qx·Qz (a [n, d]·[d, n] GEMM, 2n²d flops) and
 *      keep the k best columns per row, plus the fallback permutation's edge (so a perfect
 *      matching always exists among the candidates);
 *   3. exact float64 costs on those n(k+1) edges, exact sparse assignment over them;
 *   4. price and certify, one more [n, d]·[d, n] pass with the sparse duals (u, v):
 *      LB_ij = ‖x‖² + ‖z‖² − 2(Qx·Qz + ‖r_x‖‖r_z‖) ≤ ‖x_i − z_j‖² for every pair (Cauchy–Schwarz
 *      on the residuals r = x − QᵀQx), so u'_i = min(u_i, min over non-candidates of LB_ij − v_j)
 *      is dual feasible for the full problem and Σu' + Σv is a proven lower bound on the
 *      optimum. No non-candidate pair with u_i + v_j > LB_ij: the answer is exactly optimal.
 *      Otherwise the pairs whose estimated reduced cost is negative (column generation) join
 *      the candidates and the sparse problem is re-solved, for a few rounds.
 *
 * When fast mode works: the certificate needs matched pairs to be closer than about d/D of the
 * typical distance, which holds for experts that are noisy permutations of each other (noise
 * up to 0.15-0.2 of the weights' scale at d = 256, D = 12288, measured at n = 2048) and then one
 * round proves the answer; with more noise the planted answer is still found but unproven. For
 * unrelated experts the optimal partner of a neuron sits deep in its ranking (median rank 32 of
 * 512 on the trained fixture), no sketch of affordable size resolves it, and fast mode returns
 * an unproven answer (about a third of the achievable cost reduction lost at n = 2048-4096, see
 * EXACT_MAX_N); the exact mode is the default up to EXACT_MAX_N for that reason.
 */
import { lapjv } from '../assignment.js';
import {
  type PointCloud, type Sketch, type SketchedCloud, checkCloud, denseCost, edgeCosts, gemmRowBlocks, makeSketch,
  permutedDistance, rowNorms, sketchCloud,
} from './cloud.js';
import { type SparseCost, type SparseLapSolution, balanceDuals, solveSparseAssignment } from './sparse-lap.js';

export type AlignMode = 'exact' | 'fast';

/**
 * Largest n aligned exactly when no mode is given. Measured with compareAlignment on the 2-core
 * dev machine (shared, load ~2), D = 12288, one expert pair, exact / fast seconds, the range
 * over planted-noise and unrelated clouds (unrelated is the high end: JV works hardest there):
 *   n = 2048: 0.76-1.34 / 0.56-1.29    n = 4096: 2.9-6.5 / 1.3-4.0    n = 14336: 39 / 7.0
 * Up to 4096 exact costs at most ~2.5x fast and gives the true optimum where fast mode cannot
 * (it lost 36-39% of the achievable reduction on unrelated clouds); that covers the
 * fine-grained MoEs (I ≤ 2880). Beyond it the n²D GEMM dominates (35 s of the 39 at 14336).
 */
export const EXACT_MAX_N = 4096;
export const DEFAULT_SKETCH_DIM = 256;
export const DEFAULT_CANDIDATES = 8;
export const DEFAULT_ROUNDS = 3;

export interface AlignOptions {
  /** Default: 'exact' when n ≤ EXACT_MAX_N, else 'fast'. */
  mode?: AlignMode;
  /** Sketch features d (fast mode), capped at D. */
  sketchDim?: number;
  /** Candidate columns kept per row (fast mode). */
  candidates?: number;
  /** Seed of the sketch. */
  seed?: number;
  /** A permutation whose edges are always candidates (e.g. the previous iteration's answer). */
  fallback?: Int32Array;
  /**
   * Pricing/certificate passes over all pairs, each one [n, d]·[d, n] GEMM (fast mode; 0 skips
   * them and leaves the answer unproven). After a pass that fails to certify, each row's k most
   * promising new pairs join the candidates and the sparse problem is re-solved.
   */
  rounds?: number;
}

export interface AlignTimings {
  /**
   * Waiting for ORT GEMMs (the full cost in exact mode, the sketch scores and certificate passes
   * in fast mode); the next block's GEMM runs while the current one is scanned, so this is the
   * part not hidden behind the scans.
   */
  gemmMs: number;
  /** Floating-point operations of those GEMMs (2·rows·cols·K each). */
  gemmFlops: number;
  /** Dense or sparse LAPJV. */
  assignMs: number;
  /** Exact costs on candidate edges (fast). */
  refineMs: number;
  /** Everything else: norms, sketches, top-k and certificate scans, final cost. */
  otherMs: number;
  totalMs: number;
}

export interface AlignResult {
  /** perm[j] = expert row placed in barycenter slot j. */
  perm: Int32Array;
  /** Σ_j ‖x_j − z_perm[j]‖², float64. */
  cost: number;
  /** Proven lower bound on the optimal cost (exact mode: the cost itself). */
  lowerBound: number;
  /**
   * True when perm is proven optimal: exact mode (optimal for its float32 cost matrix), or fast
   * mode with no violation left (against float64 candidate costs and a rigorous sketch bound).
   */
  certified: boolean;
  mode: AlignMode;
  /** Edges the assignment was solved over (n² for exact). */
  edges: number;
  /** Non-candidate edges failing the certificate in the last round (fast). */
  violations: number;
  timings: AlignTimings;
}

/** bary: [n, D], expert: [n, D] -> the optimal (or certified-near-optimal) slot permutation. */
export async function alignExpert(bary: PointCloud, expert: PointCloud, opts: AlignOptions = {}): Promise<AlignResult> {
  checkCloud('alignExpert', 'bary', bary);
  checkCloud('alignExpert', 'expert', expert);
  if (bary.n !== expert.n || bary.dim !== expert.dim) {
    throw new Error(`alignExpert: bary [${bary.n}, ${bary.dim}] and expert [${expert.n}, ${expert.dim}] differ in shape`);
  }
  if (opts.fallback !== undefined && !isPerm(opts.fallback, bary.n)) throw new Error('alignExpert: fallback is not a permutation of the rows');
  const mode = opts.mode ?? (bary.n <= EXACT_MAX_N ? 'exact' : 'fast');
  const t0 = performance.now();
  const timer = { gemmMs: 0, gemmFlops: 0, assignMs: 0, refineMs: 0 };
  const x: PointCloud = { ...bary, norms: bary.norms ?? rowNorms(bary) };
  const z: PointCloud = { ...expert, norms: expert.norms ?? rowNorms(expert) };
  const r = mode === 'exact' ? await alignExact(x, z, timer) : await alignFast(x, z, opts, timer);
  const totalMs = performance.now() - t0;
  const timings = { ...timer, otherMs: totalMs - timer.gemmMs - timer.assignMs - timer.refineMs, totalMs };
  return { ...r, mode, timings };
}

type Timer = { gemmMs: number; gemmFlops: number; assignMs: number; refineMs: number };
/** Candidate edges in CSR form: row i's columns are cols[rowStart[i] .. rowStart[i+1]). */
type Edges = { rowStart: Int32Array; cols: Int32Array };
type Core = Omit<AlignResult, 'mode' | 'timings'>;

function isPerm(p: Int32Array, n: number): boolean {
  if (p.length !== n) return false;
  const seen = new Uint8Array(n);
  for (const j of p) {
    if (j < 0 || j >= n || seen[j]) return false;
    seen[j] = 1;
  }
  return true;
}

async function alignExact(x: PointCloud, z: PointCloud, timer: Timer): Promise<Core> {
  const n = x.n;
  const cost = await denseCost(x, z, timer);
  const t = performance.now();
  const perm = lapjv(cost, n).rowToCol;
  timer.assignMs += performance.now() - t;
  const c = permutedDistance(x, z, perm);
  return { perm, cost: c, lowerBound: c, certified: true, edges: n * n, violations: 0 };
}

/** The sketch of `c` under `sk`, reusing the cached one when it was made with the same sketch. */
function sketched(c: PointCloud, sk: Sketch): SketchedCloud {
  const s = c.sketch?.sketch;
  if (s !== undefined && s.d === sk.d && s.dim === sk.dim && s.seed === sk.seed) return c.sketch!;
  return sketchCloud(c, sk);
}

async function alignFast(x: PointCloud, z: PointCloud, opts: AlignOptions, timer: Timer): Promise<Core> {
  const n = x.n;
  if (n === 0) return { perm: new Int32Array(0), cost: 0, lowerBound: 0, certified: true, edges: 0, violations: 0 };
  const d = Math.min(opts.sketchDim ?? DEFAULT_SKETCH_DIM, x.dim);
  const seed = opts.seed ?? 0;
  const cachedSk = z.sketch?.sketch;
  const sk = cachedSk !== undefined && cachedSk.d === d && cachedSk.seed === seed ? cachedSk : makeSketch(x.dim, d, seed);
  const sx = sketched(x, sk);
  const sz = sketched(z, sk);
  const k = Math.min(opts.candidates ?? DEFAULT_CANDIDATES, n);
  const fallback = opts.fallback ?? Int32Array.from({ length: n }, (_, i) => i);

  let edges = await topCandidates(x, z, sx, sz, k, fallback, timer);
  let sol = refineAndSolve(x, z, edges, undefined, timer);
  const rounds = opts.rounds ?? DEFAULT_ROUNDS;
  let lowerBound = -Infinity;
  let violations = -1;
  for (let round = 0; round < rounds; round++) {
    const scan = await priceAndCertify(x, z, sx, sz, edges, sol, k, timer);
    lowerBound = scan.lowerBound;
    violations = scan.violations;
    if (scan.violations === 0 || scan.add.cols.length === 0 || round === rounds - 1) break;
    const added = addEdges(edges, scan.add);
    sol = refineAndSolve(x, z, added.edges, { prev: edges, costs: sol.edgeCost, isNew: added.isNew }, timer);
    edges = added.edges;
  }
  return {
    perm: sol.rowToCol, cost: sol.cost, lowerBound, certified: violations === 0, edges: edges.cols.length,
    violations: Math.max(violations, 0),
  };
}

/** The m smallest (value, column) pairs seen, sorted; `worst` is the bar to enter. */
class TopList {
  readonly val: Float64Array;
  readonly col: Int32Array;
  count = 0;
  worst: number;
  constructor(readonly m: number, private readonly bar = Infinity) {
    this.val = new Float64Array(m);
    this.col = new Int32Array(m);
    this.worst = bar;
  }
  reset(): void { this.count = 0; this.worst = this.bar; }
  /** Call only when value < worst (the caller's cheap test rejects most columns). */
  push(value: number, col: number): void {
    let p = this.count < this.m ? this.count++ : this.m - 1;
    while (p > 0 && this.val[p - 1] > value) { this.val[p] = this.val[p - 1]; this.col[p] = this.col[p - 1]; p--; }
    this.val[p] = value; this.col[p] = col;
    if (this.count === this.m) this.worst = this.val[this.m - 1];
  }
}

/**
 * Top-k columns per row by the sketch estimate of ‖x_i − z_j‖², plus fallback[i].
 * Ranking within a row needs only ‖z_j‖² − 2(D/d)·Qx_i·Qz_j.
 */
async function topCandidates(
  x: PointCloud, z: PointCloud, sx: SketchedCloud, sz: SketchedCloud, k: number, fallback: Int32Array, timer: Timer,
): Promise<Edges> {
  const n = x.n;
  const { d, dim } = sx.sketch;
  const scale = (2 * dim) / d;
  const nz = z.norms!;
  const rowStart = new Int32Array(n + 1);
  const cols = new Int32Array(n * (k + 1));
  const top = new TopList(k);
  let nnz = 0;
  // The row loops live in a plain function: locals of an async function that span an await are
  // kept in its heap context, which measured 3-5x slower for these 10⁸-iteration loops.
  for await (const [r0, B, g] of gemmRowBlocks(sx.proj, sz.proj, n, n, d, timer)) { // g: [B, n]
    nnz = topOfBlock(g, r0, B, nz, scale, top, fallback, rowStart, cols, nnz);
  }
  return { rowStart, cols: cols.slice(0, nnz) };
}

/** Rows r0 .. r0+B−1 of topCandidates; appends their columns at cols[nnz] and returns the new nnz. */
function topOfBlock(
  g: Float32Array, r0: number, B: number, nz: Float64Array, scale: number, top: TopList, fallback: Int32Array,
  rowStart: Int32Array, cols: Int32Array, nnz: number,
): number {
  const n = nz.length;
  for (let b = 0; b < B; b++) {
    const o = b * n;
    top.reset();
    let worst = top.worst;
    for (let j = 0; j < n; j++) {
      const a = nz[j] - scale * g[o + j];
      if (a < worst) { top.push(a, j); worst = top.worst; }
    }
    const i = r0 + b;
    let hasFallback = false;
    for (let p = 0; p < top.count; p++) {
      cols[nnz++] = top.col[p];
      if (top.col[p] === fallback[i]) hasFallback = true;
    }
    if (!hasFallback) cols[nnz++] = fallback[i];
    rowStart[i + 1] = nnz;
  }
  return nnz;
}

type Solved = SparseLapSolution & { edgeCost: Float64Array };

/** Exact costs on the edges (reusing those already known) and the sparse assignment. */
function refineAndSolve(
  x: PointCloud, z: PointCloud, edges: Edges,
  known: { prev: Edges; costs: Float64Array; isNew: Uint8Array } | undefined, timer: Timer,
): Solved {
  let t = performance.now();
  let costs: Float64Array;
  if (known === undefined) {
    costs = edgeCosts(x, z, edges.rowStart, edges.cols);
  } else {
    // Only the added edges need a dot product; old ones keep their order within each row.
    const newStart = new Int32Array(x.n + 1);
    const newCols: number[] = [];
    for (let i = 0; i < x.n; i++) {
      for (let e = edges.rowStart[i]; e < edges.rowStart[i + 1]; e++) if (known.isNew[e]) newCols.push(edges.cols[e]);
      newStart[i + 1] = newCols.length;
    }
    const fresh = edgeCosts(x, z, newStart, Int32Array.from(newCols));
    costs = new Float64Array(edges.cols.length);
    let a = 0, b = 0;
    for (let e = 0; e < edges.cols.length; e++) costs[e] = known.isNew[e] ? fresh[b++] : known.costs[a++];
  }
  timer.refineMs += performance.now() - t;
  t = performance.now();
  const s: SparseCost = { n: x.n, rowStart: edges.rowStart, cols: edges.cols, costs };
  const sol = balanceDuals(s, solveSparseAssignment(s));
  timer.assignMs += performance.now() - t;
  return { ...sol, edgeCost: costs };
}

/** Appends each row's new edges to its candidate list; isNew marks them in the result. */
function addEdges(edges: Edges, add: Edges): { edges: Edges; isNew: Uint8Array } {
  const n = edges.rowStart.length - 1;
  const total = edges.cols.length + add.cols.length;
  const rowStart = new Int32Array(n + 1);
  const out = new Int32Array(total);
  const isNew = new Uint8Array(total);
  let p = 0;
  for (let i = 0; i < n; i++) {
    for (let e = edges.rowStart[i]; e < edges.rowStart[i + 1]; e++) out[p++] = edges.cols[e];
    for (let e = add.rowStart[i]; e < add.rowStart[i + 1]; e++) { isNew[p] = 1; out[p++] = add.cols[e]; }
    rowStart[i + 1] = p;
  }
  return { edges: { rowStart, cols: out }, isNew };
}

/**
 * One pass over every non-candidate pair (i, j), with the duals (u, v) of the sparse optimum:
 *  - certificate: is u_i + v_j ≤ LB_ij? Returns the proven lower bound
 *    Σ_i min(u_i, min_j LB_ij − v_j) + Σ_j v_j and the number of violating pairs. LB comes from
 *    float32 sketch products, so it is lowered by the worst-case float32 dot product error
 *    γ‖Qx‖‖Qz‖, γ = (d + 4)·2⁻²⁴ (d products, plus rounding Qx and Qz to float32): the bound
 *    holds whatever order ORT sums in.
 *  - pricing (column generation): the pairs whose *estimated* reduced cost
 *    ‖x‖² + ‖z‖² − 2(D/d)·Qx·Qz − u_i − v_j is negative could improve the answer; the perRow
 *    most negative of each row are returned, and failing those, the perRow most violating.
 */
async function priceAndCertify(
  x: PointCloud, z: PointCloud, sx: SketchedCloud, sz: SketchedCloud, edges: Edges,
  sol: SparseLapSolution, perRow: number, timer: Timer,
): Promise<{ lowerBound: number; violations: number; priced: number; add: Edges }> {
  const n = x.n;
  const { d, dim } = sx.sketch;
  const nx = x.norms!;
  const u = sol.rowPrice;
  const v = sol.colPrice;
  const scan = new RowScanner(z, sz, v, (d + 4) * 2 ** -24, (2 * dim) / d, perRow);
  const rows = { u: sol.rowPrice, thr: Float64Array.from(u, (ui, i) => ui - nx[i]), rx: sx.residNorm, qx: sx.projNorm };
  let lowerBound = 0;
  for (let j = 0; j < n; j++) lowerBound += v[j];
  for await (const [r0, B, g] of gemmRowBlocks(sx.proj, sz.proj, n, n, d, timer)) { // g: [B, n]
    lowerBound += scan.block(g, r0, B, edges, rows);
  }
  const { priced, violating } = scan;
  // Violators are worth adding only when the bound is informative (few of them); when nearly
  // every pair violates, the sketch bound is too loose to certify anything at this d.
  const useViolators = scan.violations <= n * perRow;
  const addStart = new Int32Array(n + 1);
  const addCols: number[] = [];
  let nPriced = 0;
  for (let i = 0; i < n; i++) {
    const row = useViolators ? [...new Set([...priced[i], ...violating[i]])] : priced[i];
    nPriced += priced[i].length;
    for (const j of row) addCols.push(j);
    addStart[i + 1] = addCols.length;
  }
  return { lowerBound, violations: scan.violations, priced: nPriced, add: { rowStart: addStart, cols: Int32Array.from(addCols) } };
}

/** The per-row inner loop of priceAndCertify, with its column-side terms precomputed. */
class RowScanner {
  readonly mark: Uint8Array; // candidate columns of the current row
  readonly price: TopList;
  readonly viol: TopList;
  violations = 0;
  /** Per row: the columns priced (estimated reduced cost < 0) and the most violating ones. */
  readonly priced: number[][] = [];
  readonly violating: number[][] = [];
  private readonly w: Float64Array; // ‖z_j‖² − v_j
  private readonly rz: Float64Array; // ‖r_z‖
  private readonly qz: Float64Array; // γ‖Qz_j‖
  constructor(z: PointCloud, sz: SketchedCloud, v: Float64Array, gamma: number, private readonly scale: number, perRow: number) {
    const n = z.n;
    this.w = new Float64Array(n);
    this.qz = new Float64Array(n);
    for (let j = 0; j < n; j++) { this.w[j] = z.norms![j] - v[j]; this.qz[j] = gamma * sz.projNorm[j]; }
    this.rz = sz.residNorm;
    this.mark = new Uint8Array(n);
    this.price = new TopList(perRow, 0);
    this.viol = new TopList(perRow, 0);
  }

  /**
   * Rows r0 .. r0+B−1 (g: [B, n] sketch products). Both tests compare (quantity − ‖x_i‖²) − v_j
   * with thr_i = u_i − ‖x_i‖². Returns Σ over the rows of the certified u'_i.
   */
  block(g: Float32Array, r0: number, B: number, edges: Edges,
    rows: { u: Float64Array; thr: Float64Array; rx: Float64Array; qx: Float64Array }): number {
    const n = this.w.length;
    const { mark, price, viol } = this;
    const { rowStart, cols } = edges;
    let sum = 0;
    for (let b = 0; b < B; b++) {
      const i = r0 + b;
      for (let e = rowStart[i]; e < rowStart[i + 1]; e++) mark[cols[e]] = 1;
      const best = this.scan(g, b * n, rows.rx[i], rows.qx[i], rows.thr[i]);
      for (let e = rowStart[i]; e < rowStart[i + 1]; e++) mark[cols[e]] = 0;
      this.priced.push(Array.from(price.col.subarray(0, price.count)));
      this.violating.push(Array.from(viol.col.subarray(0, viol.count)));
      sum += Math.min(rows.u[i], best + rows.u[i]);
    }
    return sum;
  }

  /** Row i: g[o + j] = Qx_i·Qz_j. Returns min over non-candidates of LB_ij − v_j − u_i. */
  scan(g: Float32Array, o: number, rx: number, qx: number, thr: number): number {
    const { w, rz, qz, mark, price, viol, scale } = this;
    const n = w.length;
    price.reset();
    viol.reset();
    let best = Infinity;
    let count = 0;
    let pWorst = price.worst;
    let vWorst = viol.worst;
    for (let j = 0; j < n; j++) {
      if (mark[j] !== 0) continue;
      const gj = g[o + j];
      const lb = w[j] - 2 * (gj + rx * rz[j] + qx * qz[j]) - thr;
      if (lb < best) best = lb;
      if (lb >= 0) continue;
      count++;
      if (lb < vWorst) { viol.push(lb, j); vWorst = viol.worst; }
      // Estimated reduced cost; only pairs the bound cannot rule out are priced.
      const est = w[j] - scale * gj - thr;
      if (est < pWorst) { price.push(est, j); pWorst = price.worst; }
    }
    this.violations += count;
    return best;
  }
}

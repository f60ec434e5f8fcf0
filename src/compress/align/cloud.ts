/**
 * Point clouds of expert neurons and the distances between two of them.
 *
 * Dimension letters: n points per cloud (the intermediate size I), D features per point
 * (3H: gate row, up row, down column), d sketch features (d ≪ D).
 *
 * Kernels and their naive twins (STYLE rule 3):
 *   denseCost      (GEMM: ‖x‖² + ‖z‖² − 2 x·zᵀ, row blocks)  <->  denseCostNaive (Σ (x − z)²)
 *   sketchCloud    (scatter-add, O(nD))                       <->  sketchMatrix + linearNaive
 *   edgeCosts      (dot form with cached norms)               <->  edgeCostsNaive (Σ (x − z)²)
 */
import { linear, linearNaive } from '../../tensor/gemm.js';
import { Rng } from '../../tensor/random.js';

/** n points of dimension D, row-major: data [n, D]. */
export interface PointCloud {
  data: Float32Array;
  n: number;
  dim: number;
  /** ‖row‖², cached by prepareCloud: [n]. */
  norms?: Float64Array;
  /** The cloud under a sketch, cached by prepareCloud. */
  sketch?: SketchedCloud;
}

export function checkCloud(fn: string, what: string, c: PointCloud): void {
  if (!Number.isInteger(c.n) || c.n < 0 || !Number.isInteger(c.dim) || c.dim < 1) {
    throw new Error(`${fn}: ${what} needs integer n >= 0 and dim >= 1, got n=${c.n}, dim=${c.dim}`);
  }
  if (c.data.length !== c.n * c.dim) throw new Error(`${fn}: ${what} [n=${c.n}, D=${c.dim}] needs ${c.n * c.dim} values, got ${c.data.length}`);
}

/** data: [n, D] -> ‖row‖²: [n], float64. */
export function rowNorms(c: PointCloud): Float64Array {
  const { data, n, dim } = c;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * dim;
    let s = 0;
    for (let k = 0; k < dim; k++) s += data[o + k] * data[o + k];
    out[i] = s;
  }
  return out;
}

function normsOf(c: PointCloud): Float64Array {
  return c.norms ?? rowNorms(c);
}

/**
 * A count-sketch with orthonormal rows: the D coordinates are split at random into d groups
 * of near-equal size and each sketch feature is a signed sum over its group, scaled by
 * 1/√|group|. Disjoint supports make Q [d, D] exactly orthonormal (Q Qᵀ = I), which the
 * alignment certificate needs (‖Qx‖ ≤ ‖x‖, and x·z ≤ Qx·Qz + ‖x − QᵀQx‖ ‖z − QᵀQz‖), and
 * applying it costs O(nD) instead of a [n, D]·[D, d] GEMM. For the inner products of dense,
 * spread-out vectors it estimates as well as a Gaussian projection.
 */
export interface Sketch {
  d: number;
  dim: number;
  seed: number;
  group: Int32Array; // [D] sketch feature of each coordinate
  coef: Float64Array; // [D] ±1/√|group|
}

export function makeSketch(dim: number, d: number, seed: number): Sketch {
  if (!Number.isInteger(d) || d < 1 || d > dim) throw new Error(`makeSketch: d must be an integer in [1, D=${dim}], got ${d}`);
  const rng = new Rng(seed);
  const order = new Int32Array(dim);
  for (let k = 0; k < dim; k++) order[k] = k;
  for (let k = dim - 1; k > 0; k--) {
    const r = rng.int(k + 1);
    const t = order[k]; order[k] = order[r]; order[r] = t;
  }
  const group = new Int32Array(dim);
  const coef = new Float64Array(dim);
  const base = Math.floor(dim / d);
  const extra = dim % d; // the first `extra` groups hold one more coordinate
  let pos = 0;
  for (let g = 0; g < d; g++) {
    const size = base + (g < extra ? 1 : 0);
    const scale = 1 / Math.sqrt(size);
    for (let t = 0; t < size; t++, pos++) {
      const k = order[pos];
      group[k] = g;
      coef[k] = rng.next() < 0.5 ? -scale : scale;
    }
  }
  return { d, dim, seed, group, coef };
}

/** Dense Q: [d, D] of a sketch (the naive twin's operator; tests check Q Qᵀ = I). */
export function sketchMatrix(sk: Sketch): Float32Array {
  const q = new Float32Array(sk.d * sk.dim);
  for (let k = 0; k < sk.dim; k++) q[sk.group[k] * sk.dim + k] = sk.coef[k];
  return q;
}

export interface SketchedCloud {
  sketch: Sketch;
  /** Qx: [n, d], float32 for the GEMMs. */
  proj: Float32Array;
  /** ‖Qx‖ from the float64 accumulators: [n]. */
  projNorm: Float64Array;
  /** ‖x − QᵀQx‖ = √(‖x‖² − ‖Qx‖²): [n]. */
  residNorm: Float64Array;
}

/** data: [n, D] -> Qx: [n, d] with the norms the certificate needs. */
export function sketchCloud(c: PointCloud, sk: Sketch): SketchedCloud {
  const { data, n, dim } = c;
  if (dim !== sk.dim) throw new Error(`sketchCloud: cloud has D=${dim}, sketch was built for D=${sk.dim}`);
  const { d, group, coef } = sk;
  const norms = normsOf(c);
  const proj = new Float32Array(n * d);
  const projNorm = new Float64Array(n);
  const residNorm = new Float64Array(n);
  const acc = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    const o = i * dim;
    for (let k = 0; k < dim; k++) acc[group[k]] += coef[k] * data[o + k];
    let s = 0;
    for (let g = 0; g < d; g++) s += acc[g] * acc[g];
    proj.set(acc, i * d);
    projNorm[i] = Math.sqrt(s);
    residNorm[i] = Math.sqrt(Math.max(0, norms[i] - s));
  }
  return { sketch: sk, proj, projNorm, residNorm };
}

/** Naive twin of sketchCloud's projection: data [n, D] · Qᵀ -> [n, d]. */
export function sketchCloudNaive(c: PointCloud, sk: Sketch): Float32Array {
  return linearNaive(c.data, sketchMatrix(sk), c.n, sk.d, c.dim);
}

/** Fills in the cached norms (and a sketch when asked) so repeated alignments reuse them. */
export function prepareCloud(c: PointCloud, sk?: Sketch): PointCloud {
  checkCloud('prepareCloud', 'cloud', c);
  const norms = normsOf(c);
  const withNorms: PointCloud = { ...c, norms };
  if (sk === undefined) return withNorms;
  const cached = c.sketch;
  const same = cached !== undefined && cached.sketch.d === sk.d && cached.sketch.dim === sk.dim && cached.sketch.seed === sk.seed;
  const sketch = same ? cached : sketchCloud(withNorms, sk);
  return { ...withNorms, sketch };
}

/** Rows per GEMM block: bounds the [B, n] temporary (B·n·4 bytes). */
export const COST_BLOCK_ROWS = 512;

/**
 * Row blocks of x wᵀ (x: [n, K], w: [m, K]) -> yields [r0, B, g: [B, m]], the GEMM of block
 * b + 1 already running while the caller scans block b: ORT computes on its own threads, so the
 * JS scan and the next product overlap. `timer.gemmMs` gets only the time spent waiting;
 * `timer.gemmFlops` counts 2·B·m·K per block.
 */
export async function* gemmRowBlocks(
  x: Float32Array, w: Float32Array, n: number, m: number, K: number, timer?: { gemmMs: number; gemmFlops?: number },
): AsyncGenerator<[number, number, Float32Array]> {
  const start = (r0: number) => linear(x.subarray(r0 * K, Math.min(n, r0 + COST_BLOCK_ROWS) * K), w, Math.min(COST_BLOCK_ROWS, n - r0), m, K);
  let next = n > 0 ? start(0) : undefined;
  for (let r0 = 0; r0 < n; r0 += COST_BLOCK_ROWS) {
    const t = performance.now();
    const g = await next!;
    if (timer) {
      timer.gemmMs += performance.now() - t;
      if (timer.gemmFlops !== undefined) timer.gemmFlops += 2 * Math.min(COST_BLOCK_ROWS, n - r0) * m * K;
    }
    next = r0 + COST_BLOCK_ROWS < n ? start(r0 + COST_BLOCK_ROWS) : undefined;
    yield [r0, Math.min(COST_BLOCK_ROWS, n - r0), g];
  }
}

/**
 * x: [n, D], z: [n, D] -> cost: [n, n] float32, cost[i, j] = ‖x_i − z_j‖², by one GEMM per
 * block of rows. Float32 products put an absolute error of about √D·2⁻²⁴·‖x_i‖‖z_j‖ on each
 * entry; the assignment is exact for the matrix it is given. Negative results of cancellation
 * are clamped to 0 (a squared distance).
 */
export async function denseCost(x: PointCloud, z: PointCloud, timer?: { gemmMs: number; gemmFlops?: number }): Promise<Float32Array> {
  checkCloud('denseCost', 'x', x);
  checkCloud('denseCost', 'z', z);
  if (x.dim !== z.dim) throw new Error(`denseCost: x has D=${x.dim}, z has D=${z.dim}`);
  const { n, dim } = x;
  const m = z.n;
  const nx = normsOf(x);
  const nz = normsOf(z);
  const cost = new Float32Array(n * m);
  for await (const [r0, B, g] of gemmRowBlocks(x.data, z.data, n, m, dim, timer)) { // g: [B, m]
    distancesOfBlock(g, r0, B, nx, nz, cost);
  }
  return cost;
}

/**
 * cost[r0 + b, j] = ‖x‖² + ‖z_j‖² − 2 g[b, j], clamped at 0. A plain function so the loop
 * variables stay in registers (an async function keeps locals that span an await in its heap
 * context).
 */
function distancesOfBlock(g: Float32Array, r0: number, B: number, nx: Float64Array, nz: Float64Array, cost: Float32Array): void {
  const m = nz.length;
  for (let b = 0; b < B; b++) {
    const o = b * m;
    const co = (r0 + b) * m;
    const xi = nx[r0 + b];
    for (let j = 0; j < m; j++) cost[co + j] = Math.max(0, xi + nz[j] - 2 * g[o + j]);
  }
}

/** Naive twin of denseCost: float64 Σ_k (x_ik − z_jk)², [n, n]. */
export function denseCostNaive(x: PointCloud, z: PointCloud): Float64Array {
  const { n, dim } = x;
  const m = z.n;
  const cost = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) cost[i * m + j] = sqDist(x.data, i * dim, z.data, j * dim, dim);
  }
  return cost;
}

function sqDist(a: Float32Array, ao: number, b: Float32Array, bo: number, dim: number): number {
  let s = 0;
  for (let k = 0; k < dim; k++) {
    const t = a[ao + k] - b[bo + k];
    s += t * t;
  }
  return s;
}

/**
 * Exact ‖x_i − z_j‖² for listed edges: row i's columns are cols[rowStart[i] .. rowStart[i+1]).
 * Dot form ‖x‖² + ‖z‖² − 2x·z with cached norms and four float64 accumulators: products of two
 * float32 are exact in float64, so the only rounding is the summation (~1e-16 relative) and
 * even the zero distance of an exact copy comes out at float64 round-off.
 */
export function edgeCosts(x: PointCloud, z: PointCloud, rowStart: Int32Array, cols: Int32Array): Float64Array {
  const { dim } = x;
  const a = x.data;
  const b = z.data;
  const nx = normsOf(x);
  const nz = normsOf(z);
  const out = new Float64Array(cols.length);
  const d4 = dim - (dim % 4);
  for (let i = 0; i < x.n; i++) {
    const ao = i * dim;
    for (let e = rowStart[i]; e < rowStart[i + 1]; e++) {
      const bo = cols[e] * dim;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let k = 0;
      for (; k < d4; k += 4) {
        s0 += a[ao + k] * b[bo + k];
        s1 += a[ao + k + 1] * b[bo + k + 1];
        s2 += a[ao + k + 2] * b[bo + k + 2];
        s3 += a[ao + k + 3] * b[bo + k + 3];
      }
      for (; k < dim; k++) s0 += a[ao + k] * b[bo + k];
      out[e] = Math.max(0, nx[i] + nz[cols[e]] - 2 * (s0 + s1 + s2 + s3));
    }
  }
  return out;
}

/** Naive twin of edgeCosts. */
export function edgeCostsNaive(x: PointCloud, z: PointCloud, rowStart: Int32Array, cols: Int32Array): Float64Array {
  const out = new Float64Array(cols.length);
  for (let i = 0; i < x.n; i++) {
    for (let e = rowStart[i]; e < rowStart[i + 1]; e++) out[e] = sqDist(x.data, i * x.dim, z.data, cols[e] * z.dim, x.dim);
  }
  return out;
}

/** Σ_j ‖x_j − z_perm[j]‖² in float64 (the alignment objective for one expert). */
export function permutedDistance(x: PointCloud, z: PointCloud, perm: Int32Array): number {
  let s = 0;
  for (let j = 0; j < x.n; j++) s += sqDist(x.data, j * x.dim, z.data, perm[j] * z.dim, x.dim);
  return s;
}

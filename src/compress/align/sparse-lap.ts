/**
 * Exact linear assignment restricted to a sparse set of allowed (row, column) edges: the solver
 * behind the fast alignment, where each barycenter slot keeps only a few candidate neurons.
 *
 * It is Jonker–Volgenant carried over to sparse rows (as in LAPJVsp / lapmod): column prices
 * start at the column minima, augmenting row reduction assigns most rows cheaply, and every row
 * left free gets a shortest augmenting path, here Dijkstra with a binary heap over only the
 * columns it reaches, so a path that touches 10 columns costs 10 columns of work, not n.
 *
 * The naive twin is the dense solver on the same edges with a prohibitive cost elsewhere
 * (sparseAsDense + lapjv in the tests).
 */
import type { CostMatrix } from '../assignment.js';

/** Edges in CSR form: row i's edges are e in [rowStart[i], rowStart[i+1]). */
export interface SparseCost {
  n: number;
  rowStart: Int32Array; // [n + 1]
  cols: Int32Array; // [nnz]
  costs: Float64Array; // [nnz]
}

export interface SparseLapSolution {
  rowToCol: Int32Array; // [n]
  /** Column prices v; rowPrice u_i = min over row i's edges of cost − v (dual feasible). */
  colPrice: Float64Array; // [n]
  rowPrice: Float64Array; // [n]
  /** Σ cost of the assignment (float64). */
  cost: number;
}

export function checkSparse(fn: string, s: SparseCost): void {
  const { n, rowStart, cols, costs } = s;
  if (rowStart.length !== n + 1 || rowStart[0] !== 0) throw new Error(`${fn}: rowStart must have n + 1 = ${n + 1} entries starting at 0`);
  if (cols.length !== costs.length || rowStart[n] !== cols.length) throw new Error(`${fn}: rowStart[n] = ${rowStart[n]}, cols ${cols.length}, costs ${costs.length} must agree`);
  for (let i = 0; i < n; i++) {
    if (rowStart[i + 1] <= rowStart[i]) throw new Error(`${fn}: row ${i} has no edges, so no assignment exists`);
  }
  for (let e = 0; e < cols.length; e++) {
    if (cols[e] < 0 || cols[e] >= n) throw new Error(`${fn}: edge ${e} has column ${cols[e]} outside [0, ${n})`);
    if (!Number.isFinite(costs[e])) throw new Error(`${fn}: edge ${e} cost is ${costs[e]}`);
  }
}

/** Dense [n, n] copy with `missing` (finite, larger than any real path) where no edge exists. */
export function sparseAsDense(s: SparseCost, missing: number): Float64Array {
  const d = new Float64Array(s.n * s.n).fill(missing);
  for (let i = 0; i < s.n; i++) {
    for (let e = s.rowStart[i]; e < s.rowStart[i + 1]; e++) d[i * s.n + s.cols[e]] = s.costs[e];
  }
  return d;
}

/** Dense matrix -> SparseCost holding every edge (tests, small problems). */
export function denseAsSparse(cost: CostMatrix, n: number): SparseCost {
  const rowStart = new Int32Array(n + 1);
  const cols = new Int32Array(n * n);
  const costs = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    rowStart[i + 1] = (i + 1) * n;
    for (let j = 0; j < n; j++) { cols[i * n + j] = j; costs[i * n + j] = cost[i * n + j]; }
  }
  return { n, rowStart, cols, costs };
}

/** Min-heap of (key, column) with lazy deletion: stale entries are skipped when popped. */
class ColumnHeap {
  private keys = new Float64Array(64);
  private vals = new Int32Array(64);
  size = 0;
  push(key: number, col: number): void {
    if (this.size === this.keys.length) {
      const k = new Float64Array(this.size * 2); k.set(this.keys); this.keys = k;
      const v = new Int32Array(this.size * 2); v.set(this.vals); this.vals = v;
    }
    let i = this.size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.keys[p] <= key) break;
      this.keys[i] = this.keys[p]; this.vals[i] = this.vals[p];
      i = p;
    }
    this.keys[i] = key; this.vals[i] = col;
  }
  /** Removes the minimum and returns its column (its key is read with topKey before). */
  pop(): number {
    const top = this.vals[0];
    const key = this.keys[--this.size];
    const val = this.vals[this.size];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= this.size) break;
      if (c + 1 < this.size && this.keys[c + 1] < this.keys[c]) c++;
      if (this.keys[c] >= key) break;
      this.keys[i] = this.keys[c]; this.vals[i] = this.vals[c];
      i = c;
    }
    this.keys[i] = key; this.vals[i] = val;
    return top;
  }
  topKey(): number { return this.keys[0]; }
  clear(): void { this.size = 0; }
}

/**
 * s: sparse [n, n] costs -> the minimum-cost assignment using only the given edges.
 * Throws when the edges admit no perfect matching (callers add a fallback permutation's edges,
 * which guarantees one).
 */
export function solveSparseAssignment(s: SparseCost): SparseLapSolution {
  checkSparse('solveSparseAssignment', s);
  const { n, rowStart, cols, costs } = s;
  const x = new Int32Array(n).fill(-1); // row -> column
  const xe = new Int32Array(n).fill(-1); // row -> edge index of its assignment
  const y = new Int32Array(n).fill(-1); // column -> row
  const v = new Float64Array(n).fill(Infinity);
  // Column reduction: prices start at column minima, so every reduced cost is ≥ 0.
  for (let e = 0; e < cols.length; e++) if (costs[e] < v[cols[e]]) v[cols[e]] = costs[e];
  for (let j = 0; j < n; j++) if (v[j] === Infinity) throw new Error(`solveSparseAssignment: column ${j} has no edges, so no assignment exists`);
  let free = new Int32Array(n);
  for (let i = 0; i < n; i++) free[i] = i;
  let numFree = n;
  for (let pass = 0; pass < 2 && numFree > 0; pass++) numFree = rowReduction(s, x, xe, y, v, free, numFree);
  free = free.slice(0, numFree);
  augment(s, x, xe, y, v, free);
  const u = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    let m = Infinity;
    for (let e = rowStart[i]; e < rowStart[i + 1]; e++) m = Math.min(m, costs[e] - v[cols[e]]);
    u[i] = m;
    total += costs[xe[i]];
  }
  return { rowToCol: x, colPrice: v, rowPrice: u, cost: total };
}

/** Sparse augmenting row reduction (see lapjv's augmentingRowReduction for the why). */
function rowReduction(
  s: SparseCost, x: Int32Array, xe: Int32Array, y: Int32Array, v: Float64Array, free: Int32Array, prvNumFree: number,
): number {
  const { n, rowStart, cols, costs } = s;
  let k = 0;
  let numFree = 0;
  let steps = 0;
  const cap = 8 * n + prvNumFree;
  while (k < prvNumFree) {
    if (++steps > cap) {
      while (k < prvNumFree) free[numFree++] = free[k++];
      break;
    }
    const i = free[k++];
    let umin = Infinity, usubmin = Infinity;
    let e1 = -1, e2 = -1;
    for (let e = rowStart[i]; e < rowStart[i + 1]; e++) {
      const h = costs[e] - v[cols[e]];
      if (h < usubmin) {
        if (h >= umin) { usubmin = h; e2 = e; } else { usubmin = umin; umin = h; e2 = e1; e1 = e; }
      }
    }
    let j1 = cols[e1];
    let i0 = y[j1];
    // A single-edge row has no second best: take its column without touching the price.
    const strict = umin < usubmin && usubmin !== Infinity;
    if (strict) {
      v[j1] -= usubmin - umin;
    } else if (i0 > -1 && e2 >= 0) {
      e1 = e2;
      j1 = cols[e2];
      i0 = y[j1];
    }
    if (i0 > -1) { x[i0] = -1; xe[i0] = -1; }
    x[i] = j1; xe[i] = e1; y[j1] = i;
    if (i0 > -1) {
      if (strict) free[--k] = i0;
      else free[numFree++] = i0;
    }
  }
  return numFree;
}

/** Shortest augmenting paths from each free row, Dijkstra over the columns it reaches. */
function augment(s: SparseCost, x: Int32Array, xe: Int32Array, y: Int32Array, v: Float64Array, free: Int32Array): void {
  const { n, rowStart, cols, costs } = s;
  const d = new Float64Array(n);
  const predEdge = new Int32Array(n); // edge (pred row -> column) on the column's current path
  const predRow = new Int32Array(n);
  const state = new Uint8Array(n); // 0 unreached, 1 reached (in heap), 2 scanned
  const touched = new Int32Array(n);
  const scanned = new Int32Array(n);
  const heap = new ColumnHeap();
  for (const freeRow of free) {
    let nTouched = 0;
    let nScanned = 0;
    heap.clear();
    const relax = (i: number, base: number): void => {
      for (let e = rowStart[i]; e < rowStart[i + 1]; e++) {
        const j = cols[e];
        if (state[j] === 2) continue;
        const dj = base + costs[e] - v[j];
        if (state[j] === 0 || dj < d[j]) {
          if (state[j] === 0) { state[j] = 1; touched[nTouched++] = j; }
          d[j] = dj; predEdge[j] = e; predRow[j] = i;
          heap.push(dj, j);
        }
      }
    };
    relax(freeRow, 0);
    let end = -1;
    while (end < 0) {
      if (heap.size === 0) throw new Error(`solveSparseAssignment: row ${freeRow} cannot be matched, the edges admit no perfect assignment`);
      const key = heap.topKey();
      const j = heap.pop();
      if (state[j] === 2 || key > d[j]) continue; // stale heap entry
      state[j] = 2;
      scanned[nScanned++] = j;
      if (y[j] < 0) { end = j; break; }
      // Reduced cost of the holder's current edge is u_i; leaving it costs nothing extra.
      const i = y[j];
      relax(i, d[j] - (costs[xe[i]] - v[j]));
    }
    const min = d[end];
    for (let t = 0; t < nScanned - 1; t++) { const j = scanned[t]; v[j] += d[j] - min; }
    // Flip the alternating path back to the free row.
    let j = end;
    for (;;) {
      const i = predRow[j];
      const next = x[i];
      y[j] = i; x[i] = j; xe[i] = predEdge[j];
      if (i === freeRow) break;
      j = next;
    }
    for (let t = 0; t < nTouched; t++) state[touched[t]] = 0;
  }
}

/**
 * Re-chooses the optimal duals of a solved sparse problem so that the row prices are as large
 * as possible subject to u ≤ 0 (and v follows from tightness on the assignment), which keeps
 * u_i + v_j = u_i − u_{y(j)} + c_{y(j), j} small on edges the sparse problem never saw.
 *
 * Why: the certificate in align.ts tests u_i + v_j ≤ LB_ij on every non-candidate pair, and the
 * duals JV ends with are lopsided (augmenting row reduction moves a row's whole margin into its
 * price), so a correct answer can fail the test on thousands of pairs. Any optimal duals are
 * potentials of the residual graph: u_i ≤ u_{i'} + (c_ij − c_{i'j}) for each edge (i, j) whose
 * column is held by row i'. The largest such u with u ≤ 0 is the shortest-path distance from a
 * virtual source joined to every row at 0; the old duals make every edge weight non-negative
 * (c_ij − u⁰_i − v⁰_j ≥ 0), so one multi-source Dijkstra over the candidate edges finds it.
 * In the planted case every row ends at u = 0 and v_j is the matched cost of column j.
 */
export function balanceDuals(s: SparseCost, sol: SparseLapSolution): SparseLapSolution {
  const { n, rowStart, cols, costs } = s;
  const x = sol.rowToCol;
  const y = new Int32Array(n);
  const assignedCost = new Float64Array(n); // cost of row i's assigned edge
  for (let i = 0; i < n; i++) {
    y[x[i]] = i;
    for (let e = rowStart[i]; e < rowStart[i + 1]; e++) if (cols[e] === x[i]) { assignedCost[i] = costs[e]; break; }
  }
  const u0 = new Float64Array(n);
  for (let i = 0; i < n; i++) u0[i] = assignedCost[i] - sol.colPrice[x[i]];
  // Reverse adjacency: from holder row i' = y[j] to every row i listing column j.
  const byCol = new Int32Array(n + 1);
  for (let e = 0; e < cols.length; e++) byCol[cols[e] + 1]++;
  for (let j = 0; j < n; j++) byCol[j + 1] += byCol[j];
  const fill = byCol.slice(0, n);
  const colRow = new Int32Array(cols.length);
  const colEdge = new Int32Array(cols.length);
  for (let i = 0; i < n; i++) {
    for (let e = rowStart[i]; e < rowStart[i + 1]; e++) { const p = fill[cols[e]]++; colRow[p] = i; colEdge[p] = e; }
  }
  let M = -Infinity;
  for (let i = 0; i < n; i++) M = Math.max(M, u0[i]);
  const dist = new Float64Array(n);
  const done = new Uint8Array(n);
  const heap = new ColumnHeap(); // keyed by rows here
  for (let i = 0; i < n; i++) { dist[i] = M - u0[i]; heap.push(dist[i], i); }
  while (heap.size > 0) {
    const key = heap.topKey();
    const a = heap.pop();
    if (done[a] || key > dist[a]) continue;
    done[a] = 1;
    const j = x[a]; // edges a -> i for every row i that lists a's column
    for (let p = byCol[j]; p < byCol[j + 1]; p++) {
      const i = colRow[p];
      if (done[i] || i === a) continue;
      const w = Math.max(0, costs[colEdge[p]] - u0[i] - sol.colPrice[j]);
      const di = dist[a] + w;
      if (di < dist[i]) { dist[i] = di; heap.push(di, i); }
    }
  }
  const u = new Float64Array(n);
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[x[i]] = assignedCost[i] - Math.min(0, dist[i] - M + u0[i]);
  // u as the row minimum of c − v: dual feasible on every edge even after float rounding.
  for (let i = 0; i < n; i++) {
    let m = Infinity;
    for (let e = rowStart[i]; e < rowStart[i + 1]; e++) m = Math.min(m, costs[e] - v[cols[e]]);
    u[i] = m;
  }
  return { ...sol, rowPrice: u, colPrice: v };
}

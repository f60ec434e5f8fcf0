/**
 * Exact linear assignment on dense square cost matrices: find the permutation p minimising
 * Σ_i cost[i, p(i)]. This is the inner step of the barycenter alignment (barycenter.ts), where
 * rows are barycenter slots and columns are one expert's neurons.
 *
 *   solveAssignment          Jonker–Volgenant (LAPJV), the fast path
 *   solveAssignmentHungarian O(n³) Hungarian with potentials, a second exact reference
 *   solveAssignmentBrute     every permutation (n ≤ 9), the naive twin
 *
 * Layout: cost is row-major [n, n], cost[i * n + j] = cost of giving column j to row i.
 * Every solver returns rowToCol: Int32Array [n], rowToCol[i] = column assigned to row i.
 * Arithmetic is float64 whatever the input dtype, so a Float32Array cost is solved exactly
 * for the float32 values it holds.
 */

export type CostMatrix = Float32Array | Float64Array;

export interface LapSolution {
  /** rowToCol[i] = column assigned to row i. */
  rowToCol: Int32Array;
  /**
   * Column prices v of the dual: with u_i = cost[i, rowToCol[i]] − v[rowToCol[i]],
   * u_i + v_j ≤ cost[i, j] for all i, j, with equality on the assignment (the optimality
   * certificate; the sparse solver and its tests rely on it).
   */
  colPrice: Float64Array;
}

function checkCost(fn: string, cost: CostMatrix, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new Error(`${fn}: n must be a non-negative integer, got ${n}`);
  if (cost.length !== n * n) throw new Error(`${fn}: cost [n=${n}, n=${n}] needs ${n * n} values, got ${cost.length}`);
  for (let k = 0; k < cost.length; k++) {
    if (!Number.isFinite(cost[k])) throw new Error(`${fn}: cost[${Math.floor(k / n)}, ${k % n}] is ${cost[k]}; costs must be finite`);
  }
}

/** Σ_i cost[i, rowToCol[i]] in float64. */
export function assignmentCost(cost: CostMatrix, n: number, rowToCol: Int32Array): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += cost[i * n + rowToCol[i]];
  return s;
}

/** True when p is a permutation of 0..n-1. */
export function isPermutation(p: Int32Array, n: number): boolean {
  if (p.length !== n) return false;
  const seen = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const j = p[i];
    if (j < 0 || j >= n || seen[j]) return false;
    seen[j] = 1;
  }
  return true;
}

/** cost: [n, n] -> rowToCol: [n]. Exact minimum-cost assignment by Jonker–Volgenant. */
export function solveAssignment(cost: CostMatrix, n: number): Int32Array {
  return lapjv(cost, n).rowToCol;
}

/**
 * Jonker & Volgenant (1987), "A shortest augmenting path algorithm for dense and sparse linear
 * assignment problems": column reduction, reduction transfer, two passes of augmenting row
 * reduction, then a Dijkstra-like shortest augmenting path for each row still free.
 * Worst case O(n³); on the near-permutation costs of expert alignment the first phases assign
 * almost every row and the whole solve is close to O(n²).
 */
export function lapjv(cost: CostMatrix, n: number): LapSolution {
  checkCost('lapjv', cost, n);
  const x = new Int32Array(n).fill(-1); // row -> column
  const y = new Int32Array(n).fill(-1); // column -> row
  const v = new Float64Array(n);
  if (n === 0) return { rowToCol: x, colPrice: v };
  if (n === 1) {
    x[0] = 0;
    v[0] = cost[0];
    return { rowToCol: x, colPrice: v };
  }
  const free = new Int32Array(n);
  let numFree = columnReduction(cost, n, x, y, v, free);
  for (let pass = 0; pass < 2 && numFree > 0; pass++) numFree = augmentingRowReduction(cost, n, x, y, v, free, numFree);
  augmentFreeRows(cost, n, x, y, v, free, numFree);
  return { rowToCol: x, colPrice: v };
}

/** Column reduction and reduction transfer; returns how many rows are left free (in `free`). */
function columnReduction(cost: CostMatrix, n: number, x: Int32Array, y: Int32Array, v: Float64Array, free: Int32Array): number {
  const matches = new Int32Array(n);
  // Reverse column order as in the original: ties then favour low column indices.
  for (let j = n - 1; j >= 0; j--) {
    let min = cost[j];
    let imin = 0;
    for (let i = 1; i < n; i++) {
      const c = cost[i * n + j];
      if (c < min) { min = c; imin = i; }
    }
    v[j] = min;
    if (++matches[imin] === 1) {
      x[imin] = j;
      y[j] = imin;
    } else if (v[j] < v[x[imin]]) {
      const j1 = x[imin];
      x[imin] = j;
      y[j] = imin;
      y[j1] = -1;
    } else {
      y[j] = -1;
    }
  }
  let numFree = 0;
  for (let i = 0; i < n; i++) {
    if (matches[i] === 0) {
      free[numFree++] = i;
    } else if (matches[i] === 1) {
      // Transfer: lower the price of the row's column to its second-best reduced cost, so the
      // row keeps it but other rows find it cheaper.
      const j1 = x[i];
      const o = i * n;
      let min = Infinity;
      for (let j = 0; j < n; j++) {
        if (j === j1) continue;
        const h = cost[o + j] - v[j];
        if (h < min) min = h;
      }
      v[j1] -= min;
    }
  }
  return numFree;
}

/**
 * One pass of augmenting row reduction: each free row takes its cheapest column, lowering that
 * column's price to the row's second-best; the row it displaces is retried at once when the
 * price fell (progress), otherwise queued for the next pass. With float prices a decrement can
 * vanish below one ulp and two rows can then trade a column forever, so a pass is capped; the
 * rows left over go to the exact augmentation phase, which needs no such heuristic.
 */
function augmentingRowReduction(
  cost: CostMatrix, n: number, x: Int32Array, y: Int32Array, v: Float64Array, free: Int32Array, prvNumFree: number,
): number {
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
    const o = i * n;
    let umin = cost[o] - v[0];
    let j1 = 0;
    let usubmin = Infinity;
    let j2 = -1;
    for (let j = 1; j < n; j++) {
      const h = cost[o + j] - v[j];
      if (h < usubmin) {
        if (h >= umin) {
          usubmin = h;
          j2 = j;
        } else {
          usubmin = umin;
          umin = h;
          j2 = j1;
          j1 = j;
        }
      }
    }
    let i0 = y[j1];
    if (umin < usubmin) {
      v[j1] -= usubmin - umin;
    } else if (i0 > -1) {
      // Tie: take the second-best column instead of fighting over the first.
      j1 = j2;
      i0 = y[j2];
    }
    if (i0 > -1) x[i0] = -1;
    x[i] = j1;
    y[j1] = i;
    if (i0 > -1) {
      if (umin < usubmin) free[--k] = i0;
      else free[numFree++] = i0;
    }
  }
  return numFree;
}

/** Shortest augmenting path (Dijkstra over columns with reduced costs) for each free row. */
function augmentFreeRows(
  cost: CostMatrix, n: number, x: Int32Array, y: Int32Array, v: Float64Array, free: Int32Array, numFree: number,
): void {
  const d = new Float64Array(n); // shortest path length to each column
  const pred = new Int32Array(n); // row preceding each column on its path
  // collist[0, low): scanned; [low, up): at the current minimum, to scan; [up, n): the rest.
  const collist = new Int32Array(n);
  for (let f = 0; f < numFree; f++) {
    const freeRow = free[f];
    const fo = freeRow * n;
    for (let j = 0; j < n; j++) {
      d[j] = cost[fo + j] - v[j];
      pred[j] = freeRow;
      collist[j] = j;
    }
    let low = 0;
    let up = 0;
    let last = 0;
    let min = 0;
    let endOfPath = -1;
    while (endOfPath < 0) {
      if (up === low) {
        // Collect every column at the new minimum distance; stop if one of them is free.
        last = low - 1;
        min = d[collist[up++]];
        for (let k = up; k < n; k++) {
          const j = collist[k];
          const h = d[j];
          if (h <= min) {
            if (h < min) { up = low; min = h; }
            collist[k] = collist[up];
            collist[up++] = j;
          }
        }
        for (let k = low; k < up; k++) {
          if (y[collist[k]] < 0) { endOfPath = collist[k]; break; }
        }
        if (endOfPath >= 0) break;
      }
      // Scan one column at the minimum: relax through the row that holds it.
      const j1 = collist[low++];
      const i = y[j1];
      const io = i * n;
      const h = cost[io + j1] - v[j1] - min;
      for (let k = up; k < n; k++) {
        const j = collist[k];
        const v2 = cost[io + j] - v[j] - h;
        if (v2 < d[j]) {
          pred[j] = i;
          if (v2 === min) {
            if (y[j] < 0) { endOfPath = j; break; }
            collist[k] = collist[up];
            collist[up++] = j;
          }
          d[j] = v2;
        }
      }
    }
    // Scanned columns got closer than `min`: lower their prices to keep reduced costs ≥ 0.
    for (let k = 0; k <= last; k++) {
      const j = collist[k];
      v[j] += d[j] - min;
    }
    // Flip the alternating path back to the free row.
    let i: number;
    do {
      i = pred[endOfPath];
      y[endOfPath] = i;
      const j = endOfPath;
      endOfPath = x[i];
      x[i] = j;
    } while (i !== freeRow);
  }
}

/**
 * cost: [n, n] -> rowToCol: [n]. The classic O(n³) Hungarian algorithm with row and column
 * potentials (one Dijkstra-like phase per row, e-maxx formulation), 1-based internally.
 */
export function solveAssignmentHungarian(cost: CostMatrix, n: number): Int32Array {
  checkCost('solveAssignmentHungarian', cost, n);
  const u = new Float64Array(n + 1);
  const v = new Float64Array(n + 1);
  const p = new Int32Array(n + 1); // p[j] = row (1-based) matched to column j; p[0] = current row
  const way = new Int32Array(n + 1);
  const minv = new Float64Array(n + 1);
  const used = new Uint8Array(n + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = p[j0];
      const ro = (i0 - 1) * n - 1;
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= n; j++) {
        if (used[j]) continue;
        const cur = cost[ro + j] - u[i0] - v[j];
        if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
        if (minv[j] < delta) { delta = minv[j]; j1 = j; }
      }
      for (let j = 0; j <= n; j++) {
        if (used[j]) { u[p[j]] += delta; v[j] -= delta; } else minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 !== 0);
  }
  const rowToCol = new Int32Array(n);
  for (let j = 1; j <= n; j++) rowToCol[p[j] - 1] = j - 1;
  return rowToCol;
}

/** Largest n the brute-force solver accepts (9! = 362880 permutations). */
export const BRUTE_MAX_N = 9;

/**
 * cost: [n, n] -> rowToCol: [n]. Tries every permutation depth-first (no pruning, since costs
 * may be negative), the reference for the exact solvers on small n.
 */
export function solveAssignmentBrute(cost: CostMatrix, n: number): Int32Array {
  checkCost('solveAssignmentBrute', cost, n);
  if (n > BRUTE_MAX_N) throw new Error(`solveAssignmentBrute: n = ${n} > ${BRUTE_MAX_N}, use solveAssignment`);
  const best = new Int32Array(n);
  const cur = new Int32Array(n);
  const usedCol = new Uint8Array(n);
  let bestCost = Infinity;
  const visit = (i: number, acc: number): void => {
    if (i === n) {
      if (acc < bestCost) { bestCost = acc; best.set(cur); }
      return;
    }
    for (let j = 0; j < n; j++) {
      if (usedCol[j]) continue;
      usedCol[j] = 1;
      cur[i] = j;
      visit(i + 1, acc + cost[i * n + j]);
      usedCol[j] = 0;
    }
  };
  visit(0, 0);
  return best;
}

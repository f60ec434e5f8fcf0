import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assignmentCost, isPermutation, lapjv, solveAssignment, solveAssignmentBrute, solveAssignmentHungarian,
} from '../src/compress/assignment.js';
import {
  type SparseCost, balanceDuals, denseAsSparse, solveSparseAssignment, sparseAsDense,
} from '../src/compress/align/sparse-lap.js';
import { Rng } from '../src/tensor/random.js';

type Kind = 'float' | 'int' | 'ties' | 'negative' | 'equalRows' | 'float32';

function randomCost(n: number, kind: Kind, rng: Rng): Float64Array | Float32Array {
  const c = kind === 'float32' ? new Float32Array(n * n) : new Float64Array(n * n);
  const row = Array.from({ length: n }, () => rng.next());
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let val: number;
      switch (kind) {
        case 'float': case 'float32': val = rng.next() * 10; break;
        case 'int': val = rng.int(20); break;
        case 'ties': val = rng.int(3); break;
        case 'negative': val = rng.int(101) - 50 + rng.next(); break;
        case 'equalRows': val = row[j]; break; // every assignment costs the same
      }
      c[i * n + j] = val;
    }
  }
  return c;
}

/** |a − b| small relative to the scale of the costs (STYLE 12: no float equality). */
function assertCostClose(a: number, b: number, what: string): void {
  assert.ok(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
}

/** u_i + v_j ≤ c_ij everywhere and = on the assignment, with u_i = c_i,p(i) − v_p(i). */
function assertDualCertificate(c: ArrayLike<number>, n: number, p: Int32Array, v: Float64Array): void {
  let scale = 1;
  for (let k = 0; k < n * n; k++) scale = Math.max(scale, Math.abs(c[k]));
  const tol = 1e-9 * scale;
  for (let i = 0; i < n; i++) {
    const u = c[i * n + p[i]] - v[p[i]];
    for (let j = 0; j < n; j++) assert.ok(u + v[j] <= c[i * n + j] + tol, `dual infeasible at (${i}, ${j})`);
  }
}

const KINDS: Kind[] = ['float', 'int', 'ties', 'negative', 'equalRows', 'float32'];

test('LAPJV and Hungarian match brute force on every small size and cost kind', () => {
  const rng = new Rng(1);
  for (let n = 1; n <= 8; n++) {
    for (const kind of KINDS) {
      const reps = n <= 6 ? 20 : 4;
      for (let r = 0; r < reps; r++) {
        const c = randomCost(n, kind, rng);
        const best = assignmentCost(c, n, solveAssignmentBrute(c, n));
        const jv = lapjv(c, n);
        assert.ok(isPermutation(jv.rowToCol, n), `lapjv n=${n} ${kind}: not a permutation`);
        assertCostClose(assignmentCost(c, n, jv.rowToCol), best, `lapjv n=${n} ${kind}`);
        assertDualCertificate(c, n, jv.rowToCol, jv.colPrice);
        const hu = solveAssignmentHungarian(c, n);
        assert.ok(isPermutation(hu, n));
        assertCostClose(assignmentCost(c, n, hu), best, `hungarian n=${n} ${kind}`);
      }
    }
  }
});

test('LAPJV matches the Hungarian algorithm on n = 50 and n = 200', () => {
  const rng = new Rng(2);
  for (const n of [50, 200]) {
    for (const kind of ['float', 'int', 'ties', 'negative'] as Kind[]) {
      const c = randomCost(n, kind, rng);
      const jv = lapjv(c, n);
      assert.ok(isPermutation(jv.rowToCol, n));
      assertCostClose(assignmentCost(c, n, jv.rowToCol), assignmentCost(c, n, solveAssignmentHungarian(c, n)), `n=${n} ${kind}`);
      assertDualCertificate(c, n, jv.rowToCol, jv.colPrice);
    }
  }
});

test('a cost minimised on the diagonal gives the identity', () => {
  const rng = new Rng(3);
  const n = 64;
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) c[i * n + j] = i === j ? rng.next() : 2 + rng.next();
  assert.deepEqual(Array.from(solveAssignment(c, n)), Array.from({ length: n }, (_, i) => i));
});

test('a permuted identity cost recovers the permutation', () => {
  const rng = new Rng(4);
  const n = 100;
  const sigma = shuffled(n, rng);
  const c = new Float32Array(n * n).fill(1);
  for (let i = 0; i < n; i++) c[i * n + sigma[i]] = 0;
  assert.deepEqual(Array.from(solveAssignment(c, n)), Array.from(sigma));
  assert.deepEqual(Array.from(solveAssignmentHungarian(c, n)), Array.from(sigma));
});

test('solvers reject bad input', () => {
  assert.throws(() => solveAssignment(new Float64Array(3), 2), /needs 4 values/);
  assert.throws(() => solveAssignment(Float64Array.of(0, NaN, 1, 1), 2), /finite/);
  assert.throws(() => solveAssignmentBrute(new Float64Array(100), 10), /n = 10/);
  assert.equal(solveAssignment(new Float64Array(0), 0).length, 0);
});

function shuffled(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const r = rng.int(i + 1); const t = p[i]; p[i] = p[r]; p[r] = t; }
  return p;
}

/** k random columns per row plus a hidden permutation's edge, so a perfect matching exists. */
function randomSparse(n: number, k: number, rng: Rng, intCosts: boolean): SparseCost {
  const sigma = shuffled(n, rng);
  const rowStart = new Int32Array(n + 1);
  const cols: number[] = [];
  const costs: number[] = [];
  for (let i = 0; i < n; i++) {
    const set = new Set<number>([sigma[i]]);
    while (set.size < Math.min(n, k + 1)) set.add(rng.int(n));
    for (const j of set) { cols.push(j); costs.push(intCosts ? rng.int(10) - 3 : rng.next() * 5); }
    rowStart[i + 1] = cols.length;
  }
  return { n, rowStart, cols: Int32Array.from(cols), costs: Float64Array.from(costs) };
}

/** Checks optimality on the allowed edges and the dual feasibility the certificate relies on. */
function checkSparseAgainstDense(s: SparseCost, what: string, balanced = false): void {
  const { n } = s;
  const sol = balanced ? balanceDuals(s, solveSparseAssignment(s)) : solveSparseAssignment(s);
  assert.ok(isPermutation(sol.rowToCol, n), `${what}: not a permutation`);
  const missing = 1e6; // far above any path of real edges, so the dense optimum avoids it
  const dense = sparseAsDense(s, missing);
  const ref = n <= 8 ? solveAssignmentBrute(dense, n) : lapjv(dense, n).rowToCol;
  assertCostClose(sol.cost, assignmentCost(dense, n, ref), what);
  assertCostClose(assignmentCost(dense, n, sol.rowToCol), sol.cost, `${what} (reported cost)`);
  let dual = 0;
  for (let i = 0; i < n; i++) {
    dual += sol.rowPrice[i];
    for (let e = s.rowStart[i]; e < s.rowStart[i + 1]; e++) {
      assert.ok(sol.rowPrice[i] + sol.colPrice[s.cols[e]] <= s.costs[e] + 1e-9, `${what}: dual infeasible on an edge`);
    }
  }
  for (let j = 0; j < n; j++) dual += sol.colPrice[j];
  assertCostClose(dual, sol.cost, `${what}: duality gap`);
}

test('sparse LAPJV matches the dense solvers on the same edges', () => {
  const rng = new Rng(5);
  for (let n = 1; n <= 8; n++) {
    for (let r = 0; r < 10; r++) checkSparseAgainstDense(randomSparse(n, 2, rng, r % 2 === 0), `n=${n} rep ${r}`);
  }
  for (const [n, k] of [[100, 1], [100, 4], [300, 8], [300, 0]]) {
    checkSparseAgainstDense(randomSparse(n, k, rng, false), `n=${n} k=${k}`);
    checkSparseAgainstDense(randomSparse(n, k, rng, true), `n=${n} k=${k} int`);
    checkSparseAgainstDense(randomSparse(n, k, rng, false), `n=${n} k=${k} balanced`, true);
  }
  for (const kind of KINDS) {
    const c = randomCost(30, kind, rng);
    const s = denseAsSparse(c, 30);
    checkSparseAgainstDense(s, `dense-as-sparse ${kind}`);
  }
});

test('sparse LAPJV reports edges that admit no perfect assignment', () => {
  // Rows 0 and 1 both only reach column 0.
  const s: SparseCost = { n: 2, rowStart: Int32Array.of(0, 1, 2), cols: Int32Array.of(0, 0), costs: Float64Array.of(1, 2) };
  assert.throws(() => solveSparseAssignment(s), /no (perfect )?assignment|no edges/);
  const empty: SparseCost = { n: 2, rowStart: Int32Array.of(0, 0, 1), cols: Int32Array.of(0), costs: Float64Array.of(1) };
  assert.throws(() => solveSparseAssignment(empty), /row 0 has no edges/);
});

test('balanced duals stay optimal and put every row price at 0 on a planted problem', () => {
  const rng = new Rng(6);
  const n = 200;
  const sigma = shuffled(n, rng);
  const s = randomSparse(n, 6, rng, false);
  // Make sigma's edges the cheap ones (a planted near-permutation).
  const withPlant: SparseCost = { ...s, cols: s.cols.slice(), costs: s.costs.map((c) => 10 + c) };
  for (let i = 0; i < n; i++) { withPlant.cols[withPlant.rowStart[i]] = sigma[i]; withPlant.costs[withPlant.rowStart[i]] = rng.next(); }
  const dedup = denseAsSparseFromEdges(withPlant);
  const sol = balanceDuals(dedup, solveSparseAssignment(dedup));
  assert.deepEqual(Array.from(sol.rowToCol), Array.from(sigma));
  for (let i = 0; i < n; i++) assert.ok(Math.abs(sol.rowPrice[i]) < 1e-12, `u[${i}] = ${sol.rowPrice[i]}`);
  checkSparseAgainstDense(dedup, 'planted balanced', true);
});

/** Drops repeated (row, column) edges, keeping the first. */
function denseAsSparseFromEdges(s: SparseCost): SparseCost {
  const rowStart = new Int32Array(s.n + 1);
  const cols: number[] = [];
  const costs: number[] = [];
  for (let i = 0; i < s.n; i++) {
    const seen = new Set<number>();
    for (let e = s.rowStart[i]; e < s.rowStart[i + 1]; e++) {
      if (seen.has(s.cols[e])) continue;
      seen.add(s.cols[e]); cols.push(s.cols[e]); costs.push(s.costs[e]);
    }
    rowStart[i + 1] = cols.length;
  }
  return { n: s.n, rowStart, cols: Int32Array.from(cols), costs: Float64Array.from(costs) };
}

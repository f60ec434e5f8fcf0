import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type ExpertWeights, alignExpert, computeBarycenter, expertPoints, expertResidual, permuteExpert, splitPoints,
} from '../src/compress/barycenter.js';
import {
  type PointCloud, COST_BLOCK_ROWS, denseCost, denseCostNaive, edgeCosts, edgeCostsNaive, makeSketch, sketchCloud,
  sketchCloudNaive, sketchMatrix,
} from '../src/compress/align/cloud.js';
import { benchAlignment } from '../src/compress/align-bench.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';

function shuffled(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const r = rng.int(i + 1); const t = p[i]; p[i] = p[r]; p[r] = t; }
  return p;
}

function inverse(p: Int32Array): Int32Array {
  const q = new Int32Array(p.length);
  for (let i = 0; i < p.length; i++) q[p[i]] = i;
  return q;
}

function randomExpert(I: number, H: number, rng: Rng, scale = 1): ExpertWeights {
  return { gate: rng.normals(I * H, scale), up: rng.normals(I * H, scale), down: rng.normals(H * I, scale) };
}

function addNoise(w: ExpertWeights, sigma: number, rng: Rng): ExpertWeights {
  const f = (a: Float32Array) => a.map((x) => x + sigma * rng.normal());
  return { gate: f(w.gate), up: f(w.up), down: f(w.down) };
}

function sq(...arrays: Float32Array[]): number {
  let s = 0;
  for (const a of arrays) for (const x of a) s += x * x;
  return s;
}

const sqW = (w: ExpertWeights) => sq(w.gate, w.up, w.down);

/** Float64 SwiGLU expert: y = down · (silu(gate x) ⊙ (up x)); x: [H] -> y: [H]. */
function swiglu(w: ExpertWeights, x: Float64Array, I: number, H: number): Float64Array {
  const act = new Float64Array(I);
  for (let j = 0; j < I; j++) {
    let g = 0, u = 0;
    for (let h = 0; h < H; h++) { g += w.gate[j * H + h] * x[h]; u += w.up[j * H + h] * x[h]; }
    act[j] = (g / (1 + Math.exp(-g))) * u;
  }
  const y = new Float64Array(H);
  for (let h = 0; h < H; h++) {
    let s = 0;
    for (let j = 0; j < I; j++) s += w.down[h * I + j] * act[j];
    y[h] = s;
  }
  return y;
}

test('expertPoints and splitPoints round-trip, and rows hold [gate, up, down column]', () => {
  const rng = new Rng(10);
  const I = 7, H = 5;
  const w = randomExpert(I, H, rng);
  const p = expertPoints(w.gate, w.up, w.down, I, H);
  assert.equal(p[3 * 15 + 2], w.gate[3 * H + 2]);
  assert.equal(p[3 * 15 + H + 4], w.up[3 * H + 4]);
  assert.equal(p[3 * 15 + 2 * H + 1], w.down[1 * I + 3]);
  const back = splitPoints(p, I, H);
  assert.deepEqual(back, w);
  assert.throws(() => expertPoints(w.gate, w.up, w.down, I + 1, H), /gate \[I=8, H=5\]/);
});

test('denseCost (GEMM) matches its naive twin on awkward shapes', async () => {
  const rng = new Rng(11);
  for (const [n, dim] of [[1, 1], [5, 3], [37, 29], [COST_BLOCK_ROWS + 3, 40]]) {
    const x: PointCloud = { data: rng.normals(n * dim), n, dim };
    const z: PointCloud = { data: rng.normals(n * dim), n, dim };
    // Error relative to ‖x‖² + ‖z‖²: the GEMM form cancels when two points are close.
    const fast = await denseCost(x, z);
    const ref = denseCostNaive(x, z);
    const nx = Array.from({ length: n }, (_, i) => sq(x.data.subarray(i * dim, (i + 1) * dim)));
    const nz = Array.from({ length: n }, (_, j) => sq(z.data.subarray(j * dim, (j + 1) * dim)));
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const err = Math.abs(fast[i * n + j] - ref[i * n + j]);
        assert.ok(err <= 1e-5 * (nx[i] + nz[j]), `denseCost n=${n} D=${dim} (${i}, ${j}): ${fast[i * n + j]} vs ${ref[i * n + j]}`);
      }
    }
    assertClose(fast, ref, 1e-4, `denseCost n=${n} D=${dim}`);
  }
});

test('the sketch is orthonormal and sketchCloud matches the dense projection', () => {
  const rng = new Rng(12);
  for (const [n, dim, d] of [[9, 50, 7], [20, 64, 64], [3, 10, 1]]) {
    const sk = makeSketch(dim, d, 5);
    const q = sketchMatrix(sk);
    for (let a = 0; a < d; a++) {
      for (let b = 0; b < d; b++) {
        let s = 0;
        for (let k = 0; k < dim; k++) s += q[a * dim + k] * q[b * dim + k];
        assert.ok(Math.abs(s - (a === b ? 1 : 0)) < 1e-6, `Q Qᵀ[${a}, ${b}] = ${s}`);
      }
    }
    const c: PointCloud = { data: rng.normals(n * dim), n, dim };
    const s = sketchCloud(c, sk);
    assertClose(s.proj, sketchCloudNaive(c, sk), 1e-6, 'sketch');
    // Pythagoras: ‖Qx‖² + ‖x − QᵀQx‖² = ‖x‖².
    const norms = Array.from({ length: n }, (_, i) => s.projNorm[i] ** 2 + s.residNorm[i] ** 2);
    const ref = Array.from({ length: n }, (_, i) => sq(c.data.subarray(i * dim, (i + 1) * dim)));
    assertClose(norms, ref, 1e-9, 'norm split');
  }
});

test('edgeCosts matches its naive twin', () => {
  const rng = new Rng(13);
  const n = 23, dim = 31;
  const x: PointCloud = { data: rng.normals(n * dim), n, dim };
  const z: PointCloud = { data: rng.normals(n * dim), n, dim };
  const rowStart = new Int32Array(n + 1);
  const cols: number[] = [];
  for (let i = 0; i < n; i++) { for (let t = 0; t < 1 + (i % 4); t++) cols.push(rng.int(n)); rowStart[i + 1] = cols.length; }
  const c = Int32Array.from(cols);
  assertClose(edgeCosts(x, z, rowStart, c), edgeCostsNaive(x, z, rowStart, c), 1e-12, 'edgeCosts');
});

/** An expert cloud [n, D] = base rows permuted by sigma plus noise: row l = base[sigma[l]] + ε. */
function plantedPair(n: number, dim: number, noise: number, rng: Rng): { x: PointCloud; z: PointCloud; answer: Int32Array } {
  const base = rng.normals(n * dim);
  const sigma = shuffled(n, rng);
  const z = new Float32Array(n * dim);
  for (let l = 0; l < n; l++) for (let k = 0; k < dim; k++) z[l * dim + k] = base[sigma[l] * dim + k] + noise * rng.normal();
  return { x: { data: base, n, dim }, z: { data: z, n, dim }, answer: inverse(sigma) };
}

test('fast alignment finds the planted permutation and certifies it', async () => {
  const rng = new Rng(14);
  const { x, z, answer } = plantedPair(300, 192, 0.2, rng);
  const exact = await alignExpert(x, z, { mode: 'exact' });
  const fast = await alignExpert(x, z, { mode: 'fast', sketchDim: 32, candidates: 4 });
  assert.deepEqual(Array.from(exact.perm), Array.from(answer));
  assert.deepEqual(Array.from(fast.perm), Array.from(answer));
  assert.ok(fast.certified, `fast mode not certified (${fast.violations} violations)`);
  assert.ok(Math.abs(fast.cost - exact.cost) <= 1e-6 * exact.cost);
  assert.ok(fast.lowerBound <= fast.cost * (1 + 1e-12) && fast.lowerBound > 0.999 * fast.cost);
});

test('on unstructured clouds the fast bound brackets the exact optimum', async () => {
  const rng = new Rng(15);
  const n = 200, dim = 48;
  const x: PointCloud = { data: rng.normals(n * dim), n, dim };
  const z: PointCloud = { data: rng.normals(n * dim), n, dim };
  const exact = await alignExpert(x, z, { mode: 'exact' });
  for (const sketchDim of [8, 48]) {
    const fast = await alignExpert(x, z, { mode: 'fast', sketchDim, candidates: 8, rounds: 10 });
    const tol = 1e-5 * exact.cost; // the exact path solves a float32 cost matrix
    assert.ok(fast.cost >= exact.cost - tol, `fast ${fast.cost} below exact ${exact.cost}`);
    assert.ok(fast.lowerBound <= exact.cost + tol, `bound ${fast.lowerBound} above the optimum ${exact.cost}`);
    if (sketchDim === dim) {
      // d = D: the sketch is a signed permutation, the bound is exact and so is the answer.
      assert.ok(fast.certified);
      assert.ok(Math.abs(fast.cost - exact.cost) <= tol);
    }
  }
});

test('(i) permuted copies of one expert align to zero residual and recover the permutations', async () => {
  const rng = new Rng(16);
  const I = 48, H = 16, E = 4;
  const base = randomExpert(I, H, rng);
  const sigmas = [Int32Array.from({ length: I }, (_, i) => i), ...Array.from({ length: E - 1 }, () => shuffled(I, rng))];
  const experts = sigmas.map((s) => permuteExpert(base, s, I, H));
  for (const mode of ['exact', 'fast'] as const) {
    const r = await computeBarycenter(experts, I, H, { maxIters: 5, mode, align: { sketchDim: 8, candidates: 3 } });
    assert.ok(r.converged, `${mode}: not converged`);
    for (let e = 0; e < E; e++) {
      assert.deepEqual(Array.from(r.perms[e]), Array.from(inverse(sigmas[e])), `${mode}: expert ${e} permutation`);
      const res = expertResidual(experts[e], r.perms[e], r.bary, I, H);
      assert.ok(Math.sqrt(sqW(res) / sqW(base)) < 1e-6, `${mode}: residual of expert ${e} is not zero`);
    }
  }
});

test('(ii) with small noise the aligned residual is the noise, far below the unaligned one', async () => {
  const rng = new Rng(17);
  const I = 64, H = 16, E = 4, sigma = 0.01;
  const base = randomExpert(I, H, rng);
  const clean = [base, ...Array.from({ length: E - 1 }, () => permuteExpert(base, shuffled(I, rng), I, H))];
  const experts = clean.map((w) => addNoise(w, sigma, rng));
  const r = await computeBarycenter(experts, I, H, { maxIters: 10 });
  let aligned = 0, noise = 0;
  for (let e = 0; e < E; e++) {
    aligned += sqW(expertResidual(experts[e], r.perms[e], r.bary, I, H));
    noise += sqW({ gate: experts[e].gate.map((v, k) => v - clean[e].gate[k]), up: experts[e].up.map((v, k) => v - clean[e].up[k]), down: experts[e].down.map((v, k) => v - clean[e].down[k]) });
  }
  // Residual = own noise − mean noise: expected energy (1 − 1/E) of the noise energy.
  const ratio = aligned / ((1 - 1 / E) * noise);
  assert.ok(ratio > 0.8 && ratio < 1.2, `aligned residual / expected noise energy = ${ratio}`);
  const identity = Int32Array.from({ length: I }, (_, i) => i);
  const plainMean: ExpertWeights = {
    gate: experts[0].gate.map((_, k) => experts.reduce((s, w) => s + w.gate[k], 0) / E),
    up: experts[0].up.map((_, k) => experts.reduce((s, w) => s + w.up[k], 0) / E),
    down: experts[0].down.map((_, k) => experts.reduce((s, w) => s + w.down[k], 0) / E),
  };
  let unaligned = 0;
  for (const w of experts) unaligned += sqW(expertResidual(w, identity, plainMean, I, H));
  assert.ok(aligned < 1e-3 * unaligned, `aligned ${aligned} vs unaligned ${unaligned}`);
});

test('(iii) the objective never increases across iterations', async () => {
  const rng = new Rng(18);
  const I = 40, H = 8, E = 3;
  const experts = Array.from({ length: E }, () => randomExpert(I, H, rng));
  for (const mode of ['exact', 'fast'] as const) {
    const r = await computeBarycenter(experts, I, H, { maxIters: 30, mode, align: { sketchDim: 6, candidates: 4 } });
    assert.ok(r.iters >= 2, `${mode}: nothing to iterate`);
    for (let t = 0; t < r.history.length; t++) {
      const h = r.history[t];
      const tol = 1e-9 * h.alignCost;
      assert.ok(h.cost <= h.alignCost + tol, `${mode} iter ${t}: mean update raised F`);
      if (t > 0) assert.ok(h.alignCost <= r.costHistory[t - 1] + tol, `${mode} iter ${t}: alignment raised F`);
      if (t > 0) assert.ok(r.costHistory[t] <= r.costHistory[t - 1] + tol, `${mode} iter ${t}: F increased`);
    }
  }
});

test('(iv) applying perms[e] to expert e leaves its SwiGLU output unchanged', async () => {
  const rng = new Rng(19);
  const I = 24, H = 10, E = 3;
  const experts = Array.from({ length: E }, () => randomExpert(I, H, rng, 0.5));
  const r = await computeBarycenter(experts, I, H, { maxIters: 3 });
  const x = Float64Array.from({ length: H }, () => rng.normal());
  for (let e = 0; e < E; e++) {
    if (e > 0) assert.ok(r.perms[e].some((p, j) => p !== j), 'the test needs a non-trivial permutation');
    const y = swiglu(experts[e], x, I, H);
    assertClose(swiglu(permuteExpert(experts[e], r.perms[e], I, H), x, I, H), y, 1e-12, `expert ${e}`);
    if (e === 0) continue;
    // A wrong pairing (down columns left in place) must change the output.
    const broken = { ...permuteExpert(experts[e], r.perms[e], I, H), down: experts[e].down };
    assert.ok(Math.hypot(...swiglu(broken, x, I, H).map((v, h) => v - y[h])) > 1e-3);
  }
});

test('benchAlignment returns timings and recovers the planted answer', async () => {
  for (const mode of ['exact', 'fast'] as const) {
    const b = await benchAlignment({ I: 96, H: 16, E: 3, seed: 1, mode, sketchDim: 16 });
    assert.equal(b.recovered, 1, `${mode}: planted permutation not recovered`);
    assert.ok(b.timings.totalMs > 0 && b.timings.totalMs >= b.timings.gemmMs + b.timings.assignMs);
  }
});

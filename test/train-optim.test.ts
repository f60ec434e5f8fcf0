/** AdamW, the schedule, clipping and accumulation: hand-computed steps and a convex problem. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Rng } from '../src/tensor/random.js';
import { add, constant, crossEntropy, linear, mul, param, scale, sum, Tape, type Var } from '../src/train/autodiff.js';
import { AdamW, clipGradNorm, Trainer, warmupCosine } from '../src/train/optim.js';

const near = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('AdamW: two hand-computed steps (bias correction, decoupled decay on matrices only)', () => {
  const w = param(Float64Array.from([1, -2]), [1, 2], 'w'); // a matrix: decays
  const b = param(Float64Array.from([0.5]), [1], 'b'); // a vector: does not
  const opt = new AdamW([w, b], { lr: 0.1, weightDecay: 0.1 });
  w.grad = Float64Array.from([0.5, -1]);
  b.grad = Float64Array.from([2]);
  opt.step();
  // step 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g² -> update lr·g/(|g| + eps)
  near(w.data[0], 1 * (1 - 0.01) - 0.1 * (0.5 / (0.5 + 1e-8)), 1e-15, 'w0 step 1');
  near(w.data[1], -2 * (1 - 0.01) + 0.1 * (1 / (1 + 1e-8)), 1e-15, 'w1 step 1');
  near(b.data[0], 0.5 - 0.1 * (2 / (2 + 1e-8)), 1e-15, 'b step 1');
  const w0 = w.data[0];
  w.grad = Float64Array.from([-0.25, 3]);
  b.grad = null; // no gradient: b is not touched and keeps its own step count
  opt.step();
  // step 2 for w[0]: m = 0.9·0.05 + 0.1·(−0.25) = 0.02, v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225
  const m = 0.02, v = 0.00031225;
  const want = w0 * (1 - 0.01) - (0.1 / (1 - 0.81)) * (m / (Math.sqrt(v) / Math.sqrt(1 - 0.999 ** 2) + 1e-8));
  near(w.data[0], want, 1e-14, 'w0 step 2');
  near(b.data[0], 0.5 - 0.1 * (2 / (2 + 1e-8)), 1e-15, 'b unchanged without a gradient');
});

test('warmupCosine: linear warm-up from 0, cosine to the floor, then flat', () => {
  const lr = warmupCosine({ peak: 1, warmup: 10, total: 110, floor: 0.1 });
  near(lr(0), 0, 0, 'step 0');
  near(lr(5), 0.5, 1e-15, 'mid warm-up');
  near(lr(10), 1, 1e-15, 'peak');
  near(lr(60), 0.55, 1e-15, 'half-way down');
  near(lr(110), 0.1, 1e-15, 'end');
  near(lr(500), 0.1, 1e-15, 'after the end');
  assert.throws(() => warmupCosine({ peak: 1, warmup: 10, total: 10 }), /must exceed warmup/);
});

test('clipGradNorm: scales all gradients together by max/(norm + 1e-6), only when above', () => {
  const a = param(Float64Array.from([3]), [1]);
  const b = param(Float64Array.from([1]), [1]);
  a.grad = Float64Array.from([3]);
  b.grad = Float64Array.from([4]);
  assert.equal(clipGradNorm([a, b], 1), 5);
  near(a.grad[0], 3 / (5 + 1e-6), 1e-15, 'a');
  near(b.grad[0], 4 / (5 + 1e-6), 1e-15, 'b');
  assert.ok(Math.abs(clipGradNorm([a, b], 10) - 1) < 1e-6);
  near(a.grad[0], 3 / (5 + 1e-6), 1e-15, 'below the max: unchanged');
});

/** Least squares: loss = mean over rows [from, to) of (x·w − y)². */
async function lsq(tape: Tape, w: Var, X: Float64Array | Float32Array, y: Float64Array | Float32Array, from: number, to: number, D: number): Promise<Var> {
  const n = to - from;
  const pred = await linear(tape, constant(X.subarray(from * D, to * D), [n, D]), w); // [n, 1]
  const minusY = tape.alloc(n);
  for (let i = 0; i < n; i++) minusY[i] = -y[from + i];
  const diff = add(tape, pred, constant(minusY, [n, 1]));
  return scale(tape, sum(tape, mul(tape, diff, diff)), 1 / n);
}

test('Trainer: accumulating 2 micro-batches of half the rows equals one step on all rows', async () => {
  const r = new Rng(1);
  const D = 3, N = 8;
  const X = Float64Array.from({ length: N * D }, () => r.normal());
  const y = Float64Array.from({ length: N }, () => r.normal());
  const init = Float64Array.from({ length: D }, () => r.normal());
  const full = param(init.slice(), [1, D], 'w');
  const acc = param(init.slice(), [1, D], 'w');
  await new Trainer(new AdamW([full], { lr: 0.05 }), { dtype: 'f64' }).microStep((t) => lsq(t, full, X, y, 0, N, D));
  const tr = new Trainer(new AdamW([acc], { lr: 0.05 }), { dtype: 'f64', accumulate: 2 });
  const first = await tr.microStep((t) => lsq(t, acc, X, y, 0, N / 2, D));
  assert.equal(first.stepped, false);
  assert.deepEqual(Array.from(acc.data), Array.from(init), 'no update before the N-th micro-batch');
  const second = await tr.microStep((t) => lsq(t, acc, X, y, N / 2, N, D));
  assert.equal(second.stepped, true);
  for (let i = 0; i < D; i++) near(acc.data[i], full.data[i], 1e-12, `w[${i}]`);
  assert.equal(acc.grad, null, 'gradients cleared after the step');
});

test('Trainer: AdamW with warm-up + cosine and clipping solves a least-squares problem', async () => {
  const r = new Rng(2);
  const D = 4, N = 32;
  const wTrue = [0.5, -1.5, 2, 0.25];
  const X = Float32Array.from({ length: N * D }, () => r.normal());
  const y = Float32Array.from({ length: N }, (_, i) => wTrue.reduce((s, w, d) => s + w * X[i * D + d], 0));
  const w = param(new Float32Array(D).fill(0.1), [1, D], 'w');
  const tr = new Trainer(new AdamW([w], { lr: 0, weightDecay: 0 }), { clip: 1, schedule: warmupCosine({ peak: 0.1, warmup: 20, total: 400, floor: 0.001 }) });
  let first = 0, last = 0;
  for (let s = 0; s < 400; s++) {
    const res = await tr.microStep((t) => lsq(t, w, X, y, 0, N, D));
    if (s === 0) first = res.loss;
    last = res.loss;
  }
  assert.ok(last < 1e-6 * first, `loss ${first} -> ${last}`);
  for (let d = 0; d < D; d++) near(w.data[d], wTrue[d], 1e-3, `w[${d}]`);
});

test('Trainer: a non-finite loss stops training with a message', async () => {
  const w = param(Float32Array.from([1, 2]), [1, 2]);
  const tr = new Trainer(new AdamW([w], { lr: 0.1 }));
  const logits = (t: Tape) => linear(t, constant(Float32Array.from([Infinity, 0]), [1, 2]), w);
  await assert.rejects(() => tr.microStep(async (t) => crossEntropy(t, await logits(t), [0])), /loss is NaN/);
});

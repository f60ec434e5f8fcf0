/**
 * Every differentiable op: the float64 backward against central finite differences (relative
 * error < 1e-6 on tiny random shapes, never zeros), and the float32 forward against the inference
 * kernel it mirrors.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RopeConfig } from '../src/models/canonical.js';
import { attend } from '../src/tensor/attention.js';
import { rmsNorm as rmsNormRef } from '../src/tensor/norm.js';
import { applyRope, ropeTables } from '../src/tensor/rope.js';
import { swiglu as swigluRef } from '../src/tensor/activation.js';
import { Rng } from '../src/tensor/random.js';
import {
  add, causalAttention, clamp, constant, crossEntropy, distillKL, embedding, linear, matmul, mul, param, reshape, rmsNorm, rope, rows, scale, softmax, sum,
  swiglu, Tape, type Var,
} from '../src/train/autodiff.js';
import { gradCheck } from '../src/train/gradcheck.js';
import { assertClose } from './helpers/assert-close.js';
import { p64, project, check } from './helpers/grad.js';

test('linear and matmul: gradients of x, w, bias and both factors', async () => {
  const x = p64([5, 7], 1, 1, 'x');
  const w = p64([3, 7], 2, 0.5, 'w');
  const b = p64([3], 3, 1, 'b');
  await check('linear', async (t) => project(t, await linear(t, x, w, b)), [x, w, b]);
  const a = p64([4, 6], 4, 1, 'a');
  const m = p64([6, 3], 5, 1, 'b');
  await check('matmul', async (t) => project(t, await matmul(t, a, m)), [a, m]);
});

test('embedding: scatter-add gradient with repeated ids', async () => {
  const table = p64([5, 4], 6, 1, 'table');
  const ids = [1, 3, 1, 0, 3, 3];
  await check('embedding', (t) => project(t, embedding(t, ids, table)), [table]);
  table.grad = null; // gradCheck leaves its analytic gradient
  const tape = new Tape({ dtype: 'f64' });
  const y = embedding(tape, ids, table);
  await tape.backward(sum(tape, y));
  assert.deepEqual(Array.from(table.grad!.subarray(12, 16)), [3, 3, 3, 3], 'id 3 appears three times');
  assert.deepEqual(Array.from(table.grad!.subarray(8, 12)), [0, 0, 0, 0], 'id 2 never appears');
});

test('rmsNorm, swiglu, softmax: gradients', async () => {
  const x = p64([3, 6], 7, 1, 'x');
  const w = p64([6], 8, 1, 'w');
  await check('rmsNorm', (t) => project(t, rmsNorm(t, x, w, 1e-5)), [x, w]);
  const g = p64([4, 5], 9, 1.5, 'g');
  const u = p64([4, 5], 10, 1, 'u');
  await check('swiglu', async (t) => project(t, await swiglu(t, g, u)), [g, u]);
  await check('softmax', (t) => project(t, softmax(t, g)), [g]);
});

test('add, mul (same shape and row broadcast), scale, reshape, rows, clamp: gradients', async () => {
  const a = p64([3, 4], 11, 1, 'a');
  const b = p64([3, 4], 12, 1, 'b');
  const v = p64([4], 13, 1, 'v');
  await check('add', (t) => project(t, add(t, a, b)), [a, b]);
  await check('add row', (t) => project(t, add(t, a, v)), [a, v]);
  await check('mul', (t) => project(t, mul(t, a, b)), [a, b]);
  await check('mul row', (t) => project(t, mul(t, a, v)), [a, v]);
  await check('mul self', (t) => project(t, mul(t, a, a)), [a]);
  await check('scale', (t) => project(t, scale(t, a, -2.5)), [a]);
  await check('reshape+rows', (t) => project(t, rows(t, reshape(t, a, [6, 2]), 2, 3)), [a]);
  // clamp: no element within 1e-3 of the edge, so the finite difference never straddles it
  const c = 0.7;
  assert.ok(a.data.every((x) => Math.abs(Math.abs(x) - c) > 1e-3));
  assert.ok(a.data.some((x) => Math.abs(x) > c) && a.data.some((x) => Math.abs(x) < c));
  await check('clamp', (t) => project(t, clamp(t, a, c)), [a]);
});

const ROPES: [string, RopeConfig, number][] = [
  ['half', { theta: 10000, dim: 6, style: 'half', scaling: { type: 'default' } }, 6],
  ['interleaved', { theta: 500, dim: 6, style: 'interleaved', scaling: { type: 'default' } }, 6],
  ['partial + yarn factor', { theta: 10000, dim: 4, style: 'half', scaling: { type: 'yarn', factor: 4, originalMaxPositions: 8, betaFast: 32, betaSlow: 1, mscale: 0, mscaleAllDim: 0, truncate: false } }, 6],
];

test('rope: gradient (rotation by −θ) for half, interleaved and partial rotary', async () => {
  const positions = [0, 3, 1, 7];
  for (const [name, cfg, D] of ROPES) {
    const tab = ropeTables(cfg, 64);
    const x = p64([4, 2, D], 14, 1, 'x');
    await check(`rope ${name}`, (t) => project(t, rope(t, x, positions, tab, D - cfg.dim)), [x]);
  }
});

test('rope: float32 forward equals tensor/rope.ts applyRope', () => {
  const positions = Int32Array.from([5, 0, 2, 9, 31]);
  for (const [name, cfg, D] of ROPES) {
    const tab = ropeTables(cfg, 64);
    const x = new Rng(15).normals(5 * 3 * D);
    const ref = x.slice();
    applyRope(ref, 5, 3, D, D - cfg.dim, positions, tab);
    const y = rope(new Tape({ grad: false }), constant(x, [5, 3, D]), positions, tab, D - cfg.dim);
    assertClose(y.data, ref, 1e-7, `rope ${name}`);
  }
});

test('causalAttention: gradients of q, k, v (GQA, Dv != D, with and without a window)', async () => {
  const B = 2, S = 5, NH = 4, NKV = 2, D = 3, Dv = 4;
  const q = p64([B * S, NH, D], 16, 1, 'q');
  const k = p64([B * S, NKV, D], 17, 1, 'k');
  const v = p64([B * S, NKV, Dv], 18, 1, 'v');
  for (const window of [null, 2]) {
    await check(`attention window ${window}`, async (t) => project(t, await causalAttention(t, q, k, v, { B, S, scale: 1 / Math.sqrt(D), window })), [q, k, v]);
  }
});

test('causalAttention: float32 forward equals tensor/attention.ts attend per sequence', async () => {
  const B = 3, S = 7, NH = 4, NKV = 2, D = 8;
  const r = new Rng(19);
  const q = r.normals(B * S * NH * D);
  const k = r.normals(B * S * NKV * D);
  const v = r.normals(B * S * NKV * D);
  for (const window of [null, 3]) {
    const y = await causalAttention(new Tape({ grad: false }), constant(q, [B * S, NH, D]), constant(k, [B * S, NKV, D]), constant(v, [B * S, NKV, D]), { B, S, scale: 0.3, window });
    const ref = new Float32Array(B * S * NH * D);
    const p = { heads: NH, kvHeads: NKV, dk: D, dv: D, scale: 0.3, qPos0: 0, window, sinks: null };
    for (let b = 0; b < B; b++) attend(q.subarray(b * S * NH * D), k.subarray(b * S * NKV * D), v.subarray(b * S * NKV * D), S, p, ref.subarray(b * S * NH * D, (b + 1) * S * NH * D));
    assertClose(y.data, ref, 1e-6, `attention window ${window}`);
  }
});

test('rmsNorm and swiglu: float32 forward equals tensor/norm.ts and tensor/activation.ts', async () => {
  const r = new Rng(20);
  const x = r.normals(4 * 16);
  const w = r.normals(16, 0.3);
  const tape = new Tape({ grad: false });
  assertClose(rmsNorm(tape, constant(x, [4, 16]), constant(w, [16]), 1e-6).data, rmsNormRef(x, w, 4, 16, 1e-6), 1e-7, 'rmsNorm');
  const u = r.normals(64);
  assertClose((await swiglu(tape, constant(x, [64]), constant(u, [64]))).data, swigluRef(x.slice(), u), 1e-7, 'swiglu');
});

test('crossEntropy: gradient with a mask and repeated targets; value by hand; stable at large logits', async () => {
  const logits = p64([5, 6], 21, 2, 'logits');
  const targets = [2, 2, 0, 5, 1];
  const mask = [1, 0, 1, 1, 1];
  await check('crossEntropy', (t) => crossEntropy(t, logits, targets, mask), [logits]);
  // by hand: mean of lse - x[target] over the 4 scored rows
  let want = 0;
  for (const t of [0, 2, 3, 4]) {
    const row = Array.from(logits.data.subarray(t * 6, t * 6 + 6));
    want += Math.log(row.reduce((s, x) => s + Math.exp(x), 0)) - row[targets[t]];
  }
  const got = (await crossEntropy(new Tape({ dtype: 'f64', grad: false }), logits, targets, mask)).item();
  assert.ok(Math.abs(got - want / 4) < 1e-12 * Math.abs(want), `${got} vs ${want / 4}`);
  // logits around 1e4 would overflow exp without the max shift
  const big = constant(Float32Array.from([1e4, 1e4 + 1, 1e4 - 2, -1e4]), [1, 4]);
  const ce = (await crossEntropy(new Tape(), big, [0])).item();
  const ref = Math.log(1 + Math.exp(1) + Math.exp(-2)); // the shift by 1e4 + 1 cancels exactly
  assert.ok(Math.abs(ce - ref) < 1e-6 * ref, `ce ${ce} vs ${ref}`); // the loss is stored in float32
  await assert.rejects(() => crossEntropy(new Tape(), big, [0], [0]), /no token is scored/);
  await assert.rejects(() => crossEntropy(new Tape(), big, [4]), /target 4/);
});

test('distillKL: gradient (alone and under an upstream scale), value by hand, zero at the teacher, stable at large logits', async () => {
  const T = 4, V = 6;
  const x = p64([T, V], 23, 2, 'logits');
  const teacher = new Rng(24).normals(T * V, 2);
  await check('distillKL', (t) => distillKL(t, x, teacher), [x]);
  // the backward scales its kept (p − q)/T by the upstream gradient: check it is not assumed to be 1
  await check('distillKL scaled', async (t) => scale(t, await distillKL(t, x, teacher), -2.5), [x]);
  await check('distillKL + crossEntropy', async (t) => add(t, await distillKL(t, x, teacher), await crossEntropy(t, x, [1, 0, 5, 2])), [x]);
  // by hand in float64: mean over rows of Σ q (log q − log p)
  const logSoftmax = (z: ArrayLike<number>, o: number) => {
    const row = Array.from({ length: V }, (_, i) => z[o + i]);
    const m = Math.max(...row);
    const lz = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    return row.map((v) => v - lz);
  };
  const byHand = (student: ArrayLike<number>, tch: ArrayLike<number>) => {
    let kl = 0;
    for (let t = 0; t < T; t++) {
      const lq = logSoftmax(tch, t * V);
      const lp = logSoftmax(student, t * V);
      for (let i = 0; i < V; i++) kl += Math.exp(lq[i]) * (lq[i] - lp[i]);
    }
    return kl / T;
  };
  const want = byHand(x.data, teacher);
  const got = (await distillKL(new Tape({ dtype: 'f64', grad: false }), x, teacher)).item();
  assert.ok(Math.abs(got - want) < 1e-12 * want, `${got} vs ${want}`);
  assert.ok(Math.abs((await distillKL(new Tape({ dtype: 'f64', grad: false }), x, x.data)).item()) < 1e-12, 'KL(p ‖ p) = 0');
  // float32 with logits near ±1e4 (exp would overflow without the shift): multiples of 1/8 keep
  // the shifted values exact, so the KL must equal the unshifted one
  const r = new Rng(25);
  const s8 = Float32Array.from({ length: T * V }, () => Math.round(r.normal() * 16) / 8);
  const t8 = Float32Array.from({ length: T * V }, () => Math.round(r.normal() * 16) / 8);
  const big = constant(s8.map((v) => v + 1e4), [T, V]);
  const klBig = (await distillKL(new Tape({ grad: false }), big, t8.map((v) => v - 1e4))).item();
  const ref = byHand(s8, t8);
  assert.ok(Math.abs(klBig - ref) < 1e-5 * ref, `float32 at 1e4: ${klBig} vs ${ref}`);
  await assert.rejects(() => distillKL(new Tape({ dtype: 'f64' }), x, teacher.subarray(1)), /teacher has 23 logits for \[4,6\]/);
});

test('Tape: refuses mixed precision, non-scalar losses and losses without parameters', async () => {
  const x64 = p64([2, 2], 22);
  const w32 = param(Float32Array.from([1, 2, 3, 4]), [2, 2]);
  await assert.rejects(() => linear(new Tape({ dtype: 'f64' }), x64, w32), /f32 on a f64 tape/);
  const tape = new Tape({ dtype: 'f64' });
  await assert.rejects(() => tape.backward(scale(tape, x64, 2)), /scalar/);
  const c = constant(Float64Array.from([1, 2]), [2]);
  const t2 = new Tape({ dtype: 'f64' });
  await assert.rejects(() => t2.backward(sum(t2, c)), /does not depend/);
});

/**
 * Routing, the load-balancing loss and the MoE layer: values against the inference router and
 * transformers' formula, gradients against float64 finite differences.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RoutingConfig } from '../src/models/canonical.js';
import { Rng } from '../src/tensor/random.js';
import { route } from '../src/tensor/router.js';
import {
  add, constant, loadBalancingLoss, matmul, moeLayer, mul, param, scale, softmaxTopK, stackedExperts, sum, swigluExpertFrom, swigluFfn,
  Tape, gatherRows, type ExpertFn, type Var,
} from '../src/train/autodiff.js';
import { gradCheck } from '../src/train/gradcheck.js';
import { assertClose } from './helpers/assert-close.js';
import { p64, project, check } from './helpers/grad.js';

const T = 6, H = 4, E = 4, I = 5, K = 2;

test('softmaxTopK: experts and weights equal tensor/router.ts route (normalised or not)', () => {
  const r = new Rng(1);
  const logits = r.normals(50 * 8, 2);
  for (const normTopK of [true, false]) {
    const cfg: RoutingConfig = { kind: 'softmax-topk', topK: 3, normTopK, scale: 1, nGroup: 1, topKGroup: 1, jitterEps: 0 };
    const ref = route(logits, 50, 8, cfg);
    const got = softmaxTopK(new Tape({ grad: false }), constant(logits, [50, 8]), { topK: 3, normTopK });
    assert.deepEqual(Array.from(got.experts), Array.from(ref.experts), `experts, normTopK ${normTopK}`);
    assertClose(got.weights.data, ref.weights, 1e-6, `weights, normTopK ${normTopK}`);
  }
  // ties go to the lower index, as in the router
  const tie = softmaxTopK(new Tape({ grad: false }), constant(Float32Array.from([1, 2, 2, 0]), [1, 4]), { topK: 1, normTopK: false });
  assert.equal(tie.experts[0], 1);
});

test('softmaxTopK: gradient of the chosen weights into the logits (normalised, unnormalised, scaled)', async () => {
  const logits = p64([T, E], 2, 1.5, 'logits');
  for (const [normTopK, s] of [[true, 1], [false, 1], [true, 2.5]] as const) {
    await check(`topk norm ${normTopK} scale ${s}`, (t) => project(t, softmaxTopK(t, logits, { topK: K, normTopK, scale: s }).weights), [logits]);
  }
});

test('loadBalancingLoss: equals transformers load_balancing_loss_func over concatenated layers', () => {
  const r = new Rng(3);
  const layers = [r.normals(T * E, 2), r.normals(T * E, 2)];
  const tape = new Tape({ grad: false });
  const routings = layers.map((l) => softmaxTopK(tape, constant(l, [T, E]), { topK: K, normTopK: true }));
  const got = loadBalancingLoss(tape, routings, E).item();
  // transformers: tokens_per_expert = mean over rows of one_hot(selected) -> [K, E];
  // router_prob_per_expert = mean over rows of softmax -> [E]; E * Σ tokens_per_expert * prob
  const rows = 2 * T;
  const perSlot = Array.from({ length: K }, () => new Float64Array(E));
  const prob = new Float64Array(E);
  for (const rt of routings) {
    for (let t = 0; t < T; t++) {
      for (let k = 0; k < K; k++) perSlot[k][rt.experts[t * K + k]] += 1 / rows;
      for (let e = 0; e < E; e++) prob[e] += rt.probs.data[t * E + e] / rows;
    }
  }
  let want = 0;
  for (let k = 0; k < K; k++) for (let e = 0; e < E; e++) want += perSlot[k][e] * prob[e];
  want *= E;
  assert.ok(Math.abs(got - want) < 1e-6 * want, `${got} vs ${want}`);
  // balanced routing gives K: token t prefers experts t and t+1 (mod E) equally, so every expert
  // is picked K times out of E·K and, by symmetry, P_e = 1/E
  const bal = new Float32Array(E * E);
  for (let t = 0; t < E; t++) {
    bal[t * E + t] = 2;
    bal[t * E + ((t + 1) % E)] = 2;
    bal[t * E + ((t + 2) % E)] = -1;
  }
  const even = loadBalancingLoss(tape, [softmaxTopK(tape, constant(bal, [E, E]), { topK: K, normTopK: false })], E).item();
  assert.ok(Math.abs(even - K) < 1e-6, `balanced routing: ${even}, expected ${K}`);
});

test('loadBalancingLoss: gradient reaches the router logits only through the mean probabilities', async () => {
  const a = p64([T, E], 4, 1.5, 'logits0');
  const b = p64([T, E], 5, 1.5, 'logits1');
  await check('aux', (t) => loadBalancingLoss(t, [softmaxTopK(t, a, { topK: K, normTopK: true }), softmaxTopK(t, b, { topK: K, normTopK: true })], E), [a, b]);
});

test('moeLayer: gradients of input, router and stacked experts, with the aux loss added', async () => {
  const h = p64([T, H], 6, 1, 'h');
  const router = p64([E, H], 7, 0.8, 'router');
  const gate = p64([E, I, H], 8, 0.5, 'gate');
  const up = p64([E, I, H], 9, 0.5, 'up');
  const down = p64([E, H, I], 10, 0.5, 'down');
  const experts = stackedExperts(gate, up, down);
  for (const normTopK of [true, false]) {
    await check(`moe norm ${normTopK}`, async (t) => {
      const { out, routing } = await moeLayer(t, h, { weight: router }, experts, { topK: K, normTopK });
      return add(t, project(t, out), scale(t, loadBalancingLoss(t, [routing], E), 0.1));
    }, [h, router, gate, up, down]);
  }
});

test('moeLayer: experts as functions — shared base + low-rank delta (DeRS LM) and per-token modulators (Family 3)', async () => {
  const h = p64([T, H], 11, 1, 'h');
  const router = p64([E, H], 12, 0.8, 'router');
  const shared = { gate: p64([I, H], 13, 0.5, 'Wg'), up: p64([I, H], 14, 0.5, 'Wu'), down: p64([H, I], 15, 0.5, 'Wd') };
  const A = Array.from({ length: E }, (_, e) => p64([I, 2], 20 + e, 0.5, `A${e}`));
  const B = Array.from({ length: E }, (_, e) => p64([2, H], 30 + e, 0.5, `B${e}`));
  // W_gate,e = W_shared + A_e B_e; up and down shared (enough to show the interface)
  const lowRank: ExpertFn[] = A.map((a, e) => swigluExpertFrom(async (t) => ({ gate: add(t, shared.gate, await matmul(t, a, B[e])), up: shared.up, down: shared.down })));
  await check('low-rank experts', async (t) => project(t, (await moeLayer(t, h, { weight: router }, lowRank, { topK: K, normTopK: true })).out), [h, router, shared.gate, shared.up, A[0], B[0], A[3], B[3]]);
  // per-token c0, c2: [T, H] and c1: [T, I], gathered for the rows each expert received
  const c0 = p64([T, H], 40, 1, 'c0');
  const c1 = p64([T, I], 41, 1, 'c1');
  const c2 = p64([T, H], 42, 1, 'c2');
  const modulated: ExpertFn[] = Array.from({ length: E }, () => (t, x, tokens) => swigluFfn(t, x, shared, { c0: gatherRows(t, c0, tokens), c1: gatherRows(t, c1, tokens), c2: gatherRows(t, c2, tokens) }));
  await check('modulated experts', async (t) => project(t, (await moeLayer(t, h, { weight: router }, modulated, { topK: K, normTopK: false })).out), [h, c0, c1, c2, shared.down]);
});

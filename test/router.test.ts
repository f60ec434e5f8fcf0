import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RoutingConfig } from '../src/models/canonical.js';
import { route } from '../src/tensor/router.js';

const base: RoutingConfig = { kind: 'softmax-topk', topK: 2, normTopK: false, scale: 1, nGroup: 1, topKGroup: 1, jitterEps: 0 };

function softmax(x: number[]): number[] {
  const m = Math.max(...x);
  const e = x.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

test('softmax-topk without renormalisation keeps the full-softmax probabilities (OLMoE)', () => {
  const logits = [0.5, 2.0, -1.0, 1.5];
  const r = route(new Float32Array(logits), 1, 4, base);
  const p = softmax(logits);
  assert.deepEqual([...r.experts], [1, 3]);
  assert.ok(Math.abs(r.weights[0] - p[1]) < 1e-6 && Math.abs(r.weights[1] - p[3]) < 1e-6);
});

test('softmax-topk with renormalisation sums to one (Mixtral)', () => {
  const logits = [0.5, 2.0, -1.0, 1.5];
  const r = route(new Float32Array(logits), 1, 4, { ...base, normTopK: true });
  const p = softmax(logits);
  assert.ok(Math.abs(r.weights[0] - p[1] / (p[1] + p[3])) < 1e-6);
  assert.ok(Math.abs(r.weights[0] + r.weights[1] - 1) < 1e-6);
});

test('topk-softmax is a softmax over the chosen logits (GPT-OSS)', () => {
  const r = route(new Float32Array([3, 1, 2, 0]), 1, 4, { ...base, kind: 'topk-softmax' });
  assert.deepEqual([...r.experts], [0, 2]);
  const w = softmax([3, 2]);
  assert.ok(Math.abs(r.weights[0] - w[0]) < 1e-6 && Math.abs(r.weights[1] - w[1]) < 1e-6);
});

test('top-k override picks more experts per token', () => {
  const r = route(new Float32Array([0.1, 0.4, 0.3, 0.2, 1, 0, 0, 0]), 2, 4, base, 3);
  assert.equal(r.K, 3);
  assert.deepEqual([...r.experts.subarray(0, 3)], [1, 2, 3]);
  assert.equal(r.experts[3], 0);
});

test('sigmoid-topk selects with the correction bias but weighs with the raw scores, scaled (DeepSeek-V3)', () => {
  const logits = [1.0, 0.0, 0.5, -0.5];
  const bias = new Float32Array([0, 2, 0, 0]); // pushes expert 1 into the selection
  const r = route(new Float32Array(logits), 1, 4, { ...base, kind: 'sigmoid-topk', normTopK: true, scale: 2.5 }, 2, bias);
  assert.deepEqual([...r.experts], [1, 0]);
  const s = logits.map((x) => 1 / (1 + Math.exp(-x)));
  assert.ok(Math.abs(r.weights[0] - (2.5 * s[1]) / (s[1] + s[0])) < 1e-6);
});

test('group-limited routing only picks from the best groups', () => {
  // Groups {0,1} and {2,3}; group 1 has the best single expert but group 0 the best top-2 sum.
  const logits = [1.0, 1.0, 1.6, -3.0];
  const cfg: RoutingConfig = { ...base, kind: 'sigmoid-topk', nGroup: 2, topKGroup: 1 };
  const r = route(new Float32Array(logits), 1, 4, cfg, 2);
  assert.deepEqual([...r.experts].sort(), [0, 1]);
  const rMax = route(new Float32Array(logits), 1, 4, { ...cfg, kind: 'softmax-topk' }, 2);
  assert.ok([...rMax.experts].every((e) => e >= 2), 'max-scored groups pick group 1');
});

test('sparsemixer picks the top expert, then the best of the rest, each weighted by a masked softmax', () => {
  const logits = [2.0, 1.9, -5.0, 0.0];
  const eps = 0.01;
  const r = route(new Float32Array(logits), 1, 4, { ...base, kind: 'sparsemixer', jitterEps: eps });
  assert.deepEqual([...r.experts], [0, 1]);
  // first pick: expert 1 lies within 2*eps relative margin? (2.0-1.9)/2.0 = 0.05 > 0.02, so masked: weight 1
  assert.ok(Math.abs(r.weights[0] - 1) < 1e-6);
  const r2 = route(new Float32Array(logits), 1, 4, { ...base, kind: 'sparsemixer', jitterEps: 0.05 });
  // now (2.0-1.9)/2.0 = 0.05 <= 0.1 keeps expert 1 in the first softmax
  assert.ok(Math.abs(r2.weights[0] - softmax([2.0, 1.9])[0]) < 1e-6);
});

/** analyze: expert similarity numbers against a float64 reference, verdicts on built-to-order tiny models, the CLI. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { analyzeModel } from '../src/compress/analyze.js';
import { Checkpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import type { RawTensor } from '../src/io/dtype.js';
import { fromFloat32, toFloat32 } from '../src/tensor/convert.js';
import { Rng } from '../src/tensor/random.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const MAIN = resolve(process.cwd(), 'dist/src/cli/main.js');
const I = 16;
const H = 32;

type Proj = 'w1' | 'w2' | 'w3';
/** Mixtral hub names: w1 = gate [I, H], w3 = up [I, H], w2 = down [H, I]. */
const EXPERT = /^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$/;

/** Rewrite every expert tensor of a tiny float32 Mixtral with make(layer, expert, proj, current). */
function rewriteExperts(dir: string, make: (layer: number, e: number, proj: Proj, cur: Float32Array) => Float32Array): void {
  const ck = Checkpoint.open(dir);
  const all = ck.names().map((n): [string, RawTensor] => {
    const t = ck.read(n);
    const m = EXPERT.exec(n);
    if (!m) return [n, t];
    return [n, { ...t, data: fromFloat32(make(Number(m[1]), Number(m[2]), m[3] as Proj, toFloat32(t)), 'F32') }];
  });
  ck.close();
  writeCheckpoint(dir, all, { shardBytes: 64 * 1024 });
}

function readHub(dir: string, name: string): Float32Array {
  const ck = Checkpoint.open(dir);
  const t = toFloat32(ck.read(name));
  ck.close();
  return t;
}

/** |a − b| within rtol of |b|, or atol for values near zero (cosines of random experts). */
function near(a: number, b: number, rtol: number, atol = 0): void {
  assert.ok(Math.abs(a - b) <= rtol * Math.abs(b) + atol, `${a} vs ${b}`);
}

function rms(x: Float32Array): number {
  return Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
}

/** Neuron j of the result is neuron perm[j] of w (rows of gate/up, columns of down). */
function permuteNeurons(w: Float32Array, proj: Proj, perm: number[]): Float32Array {
  const out = new Float32Array(w.length);
  for (let j = 0; j < I; j++) {
    for (let h = 0; h < H; h++) {
      if (proj === 'w2') out[h * I + j] = w[h * I + perm[j]];
      else out[j * H + h] = w[perm[j] * H + h];
    }
  }
  return out;
}

function shuffled(n: number, rng: Rng): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

test('a random (from-scratch-like) model: numbers match a float64 reference, verdict from-scratch', async () => {
  const { dir, weights } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 3, dtype: 'F32' });
  try {
    const a = await analyzeModel(dir);
    assert.equal(a.layers.length, 2);
    for (const l of a.layers) {
      // Reference: each expert as one float64 vector of gate, up and down.
      const mats = ['gate', 'up', 'down'].map((m) => weights.get(`layers.${l.layer}.moe.experts.${m}`)!.data);
      const n = I * H;
      const w = Array.from({ length: 4 }, (_, e) => Float64Array.from(mats.flatMap((d) => Array.from(d.subarray(e * n, (e + 1) * n)))));
      const dot = (x: Float64Array, y: Float64Array) => x.reduce((s, v, i) => s + v * y[i], 0);
      const cos: number[] = [];
      for (let e = 0; e < 4; e++) for (let f = e + 1; f < 4; f++) cos.push(dot(w[e], w[f]) / Math.sqrt(dot(w[e], w[e]) * dot(w[f], w[f])));
      near(l.pairwiseCos.all.mean, cos.reduce((s, c) => s + c, 0) / cos.length, 1e-9, 1e-12);
      near(l.pairwiseCos.all.min, Math.min(...cos), 1e-9, 1e-12);
      near(l.pairwiseCos.all.max, Math.max(...cos), 1e-9, 1e-12);
      const mean = w[0].map((_, i) => (w[0][i] + w[1][i] + w[2][i] + w[3][i]) / 4);
      const rel = w.map((x) => Math.sqrt(x.reduce((s, v, i) => s + (v - mean[i]) ** 2, 0) / dot(x, x)));
      near(l.meanBase.relDelta.mean, rel.reduce((s, r) => s + r, 0) / 4, 1e-9);
      assert.ok(Math.abs(l.pairwiseCos.all.mean) < 0.2, 'independent random experts are nearly orthogonal');
      assert.equal(l.verdict, 'from-scratch');
      assert.equal(l.recommendation.family, 'per-expert');
    }
    assert.equal(a.summary.verdict, 'from-scratch');
    assert.ok(a.summary.meanRelDelta > 0.5);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an upcycled model (dense FFN + small noise) is upcycled, close to its dense base', async () => {
  const dense = writeTinyModel({ ...TINY_CONFIGS.mistral, intermediate_size: I }, { seed: 5, dtype: 'F32' });
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 6, dtype: 'F32' });
  try {
    const rng = new Rng(7);
    const src = { w1: 'gate_proj', w3: 'up_proj', w2: 'down_proj' } as const;
    rewriteExperts(dir, (layer, _e, proj) => {
      const base = readHub(dense.dir, `model.layers.${layer}.mlp.${src[proj]}.weight`);
      const s = 0.02 * rms(base); // deltas 2% of the weights
      return base.map((v) => v + s * rng.normal());
    });
    const a = await analyzeModel(dir, { baseFrom: dense.dir });
    for (const l of a.layers) {
      assert.ok(l.pairwiseCos.all.min > 0.99, `layer ${l.layer} pairwise cos ${l.pairwiseCos.all.min}`);
      assert.ok(l.meanBase.relDelta.max < 0.05, `layer ${l.layer} rel. delta ${l.meanBase.relDelta.max}`);
      assert.ok(l.meanBase.cos.min > 0.999);
      assert.ok(l.denseBase!.cos.min > 0.999);
      near(l.denseBase!.relDelta.mean, 0.02, 0.15);
      assert.equal(l.verdict, 'upcycled');
      assert.equal(l.recommendation.family, 'delta');
    }
    assert.equal(a.summary.verdict, 'upcycled');
    assert.deepEqual(a.summary.recommendation.methods, ['ders-quant', 'ders-drop']);
    assert.equal(a.summary.recommendation.flags, '--base-from DENSE_DIR');
    // Without the dense model the recommendation falls back to the mean base.
    assert.equal((await analyzeModel(dir, { layers: [1] })).summary.recommendation.flags, '--base mean');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(dense.dir, { recursive: true, force: true });
  }
});

test('permuted copies of one expert: aligned residual ~0, unaligned residual large', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 8, dtype: 'F32' });
  try {
    const rng = new Rng(9);
    const perms = new Map<string, number[]>();
    rewriteExperts(dir, (layer, e, proj) => {
      const key = `${layer}.${e}`;
      if (!perms.has(key)) perms.set(key, e === 0 ? Array.from({ length: I }, (_, j) => j) : shuffled(I, rng));
      const w0 = readHub(dir, `model.layers.${layer}.block_sparse_moe.experts.0.${proj}.weight`);
      return permuteNeurons(w0, proj, perms.get(key)!);
    });
    const a = await analyzeModel(dir, { seed: 1 });
    for (const l of a.layers) {
      assert.ok(l.aligned.relDelta.max < 1e-5, `layer ${l.layer} aligned rel. delta ${l.aligned.relDelta.max}`);
      assert.ok(l.meanBase.relDelta.mean > 0.5, `layer ${l.layer} unaligned rel. delta ${l.meanBase.relDelta.mean}`);
      assert.ok(l.aligned.moved > 0.5, 'three of four experts were shuffled');
      assert.equal(l.verdict, 'from-scratch');
      assert.equal(l.recommendation.family, 'barycenter');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, 'analyze', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('analyze --json prints one object with one record per MoE layer; the table names the verdict', () => {
  // Qwen2-MoE with mlp_only_layers [1]: layer 0 is MoE, layer 1 dense.
  const { dir } = writeTinyModel(TINY_CONFIGS.qwen2_moe, { dtype: 'BF16' });
  const mix = writeTinyModel(TINY_CONFIGS.mixtral, { dtype: 'BF16' });
  try {
    const r = cli(dir, '--json');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '', '--json keeps stderr quiet');
    const j = JSON.parse(r.out.trim());
    assert.deepEqual(j.layers.map((l: { layer: number }) => l.layer), [0]);
    assert.equal(j.summary.verdict, 'from-scratch');
    const one = JSON.parse(cli(mix.dir, '--layers', '1', '--json').out);
    assert.deepEqual(one.layers.map((l: { layer: number }) => l.layer), [1]);
    const human = cli(mix.dir);
    assert.equal(human.code, 0, human.err);
    assert.match(human.out, /rel\. delta \(aligned\)/);
    assert.match(human.out, /verdict: from-scratch -> per-expert family: quant/);
    const bad = cli(mix.dir, '--layers', '5');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /layer 5 is not a MoE layer/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(mix.dir, { recursive: true, force: true });
  }
});

test('--base-from with a dense FFN of another shape is refused, naming the sizes', async () => {
  const dense = writeTinyModel(TINY_CONFIGS.mistral, { dtype: 'F32' }); // intermediate 40, experts 16
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { dtype: 'F32' });
  try {
    await assert.rejects(analyzeModel(dir, { baseFrom: dense.dir }), /intermediate_size 40 differs from the experts' 16/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(dense.dir, { recursive: true, force: true });
  }
});

/**
 * Streaming evaluation (runtime/stream-forward.ts): one layer of weights in memory at a time, the
 * routed experts read one at a time by position, gives the perplexity and the per-token NLL of the
 * in-memory engine (loadModel + perplexity) on tiny seeded models of every family, in every
 * dtype and expert layout, with a top-k override, on compressed directories and with compressed
 * experts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { compress } from '../src/compress/compress.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { writeCompressedExperts, type CompressedExpertsLayer } from '../src/runtime/compressed-experts.js';
import { estimateEval } from '../src/runtime/eval-estimate.js';
import { loadModel } from '../src/runtime/load-model.js';
import { perplexity, type PerplexityOptions } from '../src/runtime/perplexity.js';
import { streamedPerplexity } from '../src/runtime/stream-forward.js';
import { Transformer } from '../src/runtime/transformer.js';
import { Rng } from '../src/tensor/random.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeFusedCopy, writeTinyModel } from './helpers/tiny-model.js';

const tmp = () => mkdtempSync(join(os.tmpdir(), 'moepress-se-'));

function randomIds(n: number, V: number, seed: number): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(V));
}

/** 5 windows of 12 in batches of 2 (the last one partial). */
const OPTS: PerplexityOptions = { windowSize: 12, windows: 5, batch: 2, tokenNll: true };

/** Streamed and in-memory results agree: perplexity and every token's NLL within 1e-6 relative. */
async function assertSameEval(dir: string, opts: PerplexityOptions = OPTS, seed = 3) {
  const m = loadModel(dir);
  const ids = randomIds(5 * 12 + 7, m.config.vocabSize, seed);
  const want = await perplexity(new Transformer(m.config, m.weights, m.banks), ids, opts);
  const got = await streamedPerplexity(dir, ids, opts);
  assert.equal(got.tokens, want.tokens);
  assert.equal(got.windows, 5);
  assert.ok(Math.abs(got.perplexity - want.perplexity) <= 1e-6 * want.perplexity, `perplexity ${got.perplexity} vs ${want.perplexity}`);
  const a = got.tokenNll!;
  const b = want.tokenNll!;
  assert.equal(a.length, 5 * 11);
  for (let i = 0; i < b.length; i++) {
    assert.ok(b[i] > 0, 'a token NLL of 0 would prove nothing');
    assert.ok(Math.abs(a[i] - b[i]) <= 1e-6 * b[i], `token ${i}: NLL ${a[i]} vs ${b[i]}`);
  }
  // The per-token NLLs are what the perplexity is made of.
  assert.ok(Math.abs(Math.exp(b.reduce((s, x) => s + x, 0) / b.length) - want.perplexity) <= 1e-9 * want.perplexity);
  return { m, got, want };
}

for (const family of Object.keys(TINY_CONFIGS)) {
  test(`${family}: streamed eval equals the in-memory eval (bf16, sharded)`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[family], { seed: 11, dtype: 'BF16', shardBytes: 8 * 1024 });
    try {
      const { m, got } = await assertSameEval(dir);
      const moe = m.config.moe;
      const moeLayers = m.config.layers.filter((l) => l.ffn === 'moe').length;
      if (!moe) {
        assert.equal(got.expertBytes, 0);
        return;
      }
      // One expert resident at a time (plus the layer's expert biases), each read at most once per layer.
      const biases = m.weights.opt('layers.0.moe.experts.gate_bias') ? 4 * moe.experts * (2 * moe.intermediate + m.config.hidden) : 0;
      assert.equal(got.expertBytes, 4 * 3 * moe.intermediate * m.config.hidden + biases);
      assert.ok(got.expertReads > moeLayers && got.expertReads <= moeLayers * moe.experts, `${got.expertReads} expert reads`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

for (const dtype of ['F16', 'F32'] as const) {
  test(`mixtral ${dtype}, one shard: streamed eval equals the in-memory eval`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 12, dtype, shardBytes: 1 << 30 });
    try {
      await assertSameEval(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('mixtral in the fused (transformers v5) expert layout: streamed eval equals the in-memory eval', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 19, dtype: 'BF16' });
  const fused = `${dir}-fused`;
  try {
    writeFusedCopy(dir);
    const ck = Checkpoint.open(fused);
    assert.ok(ck.names().some((n) => n.endsWith('gate_up_proj')), 'written fused');
    ck.close();
    await assertSameEval(fused);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(fused, { recursive: true, force: true });
  }
});

test('top-k override: streamed eval equals the in-memory eval, and the override changes the result', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.olmoe, { seed: 13, dtype: 'BF16' });
  try {
    const k1 = await assertSameEval(dir, { ...OPTS, topK: 1 });
    const k3 = await assertSameEval(dir, { ...OPTS, topK: 3 });
    assert.ok(Math.abs(k1.got.perplexity - k3.got.perplexity) > 1e-3 * k3.got.perplexity, 'top-1 and top-3 differ');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const [family, method] of [['mixtral', 'quant'], ['qwen2_moe', 'resmoe-prune'], ['gpt_oss', 'ders-quant']] as const) {
  test(`${family} compressed with ${method} (layer 0 only): streamed eval equals the in-memory eval`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[family], { seed: 14, dtype: 'BF16' });
    const out = join(tmp(), 'c');
    try {
      await compress({ model: dir, out, method, budget: 0.5, seed: 2, layers: [0] });
      const { got } = await assertSameEval(out);
      // Layer 1 (if MoE) still reads hub experts one at a time; layer 0 runs on its stored parts.
      assert.ok(got.expertBytes > 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('compressed experts (m = 1 of top-3) on a hub model and on a compressed directory: streamed eval equals the in-memory eval', async () => {
  const cfgJson = { ...TINY_CONFIGS.mixtral, num_local_experts: 6, num_experts_per_tok: 3 };
  const { dir, cfg } = writeTinyModel(cfgJson, { seed: 15, dtype: 'BF16' });
  const out = join(tmp(), 'c');
  try {
    await compress({ model: dir, out, method: 'quant', budget: 0.6, seed: 2 });
    const r = new Rng(16);
    const { experts: E, intermediate: I } = cfg.moe!;
    const around1 = (n: number) => Float32Array.from({ length: n }, () => 1 + 0.4 * r.normal());
    const vectors: (CompressedExpertsLayer | null)[] = cfg.layers.map((s) => (s.ffn === 'moe' ? { m: 1, c0: around1(E * cfg.hidden), c1: around1(E * I), c2: around1(E * cfg.hidden) } : null));
    for (const d of [dir, out]) {
      writeCompressedExperts(d, cfg, vectors, { m: 1, K: 3 });
      const { m } = await assertSameEval(d);
      assert.equal(m.compressedExperts?.m, 1);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('CLI: eval streams by default and equals --in-memory; --random-tokens needs no tokenizer; the estimate is reported', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.qwen2_moe, { seed: 17, dtype: 'BF16' });
  const main = resolve(process.cwd(), 'dist/src/cli/main.js');
  const run = (...args: string[]) => {
    const r = spawnSync(process.execPath, [main, 'eval', dir, '--random-tokens', '3', '--window-size', '16', '--batch', '2', '--seed', '4', '--json', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim());
  };
  try {
    const s = run();
    const m = run('--in-memory');
    assert.equal(s.engine, 'streamed');
    assert.equal(m.engine, 'in-memory');
    assert.equal(s.tokens, 3 * 15);
    assert.ok(Math.abs(s.perplexity - m.perplexity) <= 1e-6 * m.perplexity, `${s.perplexity} vs ${m.perplexity}`);
    assert.ok(s.expertBytes < m.expertBytes, 'streamed holds one expert, in-memory all of them');
    assert.ok(s.estimatedPeakBytes > 0 && m.estimatedPeakBytes === null);
    assert.notEqual(run('--seed', '5').perplexity, s.perplexity, 'the seed picks the ids');
    const both = spawnSync(process.execPath, [main, 'eval', dir, '--random-tokens', '3', '--text', 'x.txt'], { encoding: 'utf8' });
    assert.equal(both.status, 2);
    assert.match(both.stderr, /exactly one of --text/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('estimateEval: the in-memory weight bytes are what loadModel holds; the residual stream of every window is counted', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.deepseek_v3, { seed: 18, dtype: 'BF16' });
  try {
    const m = loadModel(dir);
    const held = m.weights.names().reduce((s, n) => s + m.weights.get(n).data.byteLength, 0);
    const one = estimateEval(dir, { windows: 1, windowSize: 16, batch: 4 });
    assert.equal(one.inMemoryWeightBytes, held);
    const many = estimateEval(dir, { windows: 65, windowSize: 16, batch: 4 });
    assert.ok(many.peakBytes - one.peakBytes >= 64 * 16 * m.config.hidden * 4, `${many.peakBytes} vs ${one.peakBytes}`);
    assert.ok(many.workingSet.some((w) => w.what === 'residual stream' && w.bytes === 65 * 16 * m.config.hidden * 4));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

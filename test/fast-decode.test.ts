/**
 * The one-graph decode step (decode-graph.ts, fast-decoder.ts) against its twin, the TS engine:
 * logits step by step and greedy generations on tiny seeded models of every family it covers, the
 * fallback for those it does not, and the hand-over to the TS engine past a sliding window.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { compress } from '../src/compress/compress.js';
import type { ExpertFormat } from '../src/runtime/decode-graph.js';
import { benchDecode } from '../src/runtime/bench-decode.js';
import { FastDecoder } from '../src/runtime/fast-decoder.js';
import { generate } from '../src/runtime/generate.js';
import { loadModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { ropeTables } from '../src/tensor/rope.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const COVERED = ['mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe', 'mistral', 'llama', 'qwen2'];
const NOT_COVERED = ['deepseek_v3', 'deepseek_v2', 'phimoe', 'gpt_oss'];

function tokens(n: number, seed: number, V: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(V));
}

async function collect(engine: Transformer, prompt: number[], maxTokens: number, fast: boolean): Promise<number[]> {
  const out: number[] = [];
  for await (const t of generate(engine, prompt, { maxTokens, fast })) out.push(t);
  return out;
}

/** Logits of the graph step and of the TS engine, step by step from the same prompt; returns the graph's expert formats. */
async function compareSteps(engine: Transformer, steps: number, seed: number): Promise<ExpertFormat[]> {
  const fast = await FastDecoder.create(engine);
  assert.ok(fast, 'the decode graph should cover this model');
  try {
    const V = engine.config.vocabSize;
    const prompt = tokens(5, seed, V);
    const a = engine.newCache(16);
    const b = engine.newCache(16);
    await engine.hidden(prompt, 1, prompt.length, a);
    await engine.hidden(prompt, 1, prompt.length, b);
    const next = tokens(steps, seed + 1, V);
    for (const t of next) {
      const want = await engine.logits([t], 1, 1, a);
      const got = await fast.step(t, b);
      assertClose(got, want, 1e-4, `logits after token ${t}`);
      assert.equal(b.length, a.length, 'both caches advance by one');
    }
    // The graph's keys/values match the TS engine's, so either engine can continue the cache.
    for (let l = 0; l < engine.config.numLayers; l++) assertClose(b.k[l].subarray(0, b.length * b.kRow), a.k[l].subarray(0, a.length * a.kRow), 1e-5, `layer ${l} keys`);
    return fast.expertFormats;
  } finally {
    await fast.release();
  }
}

for (const name of COVERED) {
  test(`${name}: the decode graph step equals the TS engine (logits, cache, greedy tokens)`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[name], { seed: 21, dtype: 'BF16' });
    try {
      const m = loadModel(dir);
      const engine = new Transformer(m.config, m.weights, m.banks);
      assert.equal(FastDecoder.unsupported(engine), null);
      await compareSteps(engine, 4, 3);
      const prompt = tokens(4, 9, m.config.vocabSize);
      // mistral's sliding window (6) ends the graph's steps early: the TS engine takes over.
      assert.deepEqual(await collect(engine, prompt, 10, true), await collect(engine, prompt, 10, false));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('interleaved RoPE and a partial rotary dim: the graph matches the TS engine', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.llama, { seed: 4, dtype: 'BF16' });
  try {
    const m = loadModel(dir);
    for (const rope of [{ ...m.config.rope, style: 'interleaved' as const }, { ...m.config.rope, dim: 4 }]) {
      const cfg = { ...m.config, rope };
      const engine = new Transformer(cfg, m.weights, m.banks);
      assert.equal(engine.rope.dim, rope.dim);
      assert.deepEqual(engine.rope, ropeTables(rope, cfg.maxPositions));
      await compareSteps(engine, 3, 5);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const name of NOT_COVERED) {
  test(`${name}: not covered by the decode graph, generate keeps the TS engine`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[name], { seed: 21, dtype: 'BF16' });
    try {
      const m = loadModel(dir);
      const engine = new Transformer(m.config, m.weights, m.banks);
      assert.notEqual(FastDecoder.unsupported(engine), null);
      assert.equal(await FastDecoder.create(engine), null);
      const prompt = tokens(3, 2, m.config.vocabSize);
      assert.deepEqual(await collect(engine, prompt, 4, true), await collect(engine, prompt, 4, false));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

// Wide enough that 64-value quantization blocks tile every matrix row (the MatMulNBits path).
// [family, method, budget, width (H = I), the codec the budget buys, the graph's expert format]
const COMPRESSED: [string, string, number, number, string, ExpertFormat][] = [
  ['mixtral', 'quant', 0.28, 64, 'q4s-g64-rtn', 'q4'], // top-K-then-softmax routing
  ['olmoe', 'quant', 0.28, 64, 'q4s-g64-rtn', 'q4'], // softmax-then-top-K, unnormalised
  ['mixtral', 'ders-quant', 0.55, 128, 'q4s-g32', 'base+q4'], // the shared base once per token + 4-bit deltas
  ['mixtral', 'ders-quant', 0.4, 128, 'q2s-g64', 'base+q4'], // 2- and 3-bit codes widened to 4 bits
  ['mixtral', 'ders-quant', 0.45, 128, 'q3s-g128', 'base+q4'],
  ['mixtral', 'ders-quant', 0.6, 128, 'q5s-g32', 'base+q8'],
  ['mixtral', 'ders-magnitude', 0.45, 64, '', 'float'], // sparse deltas: densified at build time
];
for (const [family, method, budget, width, codec, format] of COMPRESSED) {
  test(`${family} compressed with ${method} ${codec}: the graph (${format} experts) equals the TS engine on the stored parts`, async () => {
    const { dir } = writeTinyModel({ ...TINY_CONFIGS[family], hidden_size: width, intermediate_size: width }, { seed: 8, dtype: 'BF16' });
    const out = join(mkdtempSync(join(os.tmpdir(), 'moepress-fast-')), 'c');
    try {
      await compress({ model: dir, out, method, budget, seed: 1 });
      const m = loadModel(out);
      assert.ok(m.manifest, 'a compressed checkpoint');
      if (codec) assert.equal(m.manifest.layers[0].choices.codec, codec, 'the budget should buy this codec');
      const engine = new Transformer(m.config, m.weights, m.banks);
      assert.deepEqual(await compareSteps(engine, 4, 2), m.config.layers.map(() => format));
      const prompt = tokens(4, 6, m.config.vocabSize);
      assert.deepEqual(await collect(engine, prompt, 8, true), await collect(engine, prompt, 8, false));
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('benchDecode reports the engine, the runs and the bytes a graph step reads', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 3, dtype: 'F32' });
  try {
    const fast = await benchDecode(dir, { tokens: 4, prompt: 3, repeats: 2 });
    assert.equal(fast.engine, 'graph');
    assert.equal(fast.runs.length, 2);
    assert.equal(fast.tokensPerSecond, Math.max(...fast.runs));
    const m = loadModel(dir);
    const moe = m.config.moe!;
    // float32: everything but the embedding table and the unchosen experts, plus one embedding row
    const all = m.weights.names().reduce((s, n) => s + m.weights.get(n).data.byteLength, 0);
    const experts = 4 * m.config.layers.length * 3 * moe.experts * moe.intermediate * m.config.hidden;
    const embed = 4 * m.config.vocabSize * m.config.hidden;
    const want = all - embed - experts * (1 - moe.routing.topK / moe.experts) + 4 * m.config.hidden;
    assert.ok(fast.bytesPerToken! >= want && fast.bytesPerToken! < want * 1.05, `${fast.bytesPerToken} bytes per token, expected about ${want}`);
    const ts = await benchDecode(dir, { tokens: 4, prompt: [1, 2, 3], repeats: 1, fast: false });
    assert.equal(ts.engine, 'ts');
    assert.equal(ts.bytesPerToken, null);
    assert.equal(ts.promptTokens, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

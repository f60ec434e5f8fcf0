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

/** max |a - b| / max |b|. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

// int8Activations: ORT rounds each block of the activation row to int8 (step = max|x| / 127 per
// block, so a relative error up to 1/254 per element); over a few layers this stays within 2e-2
// of the largest logit, well below the gaps that decide most argmaxes.
for (const [method, budget, width, format] of [['quant', 0.28, 64, 'q4'], ['ders-quant', 0.6, 128, 'base+q8']] as const) {
  test(`int8 activations (${method}, ${format} experts): logits close to the TS engine, the default stays exact`, async () => {
    const { dir } = writeTinyModel({ ...TINY_CONFIGS.mixtral, hidden_size: width, intermediate_size: width }, { seed: 8, dtype: 'BF16' });
    const out = join(mkdtempSync(join(os.tmpdir(), 'moepress-int8-')), 'c');
    try {
      await compress({ model: dir, out, method, budget, seed: 1 });
      const m = loadModel(out);
      const engine = new Transformer(m.config, m.weights, m.banks);
      const int8 = await FastDecoder.create(engine, { int8Activations: true });
      assert.ok(int8 && int8.int8Activations);
      assert.deepEqual(int8.expertFormats, m.config.layers.map(() => format));
      const V = m.config.vocabSize;
      const prompt = tokens(5, 4, V);
      const a = engine.newCache(32);
      const b = engine.newCache(32);
      await engine.hidden(prompt, 1, prompt.length, a);
      await engine.hidden(prompt, 1, prompt.length, b);
      let worst = 0;
      let agree = 0;
      const next = tokens(12, 5, V);
      for (const t of next) {
        const want = await engine.logits([t], 1, 1, a);
        const got = await int8.step(t, b);
        worst = Math.max(worst, relDiff(got, want));
        if (argmax(got) === argmax(want)) agree++;
      }
      await int8.release();
      assert.ok(worst < 2e-2, `int8 logits differ by ${worst} of the largest logit`);
      assert.ok(worst > 1e-6, 'int8 activations should change the arithmetic (accuracy_level 4 in effect)');
      assert.ok(agree >= next.length - 2, `argmax equal at ${agree}/${next.length} steps`);
      // generate: the option takes the int8 decoder, and without it the exact one (equal to the TS engine)
      const p = tokens(4, 6, V);
      const exact: number[] = [];
      for await (const t of generate(engine, p, { maxTokens: 8 })) exact.push(t);
      assert.deepEqual(exact, await collect(engine, p, 8, false));
      const fast8: number[] = [];
      for await (const t of generate(engine, p, { maxTokens: 8, int8Activations: true })) fast8.push(t);
      assert.equal(fast8.length, 8);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

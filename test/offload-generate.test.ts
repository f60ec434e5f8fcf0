/**
 * Generation with the routed experts offloaded (runtime/offload-model.ts, cached-banks.ts) gives
 * the greedy tokens and logits of the in-memory TS engine (loadModel), bit for bit, with a cache
 * that holds all experts and with one smaller than a layer's experts (every token evicts): on a
 * hub Mixtral (per-expert layout), the same model in the fused layout, GPT-OSS (expert biases,
 * its own layout) and compressed directories (quant, ders-quant with a shared base).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { compress } from '../src/compress/compress.js';
import { compressedLayerSizes } from '../src/runtime/cached-banks.js';
import { generate } from '../src/runtime/generate.js';
import { openForGenerate } from '../src/runtime/generate-model.js';
import { loadModel } from '../src/runtime/load-model.js';
import { loadOffloaded } from '../src/runtime/offload-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeFusedCopy, writeTinyModel } from './helpers/tiny-model.js';

const PROMPT = [5, 17, 3, 40, 22, 9];
const STEPS = 10;

/** Greedy decoding through the TS engine, step by step: the tokens and every step's logits [V]. */
async function greedy(engine: Transformer): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const H = engine.config.hidden;
  const cache = engine.newCache(PROMPT.length + STEPS);
  const tokens: number[] = [];
  const logits: Float32Array[] = [];
  let input = PROMPT;
  for (let s = 0; s < STEPS; s++) {
    const h = await engine.hidden(input, 1, input.length, cache);
    const l = await engine.logitsFromHidden(h.subarray((input.length - 1) * H), 1);
    let best = 0;
    for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
    tokens.push(best);
    logits.push(l);
    input = [best];
  }
  return { tokens, logits };
}

/** Offloaded with a cache of cacheBytes equals in memory; returns the cache statistics. */
async function assertSameGeneration(dir: string, cacheBytes: (fp: { minCacheBytes: number; totalBytes: number }) => number) {
  const m = loadModel(dir);
  const want = await greedy(new Transformer(m.config, m.weights, m.banks));
  const probe = loadOffloaded(dir, { cacheBytes: 1 << 30 });
  const fp = probe.footprint;
  probe.close();
  const cap = cacheBytes(fp);
  const off = loadOffloaded(dir, { cacheBytes: cap });
  try {
    const engine = new Transformer(off.config, off.weights, off.banks);
    const got = await greedy(engine);
    assert.deepEqual(got.tokens, want.tokens);
    for (let s = 0; s < STEPS; s++) {
      assert.ok(want.logits[s].some((x) => Math.abs(x) > 1e-3), 'logits of zeros would prove nothing');
      assert.deepEqual(got.logits[s], want.logits[s], `step ${s}: logits differ`);
    }
    // generate() over the offloaded engine (the fast decoder refuses it) gives the same tokens.
    const ids: number[] = [];
    for await (const id of generate(engine, PROMPT, { maxTokens: STEPS })) ids.push(id);
    assert.deepEqual(ids, want.tokens.slice(0, ids.length));
    const st = off.cache.stats();
    assert.ok(st.peakCachedBytes <= cap, `peak ${st.peakCachedBytes} above the cap ${cap}`);
    assert.ok(st.misses > 0 && st.bytesRead > 0);
    return { st, fp, cap };
  } finally {
    off.close();
    m.checkpoint.close();
  }
}

/** Small: one byte more than the largest expert (with its shared tensors), so nearly every run evicts; large: everything. */
const SMALL = (fp: { minCacheBytes: number; totalBytes: number }) => fp.minCacheBytes + 1;
const LARGE = (fp: { minCacheBytes: number; totalBytes: number }) => fp.totalBytes;

async function bothCaches(dir: string, layerExpertBytes: number) {
  const small = await assertSameGeneration(dir, SMALL);
  assert.ok(small.cap < layerExpertBytes, 'the small cache holds less than one layer of experts');
  assert.ok(small.st.evictions > 0, 'the small cache evicts');
  const large = await assertSameGeneration(dir, LARGE);
  assert.equal(large.st.evictions, 0);
  assert.ok(large.st.hits > 0);
  // Each entry is read once with room for all: the misses read at most every entry once.
  assert.ok(large.st.peakCachedBytes <= large.fp.totalBytes);
}

/** One layer's routed experts in float32 for the tiny configs (E = 4, I = 16, H = 32). */
const LAYER_F32 = 4 * 3 * 16 * 32 * 4;

test('mixtral (per-expert layout, bf16): offloaded generation equals in memory, small and large cache', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 21, dtype: 'BF16', shardBytes: 8 * 1024 });
  try {
    await bothCaches(dir, LAYER_F32);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('mixtral in the fused expert layout: offloaded generation equals in memory', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 22, dtype: 'BF16' });
  const fused = writeFusedCopy(dir);
  try {
    await bothCaches(fused, LAYER_F32);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(fused, { recursive: true, force: true });
  }
});

test('gpt_oss (expert biases, interleaved layout): offloaded generation equals in memory', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.gpt_oss, { seed: 23, dtype: 'BF16' });
  try {
    await bothCaches(dir, LAYER_F32);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const method of ['quant', 'ders-quant'] as const) {
  test(`mixtral compressed with ${method}: offloaded generation equals in memory`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 24, dtype: 'BF16' });
    const out = join(mkdtempSync(join(os.tmpdir(), 'moepress-og-')), 'c');
    try {
      await compress({ model: dir, out, method, budget: 0.5, seed: 2 });
      const m = loadModel(out);
      const layerBytes = m.banks[0]!.residentBytes;
      // ders-quant's experts share a base: the layer's shared entry, parent of its experts.
      const sizes = compressedLayerSizes(m.checkpoint, m.manifest!.layers[0]);
      assert.equal(sizes.sharedBytes > 0, method === 'ders-quant');
      assert.equal(sizes.sharedBytes + sizes.experts.reduce((a, b) => a + b, 0), layerBytes, 'entry sizes add up to what the in-memory bank holds');
      m.checkpoint.close();
      await bothCaches(out, layerBytes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('openForGenerate: in memory when the model fits, offloaded when it does not, the plan emitted before loading', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 25, dtype: 'BF16' });
  try {
    const run = async (availableBytes: number) => {
      const events: string[] = [];
      const m = openForGenerate(dir, {
        promptTokens: PROMPT.length, maxTokens: STEPS, availableBytes,
        onPlan: (_e, plan) => events.push(`plan ${plan.mode}`),
        onProgress: () => events.push('load'),
      });
      try {
        const ids: number[] = [];
        for await (const id of generate(m.engine, PROMPT, { maxTokens: STEPS, fast: false })) ids.push(id);
        return { ids, plan: m.plan, estimate: m.estimate, events, stats: m.cache?.stats() ?? null };
      } finally {
        m.close();
      }
    };
    const roomy = await run(1e12);
    assert.equal(roomy.plan.mode, 'in-memory');
    assert.equal(roomy.stats, null);
    assert.equal(roomy.events[0], 'plan in-memory', 'the plan comes before the first tensor is loaded');
    // As much memory as the in-memory peak: with the margin it does not fit, so the experts are offloaded.
    const tight = await run(roomy.estimate.inMemoryPeakBytes);
    assert.equal(tight.plan.mode, 'offloaded');
    assert.equal(tight.plan.cacheBytes, tight.estimate.minCacheBytes, 'no room beyond the smallest cache');
    assert.equal(tight.events[0], 'plan offloaded');
    assert.ok(tight.stats!.misses > 0);
    assert.deepEqual(tight.ids, roomy.ids);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

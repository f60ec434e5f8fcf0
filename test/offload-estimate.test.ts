/**
 * The generate memory estimate (runtime/offload-estimate.ts): its terms recomputed by hand from a
 * tiny model's config, and the mode choice at the boundaries (fits, offloads with the largest
 * cache that fits, clamps to one expert, obeys an explicit cache size).
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { GC_SLACK, PROCESS_BYTES } from '../src/compress/estimate.js';
import { activationBytes, GRAPH_COPIES, chooseGenerateMode, estimateGenerate, kvCacheBytes, offloadedPeakBytes, peakOf, type GenerateEstimate } from '../src/runtime/offload-estimate.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { canonicalShapes, writeTinyModel } from './helpers/tiny-model.js';

test('estimateGenerate on a tiny mixtral: every term by hand', () => {
  const { dir, cfg } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 41, dtype: 'F32' });
  try {
    const est = estimateGenerate(dir, { promptTokens: 7, maxTokens: 20 });
    // Non-expert weights in float32, plus the largest tensor's stored (F32) bytes while converting.
    let resident = 0;
    let largest = 0;
    let experts = 0;
    for (const [name, shape] of canonicalShapes(cfg)) {
      const n = shape.reduce((a, b) => a * b, 1);
      if (/\.moe\.experts\.(gate|up|down)$/.test(name)) experts += 4 * n;
      else {
        resident += 4 * n;
        largest = Math.max(largest, 4 * n);
      }
    }
    assert.equal(est.residentWeightBytes, resident + largest);
    assert.equal(est.expertBytes, experts);
    assert.equal(experts, 2 * 4 * 3 * 16 * 32 * 4, 'layers · E · 3 · I · H · 4');
    assert.equal(est.minCacheBytes, 3 * 16 * 32 * 4);
    // K and V: 2 layers · 27 positions · 2 KV heads · (8 + 8) head dims · 4 bytes.
    assert.equal(est.kvCacheBytes, 2 * 27 * 2 * 16 * 4);
    // T = 7, H = 32, 4 heads: attention 6·T·H + heads·T² = 1344 + 196 beats the FFN T·(2H + 2I) = 672.
    assert.equal(est.activationBytes, 4 * (2 * 7 * 32 + 1540 + 64));
    assert.equal(est.readBufferBytes, 8 * 16 * 32);
    assert.equal(est.graphBytes, GRAPH_COPIES * (resident + experts), 'small enough for the one-graph decoder, which copies the weights');
    assert.equal(est.inMemoryPeakBytes, Math.round(PROCESS_BYTES + (resident + largest + experts + GRAPH_COPIES * (resident + experts) + est.kvCacheBytes + est.activationBytes) * (1 + GC_SLACK)));
    assert.equal(offloadedPeakBytes(est, 10000), Math.round(PROCESS_BYTES + (resident + largest + 10000 + est.readBufferBytes + est.kvCacheBytes + est.activationBytes) * (1 + GC_SLACK)));
    // A cache above every expert holds every expert, no more.
    assert.equal(offloadedPeakBytes(est, 1e12), offloadedPeakBytes(est, experts));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('KV cache and activation bytes follow the config (positions capped at maxPositions)', () => {
  const { dir, cfg } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 42 });
  try {
    assert.equal(estimateGenerate(dir, { promptTokens: 100, maxTokens: 1000 }).kvCacheBytes, kvCacheBytes(cfg, 128));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(kvCacheBytes(cfg, 128), 4 * 2 * 128 * 2 * 16);
  const est = (T: number) => 4 * (2 * T * 32 + Math.max(6 * T * 32 + 4 * T * T, T * (64 + 32)) + 64);
  assert.equal(activationBytes(cfg, 1), est(1));
  assert.equal(activationBytes(cfg, 100), est(100));
});

/** A made-up 9 GB model: 1 GB resident, 8 GB of experts, 100 MB the largest. */
function bigModel(): GenerateEstimate {
  const e = { residentWeightBytes: 1e9, expertBytes: 8e9, minCacheBytes: 1e8, readBufferBytes: 3e7, graphBytes: 0, kvCacheBytes: 5e7, activationBytes: 1e7 };
  return { ...e, inMemoryPeakBytes: peakOf([e.residentWeightBytes, e.expertBytes, e.kvCacheBytes, e.activationBytes]) };
}

test('mode choice: in memory when it fits, else the largest cache that fits, at least one expert', () => {
  const est = bigModel();
  assert.equal(est.inMemoryPeakBytes, Math.round(PROCESS_BYTES + 9.06e9 * (1 + GC_SLACK)));
  const roomy = chooseGenerateMode(est, { availableBytes: 20e9 });
  assert.equal(roomy.mode, 'in-memory');
  assert.equal(roomy.cacheBytes, null);
  assert.ok(roomy.fits);
  assert.equal(roomy.usableBytes, 16e9, '20% margin');

  const tight = chooseGenerateMode(est, { availableBytes: 5e9 });
  assert.equal(tight.mode, 'offloaded');
  assert.ok(tight.fits);
  const cache = tight.cacheBytes!;
  // usable 4e9 = PROCESS + (1.09e9 + cache) · 1.1, to the byte (rounding)
  assert.ok(Math.abs(cache - ((4e9 - PROCESS_BYTES) / (1 + GC_SLACK) - 1.09e9)) <= 1, `cache ${cache}`);
  assert.ok(offloadedPeakBytes(est, cache) <= 4e9 && offloadedPeakBytes(est, cache + 2) > 4e9);

  const starved = chooseGenerateMode(est, { availableBytes: 1e9 });
  assert.equal(starved.mode, 'offloaded');
  assert.equal(starved.cacheBytes, 1e8, 'never below one expert');
  assert.equal(starved.fits, false);

  const asked = chooseGenerateMode(est, { availableBytes: 20e9, expertCacheBytes: 5e8 });
  assert.equal(asked.mode, 'offloaded');
  assert.equal(asked.cacheBytes, 5e8);
  assert.equal(asked.peakBytes, peakOf([1e9, 5e8, 3e7, 5e7, 1e7]));
});

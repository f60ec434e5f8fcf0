/**
 * The expert cache's accounting (runtime/expert-cache.ts): LRU order, room made before loading,
 * dependents evicted with their parent, the peak never above the cap; and an offloaded model's
 * refusal of a cache smaller than one expert, naming the size needed.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { MoepressError } from '../src/io/errors.js';
import { ExpertCache } from '../src/runtime/expert-cache.js';
import { loadOffloaded } from '../src/runtime/offload-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { Rng } from '../src/tensor/random.js';
import { parseBytes } from '../src/cli/format.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

/** A loader of an entry holding `bytes` bytes; `loads` records the order of loads. */
function loader(bytes: number, loads: string[], key: string) {
  return () => {
    loads.push(key);
    return { value: new Uint8Array(bytes), bytes, bytesRead: bytes / 2 };
  };
}

test('LRU: hits keep entries, the least recently used goes first, bytes never exceed the cap', () => {
  const c = new ExpertCache(300);
  const loads: string[] = [];
  const get = (k: string, b = 100) => c.get(k, b, loader(b, loads, k));
  get('a');
  get('b');
  get('c');
  get('a'); // hit: a becomes the most recent, b the least
  get('d'); // evicts b
  assert.deepEqual(loads, ['a', 'b', 'c', 'd']);
  assert.ok(c.has('a') && c.has('c') && c.has('d') && !c.has('b'));
  get('e', 250); // evicts c, a and d (oldest first) to fit 250
  assert.ok(!c.has('c') && !c.has('a') && !c.has('d') && c.has('e'));
  const s = c.stats();
  assert.deepEqual({ hits: s.hits, misses: s.misses, evictions: s.evictions, bytesRead: s.bytesRead, cachedBytes: s.cachedBytes, peakCachedBytes: s.peakCachedBytes },
    { hits: 1, misses: 5, evictions: 4, bytesRead: 325, cachedBytes: 250, peakCachedBytes: 300 });
});

test('an entry depending on another is evicted with it, and its parent is never evicted to make room for it', () => {
  const c = new ExpertCache(400);
  const loads: string[] = [];
  c.get('0:shared', 200, loader(200, loads, '0:shared'));
  c.get('0:1', 100, loader(100, loads, '0:1'), { parent: '0:shared' });
  // 0:shared is now the least recently used; room for 0:2 must come from 0:1, not the parent.
  c.get('0:2', 200, loader(200, loads, '0:2'), { parent: '0:shared' });
  assert.ok(c.has('0:shared') && c.has('0:2') && !c.has('0:1'));
  // An unrelated entry evicts the parent (the least recent), which takes its child with it.
  c.get('x', 300, loader(300, loads, 'x'));
  assert.ok(!c.has('0:shared') && !c.has('0:2') && c.has('x'));
  assert.equal(c.stats().cachedBytes, 300);
  assert.throws(() => c.get('0:3', 10, loader(10, loads, '0:3'), { parent: '0:shared' }), /not cached/);
});

test('the loader receives the values evicted to make room for it (to read into their buffers)', () => {
  const c = new ExpertCache(200);
  const a = c.get('a', 100, () => ({ value: new Float32Array(25), bytes: 100, bytesRead: 0 }));
  c.get('b', 100, (evicted) => {
    assert.deepEqual(evicted, [], 'room without evicting');
    return { value: new Float32Array(25), bytes: 100, bytesRead: 0 };
  });
  let seen: unknown[] = [];
  const d = c.get('d', 100, (evicted) => {
    seen = evicted;
    return { value: evicted[0] as Float32Array, bytes: 100, bytesRead: 0 };
  });
  assert.equal(seen.length, 1);
  assert.equal(d, a, 'the least recently used entry (a) was handed over and reused');
  assert.ok(!c.has('a'));
});

test('an entry larger than the cap, or holding other than announced, is refused', () => {
  const c = new ExpertCache(100);
  assert.throws(() => c.get('big', 101, loader(101, [], 'big')), (e: Error) => e instanceof MoepressError && /at least 101 bytes/.test(e.message));
  assert.throws(() => c.get('liar', 50, () => ({ value: 0, bytes: 60, bytesRead: 0 })), /announced as 50 bytes but holds 60/);
  assert.throws(() => new ExpertCache(0), MoepressError);
});

test('offloaded mixtral: a cache below one expert is refused naming the size; the peak stays under every cap', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 31, dtype: 'BF16' });
  const expert = 3 * 16 * 32 * 4; // gate, up [I, H], down [H, I] in float32
  try {
    assert.throws(() => loadOffloaded(dir, { cacheBytes: expert - 1 }), (e: Error) => e instanceof MoepressError && e.message.includes(`at least ${expert} bytes`) && e.message.includes(dir));
    const rng = new Rng(4);
    for (let trial = 0; trial < 4; trial++) {
      const cap = expert + rng.int(5 * expert);
      const m = loadOffloaded(dir, { cacheBytes: cap });
      try {
        const engine = new Transformer(m.config, m.weights, m.banks);
        const cache = engine.newCache(20);
        const ids = Array.from({ length: 20 }, () => rng.int(m.config.vocabSize));
        for (const id of ids) await engine.hidden([id], 1, 1, cache);
        const s = m.cache.stats();
        assert.ok(s.peakCachedBytes <= cap, `cap ${cap}: peak ${s.peakCachedBytes}`);
        // Every entry is one whole float32 expert, read from bf16 (2 bytes a weight).
        assert.equal(s.cachedBytes % expert, 0);
        assert.equal(s.bytesRead, (s.misses * expert) / 2);
        assert.equal(s.hits + s.misses, 20 * 2 * 2, 'every token runs top-2 experts in each of 2 layers');
      } finally {
        m.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('parseBytes reads --expert-cache sizes', () => {
  assert.equal(parseBytes('512MiB'), 512 * 2 ** 20);
  assert.equal(parseBytes('4GiB'), 4 * 2 ** 30);
  assert.equal(parseBytes('1.5GB'), 1.5e9);
  assert.equal(parseBytes('8mib'), 8 * 2 ** 20);
  assert.equal(parseBytes('65536'), 65536);
  assert.equal(parseBytes('10 KB'), 10000);
  assert.equal(parseBytes('lots'), null);
  assert.equal(parseBytes('-1MiB'), null);
});

/** attendBatch (ORT graph) against its naive twin `attend`, looped per sequence (STYLE rule 3), and in the engine. */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { attentionDims } from '../src/runtime/attention-block.js';
import { loadModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { attend } from '../src/tensor/attention.js';
import { ATTEND_SMALL_MACS, attendBatch, attendBatchNaive, attendBatchOrt, attentionMask, type BatchAttentionParams } from '../src/tensor/attention-ort.js';
import { backendName } from '../src/tensor/gemm.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose, relErr } from './helpers/assert-close.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

interface Case extends BatchAttentionParams {
  B: number;
  S: number;
}

function params(c: Partial<Case> & Pick<Case, 'B' | 'S' | 'heads' | 'kvHeads' | 'dk'>): Case {
  const dv = c.dv ?? c.dk;
  return { dv, scale: 1 / Math.sqrt(c.dk), window: null, ...c };
}

const CASES: [string, Case][] = [
  ['one token, one sequence', params({ B: 1, S: 1, heads: 2, kvHeads: 1, dk: 8 })],
  ['B=3, S=17, GQA 6/2', params({ B: 3, S: 17, heads: 6, kvHeads: 2, dk: 16 })],
  ['MHA (NH = NKV)', params({ B: 2, S: 9, heads: 4, kvHeads: 4, dk: 8 })],
  ['dk != dv (MLA 12/8)', params({ B: 2, S: 11, heads: 3, kvHeads: 3, dk: 12, dv: 8 })],
  ['sliding window 5', params({ B: 2, S: 19, heads: 4, kvHeads: 2, dk: 8, window: 5 })],
  ['window longer than the sequence', params({ B: 1, S: 7, heads: 2, kvHeads: 1, dk: 4, window: 64 })],
  ['eval shape: 4 x 64 tokens, head dim 64', params({ B: 4, S: 64, heads: 4, kvHeads: 2, dk: 64 })],
];

function inputs(c: Case, seed: number) {
  const rng = new Rng(seed);
  return {
    q: rng.normals(c.B * c.S * c.heads * c.dk),
    k: rng.normals(c.B * c.S * c.kvHeads * c.dk),
    v: rng.normals(c.B * c.S * c.kvHeads * c.dv),
  };
}

/** The reference: `attend` itself on copied slices, one sequence at a time (independent of attendBatchNaive's views). */
function twin(q: Float32Array, k: Float32Array, v: Float32Array, c: Case): Float32Array {
  const out = new Float32Array(c.B * c.S * c.heads * c.dv);
  for (let b = 0; b < c.B; b++) {
    const o = attend(
      q.slice(b * c.S * c.heads * c.dk, (b + 1) * c.S * c.heads * c.dk),
      k.slice(b * c.S * c.kvHeads * c.dk, (b + 1) * c.S * c.kvHeads * c.dk),
      v.slice(b * c.S * c.kvHeads * c.dv, (b + 1) * c.S * c.kvHeads * c.dv),
      c.S,
      { ...c, qPos0: 0, sinks: null },
    );
    out.set(o, b * c.S * c.heads * c.dv);
  }
  return out;
}

const ort = backendName() === 'ort';

for (const [name, c] of CASES) {
  test(`attendBatchOrt matches attend: ${name}`, { skip: !ort && 'onnxruntime-node unavailable' }, async () => {
    const { q, k, v } = inputs(c, 21);
    assertClose(await attendBatchOrt(q, k, v, c.B, c.S, c), twin(q, k, v, c), 1e-5, name);
  });
  test(`attendBatch and attendBatchNaive match attend: ${name}`, async () => {
    const { q, k, v } = inputs(c, 22);
    const want = twin(q, k, v, c);
    assertClose(await attendBatch(q, k, v, c.B, c.S, c), want, 1e-5, name);
    assertClose(attendBatchNaive(q, k, v, c.B, c.S, c), want, 1e-6, name);
  });
}

test('attendBatchOrt: sequences are independent (no attention across the batch)', { skip: !ort && 'onnxruntime-node unavailable' }, async () => {
  const c = params({ B: 2, S: 8, heads: 2, kvHeads: 1, dk: 8 });
  const { q, k, v } = inputs(c, 5);
  const both = await attendBatchOrt(q, k, v, 2, 8, c);
  // Perturbing sequence 1 must leave sequence 0's output unchanged.
  // (Random, not constant: a constant shift of every key moves all scores of a query equally.)
  const k2 = k.slice();
  const noise = new Rng(6).normals(k2.length / 2);
  for (let i = 0; i < noise.length; i++) k2[k2.length / 2 + i] += noise[i];
  const moved = await attendBatchOrt(q, k2, v, 2, 8, c);
  const half = both.length / 2;
  assertClose(moved.subarray(0, half), both.subarray(0, half), 1e-7, 'sequence 0');
  assert.ok(relErr(moved.subarray(half), both.subarray(half)) > 1e-3, 'sequence 1 must see its own keys change');
});

test('attendBatchOrt reads subarray views at a nonzero byteOffset', { skip: !ort && 'onnxruntime-node unavailable' }, async () => {
  const c = params({ B: 2, S: 5, heads: 4, kvHeads: 2, dk: 8 });
  const { q, k, v } = inputs(c, 9);
  const pad = (x: Float32Array) => {
    const big = new Rng(1).normals(x.length + 13);
    big.set(x, 7);
    return big.subarray(7, 7 + x.length);
  };
  assertClose(await attendBatchOrt(pad(q), pad(k), pad(v), c.B, c.S, c), twin(q, k, v, c), 1e-5);
});

test('attentionMask: causal, windowed, repeated per group member, cached', () => {
  const m = attentionMask(4, 2, 2);
  const visible = (r: number, j: number) => m[r * 4 + j] === 0;
  for (let g = 0; g < 2; g++) {
    for (let s = 0; s < 4; s++) {
      for (let j = 0; j < 4; j++) assert.equal(visible(g * 4 + s, j), j <= s && s - j < 2, `g=${g} s=${s} j=${j}`);
    }
  }
  assert.equal(attentionMask(4, 2, 2), m);
});

test('attendBatch rejects mismatched shapes with the shape in the message', async () => {
  const c = params({ B: 2, S: 3, heads: 4, kvHeads: 2, dk: 4 });
  const { q, k, v } = inputs(c, 1);
  await assert.rejects(attendBatch(q.subarray(1), k, v, 2, 3, c), /q \[B=2, S=3, NH=4, dk=4\] needs 96/);
  assert.throws(() => attendBatchNaive(q, k, v, 2, 3, { ...c, kvHeads: 3 }), /not a multiple/);
});

test('attendBatch of an empty batch is empty', async () => {
  const c = params({ B: 0, S: 4, heads: 2, kvHeads: 1, dk: 4 });
  assert.equal((await attendBatchOrt(new Float32Array(0), new Float32Array(0), new Float32Array(0), 0, 4, c)).length, 0);
});

/**
 * Integration: attentionBlock sends a batch of long-enough windows through attendBatch, while a
 * KV-cache forward of each window alone goes through `attend`; the logits must agree. Covers
 * sliding windows (mistral), dk != dv (DeepSeek MLA), GQA and QK-norm on tiny seeded models.
 */
for (const family of ['mixtral', 'mistral', 'deepseek_v3', 'qwen3_moe', 'olmoe']) {
  test(`${family}: batched eval windows (attendBatch) match per-window cached runs (attend)`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[family], { seed: 3 });
    try {
      const m = loadModel(dir);
      const engine = new Transformer(m.config, m.weights);
      const [B, S, V] = [2, 40, m.config.vocabSize];
      const rng = new Rng(17);
      const ids = Array.from({ length: B * S }, () => rng.int(V));
      const d = attentionDims(m.config);
      assert.ok(B * d.heads * S * S * (d.dk + d.dv) >= ATTEND_SMALL_MACS, 'the batch must be big enough to reach the ORT path');
      const batched = await engine.logits(ids, B, S);
      for (let b = 0; b < B; b++) {
        const alone = await engine.logits(ids.slice(b * S, (b + 1) * S), 1, S, engine.newCache(S));
        assertClose(batched.subarray(b * S * V, (b + 1) * S * V), alone, 1e-5, `${family} window ${b}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/**
 * The engine on tiny seeded models of every family, written as real safetensors directories:
 * logits against an independent float64 reference (where it covers the family), KV-cache decoding
 * against the batch forward, and batched windows against single ones.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { loadModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';
import { referenceForward, type RefConfig } from './helpers/reference-forward.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

/** The reference covers the standard attention families; others are checked for self-consistency. */
const REFERENCE_FAMILIES = ['mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe', 'mistral', 'llama', 'qwen2'];

function tokens(n: number, seed: number, V = 64): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(V));
}

for (const [name, json] of Object.entries(TINY_CONFIGS)) {
  test(`${name}: KV-cache decoding and batching agree with the full forward`, async () => {
    const { dir } = writeTinyModel(json, { seed: 11, dtype: 'BF16' });
    try {
      const m = loadModel(dir);
      const engine = new Transformer(m.config, m.weights);
      const V = m.config.vocabSize;
      const seq = tokens(9, 5);
      const full = await engine.logits(seq, 1, seq.length);
      // prompt of 4, then one token at a time
      const cache = engine.newCache(16);
      const parts = [await engine.logits(seq.slice(0, 4), 1, 4, cache)];
      for (let t = 4; t < seq.length; t++) parts.push(await engine.logits([seq[t]], 1, 1, cache));
      const inc = new Float32Array(full.length);
      let o = 0;
      for (const p of parts) {
        inc.set(p, o);
        o += p.length;
      }
      assertClose(inc, full, 1e-5, `${name} incremental vs full`);
      // two different sequences in one batch give the same logits as each alone
      const other = tokens(9, 6);
      const both = await engine.logits([...seq, ...other], 2, 9);
      assertClose(both.subarray(0, 9 * V), full, 1e-6, `${name} batch row 0`);
      assertClose(both.subarray(9 * V), await engine.logits(other, 1, 9), 1e-6, `${name} batch row 1`);
      // the model is not degenerate: different contexts give different next-token logits
      assert.ok(Math.abs(full[8 * V] - both[17 * V]) > 1e-4, 'logits depend on the input');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

for (const name of REFERENCE_FAMILIES) {
  test(`${name}: logits match an independent float64 reference`, async () => {
    const json = TINY_CONFIGS[name];
    const { dir, cfg, weights } = writeTinyModel(json, { seed: 3, dtype: 'F32' });
    try {
      const m = loadModel(dir);
      const engine = new Transformer(m.config, m.weights);
      const seq = tokens(12, 9);
      const got = await engine.logits(seq, 1, seq.length);
      const a = cfg.attention;
      const rc: RefConfig = {
        V: cfg.vocabSize, H: cfg.hidden, L: cfg.numLayers, NH: a.heads, NKV: a.kvHeads, D: a.headDim, eps: cfg.normEps,
        theta: cfg.rope.theta, qkNorm: a.qkNorm, moeLayers: cfg.layers.map((l) => l.ffn === 'moe'),
        E: cfg.moe?.experts ?? 0, K: cfg.moe?.routing.topK ?? 0, normTopK: cfg.moe?.routing.normTopK ?? false,
        routing: 'softmax-topk', sharedGated: cfg.moe?.shared ? cfg.moe.shared.gated : null,
        window: cfg.layers[0].slidingWindow,
      };
      const ref = referenceForward(rc, weights, seq).flat();
      assertClose(got, ref, 1e-4, name);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('the fused transformers-v5 expert layout loads to the same model as per-expert tensors', async () => {
  const { dir, weights } = writeTinyModel(TINY_CONFIGS.olmoe, { seed: 4 });
  const m = loadModel(dir);
  const fusedDir = dir + '-fused';
  try {
    const { writeCheckpoint } = await import('../src/io/checkpoint.js');
    const { fromFloat32 } = await import('../src/tensor/convert.js');
    const { writeFileSync, copyFileSync } = await import('node:fs');
    const hub: [string, import('../src/io/dtype.js').RawTensor][] = [];
    const raw = (n: string) => ({ dtype: 'F32' as const, shape: weights.get(n)!.shape, data: fromFloat32(weights.get(n)!.data, 'F32') });
    const cfgFused = { ...m.config, expertLayout: 'fused' as const };
    for (const e of m.arch.hubEntries(cfgFused, (n) => weights.has(n))) hub.push([e.name, e.build(raw)]);
    assert.ok(hub.some(([n]) => n.endsWith('mlp.experts.gate_up_proj')), 'fused names written');
    writeCheckpoint(fusedDir, hub);
    copyFileSync(`${dir}/config.json`, `${fusedDir}/config.json`);
    writeFileSync(`${fusedDir}/.keep`, '');
    const f = loadModel(fusedDir);
    const seq = tokens(7, 2);
    const a = await new Transformer(m.config, m.weights).logits(seq, 1, 7);
    const b = await new Transformer(f.config, f.weights).logits(seq, 1, 7);
    assertClose(b, a, 1e-7, 'fused vs per-expert');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(fusedDir, { recursive: true, force: true });
  }
});

/**
 * Compression on tiny seeded models: exact budget accounting in the files on disk, the delta family
 * near-lossless on upcycled-style experts, zero ResMoE residual for permuted copies, the compressed
 * runtime equal to its restored dense checkpoint, and the run's atomicity and resume.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { compress } from '../src/compress/compress.js';
import { readManifest } from '../src/compress/format.js';
import { METHODS } from '../src/compress/methods/index.js';
import { restore } from '../src/compress/restore.js';
import { estimateRestore } from '../src/compress/restore-estimate.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { MoepressError } from '../src/io/errors.js';
import { loadModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose, relErr } from './helpers/assert-close.js';
import { permutedExperts, upcycledExperts } from './helpers/expert-shapes.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';
import { storedOnDisk } from './helpers/stored-bytes.js';

const tmp = () => mkdtempSync(join(os.tmpdir(), 'moepress-c-'));
const seq = (() => {
  const r = new Rng(3);
  return Array.from({ length: 10 }, () => r.int(64));
})();

async function logits(dir: string): Promise<Float32Array> {
  const m = loadModel(dir);
  return new Transformer(m.config, m.weights, m.banks).logits(seq, 1, seq.length);
}

for (const method of METHODS) {
  test(`${method.name}: stored bytes on disk equal the manifest and honour the budget; runtime equals restore`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'BF16' });
    const out = join(tmp(), 'c');
    try {
      const budget = 0.5;
      const m = await compress({ model: dir, out, method: method.name, budget, seed: 9 });
      const onDisk = storedOnDisk(out);
      assert.equal(onDisk, m.bytes.stored, 'manifest bytes = bytes in the files');
      assert.equal(m.bytes.reference, 2 * 4 * 3 * 16 * 32 * 2);
      assert.ok(m.bytes.stored <= budget * m.bytes.reference, `stored ${m.bytes.stored} > budget`);
      assert.ok(m.bytes.stored > 0.5 * budget * m.bytes.reference || method.name === 'merge' || method.name === 'quant', 'uses most of its budget');
      assert.equal(readManifest(out).seed, 9);
      // the compressed runtime and the restored dense checkpoint are the same model
      const restored = join(tmp(), 'r');
      await restore(out, restored, { dtype: 'F32' });
      assertClose(await logits(out), await logits(restored), 1e-5, `${method.name} runtime vs restore`);
      rmSync(restored, { recursive: true, force: true });
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('restore with the source dtype gives back the original tensor names, layout and non-expert bytes', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.olmoe, { seed: 4, dtype: 'BF16', shardBytes: 40 * 1024 });
  const out = join(tmp(), 'c');
  const back = join(tmp(), 'r');
  try {
    await compress({ model: dir, out, method: 'quant', budget: 0.6 });
    await restore(out, back);
    const a = Checkpoint.open(dir);
    const b = Checkpoint.open(back);
    assert.deepEqual(b.names().sort(), a.names().sort());
    for (const n of a.names()) {
      assert.equal(b.info(n).dtype, 'BF16');
      assert.deepEqual(b.info(n).shape, a.info(n).shape);
      if (!n.includes('.experts.')) assert.deepEqual(b.read(n).data, a.read(n).data, n);
    }
    assert.ok(b.files().length > 1, 'sharded like the source');
    // the estimate printed before a restore: exactly the bytes written, the compressed bytes read
    const est = estimateRestore(out);
    assert.equal(est.outputBytes, b.names().reduce((sum, n) => sum + b.info(n).byteLength, 0));
    const c = Checkpoint.open(out);
    assert.equal(est.inputBytes, c.names().reduce((sum, n) => sum + c.info(n).byteLength, 0));
    c.close();
    assert.equal(estimateRestore(out, 'F32').outputBytes - est.outputBytes, 2 * 3 * 4 * 16 * 32 * 2, 'F32 experts: 2 more bytes per expert weight (2 layers × 4 experts × 3 × 16 × 32)');
    assert.ok(est.peakBytes > est.workingSet.reduce((s2, w) => s2 + w.bytes, 0) && est.seconds > 0);
  } finally {
    for (const d of [dir, out, back]) rmSync(d, { recursive: true, force: true });
  }
});

for (const method of ['ders-quant', 'ders-drop', 'ders-magnitude']) {
  test(`${method}: upcycled-style experts (base + small noise) compress nearly losslessly`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'F32', edit: upcycledExperts(1e-3) });
    const out = join(tmp(), 'c');
    try {
      const m = await compress({ model: dir, out, method, budget: 0.5 });
      const err = (m.layers[0].choices.relError as { all: number }).all;
      assert.ok(err < 0.01, `relative weight error ${err}`);
      // The deltas are ~0.5% of the weights; random drop keeping q = 1/4 has error ~sqrt((1-q)/q) ≈ 1.7x
      // the delta, so logits may move by up to ~1%.
      const e = relErr(await logits(out), await logits(dir));
      assert.ok(e < 1e-2, `logits relative error ${e}`);
      // the same budget on plain pruning is far worse: the shared base is what makes it work
      const pruned = join(tmp(), 'p');
      await compress({ model: dir, out: pruned, method: 'prune', budget: 0.5 });
      assert.ok(relErr(await logits(pruned), await logits(dir)) > 10 * e);
      rmSync(pruned, { recursive: true, force: true });
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('ders-drop regenerates its mask from the seed: no positions are stored', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'F32', edit: upcycledExperts(1e-2) });
  const out = join(tmp(), 'c');
  try {
    const m = await compress({ model: dir, out, method: 'ders-drop', budget: 0.6, seed: 4 });
    const ck = Checkpoint.open(out);
    assert.ok(!ck.names().some((n) => /\.(mask|indices)$/.test(n)));
    const parts = m.layers[0].experts[1].gate;
    assert.equal(parts[1].kind, 'sparse');
    assert.equal(parts[1].kind === 'sparse' && parts[1].index.kind, 'seeded');
    ck.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

for (const method of ['resmoe-prune', 'resmoe-svd', 'merge']) {
  test(`${method}: permuted copies of one expert leave a zero residual after alignment`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 8, dtype: 'BF16', edit: permutedExperts() });
    const out = join(tmp(), 'c');
    try {
      // resmoe-svd needs room for a rank-1 residual: 0.3333 of these tiny experts
      const m = await compress({ model: dir, out, method, budget: 0.4 });
      for (const l of m.layers) assert.ok((l.choices.relError as { all: number }).all < 1e-6, `layer ${l.layer}`);
      assertClose(await logits(out), await logits(dir), 1e-5, method);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('budgets that cannot be met are refused before any work, naming the minimum', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2 });
  try {
    for (const [method, budget] of [['ders-quant', 0.2], ['resmoe-svd', 0.25], ['merge', 0.1], ['svd', 0.01]] as const) {
      const out = join(tmp(), 'c');
      await assert.rejects(compress({ model: dir, out, method, budget }), (e: unknown) => e instanceof MoepressError && /too small/.test(e.message) && /at least/.test(e.message));
      assert.ok(!existsSync(out));
    }
    await assert.rejects(compress({ model: dir, out: join(tmp(), 'x'), method: 'zip', budget: 0.5 }), /unknown method 'zip'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an interrupted run leaves nothing at --out and --resume finishes it identically', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.olmoe, { seed: 2 });
  const base = tmp();
  const out = join(base, 'c');
  const ref = join(base, 'ref');
  try {
    await assert.rejects(
      compress({ model: dir, out, method: 'resmoe-prune', budget: 0.5, onProgress: (e) => { if (e.task === 'compress' && e.done === 1) throw new Error('killed'); } }),
      /killed/,
    );
    assert.ok(!existsSync(out), 'no half checkpoint at --out');
    assert.ok(existsSync(`${out}.partial`));
    await assert.rejects(compress({ model: dir, out, method: 'resmoe-prune', budget: 0.5 }), /--resume/);
    await assert.rejects(compress({ model: dir, out, method: 'resmoe-prune', budget: 0.4, resume: true }), /different options/);
    const done: number[] = [];
    await compress({ model: dir, out, method: 'resmoe-prune', budget: 0.5, resume: true, onProgress: (e) => done.push(e.done) });
    assert.ok(!existsSync(`${out}.partial`));
    await compress({ model: dir, out: ref, method: 'resmoe-prune', budget: 0.5 });
    const a = Checkpoint.open(out);
    const b = Checkpoint.open(ref);
    for (const n of b.names()) assert.deepEqual(a.read(n).data, b.read(n).data, n);
    assert.deepEqual(readdirSync(out).sort(), readdirSync(ref).sort());
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(base, { recursive: true, force: true });
  }
});

test('--layers compresses only the chosen layers; the others keep their original tensors', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'BF16' });
  const out = join(tmp(), 'c');
  try {
    const m = await compress({ model: dir, out, method: 'quant', budget: 0.3, layers: [1] });
    assert.deepEqual(m.layers.map((l) => l.layer), [1]);
    const src = Checkpoint.open(dir);
    const ck = Checkpoint.open(out);
    const n0 = 'model.layers.0.block_sparse_moe.experts.2.w1.weight';
    assert.deepEqual(ck.read(n0).data, src.read(n0).data);
    assert.ok(!ck.has('model.layers.1.block_sparse_moe.experts.2.w1.weight'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

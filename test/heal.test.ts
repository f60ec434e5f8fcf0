/**
 * Healing (`moepress finetune COMPRESSED --teacher ORIGINAL`, train/heal.ts): on a tiny seeded
 * OLMoE quantized at a low budget, the distillation loss falls, the experts files stay byte for
 * byte, the output loads, evaluates, inspects and restores, its logits move closer to the
 * original's on held-out text, a resumed run writes the same bytes, and bad inputs are refused.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { compress } from '../src/compress/compress.js';
import { expertsFile, readManifest } from '../src/compress/format.js';
import { restore } from '../src/compress/restore.js';
import { loadModel } from '../src/runtime/load-model.js';
import { loadTokenizer } from '../src/runtime/tokenizer.js';
import { Transformer } from '../src/runtime/transformer.js';
import { compressAndHeal } from '../src/train/compress-heal.js';
import { heal, healTrains } from '../src/train/heal.js';
import { SHARED, TEST_TEXT } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');
const skipCorpus = existsSync(TOKENIZER) && existsSync(TEST_TEXT) ? false : 'needs ../shared/corpus';
const MAIN = resolve(process.cwd(), 'dist/src/cli/main.js');
const OLMOE = { ...TINY_CONFIGS.olmoe, vocab_size: 4096, max_position_embeddings: 256, num_experts: 6, num_experts_per_tok: 2 };

/** An original tiny model with the corpus tokenizer, a training text, a held-out text and its quant compression. */
async function setup(budget = 0.15) {
  const root = mkdtempSync(join(os.tmpdir(), 'moepress-heal-'));
  const { dir } = writeTinyModel(OLMOE, { dtype: 'BF16', seed: 3, dir: join(root, 'orig') });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const all = readFileSync(TEST_TEXT, 'utf8');
  const text = join(root, 'train.txt');
  writeFileSync(text, all.slice(0, 20000));
  const heldOut = all.slice(40000, 46000);
  const comp = join(root, 'q');
  await compress({ model: dir, out: comp, method: 'quant', budget });
  return { root, dir, text, heldOut, comp };
}

/** Mean KL(original ‖ model) per token, in float64, over the held-out text as windows of S. */
async function heldOutKL(modelDir: string, teacherDir: string, text: string, S = 64): Promise<number> {
  const ids = loadTokenizer(teacherDir).encode(text);
  const B = Math.floor(ids.length / S);
  const tokens = Int32Array.from(ids.slice(0, B * S));
  const run = async (d: string) => {
    const m = loadModel(d);
    return new Transformer(m.config, m.weights, m.banks).logits(tokens, B, S);
  };
  const [p, q] = [await run(modelDir), await run(teacherDir)];
  const V = OLMOE.vocab_size as number;
  let total = 0;
  const logSoftmax = (x: Float32Array, o: number) => {
    let mx = -Infinity;
    for (let i = o; i < o + V; i++) mx = Math.max(mx, x[i]);
    let s = 0;
    for (let i = o; i < o + V; i++) s += Math.exp(x[i] - mx);
    return mx + Math.log(s);
  };
  for (let t = 0; t < B * S; t++) {
    const o = t * V;
    const [zp, zq] = [logSoftmax(p, o), logSoftmax(q, o)];
    for (let i = o; i < o + V; i++) {
      const lq = q[i] - zq;
      total += Math.exp(lq) * (lq - (p[i] - zp));
    }
  }
  return total / (B * S);
}

const FAST = { steps: 16, batch: 2, seqLen: 64, lr: 3e-3, checkpointEvery: 0 };

test('healTrains: routed experts never train; norms+router keeps to norms and routers', () => {
  assert.equal(healTrains('all', 'layers.0.moe.experts.gate'), false);
  assert.equal(healTrains('all', 'embed'), true);
  assert.equal(healTrains('no-embed', 'embed'), false);
  assert.equal(healTrains('no-embed', 'layers.1.attn.q.weight'), true);
  assert.equal(healTrains('norms+router', 'layers.1.attn.q.weight'), false);
  assert.equal(healTrains('norms+router', 'layers.1.attn.q_norm.weight'), true);
  assert.equal(healTrains('norms+router', 'layers.1.ffn_norm.weight'), true);
  assert.equal(healTrains('norms+router', 'layers.1.moe.router.weight'), true);
  assert.equal(healTrains('norms+router', 'norm.weight'), true);
});

test('heal: the loss falls, experts files stay byte for byte, the output loads, evaluates, inspects, restores and is closer to the original', { skip: skipCorpus }, async () => {
  const { root, dir, text, heldOut, comp } = await setup();
  try {
    const out = join(root, 'healed');
    const r = await heal(comp, { ...FAST, out, teacher: dir, text });
    assert.ok(r.finalLoss < r.initialLoss, `distill KL ${r.initialLoss} -> ${r.finalLoss}`);
    assert.equal(r.train, 'all');

    const before = readManifest(comp);
    for (const rec of before.layers) {
      const f = expertsFile(rec.layer);
      assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(comp, f))), `${f} unchanged`);
    }
    const after = readManifest(out);
    assert.deepEqual(after.layers, before.layers);
    assert.deepEqual(after.bytes, before.bytes);
    assert.equal(after.heal?.teacher, resolve(dir));
    assert.deepEqual([after.heal?.steps, after.heal?.lr, after.heal?.seed, after.heal?.finalLoss], [16, 3e-3, 0, r.finalLoss]);
    assert.ok(!existsSync(`${out}.partial`) && !existsSync(join(out, 'train-state')));
    // the rest shards keep their dtype and names; a non-expert tensor moved
    const [a, b] = [loadModel(comp), loadModel(out)];
    assert.deepEqual(b.checkpoint.names().sort(), a.checkpoint.names().sort());
    for (const n of a.checkpoint.names()) assert.equal(b.checkpoint.info(n).dtype, a.checkpoint.info(n).dtype, n);
    const q = 'model.layers.0.self_attn.q_proj.weight';
    assert.ok(!b.checkpoint.read(q).data.every((x, i) => x === a.checkpoint.read(q).data[i]), 'attention trained');

    // held-out text: the healed model's next-token distributions are closer to the original's
    const [klBefore, klAfter] = [await heldOutKL(comp, dir, heldOut), await heldOutKL(out, dir, heldOut)];
    assert.ok(klBefore > 0.01, `quantization moved the model (KL ${klBefore})`);
    assert.ok(klAfter < klBefore, `held-out KL ${klBefore} -> ${klAfter}`);

    // eval, inspect and restore work on the result unchanged
    const held = join(root, 'held.txt');
    writeFileSync(held, heldOut);
    const ev = spawnSync(process.execPath, [MAIN, 'eval', out, '--text', held, '--windows', '4', '--window-size', '64', '--json'], { encoding: 'utf8' });
    assert.equal(ev.status, 0, ev.stderr);
    assert.ok(Number.isFinite(JSON.parse(ev.stdout.trim().split('\n').pop()!).perplexity));
    const ins = spawnSync(process.execPath, [MAIN, 'inspect', out], { encoding: 'utf8' });
    assert.equal(ins.status, 0, ins.stderr);
    assert.match(ins.stdout, /compressed with quant at budget 0\.15/);
    assert.match(ins.stdout, /healed: non-expert tensors \(all\) distilled from .*orig, 16 steps at lr 0\.003/);
    const dense = join(root, 'dense');
    await restore(out, dense);
    const rd = loadModel(dense);
    const dq = rd.weights.get('layers.0.attn.q.weight').data;
    const hq = b.weights.get('layers.0.attn.q.weight').data;
    assert.ok(dq.every((x, i) => x === hq[i]), 'restore keeps the healed attention');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('heal: --train norms+router changes only norms and routers; an interrupted run resumes to the same bytes', { skip: skipCorpus }, async () => {
  const { root, dir, text, comp } = await setup();
  try {
    const opts = { ...FAST, steps: 8, teacher: dir, text, train: 'norms+router' as const, checkpointEvery: 3 };
    const a = join(root, 'a');
    const full = await heal(comp, { ...opts, out: a });
    const [src, got] = [loadModel(comp), loadModel(a)];
    for (const n of src.weights.names()) {
      const same = src.weights.get(n).data.every((x, i) => x === got.weights.get(n).data[i]);
      assert.equal(same, !healTrains('norms+router', n), `${n} ${same ? 'unchanged' : 'changed'}`);
    }
    const b = join(root, 'b');
    await assert.rejects(heal(comp, { ...opts, out: b, onProgress: (e) => { if (e.task === 'train' && e.done === 7) throw new Error('killed'); } }), /killed/);
    await assert.rejects(heal(comp, { ...opts, out: b }), /--resume/);
    await assert.rejects(heal(comp, { ...opts, lr: 1e-2, out: b, resume: true }), /different options/);
    const r = await heal(comp, { ...opts, out: b, resume: true });
    assert.equal(r.resumedFrom, 6);
    assert.deepEqual([r.initialLoss, r.finalLoss], [full.initialLoss, full.finalLoss]);
    assert.deepEqual(readdirSync(b).sort(), readdirSync(a).sort());
    for (const f of readdirSync(a)) assert.ok(readFileSync(join(b, f)).equals(readFileSync(join(a, f))), `${f}: resumed bytes equal the uninterrupted run's`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('heal: refuses a directory that is not compressed, a teacher that does not match, and bad options', { skip: skipCorpus }, async () => {
  const { root, dir, text, comp } = await setup();
  try {
    const out = join(root, 'o');
    const base = { ...FAST, out, teacher: dir, text };
    await assert.rejects(heal(dir, base), /orig: not a moepress compressed directory/);
    await assert.rejects(heal(comp, { ...base, teacher: comp }), /the teacher must be the original model/);
    await assert.rejects(heal(comp, { ...base, teacher: join(root, 'none') }), /none: teacher model not found/);
    const wide = writeTinyModel({ ...OLMOE, hidden_size: 48 }, { dir: join(root, 'wide') }).dir;
    copyFileSync(TOKENIZER, join(wide, 'tokenizer.json'));
    await assert.rejects(heal(comp, { ...base, teacher: wide }), /wide\/config\.json: the teacher's config\.json does not match the compressed model's \(hidden: compressed 32, teacher 48\)/);
    const other = join(root, 'other-tok');
    cpSync(dir, other, { recursive: true });
    writeFileSync(join(other, 'tokenizer.json'), readFileSync(TOKENIZER, 'utf8').replace('"vocab"', '"vocab" ').concat(' '));
    await assert.rejects(heal(comp, { ...base, teacher: other }), /different tokenizer\.json/);
    await assert.rejects(heal(comp, { ...base, train: 'ce' as never }), /--train must be one of all, no-embed, norms\+router when healing/);
    await assert.rejects(heal(comp, { ...base, steps: 0 }), /--steps must be an integer >= 1/);
    await assert.rejects(heal(comp, { ...base, lr: 0 }), /--lr must be a positive number/);
    await assert.rejects(heal(comp, { ...base, out: comp }), /--out must differ/);
    // the CLI routes --teacher to healing and refuses finetune-only options there
    const cli = spawnSync(process.execPath, [MAIN, 'finetune', comp, '--out', out, '--teacher', dir, '--text', text, '--steps', '2', '--compressed-experts', '1'], { encoding: 'utf8' });
    assert.notEqual(cli.status, 0);
    assert.match(cli.stderr, /--compressed-experts does not apply to healing/);
    assert.ok(!existsSync(out) && !existsSync(`${out}.partial`));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('compressAndHeal (compress --heal): the compressed experts of the same compress, healed against the original, nothing left beside out', { skip: skipCorpus }, async () => {
  const { root, dir, text } = await setup();
  try {
    const req = { model: dir, out: join(root, 'ch'), method: 'quant', budget: 0.15, calib: { file: text, windows: 2 } };
    await assert.rejects(compressAndHeal({ ...req, calib: undefined }, { steps: 2 }), /give --calib TEXT/);
    const r = await compressAndHeal(req, { steps: 3, lr: FAST.lr });
    assert.equal(r.heal.steps, 3);
    assert.equal(r.manifest.heal?.steps, 3);
    assert.ok(!existsSync(`${req.out}.unhealed`) && !existsSync(`${req.out}.partial`));
    const plain = await compress({ ...req, out: join(root, 'plain') });
    assert.deepEqual(r.manifest.layers, plain.layers);
    for (const l of plain.layers) assert.ok(readFileSync(join(req.out, expertsFile(l.layer))).equals(readFileSync(join(root, 'plain', expertsFile(l.layer)))), `layer ${l.layer}: experts file`);
    await assert.rejects(compressAndHeal(req, { steps: 3 }), /already exists/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

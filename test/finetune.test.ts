/**
 * Compressed experts (METHODS.md Family 3): the inference path against its float64 twin and a
 * hand-computed reference, dense vs compressed banks, the training graph against the inference
 * engine, float64 gradient checks, and `finetune` end to end (training, output directory, inspect,
 * resume, errors).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { compress } from '../src/compress/compress.js';
import { restore } from '../src/compress/restore.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { MoepressError } from '../src/io/errors.js';
import { activeExpertParams } from '../src/models/summary.js';
import {
  CE_META_FILE, CE_TENSORS_FILE, compressedMoeNaive, readCompressedExperts, withCompressedExperts, writeCompressedExperts, type CompressedExpertsLayer,
} from '../src/runtime/compressed-experts.js';
import { expertActivation } from '../src/runtime/experts.js';
import { loadModel, type LoadedModel } from '../src/runtime/load-model.js';
import { moeBlock } from '../src/runtime/moe-block.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { denseBanks, Transformer } from '../src/runtime/transformer.js';
import { swigluFfnNaive } from '../src/tensor/ffn-ort.js';
import { linear as linearF32 } from '../src/tensor/gemm.js';
import { Rng } from '../src/tensor/random.js';
import { route } from '../src/tensor/router.js';
import { constant, mul, param, sum, Tape, type Var } from '../src/train/autodiff.js';
import { DEFAULT_LOSS, DEFAULT_TRAIN, finetune } from '../src/train/finetune.js';
import { compressedExpertsModel, vectorsToLayers } from '../src/train/finetune-model.js';
import { gradCheck } from '../src/train/gradcheck.js';
import { compressedMoeLayer } from '../src/train/ops/compressed-experts.js';
import { distillKL } from '../src/train/ops/distill.js';
import { AdamW, Trainer } from '../src/train/optim.js';
import { assertClose } from './helpers/assert-close.js';
import { SHARED, TEST_TEXT } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');
const skipCorpus = existsSync(TOKENIZER) && existsSync(TEST_TEXT) ? false : 'needs ../shared/corpus';
const MAIN = resolve(process.cwd(), 'dist/src/cli/main.js');

/** top-3 of 6 experts, so m = 1 and m = 2 both leave full experts. */
const OLMOE3 = { ...TINY_CONFIGS.olmoe, num_experts: 6, num_experts_per_tok: 3 };
const MIXTRAL3 = { ...TINY_CONFIGS.mixtral, num_local_experts: 6, num_experts_per_tok: 3 };

function tmp(): string {
  return mkdtempSync(join(os.tmpdir(), 'moepress-ft-'));
}

function tokens(n: number, V: number, seed: number): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(V));
}

/** Vectors around 1 (never all ones, never zero), per MoE layer. */
function randomVectors(m: LoadedModel, count: number, seed: number, spread = 0.4): (CompressedExpertsLayer | null)[] {
  const r = new Rng(seed);
  const cfg = m.config;
  const { experts: E, intermediate: I } = cfg.moe!;
  const around1 = (n: number) => Float32Array.from({ length: n }, () => 1 + spread * r.normal());
  return cfg.layers.map((s) => (s.ffn === 'moe' ? { m: count, c0: around1(E * cfg.hidden), c1: around1(E * I), c2: around1(E * cfg.hidden) } : null));
}

function onesVectors(m: LoadedModel, count: number): (CompressedExpertsLayer | null)[] {
  return randomVectors(m, count, 0, 0);
}

/** The model's banks with compressed experts attached (what loadModel does for a CE directory). */
function ceBanks(m: LoadedModel, vectors: (CompressedExpertsLayer | null)[]) {
  return m.banks.map((b, l) => (b && vectors[l] ? withCompressedExperts(b, vectors[l]!) : b));
}

const models = new Map<string, LoadedModel>();
function tiny(name: string, json: Record<string, unknown>, dtype: 'F32' | 'BF16' = 'F32'): LoadedModel {
  if (!models.has(name)) models.set(name, loadModel(writeTinyModel(json, { seed: 5, dtype }).dir));
  return models.get(name)!;
}

// ---------------------------------------------------------------------------------------------
// Inference

for (const [family, json] of [['olmoe', OLMOE3], ['mixtral', MIXTRAL3]] as const) {
  for (const T of [13, 200]) {
    test(`${family}: moe block with compressed experts equals its float64 twin (m = 1, 2; ${T} tokens)`, async () => {
      const m = tiny(`${family}3`, json);
      const cfg = m.config;
      const { experts: E, intermediate: I } = cfg.moe!;
      const H = cfg.hidden;
      const h = new Rng(T).normals(T * H, 1);
      const logits = await linearF32(h, m.weights.get('layers.1.moe.router.weight').data, T, E, H);
      const routes = route(logits, T, E, cfg.moe!.routing);
      const stacked = { gate: m.weights.get('layers.1.moe.experts.gate').data, up: m.weights.get('layers.1.moe.experts.up').data, down: m.weights.get('layers.1.moe.experts.down').data };
      for (const count of [1, 2]) {
        const ce = randomVectors(m, count, 10 + count)[1]!;
        const bank = withCompressedExperts(denseBanks(cfg, m.weights)[1]!, ce);
        const fast = await moeBlock(cfg, m.weights, 1, h, T, bank, undefined);
        const ref = compressedMoeNaive(h, T, H, I, routes, stacked, ce, expertActivation(cfg.moe!));
        assertClose(fast, ref, 1e-5, `${family} m=${count} T=${T}`);
      }
    });
  }
}

test('with vectors at 1, the block is the K − m best experts weighted by their router weights (hand-computed)', async () => {
  for (const [family, json] of [['olmoe', OLMOE3], ['mixtral', MIXTRAL3]] as const) {
    const m = tiny(`${family}3`, json);
    const cfg = m.config;
    const { experts: E, intermediate: I } = cfg.moe!;
    const H = cfg.hidden;
    const T = 9;
    const h = new Rng(4).normals(T * H, 1);
    const router = m.weights.get('layers.0.moe.router.weight').data;
    const w = (n: string) => m.weights.get(`layers.0.moe.experts.${n}`).data;
    for (const count of [1, 2]) {
      const bank = withCompressedExperts(denseBanks(cfg, m.weights)[0]!, onesVectors(m, count)[0]!);
      const got = await moeBlock(cfg, m.weights, 0, h, T, bank, undefined);
      // by hand: softmax over E, top-3 by probability, (renormalised over the 3 for Mixtral), keep the best 3 − m
      const want = new Float64Array(T * H);
      for (let t = 0; t < T; t++) {
        const x = h.subarray(t * H, (t + 1) * H);
        const z = Array.from({ length: E }, (_, e) => x.reduce((s, v, i) => s + v * router[e * H + i], 0));
        const mx = Math.max(...z);
        const p = z.map((v) => Math.exp(v - mx));
        const ps = p.reduce((a, b) => a + b, 0);
        const order = p.map((v, e) => ({ e, w: v / ps })).sort((a, b) => b.w - a.w).slice(0, 3);
        const norm = cfg.moe!.routing.normTopK ? order.reduce((s, o) => s + o.w, 0) : 1;
        for (const { e, w: we } of order.slice(0, 3 - count)) {
          const y = swigluFfnNaive(x, w('gate').subarray(e * I * H, (e + 1) * I * H), w('up').subarray(e * I * H, (e + 1) * I * H), w('down').subarray(e * H * I, (e + 1) * H * I), 1, H, I);
          for (let i = 0; i < H; i++) want[t * H + i] += (we / norm) * y[i];
        }
      }
      assertClose(got, want, 1e-5, `${family} m=${count}`);
    }
  }
});

test('olmoe (unnormalised router): vectors at 1 give exactly the --top-k K − m model', async () => {
  const m = tiny('olmoe3', OLMOE3);
  const ids = tokens(2 * 10, m.config.vocabSize, 3);
  const ce = new Transformer(m.config, m.weights, ceBanks(m, onesVectors(m, 2)));
  const top1 = new Transformer(m.config, m.weights);
  assertClose(await ce.logits(ids, 2, 10), await top1.logits(ids, 2, 10, null, { topK: 1 }), 1e-5, 'logits');
  await assert.rejects(ce.logits(ids, 2, 10, null, { topK: 2 }), (e: unknown) => e instanceof MoepressError && /2 compressed experts per token, which needs a top-k above 2; got top-2/.test(e.message));
});

test('compressed banks run compressed experts like the dense model they restore to', async () => {
  const { dir } = writeTinyModel(OLMOE3, { seed: 8 });
  const q = join(tmp(), 'q');
  const dense = join(tmp(), 'dense');
  try {
    await compress({ model: dir, out: q, method: 'quant', budget: 0.6 });
    await restore(q, dense, { dtype: 'F32' });
    const base = loadModel(dense);
    const vectors = randomVectors(base, 2, 21);
    for (const d of [q, dense]) writeCompressedExperts(d, base.config, vectors, { m: 2, K: 3 });
    const ids = tokens(2 * 12, base.config.vocabSize, 9);
    const a = loadModel(q);
    const b = loadModel(dense);
    assert.ok(a.manifest && a.compressedExperts?.m === 2 && b.compressedExperts?.m === 2);
    const la = await new Transformer(a.config, a.weights, a.banks).logits(ids, 2, 12);
    const lb = await new Transformer(b.config, b.weights, b.banks).logits(ids, 2, 12);
    assertClose(la, lb, 1e-5, 'compressed vs restored');
    const plain = await new Transformer(base.config, base.weights).logits(ids, 2, 12);
    assert.ok(Math.abs(plain[0] - lb[0]) > 1e-6, 'the vectors change the model');
  } finally {
    for (const d of [dir, q, dense]) rmSync(d, { recursive: true, force: true });
  }
});

test('the vectors file is validated: names the file and tensor, refuses m >= K', () => {
  const m = tiny('olmoe3', OLMOE3);
  const dir = tmp();
  try {
    const vectors = onesVectors(m, 1);
    writeCompressedExperts(dir, m.config, vectors, { m: 1, K: 3 });
    assert.equal(readCompressedExperts(dir, m.config).layers.filter(Boolean).length, 2);
    // a model with another intermediate size does not match these vectors
    const wider = { ...m.config, moe: { ...m.config.moe!, intermediate: 17 } };
    assert.throws(() => readCompressedExperts(dir, wider), (e: unknown) => e instanceof MoepressError && e.message.includes(CE_TENSORS_FILE) && /layers\.0\.ce\.c1/.test(e.message) && /\[6, 17\]/.test(e.message));
    writeCompressedExperts(dir, m.config, vectors, { m: 3, K: 3 });
    assert.throws(() => readCompressedExperts(dir, m.config), (e: unknown) => e instanceof MoepressError && e.message.includes(CE_META_FILE) && /1 <= m < K/.test(e.message));
    writeCompressedExperts(dir, m.config, [vectors[0], null], { m: 1, K: 3 });
    assert.throws(() => readCompressedExperts(dir, m.config), /layers\.1\.ce\.c0.*missing/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Training graph

for (const [family, json] of [['olmoe', OLMOE3], ['mixtral', MIXTRAL3]] as const) {
  test(`${family}: the training graph's logits equal the inference engine's with compressed experts (m = 1, 2)`, async () => {
    const m = tiny(`${family}3`, json);
    const B = 2, S = 9;
    const ids = tokens(B * S, m.config.vocabSize, 1);
    for (const count of [1, 2]) {
      const vectors = randomVectors(m, count, 30 + count);
      const ref = await new Transformer(m.config, m.weights, ceBanks(m, vectors)).logits(ids, B, S);
      const { model } = compressedExpertsModel(m.config, m.weights, { m: count, train: 'ce', init: vectors });
      const { logits } = await model.forward(new Tape({ grad: false }), ids, B, S);
      assertClose(logits.data, ref, 1e-5, `${family} m=${count}`);
    }
  });
}

function p64(shape: number[], seed: number, s = 1, name = 'p', around = 0): Var {
  const r = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return param(Float64Array.from({ length: n }, () => around + r.normal() * s), shape, name);
}

function project(tape: Tape, y: Var, seed = 99): Var {
  const r = new Rng(seed);
  return sum(tape, mul(tape, y, constant(Float64Array.from({ length: y.size }, () => r.normal()), y.shape)));
}

test('compressedMoeLayer: float64 gradients of input, router, experts and vectors match finite differences', async () => {
  const T = 7, H = 4, E = 5, I = 3, K = 3;
  const h = p64([T, H], 1, 1, 'h');
  const router = p64([E, H], 2, 1.5, 'router');
  const gate = p64([E, I, H], 3, 0.7, 'gate');
  const up = p64([E, I, H], 4, 0.7, 'up');
  const down = p64([E, H, I], 5, 0.7, 'down');
  const ce = { c0: p64([E * H], 6, 0.3, 'c0', 1), c1: p64([E * I], 7, 0.3, 'c1', 1), c2: p64([E * H], 8, 0.3, 'c2', 1) };
  for (const m of [1, 2]) {
    for (const normTopK of [false, true]) {
      const f = async (t: Tape) => project(t, (await compressedMoeLayer(t, h, { weight: router }, { gate, up, down }, ce, m, { topK: K, normTopK })).out);
      const r = await gradCheck(f, [h, router, gate, up, down, ce.c0, ce.c1, ce.c2]);
      for (const e of r.errors) assert.ok(e.relErr < 1e-6, `m=${m} norm=${normTopK} d/d${e.name}: relative error ${e.relErr.toExponential(2)}`);
    }
  }
});

test('distillKL: equals the KL divergence computed by hand, zero at the teacher, gradient matches finite differences', async () => {
  const T = 5, V = 7;
  const x = p64([T, V], 11, 2, 'logits');
  const teacher = Float64Array.from(new Rng(12).normals(T * V, 2));
  const lsm = (z: ArrayLike<number>, o: number) => {
    const row = Array.from({ length: V }, (_, i) => z[o + i]);
    const m = Math.max(...row);
    const lz = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    return row.map((v) => v - lz);
  };
  let want = 0;
  for (let t = 0; t < T; t++) {
    const lq = lsm(teacher, t * V);
    const lp = lsm(x.data, t * V);
    for (let i = 0; i < V; i++) want += Math.exp(lq[i]) * (lq[i] - lp[i]);
  }
  const got = (await distillKL(new Tape({ dtype: 'f64', grad: false }), x, teacher)).item();
  assert.ok(Math.abs(got - want / T) < 1e-12 * Math.abs(want), `${got} vs ${want / T}`);
  assert.ok(Math.abs((await distillKL(new Tape({ dtype: 'f64', grad: false }), x, x.data)).item()) < 1e-12, 'KL(p, p) = 0');
  const r = await gradCheck((t) => distillKL(t, x, teacher), [x]);
  assert.ok(r.maxRelErr < 1e-6, `relative error ${r.maxRelErr.toExponential(2)}`);
});

test('olmoe: float64 gradients through the whole model with compressed experts (train all) match finite differences', async () => {
  const m = tiny('olmoe3', OLMOE3);
  const { model, vectors } = compressedExpertsModel(m.config, m.weights, { m: 2, train: 'all', dtype: 'f64', init: randomVectors(m, 2, 40, 0.3), vectorScale: 3 });
  const B = 2, S = 4;
  const batch = { inputs: tokens(B * S, m.config.vocabSize, 2), targets: tokens(B * S, m.config.vocabSize, 3), B, S };
  const inputs = [vectors[0]!.c0, vectors[0]!.c1, vectors[1]!.c2, model.p('layers.0.moe.router.weight'), model.p('layers.1.moe.experts.up'), model.p('layers.0.attn.q.weight')];
  const r = await gradCheck(async (t) => (await model.loss(t, batch)).loss, inputs, { maxPerInput: 12 });
  for (const e of r.errors) assert.ok(e.relErr < 1e-6, `d/d${e.name}: relative error ${e.relErr.toExponential(2)}`);
});

test('train modes: ce trains only the vectors, ce+router adds the routers, all adds everything; steps lower the loss', async () => {
  const m = tiny('mixtral3', MIXTRAL3);
  const B = 2, S = 8;
  const batch = { inputs: tokens(B * S, m.config.vocabSize, 4), targets: tokens(B * S, m.config.vocabSize, 5), B, S };
  for (const [train, lr] of [['ce', 0.05], ['ce+router', 0.02], ['all', 3e-3]] as const) {
    const { model, params } = compressedExpertsModel(m.config, m.weights, { m: 1, train });
    const names = params.map((p) => p.name);
    assert.equal(names.filter((n) => /\.ce\.c[012]$/.test(n)).length, 6, 'three vectors per MoE layer');
    assert.equal(names.some((n) => /router/.test(n)), train !== 'ce', `${train}: routers`);
    assert.equal(names.some((n) => /experts\.gate/.test(n)), train === 'all', `${train}: experts`);
    const tr = new Trainer(new AdamW(params, { lr }), { clip: 1 });
    const losses: number[] = [];
    for (let s = 0; s < 5; s++) losses.push((await tr.microStep(async (t) => (await model.loss(t, batch)).loss)).loss);
    assert.ok(losses[4] < losses[0], `${train}: loss ${losses.map((x) => x.toFixed(4)).join(' ')}`);
  }
});

// ---------------------------------------------------------------------------------------------
// finetune end to end

/** A tiny model with the shared 4096-token tokenizer and a short training text. */
function tinyWithText(json: Record<string, unknown>) {
  const { dir } = writeTinyModel({ ...json, vocab_size: 4096, max_position_embeddings: 256 }, { dtype: 'BF16', seed: 2 });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const text = join(dir, 'train.txt');
  writeFileSync(text, readFileSync(TEST_TEXT, 'utf8').slice(0, 20000));
  return { dir, text };
}

const FAST = { steps: 6, batch: 2, seqLen: 32, checkpointEvery: 0 };

test('finetune: writes a directory that loads, evaluates, keeps or rewrites the model files by mode', { skip: skipCorpus }, async () => {
  const { dir, text } = tinyWithText(OLMOE3);
  const root = tmp();
  try {
    const src = loadModel(dir);
    const ids = tokens(2 * 300, 4096, 7);
    for (const train of ['ce', 'ce+router', 'all'] as const) {
      const out = join(root, train);
      const r = await finetune(dir, { ...FAST, out, compressedExperts: 2, text, train, lr: 0.05, modelLr: 3e-3 });
      assert.equal(r.modelLr, train === 'ce' ? null : 3e-3);
      assert.equal(r.m, 2);
      assert.equal(r.K, 3);
      assert.ok(Number.isFinite(r.finalLoss) && r.seconds > 0 && r.tokensPerSecond > 0);
      assert.deepEqual(r.activeExpertParams, activeExpertParams(src.config, 3, 2));
      assert.ok(!existsSync(`${out}.partial`), 'the staging directory was renamed');
      const got = loadModel(out);
      assert.equal(got.compressedExperts?.m, 2);
      assert.equal(got.compressedExperts?.train, train);
      const vec = readCompressedExperts(out, got.config).layers[0]!;
      assert.ok(vec.c0.some((x) => Math.abs(x - 1) > 1e-4), `${train}: the vectors trained`);
      const ppl = await perplexity(new Transformer(got.config, got.weights, got.banks), ids, { windowSize: 256 });
      assert.ok(ppl.perplexity > 1 && Number.isFinite(ppl.perplexity));
      const ck = Checkpoint.open(out);
      assert.ok(ck.names().every((n) => ck.info(n).dtype === 'BF16'), `${train}: written in the source dtype`);
      ck.close();
      const router = (x: LoadedModel) => x.weights.get('layers.0.moe.router.weight').data;
      const gate = (x: LoadedModel) => x.weights.get('layers.1.moe.experts.gate').data;
      const same = (a: Float32Array, b: Float32Array) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
      assert.equal(same(router(got), router(src)), train === 'ce', `${train}: router unchanged`);
      assert.equal(same(gate(got), gate(src)), train !== 'all', `${train}: experts unchanged`);
      if (train === 'ce') assert.deepEqual(readFileSync(join(out, 'model.safetensors.index.json')), readFileSync(join(dir, 'model.safetensors.index.json')), 'files copied');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
});

test('finetune: more steps on a small text lower the training loss (next-token and distillation)', { skip: skipCorpus }, async () => {
  const { dir, text } = tinyWithText(MIXTRAL3);
  const out = join(tmp(), 'ce');
  try {
    for (const loss of ['next-token', 'distill'] as const) {
      const r = await finetune(dir, { out, overwrite: true, compressedExperts: 1, text, train: 'ce', loss, lr: 0.05, steps: 30, batch: 4, seqLen: 32, checkpointEvery: 0 });
      assert.equal(r.loss, loss);
      assert.ok(r.finalLoss < r.initialLoss, `${loss}: loss ${r.initialLoss} -> ${r.finalLoss}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('finetune: an interrupted run resumes to the same vectors as an uninterrupted one', { skip: skipCorpus }, async () => {
  const { dir, text } = tinyWithText(OLMOE3);
  const root = tmp();
  try {
    const opts = { compressedExperts: 1, text, train: 'ce+router' as const, lr: 0.05, steps: 6, batch: 2, seqLen: 32, checkpointEvery: 2 };
    await finetune(dir, { ...opts, out: join(root, 'a') });
    const out = join(root, 'b');
    await assert.rejects(finetune(dir, { ...opts, out, onProgress: (e) => { if (e.task === 'train' && e.done === 5) throw new Error('killed'); } }), /killed/);
    await assert.rejects(finetune(dir, { ...opts, out }), /--resume/);
    await assert.rejects(finetune(dir, { ...opts, lr: 0.01, out, resume: true }), /different options/);
    const r = await finetune(dir, { ...opts, out, resume: true });
    assert.equal(r.resumedFrom, 4);
    const a = readCompressedExperts(join(root, 'a'), loadModel(dir).config).layers[1]!;
    const b = readCompressedExperts(out, loadModel(dir).config).layers[1]!;
    assertClose(b.c1, a.c1, 1e-6, 'resumed vectors');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
});

test('finetune defaults (distill, train all): the loss falls, the output evaluates, an interrupted run resumes bit-identically', { skip: skipCorpus }, async () => {
  const { dir, text } = tinyWithText(OLMOE3);
  const root = tmp();
  try {
    const opts = { compressedExperts: 2, text, lr: 0.05, modelLr: 3e-3, steps: 12, batch: 2, seqLen: 32, checkpointEvery: 4 };
    const a = join(root, 'a');
    const full = await finetune(dir, { ...opts, out: a });
    assert.deepEqual([full.loss, full.train], [DEFAULT_LOSS, DEFAULT_TRAIN]);
    assert.deepEqual([full.loss, full.train], ['distill', 'all']);
    assert.ok(full.finalLoss < full.initialLoss, `distill: loss ${full.initialLoss} -> ${full.finalLoss}`);
    const got = loadModel(a);
    assert.equal(got.compressedExperts?.loss, 'distill');
    const ppl = await perplexity(new Transformer(got.config, got.weights, got.banks), tokens(300, 4096, 9), { windowSize: 256 });
    assert.ok(ppl.perplexity > 1 && Number.isFinite(ppl.perplexity));
    const b = join(root, 'b');
    await assert.rejects(finetune(dir, { ...opts, out: b, onProgress: (e) => { if (e.task === 'train' && e.done === 10) throw new Error('killed'); } }), /killed/);
    await assert.rejects(finetune(dir, { ...opts, loss: 'next-token', out: b, resume: true }), /different options/);
    const r = await finetune(dir, { ...opts, out: b, resume: true });
    assert.equal(r.resumedFrom, 8);
    assert.deepEqual([r.initialLoss, r.finalLoss], [full.initialLoss, full.finalLoss]);
    for (const f of full.files) assert.ok(readFileSync(join(b, f)).equals(readFileSync(join(a, f))), `${f}: resumed bytes equal the uninterrupted run's`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
});

test('finetune: bad inputs give clear errors', { skip: skipCorpus }, async () => {
  const { dir, text } = tinyWithText(OLMOE3);
  const root = tmp();
  const out = join(root, 'o');
  try {
    const base = { ...FAST, out, text };
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 3 }), /--compressed-experts 3 leaves no full expert.*K = 3/);
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 0 }), /--compressed-experts must be an integer >= 1, got 0/);
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 1.5 }), /--compressed-experts must be an integer/);
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 1, train: 'lora' as never }), /--train must be one of ce, ce\+router, all/);
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 1, loss: 'mse' as never }), /--loss must be one of next-token, distill/);
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 1, lr: -1 }), /--lr must be a positive number/);
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 1, text: join(root, 'none.txt') }), /none\.txt: text file not found/);
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 1, out: dir }), /--out must differ/);
    const phi = writeTinyModel(TINY_CONFIGS.phimoe).dir;
    const mistral = writeTinyModel(TINY_CONFIGS.mistral).dir;
    try {
      await assert.rejects(finetune(phi, { ...base, compressedExperts: 1 }), (e: unknown) => e instanceof MoepressError && /cannot fine-tune phimoe: LayerNorm/.test(e.message) && /config\.json/.test(e.message));
      await assert.rejects(finetune(mistral, { ...base, compressedExperts: 1 }), /has no routed experts/);
    } finally {
      rmSync(phi, { recursive: true, force: true });
      rmSync(mistral, { recursive: true, force: true });
    }
    await finetune(dir, { ...base, compressedExperts: 1 });
    await assert.rejects(finetune(dir, { ...base, compressedExperts: 1 }), /already exists.*--overwrite/);
    await assert.rejects(finetune(out, { ...base, out: join(root, 'again'), compressedExperts: 1 }), /already has compressed experts/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
});

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('CLI: finetune --json, then inspect reports fewer active parameters; usage errors', { skip: skipCorpus }, () => {
  const { dir, text } = tinyWithText(OLMOE3);
  const out = join(tmp(), 'ce');
  try {
    const r = cli('finetune', dir, '--out', out, '--compressed-experts', '2', '--text', text, '--steps', '3', '--batch', '2', '--seq', '32', '--json');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '', '--json keeps stderr quiet');
    const j = JSON.parse(r.out);
    for (const k of ['finalLoss', 'seconds', 'tokensPerSecond']) assert.ok(Number.isFinite(j[k]) && j[k] > 0, k);
    assert.ok(j.activeExpertParams.after < j.activeExpertParams.before);
    assert.deepEqual([j.loss, j.train, j.lr, j.modelLr], ['distill', 'all', 1e-2, 3e-4], 'the default recipe');
    const before = JSON.parse(cli('inspect', dir, '--json').out);
    const after = JSON.parse(cli('inspect', out, '--json').out);
    assert.equal(before.compressedExperts, undefined);
    assert.equal(after.compressedExperts.m, 2);
    assert.equal(after.compressedExperts.activePerTokenBefore, before.params.activePerToken);
    // K = 3 full experts of 3·16·32 parameters over 2 layers, vs 1 full expert + 2 experts' vectors (2·32 + 16)
    assert.deepEqual([after.compressedExperts.activeExpertParams.before, after.compressedExperts.activeExpertParams.after], [2 * 3 * 1536, 2 * (1536 + 2 * 80)]);
    assert.equal(before.params.activePerToken - after.params.activePerToken, 2 * (2 * 1536 - 2 * 80));
    assert.match(cli('inspect', out).out, /active expert params.*fewer/);
    const bad = cli('finetune', dir, '--out', join(out, 'x'), '--compressed-experts', '3', '--text', text, '--steps', '1');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /leaves no full expert/);
    const usage = cli('finetune', dir, '--out', join(out, 'x'), '--text', text, '--steps', '1');
    assert.equal(usage.code, 2);
    assert.match(usage.err, /--compressed-experts is required/);
    assert.equal(cli('finetune', dir, '--out', join(out, 'x'), '--compressed-experts', '1', '--text', text, '--steps', '1', '--train', 'x').code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('vectors trained at s times the rate: c = 1 + s·(v − 1) gives the same model and the same vectors back', async () => {
  const m = tiny('olmoe3', OLMOE3);
  const init = randomVectors(m, 1, 50);
  const ids = tokens(18, m.config.vocabSize, 8);
  const one = compressedExpertsModel(m.config, m.weights, { m: 1, train: 'ce', init });
  const ten = compressedExpertsModel(m.config, m.weights, { m: 1, train: 'ce', init, vectorScale: 10 });
  assert.equal(ten.vectorScale, 10);
  const fwd = async (x: typeof one) => (await x.model.forward(new Tape({ grad: false }), ids, 2, 9)).logits.data;
  assertClose(await fwd(ten), await fwd(one), 1e-6, 'logits');
  const layers = ten.layers();
  assertClose(layers[1]!.c2, init[1]!.c2, 1e-6, 'c2');
  assertClose(vectorsToLayers(one.vectors, 1)[0]!.c1, init[0]!.c1, 1e-7, 'c1');
  ten.vectors[1]!.c2.data[0] += 1;
  assert.ok(Math.abs(ten.layers()[1]!.c2[0] - layers[1]!.c2[0] - 10) < 1e-5, 'a copy, not a view; a step of 1 in v is 10 in c');
});

/**
 * DeRS upcycling: the sparse-delta op's gradients (float64 finite differences), the position
 * sampler, the step-0 MoE against the dense model, the written checkpoint against the training
 * graph (runtime == trained TrainableModel, restore == runtime), the added-parameter formula,
 * resume, and every bad-input error. Tiny seeded dense models and a tiny text, a few steps each.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { restore } from '../src/compress/restore.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { loadModel } from '../src/runtime/load-model.js';
import type { TextTokenizer } from '../src/runtime/tokenizer.js';
import { Transformer } from '../src/runtime/transformer.js';
import { Rng } from '../src/tensor/random.js';
import { constant, mul, param, sum, Tape, type Var } from '../src/train/autodiff.js';
import { gradCheck } from '../src/train/gradcheck.js';
import { TrainableModel } from '../src/train/model.js';
import { addAtPositions, gatherAtPositions } from '../src/train/ops/sparse.js';
import { upcycle, type UpcycleOptions } from '../src/train/upcycle.js';
import { mixtralConfigFor } from '../src/train/upcycle-config.js';
import { trainDenseControl } from '../src/train/upcycle-control.js';
import { samplePositions, UpcycledModel, type DeltaForm } from '../src/train/upcycle-model.js';
import { assertClose, relErr } from './helpers/assert-close.js';
import { SHARED } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';
import { p64, project } from './helpers/grad.js';

test('addAtPositions / gatherAtPositions: values, and float64 gradients against finite differences', async () => {
  const base = p64([4, 5], 1, 1, 'base');
  const values = p64([6], 2, 1, 'values');
  const pos = Int32Array.from([0, 3, 7, 7, 12, 19]); // 7 twice: repeated positions add up
  const y = addAtPositions(new Tape({ dtype: 'f64', grad: false }), base, values, pos);
  const want = Float64Array.from(base.data);
  pos.forEach((p, k) => (want[p] += values.data[k]));
  assert.deepEqual(Array.from(y.data), Array.from(want));
  for (const [what, f] of [
    ['addAtPositions', (t: Tape) => project(t, addAtPositions(t, base, values, pos))],
    ['gatherAtPositions', (t: Tape) => project(t, gatherAtPositions(t, base, pos))],
  ] as const) {
    const r = await gradCheck(f, what === 'addAtPositions' ? [base, values] : [base]);
    for (const e of r.errors) assert.ok(e.relErr < 1e-6, `${what}: d/d${e.name} relative error ${e.relErr.toExponential(2)}`);
  }
  assert.throws(() => addAtPositions(new Tape({ dtype: 'f64' }), base, values, Int32Array.from([0, 1, 2, 3, 4, 20])), /position 20 outside/);
  assert.throws(() => addAtPositions(new Tape({ dtype: 'f64' }), base, values, Int32Array.from([0, 1])), /6 values for 2 positions/);
});

test('samplePositions: exactly count distinct ascending positions, seeded, uniform', () => {
  const a = samplePositions(new Rng(5), 1000, 137);
  assert.equal(a.length, 137);
  for (let i = 1; i < a.length; i++) assert.ok(a[i] > a[i - 1], 'ascending and distinct');
  assert.ok(a[0] >= 0 && a[a.length - 1] < 1000);
  assert.deepEqual(a, samplePositions(new Rng(5), 1000, 137), 'same seed, same positions');
  assert.notDeepEqual(a, samplePositions(new Rng(6), 1000, 137));
  assert.equal(samplePositions(new Rng(1), 50, 50).length, 50);
  // each position is kept with probability count/n: the count in the first half is about half
  const hits = new Float64Array(2);
  for (let s = 0; s < 200; s++) for (const p of samplePositions(new Rng(s), 100, 20)) hits[p < 50 ? 0 : 1]++;
  assert.ok(Math.abs(hits[0] - hits[1]) < 0.1 * (hits[0] + hits[1]), `halves ${hits[0]} vs ${hits[1]}`);
});

/** Characters as token ids (the tiny models' vocabulary is 64). */
const charTokenizer: TextTokenizer = {
  encode: (t) => Array.from(t, (c) => c.charCodeAt(0) % 64),
  decode: (ids) => String.fromCharCode(...ids),
};

const work = mkdtempSync(join(os.tmpdir(), 'moepress-upcycle-'));
const textFile = join(work, 'train.txt');
writeFileSync(textFile, Array.from({ length: 40 }, (_, i) => `line ${i}: the quick brown fox jumps over the lazy dog ${i * 7 % 13}\n`).join(''));
const dense = writeTinyModel(TINY_CONFIGS.mistral, { seed: 7 }); // F32, so stored == trained exactly
const denseModel = loadModel(dense.dir);
const FORMS: [string, DeltaForm][] = [['lowrank', { kind: 'lowrank', rank: 3 }], ['sparse', { kind: 'sparse', density: 0.3 }]];

function ids(n: number, seed: number): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(64));
}

let outCount = 0;
function opts(form: DeltaForm, extra: Partial<UpcycleOptions> = {}): UpcycleOptions {
  return {
    out: join(work, `out-${outCount++}`), experts: 4, topK: 2, delta: form.kind,
    ...(form.kind === 'lowrank' ? { rank: form.rank } : { density: form.density }),
    text: textFile, tokenizer: charTokenizer, steps: 4, lr: 3e-3, batch: 2, seqLen: 8, checkpointEvery: 0, ...extra,
  };
}

test('the Mixtral config carries the dense fields over, stating the dense default RoPE theta', () => {
  const { rope_theta: _, ...noTheta } = TINY_CONFIGS.llama;
  const m = writeTinyModel(noTheta, { seed: 1 });
  const d = loadModel(m.dir);
  const { json, config } = mixtralConfigFor(d.rawConfig, d.config, { experts: 8, topK: 2, auxCoef: 0.02 }, m.dir);
  assert.equal(json.rope_theta, 10000, 'Mixtral would default to 1e6');
  assert.equal(json.sliding_window, null);
  assert.equal(json.router_aux_loss_coef, 0.02);
  assert.deepEqual(config.rope, d.config.rope);
  assert.deepEqual(config.attention, d.config.attention);
  assert.equal(config.moe!.experts, 8);
  assert.equal(config.moe!.intermediate, 40);
  assert.deepEqual(config.layers, d.config.layers.map((l) => ({ ...l, ffn: 'moe' })));
});

for (const [name, form] of FORMS) {
  test(`${name}: the step-0 MoE computes the dense model's logits (relative error < 1e-6)`, async () => {
    const { config } = mixtralConfigFor(denseModel.rawConfig, denseModel.config, { experts: 4, topK: 2, auxCoef: 0.01 }, dense.dir);
    const u = new UpcycledModel(denseModel.config, config, denseModel.weights, { experts: 4, topK: 2, delta: form, seed: 3 });
    const B = 2, S = 9; // S beyond the sliding window of 6
    const x = ids(B * S, 1);
    const ref = await new TrainableModel(denseModel.config, denseModel.weights).forward(new Tape({ grad: false }), x, B, S);
    const got = await u.model.forward(new Tape({ grad: false }), x, B, S);
    assertClose(got.logits.data, ref.logits.data, 1e-6, `${name} step 0`);
    // the experts really are routed: the router is random, not zero, and picks differ per token
    const chosen = new Set(got.routings[0].experts);
    assert.ok(chosen.size > 2, `tokens go to ${chosen.size} experts`);
  });

  test(`${name}: after training, the written checkpoint runs as the trained graph; restore gives the same Mixtral`, async () => {
    const r = await upcycle(dense.dir, opts(form));
    assert.ok(r.step0RelError < 1e-5);
    assert.equal(r.losses.length, 4);
    assert.ok(r.losses.every(Number.isFinite));
    const cfg = JSON.parse(readFileSync(join(r.out, 'config.json'), 'utf8'));
    assert.equal(cfg.model_type, 'mixtral');
    assert.equal(cfg.num_local_experts, 4);
    assert.equal(cfg.num_experts_per_tok, 2);
    assert.equal(cfg.intermediate_size, 40);
    assert.equal(cfg.sliding_window, 6);
    assert.equal(cfg.head_dim, 8);
    assert.ok(!existsSync(`${r.out}.partial`) && !existsSync(join(r.out, 'train-state')));

    // runtime (compressed banks over the stored parts) == the trained TrainableModel
    const m = loadModel(r.out);
    assert.equal(m.manifest?.method, 'ders-upcycle');
    const B = 2, S = 9;
    const x = ids(B * S, 2);
    const runtime = await new Transformer(m.config, m.weights, m.banks).logits(x, B, S);
    const trained = await r.model.model.forward(new Tape({ grad: false }), x, B, S);
    assertClose(runtime, trained.logits.data, 1e-5, `${name} runtime vs training graph`);
    // training moved the model away from the dense one (else the comparison proves little)
    const denseLogits = await new Transformer(denseModel.config, denseModel.weights).logits(x, B, S);
    assert.ok(relErr(runtime, denseLogits) > 1e-3, `trained logits differ from the dense model's by only ${relErr(runtime, denseLogits)}`);

    const restored = join(work, `restored-${name}`);
    await restore(r.out, restored);
    const rm = loadModel(restored);
    assert.equal(rm.config.modelType, 'mixtral');
    assert.equal(rm.manifest, null);
    assertClose(await new Transformer(rm.config, rm.weights, rm.banks).logits(x, B, S), runtime, 1e-5, `${name} restored vs runtime`);
  });
}

test('lowrank: the manifest shares one stored base per layer; parameters and bytes follow the formulas', async () => {
  const r = await upcycle(dense.dir, opts({ kind: 'lowrank', rank: 3 }));
  const L = 2, E = 4, I = 40, H = 32, rank = 3;
  assert.equal(r.addedParams, L * (3 * E * rank * (I + H) + E * H));
  assert.equal(r.addedParamsFormula, r.addedParams);
  assert.equal(r.fullUpcycleParams, L * (3 * (E - 1) * I * H + E * H));
  for (const rec of r.manifest.layers) {
    assert.equal(rec.method, 'ders-upcycle');
    assert.equal(rec.experts.length, E);
    for (const m of ['gate', 'up', 'down'] as const) {
      for (const e of rec.experts) {
        assert.equal(e[m].length, 2);
        assert.deepEqual(e[m][0], { kind: 'dense', ref: `moepress.layers.${rec.layer}.base.${m}` });
        assert.equal(e[m][1].kind, 'lowrank');
      }
    }
    // F32 (the tiny dense model's dtype): 4 bytes per value; bf16 reference E·3·I·H·2
    assert.equal(rec.storedBytes, 4 * (3 * I * H + E * 3 * rank * (I + H)));
    assert.equal(rec.referenceBytes, E * 3 * I * H * 2);
    assert.ok((rec.choices.relDelta as number) > 0, 'the deltas trained');
  }
  const index = JSON.parse(readFileSync(join(r.out, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(index.weight_map['model.layers.0.block_sparse_moe.gate.weight'], 'rest.safetensors');
  assert.equal(index.weight_map['moepress.layers.1.delta.3.down.left'], 'experts-00001.safetensors');
});

test('sparse: exactly round(d·I·H) I32 indices per matrix, seeded; parameters follow the formula', async () => {
  const d = 0.3;
  const r = await upcycle(dense.dir, opts({ kind: 'sparse', density: d }, { seed: 11 }));
  const L = 2, E = 4, I = 40, H = 32;
  const nnz = Math.round(d * I * H);
  assert.equal(r.addedParams, L * (3 * E * nnz + E * H));
  assert.equal(r.addedParamsFormula, r.addedParams);
  const rec = r.manifest.layers[1];
  assert.equal(rec.choices.entries, nnz);
  assert.equal(typeof rec.choices.positionsSeed, 'number');
  assert.equal(r.manifest.seed, 11);
  const f = SafetensorsFile.open(join(r.out, 'experts-00001.safetensors'));
  const part = rec.experts[2].up[1];
  assert.equal(part.kind, 'sparse');
  if (part.kind !== 'sparse' || part.index.kind !== 'indices') throw new Error('expected an indices index');
  const idx = f.read(part.index.ref);
  assert.equal(idx.dtype, 'I32');
  assert.deepEqual(idx.shape, [nnz]);
  const pos = new Int32Array(idx.data.buffer.slice(idx.data.byteOffset, idx.data.byteOffset + idx.data.byteLength));
  for (let i = 1; i < pos.length; i++) assert.ok(pos[i] > pos[i - 1]);
  assert.deepEqual(pos, r.model.layers[1].delta.up.kind === 'sparse' ? r.model.layers[1].delta.up.positions[2] : null);
  f.close();
  assert.equal(rec.storedBytes, 4 * 3 * I * H + E * 3 * nnz * (4 + 4));
});

test('resume: a run interrupted after a checkpoint ends with the uninterrupted run\'s model and losses', async () => {
  const form: DeltaForm = { kind: 'sparse', density: 0.25 };
  const full = await upcycle(dense.dir, opts(form, { steps: 6, checkpointEvery: 2 }));
  const o = opts(form, { steps: 6, checkpointEvery: 2 });
  await assert.rejects(upcycle(dense.dir, { ...o, onProgress: (e) => { if (e.task === 'train' && e.done === 5) throw new Error('interrupted'); } }), /interrupted/);
  assert.ok(existsSync(`${o.out}.partial`));
  await assert.rejects(upcycle(dense.dir, o), /pass --resume/);
  const resumed = await upcycle(dense.dir, { ...o, resume: true });
  assert.equal(resumed.resumedFrom, 4);
  assert.deepEqual(resumed.losses, full.losses);
  for (const [n, v] of full.model.model.params) assert.deepEqual(resumed.model.model.params.get(n)!.data, v.data, n);
  // another run's options cannot resume it
  const other = opts(form, { steps: 6, checkpointEvery: 2 });
  await assert.rejects(upcycle(dense.dir, { ...other, onProgress: (e) => { if (e.done === 3) throw new Error('stop'); } }), /stop/);
  await assert.rejects(upcycle(dense.dir, { ...other, lr: 1e-3, resume: true }), /different options/);
});

test('bad input is refused with the reason', async () => {
  const lr: DeltaForm = { kind: 'lowrank', rank: 3 };
  await assert.rejects(upcycle(dense.dir, opts(lr, { text: join(work, 'missing.txt') })), /missing\.txt: text file not found/);
  await assert.rejects(upcycle(dense.dir, opts({ kind: 'lowrank', rank: 0 })), /--rank must be a positive integer, got 0/);
  await assert.rejects(upcycle(dense.dir, opts({ kind: 'lowrank', rank: -2 })), /--rank must be a positive integer/);
  await assert.rejects(upcycle(dense.dir, opts({ kind: 'lowrank', rank: 32 })), /--rank 32 must be below min\(I, H\) = 32/);
  await assert.rejects(upcycle(dense.dir, { ...opts(lr), rank: undefined }), /--delta lowrank needs --rank/);
  for (const d of [0, -0.1, 1.5, NaN]) await assert.rejects(upcycle(dense.dir, opts({ kind: 'sparse', density: d })), /--density must be in \(0, 1\]/);
  await assert.rejects(upcycle(dense.dir, opts({ kind: 'sparse', density: 1e-5 })), /keeps no entry/);
  await assert.rejects(upcycle(dense.dir, opts(lr, { topK: 5 })), /--top-k must be an integer in \[1, 4\]/);
  await assert.rejects(upcycle(dense.dir, opts(lr, { experts: 1, topK: 1 })), /--experts must be an integer >= 2/);
  const moe = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2 });
  await assert.rejects(upcycle(moe.dir, opts(lr)), /already has routed experts/);
  const qwen2 = writeTinyModel(TINY_CONFIGS.qwen2, { seed: 2 });
  await assert.rejects(upcycle(qwen2.dir, opts(lr)), /attention biases, which a Mixtral checkpoint cannot hold/);
  const wide: TextTokenizer = { encode: (t) => Array.from(t, () => 64), decode: () => '' };
  const w = opts(lr, { tokenizer: wide });
  await assert.rejects(upcycle(dense.dir, w), /the tokenizer produced id 64, but the model's vocabulary has 64 entries/);
  assert.ok(!existsSync(`${w.out}.partial`), 'a refused run leaves nothing to resume');
  const o = opts(lr);
  await upcycle(dense.dir, o);
  await assert.rejects(upcycle(dense.dir, o), /output directory already exists/);
  await upcycle(dense.dir, { ...o, overwrite: true });
});

test('control: the dense model trained alone sees the upcycling run\'s windows, lowers its loss and is written as a dense checkpoint', async () => {
  const o = opts({ kind: 'lowrank', rank: 3 }, { steps: 8, auxCoef: 0 });
  const moe = await upcycle(dense.dir, o);
  const { experts: _e, topK: _k, delta: _d, rank: _r, auxCoef: _a, ...shared } = o;
  const c = await trainDenseControl(dense.dir, { ...shared, out: join(work, 'control') });
  // step 0 of the upcycled MoE is the dense model, so with the same first window the first losses agree
  assert.ok(Math.abs(c.losses[0] - moe.losses[0]) < 1e-5 * moe.losses[0], `first losses ${c.losses[0]} vs ${moe.losses[0]}`);
  assert.notEqual(c.losses[1], moe.losses[1], 'after one step the two models differ');
  assert.equal(c.losses.length, 8);
  assert.ok(c.finalLoss < c.losses[0], `loss ${c.losses[0]} -> ${c.finalLoss}`);
  assert.equal(c.params, [...denseModel.weights.names()].reduce((n, k) => n + denseModel.weights.get(k).data.length, 0));
  const got = loadModel(c.out);
  assert.ok(!got.config.moe, 'a dense checkpoint');
  assert.deepEqual(got.rawConfig, denseModel.rawConfig);
  const q = 'layers.1.attn.q.weight';
  assert.ok(relErr(got.weights.get(q).data, denseModel.weights.get(q).data) > 1e-4, 'the weights trained');
  assert.ok((await new Transformer(got.config, got.weights).logits(ids(16, 5), 1, 16)).every(Number.isFinite), 'the written model runs');
  const mix = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2 });
  await assert.rejects(trainDenseControl(mix.dir, { ...shared, out: join(work, 'control-moe') }), /already has routed experts/);
  await assert.rejects(trainDenseControl(dense.dir, { ...shared, out: join(work, 'control') }), /output directory already exists/);
});

const MAIN = resolve(process.cwd(), 'dist/src/cli/main.js');
const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('CLI: upcycle --json on a bf16 dense model with a real tokenizer, then eval runs the result', { skip: existsSync(TOKENIZER) ? false : 'needs ../shared/corpus/tokenizer.json' }, () => {
  const { dir } = writeTinyModel({ ...TINY_CONFIGS.mistral, vocab_size: 4096, max_position_embeddings: 512 }, { dtype: 'BF16', seed: 5 });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const text = join(dir, 'text.txt');
  writeFileSync(text, 'The quick brown fox jumps over the lazy dog. '.repeat(80));
  const out = join(work, 'cli-out');
  const r = cli('upcycle', dir, '--out', out, '--experts', '4', '--top-k', '2', '--delta', 'sparse', '--density', '0.1', '--text', text,
    '--steps', '3', '--batch', '2', '--seq', '16', '--json');
  assert.equal(r.code, 0, r.err);
  assert.equal(r.err, '', '--json is quiet');
  const j = JSON.parse(r.out);
  for (const k of ['finalLoss', 'seconds', 'tokensPerSecond', 'addedParams', 'addedParamsFormula']) assert.equal(typeof j[k], 'number', k);
  assert.equal(j.addedParams, 2 * (3 * 4 * Math.round(0.1 * 40 * 32) + 4 * 32));
  assert.equal(j.addedParamsFormula, j.addedParams);
  assert.equal(j.dtype, 'BF16');
  const e = cli('eval', out, '--text', text, '--json');
  assert.equal(e.code, 0, e.err);
  assert.ok(Number.isFinite(JSON.parse(e.out).perplexity));
  // readable output, usage and input errors
  const h = cli('upcycle', dir, '--out', join(work, 'cli-out-2'), '--experts', '4', '--top-k', '2', '--delta', 'lowrank', '--rank', '2', '--text', text, '--steps', '2', '--batch', '2', '--seq', '16');
  assert.equal(h.code, 0, h.err);
  assert.match(h.out, /parameters added [\d,]+ = L·\(3·E·r·\(I\+H\) \+ E·H\)/);
  assert.equal(cli('upcycle', dir, '--out', join(work, 'x'), '--experts', '4', '--top-k', '2', '--delta', 'dense', '--text', text, '--steps', '2').code, 2);
  const bad = cli('upcycle', dir, '--out', join(work, 'x'), '--experts', '4', '--top-k', '2', '--delta', 'lowrank', '--rank', '2', '--text', join(work, 'nope.txt'), '--steps', '2');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /moepress upcycle: error: .*nope\.txt: text file not found/);
  // --control: the same command trains the dense model alone (expert options ignored)
  const ctl = cli('upcycle', dir, '--control', '--out', join(work, 'cli-control'), '--experts', '4', '--top-k', '2', '--text', text, '--steps', '3', '--batch', '2', '--seq', '16', '--json');
  assert.equal(ctl.code, 0, ctl.err);
  const cj = JSON.parse(ctl.out);
  assert.equal(cj.control, true);
  assert.equal(cj.steps, 3);
  assert.ok(Number.isFinite(cj.finalLoss) && cj.params > 0);
  const ce = cli('eval', join(work, 'cli-control'), '--text', text, '--json');
  assert.equal(ce.code, 0, ce.err);
  assert.ok(Number.isFinite(JSON.parse(ce.out).perplexity));
  assert.match(cli('upcycle', dir, '--control', '--out', join(work, 'cli-control-2'), '--text', text, '--steps', '2', '--batch', '2', '--seq', '16').out, /control: .* trained alone/);
});

/**
 * d2-moe (methods/d2moe.ts): importance-weighted base + whitened low-rank deltas, and its data-free
 * path; and every calibrated delta/residual method end to end through compress --calib.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { compress } from '../src/compress/compress.js';
import { restore } from '../src/compress/restore.js';
import { loadModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { weightedMeanBase } from '../src/compress/base.js';
import { memorySource } from '../src/compress/experts-io.js';
import { LayerStore, referenceBytes, type MethodOptions } from '../src/compress/method.js';
import { d2moe, fisherProxy } from '../src/compress/methods/d2moe.js';
import { MATRICES } from '../src/compress/parts.js';
import type { LayerCalib } from '../src/compress/calib/types.js';
import { MoepressError } from '../src/io/errors.js';
import { assertClose } from './helpers/assert-close.js';
import { SHARED } from './helpers/fixtures.js';
import { storedOnDisk } from './helpers/stored-bytes.js';
import { calibratedLayer, outputError, rebuilt } from './helpers/synthetic-calib.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const E = 4, I = 24, H = 32;

function opts(budget: number, calib: LayerCalib | null): MethodOptions {
  return { budget, seed: 3, base: 'mean', denseBase: null, alignIters: 2, calib };
}

test('weightedMeanBase equals Σ c_e W_e / Σ c_e recomputed in float64; fisherProxy is weightSq · tr(xtx) / (H · tokens)', () => {
  const { x, calib } = calibratedLayer(E, I, H, 1, { unreached: [2] });
  const c = fisherProxy(calib, H)!;
  for (let e = 0; e < E; e++) {
    const ec = calib.experts[e];
    let tr = 0;
    for (let j = 0; j < H; j++) tr += ec.xtx[j * H + j];
    const want = ec.tokens ? (ec.weightSq * tr) / (H * ec.tokens) : 0;
    assert.ok(Math.abs(c[e] - want) <= 1e-12 * Math.max(1, want), `expert ${e}: ${c[e]} vs ${want}`);
  }
  assert.equal(c[2], 0, 'an unreached expert has no weight');
  const base = weightedMeanBase(memorySource(x), c);
  const total = c.reduce((s, v) => s + v, 0);
  const n = I * H;
  for (const m of MATRICES) {
    const want = Float64Array.from({ length: n }, (_, i) => {
      let s = 0;
      for (let e = 0; e < E; e++) s += c[e] * x[m][e * n + i];
      return s / total;
    });
    assertClose(base[m], want, 1e-6, `${m} base`);
  }
  const none = { ...calib, experts: calib.experts.map((ec) => ({ ...ec, tokens: 0 })) };
  assert.equal(fisherProxy(none, H), null, 'no expert reached: no weights (the plain mean is used)');
});

test('d2-moe with calibration: lower output error on correlated inputs than data-free, same bytes, within budget, choices recorded', async () => {
  const { x, calib } = calibratedLayer(E, I, H, 2, { unreached: [1] });
  const budget = 0.5;
  const sc = new LayerStore(0);
  const rc = await d2moe.compressLayer(memorySource(x), sc, opts(budget, calib));
  const sf = new LayerStore(0);
  const rf = await d2moe.compressLayer(memorySource(x), sf, opts(budget, null));
  assert.equal(rc.storedBytes, rf.storedBytes, 'the same ranks, the same bytes');
  assert.equal(rc.storedBytes, sc.bytes());
  assert.ok(rc.storedBytes <= budget * referenceBytes(E, I, H));
  assert.ok(rc.storedBytes > 0.9 * budget * referenceBytes(E, I, H), 'spends its budget');
  assert.equal(rc.choices.base, 'fisher-weighted mean');
  assert.equal(rf.choices.base, 'mean');
  assert.equal(rf.choices.calib, undefined, 'data-free: nothing recorded');
  assert.deepEqual((rc.choices.calib as { uncalibrated: number[] }).uncalibrated, [1]);
  const w = rc.choices.baseWeights as number[];
  assert.equal(w[1], 0);
  assert.ok(Math.abs(w.reduce((s, v) => s + v, 0) - 1) < 1e-12);
  const errC = outputError(x, rebuilt(rc, sc, I, H), calib);
  const errF = outputError(x, rebuilt(rf, sf, I, H), calib);
  assert.ok(errC < 0.8 * errF, `calibrated ${errC} vs data-free ${errF}`);
});

test('d2-moe with identity Hessians and equal importance reconstructs like the data-free method', async () => {
  const { x, calib } = calibratedLayer(E, I, H, 4, { identity: true });
  const sc = new LayerStore(0);
  const rc = await d2moe.compressLayer(memorySource(x), sc, opts(0.4, calib));
  const sf = new LayerStore(0);
  const rf = await d2moe.compressLayer(memorySource(x), sf, opts(0.4, null));
  for (const v of rc.choices.baseWeights as number[]) assert.ok(Math.abs(v - 1 / E) < 1e-12);
  const a = rebuilt(rc, sc, I, H);
  const b = rebuilt(rf, sf, I, H);
  // The whitened factors carry the scale sqrt(1.01 · 5T) until un-whitened, so their bf16 rounding
  // differs from the plain factors': equal up to bf16's unit roundoff 2⁻⁸, not bit for bit.
  for (const m of MATRICES) assertClose(a[m], b[m], 2 ** -8, m);
  const ea = outputError(x, a, calib);
  const eb = outputError(x, b, calib);
  assert.ok(Math.abs(ea - eb) < 1e-3 * eb, `output error ${ea} vs ${eb}`);
});

test('d2-moe refuses a budget below the base plus a rank-1 delta, naming the minimum', () => {
  // base 1/8 + 3 · 8 · 2 · (16 + 32) bytes of rank 1 over 8 · 3 · 16 · 32 · 2 = 0.125 + 0.09375
  assert.throws(() => d2moe.check(8, 16, 32, 0.2, { base: 'mean', denseBase: null }), (e: unknown) => e instanceof MoepressError && /d2-moe.*at least 0\.2188/.test(e.message));
  d2moe.check(8, 16, 32, 0.22, { base: 'mean', denseBase: null });
});

const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');
const VALID = join(SHARED, 'corpus/valid.txt');
const skip = existsSync(TOKENIZER) && existsSync(VALID) ? false : 'needs ../shared/corpus';

test('compress --calib with d2-moe, resmoe-svd, resmoe-prune, ders-magnitude: bytes on disk = manifest <= budget, runtime equals restore, calibration recorded', { skip }, async () => {
  const { dir } = writeTinyModel({ ...TINY_CONFIGS.mixtral, vocab_size: 4096, max_position_embeddings: 256 }, { dtype: 'BF16', seed: 2 });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const text = join(dir, 'calib.txt');
  writeFileSync(text, readFileSync(VALID, 'utf8').slice(0, 40000));
  const work = mkdtempSync(join(os.tmpdir(), 'moepress-d2-'));
  const calib = { file: text, windows: 8, seed: 3, cache: join(work, 'calib.safetensors') };
  const seq = Int32Array.from({ length: 12 }, (_, i) => (i * 37) % 4096);
  const logits = (d: string) => {
    const m = loadModel(d);
    return new Transformer(m.config, m.weights, m.banks).logits(seq, 1, seq.length);
  };
  try {
    const modes: Record<string, string> = { 'd2-moe': 'whitened', 'resmoe-svd': 'whitened-residual', 'resmoe-prune': 'wanda', 'ders-magnitude': 'wanda' };
    for (const [method, mode] of Object.entries(modes)) {
      const out = join(work, method);
      const budget = 0.5;
      const m = await compress({ model: dir, out, method, budget, seed: 9, calib });
      assert.equal(storedOnDisk(out), m.bytes.stored, `${method}: manifest bytes = bytes in the files`);
      assert.ok(m.bytes.stored <= budget * m.bytes.reference, `${method}: stored ${m.bytes.stored} > budget`);
      for (const r of m.layers) assert.equal((r.choices.calib as { mode: string }).mode, mode, method);
      const restored = join(work, `${method}-r`);
      await restore(out, restored, { dtype: 'F32' });
      assertClose(await logits(out), await logits(restored), 1e-5, `${method} runtime vs restore`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
});

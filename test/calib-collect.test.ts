/** Calibration: collection from the MoE block's hook, the cache file, uncalibrated experts, compress --calib. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { loadCalibration, saveCalibration } from '../src/compress/calib/cache.js';
import { calibrationWindows, collectCalibration } from '../src/compress/calib/collect.js';
import { gptqQuantize } from '../src/compress/calib/gptq.js';
import { refitHeaders } from '../src/compress/calib/refit.js';
import { CalibratedQuantizer } from '../src/compress/calib/quantize.js';
import type { ExpertCalib, LayerCalib } from '../src/compress/calib/types.js';
import { compress } from '../src/compress/compress.js';
import { codecById } from '../src/compress/quant/codec.js';
import { loadModel } from '../src/runtime/load-model.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { Transformer } from '../src/runtime/transformer.js';
import type { Routes } from '../src/tensor/router.js';
import { Rng } from '../src/tensor/random.js';
import { SHARED } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

test('collectCalibration: per-expert sums equal a float64 recomputation from the routed inputs', async () => {
  const { dir, cfg, weights } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 4 });
  const m = loadModel(dir);
  const model = new Transformer(m.config, m.weights, m.banks);
  const ids = Int32Array.from({ length: 300 }, (_, i) => (i * 7 + 3) % 64);
  const S = 16;
  const starts = calibrationWindows(ids.length, 3, S, 5);
  const calib = await collectCalibration(model, ids, { windows: 3, windowSize: S, seed: 5, batch: 2, maxFullI: 8 });
  // reference: replay the same windows, record h and routes, recompute in float64
  const { experts: E, intermediate: I } = cfg.moe!;
  const H = cfg.hidden;
  const ref = new Map<number, { xtx: Float64Array; diag: Float64Array; n: Int32Array; wsq: Float64Array }>();
  for (const l of calib.layers.keys()) ref.set(l, { xtx: new Float64Array(E * H * H), diag: new Float64Array(E * I), n: new Int32Array(E), wsq: new Float64Array(E) });
  for (const s0 of starts) {
    await model.hidden(ids.subarray(s0, s0 + S), 1, S, null, {
      observe: (l: number, routes: Routes, T: number, h: Float32Array) => {
        const r = ref.get(l)!;
        const gate = weights.get(`layers.${l}.moe.experts.gate`)!.data;
        const up = weights.get(`layers.${l}.moe.experts.up`)!.data;
        for (let i = 0; i < T * routes.K; i++) {
          const e = routes.experts[i];
          const t = Math.floor(i / routes.K);
          r.n[e]++;
          r.wsq[e] += routes.weights[i] ** 2;
          for (let a = 0; a < H; a++) for (let b = 0; b < H; b++) r.xtx[e * H * H + a * H + b] += h[t * H + a] * h[t * H + b];
          for (let j = 0; j < I; j++) {
            let g = 0, u = 0;
            for (let k = 0; k < H; k++) {
              g += gate[(e * I + j) * H + k] * h[t * H + k];
              u += up[(e * I + j) * H + k] * h[t * H + k];
            }
            r.diag[e * I + j] += (silu(g) * u) ** 2;
          }
        }
      },
    });
  }
  for (const [l, lc] of calib.layers) {
    const r = ref.get(l)!;
    assert.equal(lc.tokens, 3 * S);
    assert.equal(lc.experts.reduce((s, e) => s + e.tokens, 0), 3 * S * 2, 'each token reaches K = 2 experts');
    lc.experts.forEach((ec, e) => {
      assert.equal(ec.tokens, r.n[e]);
      assert.ok(Math.abs(ec.weightSq - r.wsq[e]) <= 1e-5 * Math.max(1, r.wsq[e]));
      assert.equal(ec.ata, null, 'I = 16 > maxFullI = 8 keeps only the diagonal');
      let num = 0, den = 0;
      for (let i = 0; i < H * H; i++) {
        num += (ec.xtx[i] - r.xtx[e * H * H + i]) ** 2;
        den += r.xtx[e * H * H + i] ** 2;
      }
      if (den > 0) assert.ok(Math.sqrt(num / den) < 1e-5, `layer ${l} expert ${e} xtx: ${Math.sqrt(num / den)}`);
      for (let j = 0; j < I; j++) assert.ok(Math.abs(ec.ataDiag[j] - r.diag[e * I + j]) <= 1e-4 * Math.max(1e-3, r.diag[e * I + j]));
    });
  }
  // with room for it, the full Σ a aᵀ is kept and its diagonal is ataDiag
  const full = await collectCalibration(model, ids, { windows: 1, windowSize: S, seed: 1 });
  const ec = [...full.layers.values()][0].experts.find((e) => e.tokens > 0)!;
  for (let j = 0; j < I; j++) assert.ok(Math.abs(ec.ata![j * I + j] - ec.ataDiag[j]) <= 1e-4 * Math.max(1e-3, ec.ataDiag[j]));
  m.checkpoint.close();
});

test('calibrationWindows: seeded, inside the text, and a text shorter than a window is an error', () => {
  const a = calibrationWindows(1000, 20, 100, 3);
  assert.deepEqual(a, calibrationWindows(1000, 20, 100, 3));
  assert.notDeepEqual(a, calibrationWindows(1000, 20, 100, 4));
  for (const s of a) assert.ok(s >= 0 && s + 100 <= 1000);
  assert.throws(() => calibrationWindows(50, 2, 100, 0), /50 tokens, fewer than one window of 100/);
});

function fakeExpert(H: number, I: number, tokens: number, seed: number): ExpertCalib {
  const rng = new Rng(seed);
  const xtx = new Float64Array(H * H);
  const ata = new Float64Array(I * I);
  for (let t = 0; t < tokens; t++) {
    const x = rng.normals(H);
    const a = rng.normals(I);
    for (let i = 0; i < H; i++) for (let j = 0; j < H; j++) xtx[i * H + j] += (x[i] + x[0]) * (x[j] + x[0]);
    for (let i = 0; i < I; i++) for (let j = 0; j < I; j++) ata[i * I + j] += a[i] * a[j];
  }
  return { tokens, weightSq: tokens / 4, xtx, ata, ataDiag: Float64Array.from({ length: I }, (_, i) => ata[i * I + i]) };
}

test('calibration cache: save and load round-trip (float32), key kept; a non-calibration file is refused', () => {
  const H = 8, I = 4;
  const lc: LayerCalib = { layer: 1, E: 2, I, H, tokens: 10, experts: [fakeExpert(H, I, 7, 1), { ...fakeExpert(H, I, 0, 2), ata: null }] };
  const file = join(mkdtempSync(join(os.tmpdir(), 'moepress-cal-')), 'c.safetensors');
  saveCalibration(file, { source: 'x.txt', windows: 3, windowSize: 16, seed: 9, layers: new Map([[1, lc]]) }, 'k1');
  const { calib, key } = loadCalibration(file);
  assert.equal(key, 'k1');
  assert.deepEqual([calib.source, calib.windows, calib.windowSize, calib.seed], ['x.txt', 3, 16, 9]);
  const got = calib.layers.get(1)!;
  assert.deepEqual([got.E, got.I, got.H, got.tokens], [2, I, H, 10]);
  assert.equal(got.experts[1].ata, null);
  assert.equal(got.experts[1].tokens, 0);
  const want = lc.experts[0];
  for (let i = 0; i < H * H; i++) assert.ok(Math.abs(got.experts[0].xtx[i] - want.xtx[i]) <= 1e-6 * Math.abs(want.xtx[i]) + 1e-9);
  for (let i = 0; i < I * I; i++) assert.ok(Math.abs(got.experts[0].ata![i] - want.ata![i]) <= 1e-6 * Math.abs(want.ata![i]) + 1e-9);
  const other = join(mkdtempSync(join(os.tmpdir(), 'moepress-cal-')), 'o.safetensors');
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 1, shardBytes: 1 << 30 });
  copyFileSync(join(dir, 'model.safetensors'), other);
  assert.throws(() => loadCalibration(other), /not a moepress calibration file/);
});

test('uncalibrated experts (no tokens, or fewer than the matrix has inputs) get the data-free treatment, byte for byte, and are listed', async () => {
  const H = 32, I = 16;
  const lc: LayerCalib = { layer: 0, E: 3, I, H, tokens: 40, experts: [fakeExpert(H, I, 40, 3), fakeExpert(H, I, 0, 4), fakeExpert(H, I, 20, 5)] };
  const codec = codecById('q3s-g16');
  const q = new CalibratedQuantizer(lc, I, H);
  const rng = new Rng(8);
  const w0 = rng.normals(I * H, 0.1);
  const w1 = rng.normals(I * H, 0.1);
  const calibrated = await q.quantize(w0, 'gate', 0, codec);
  const gptq = (await gptqQuantize(w0, I, H, lc.experts[0].xtx, codec, { damp: 0.01 })).packed;
  assert.deepEqual(calibrated, (await refitHeaders(gptq, codec, w0, I, H, lc.experts[0].xtx)).packed, 'GPTQ codes, refit headers');
  assert.notDeepEqual(calibrated, codec.quantize(w0), 'a calibrated expert is not quantized plainly');
  assert.deepEqual(await q.quantize(w1, 'gate', 1, codec), codec.quantize(w1));
  assert.deepEqual(await q.quantize(w1, 'down', 1, codec), codec.quantize(w1));
  // 20 tokens: enough for down (16 inputs), too few for gate (32 inputs: a singular Σ x xᵀ)
  assert.deepEqual(await q.quantize(w1, 'gate', 2, codec), codec.quantize(w1));
  assert.notDeepEqual(await q.quantize(w1, 'down', 2, codec), codec.quantize(w1));
  const c = q.choices()!;
  assert.deepEqual(c.uncalibrated, [1, 2]);
  assert.equal(c.gptqMatrices, 2);
  assert.equal(c.plainMatrices, 3);
  assert.equal(new CalibratedQuantizer(null, I, H).choices(), null, 'data-free: nothing recorded');
});

const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');
const VALID = join(SHARED, 'corpus/valid.txt');
const skip = existsSync(TOKENIZER) && existsSync(VALID) ? false : 'needs ../shared/corpus';

test('compress --calib: quant uses GPTQ, the manifest records the calibration, the cache is reused; no text: data-free', { skip }, async () => {
  const { dir } = writeTinyModel({ ...TINY_CONFIGS.mixtral, vocab_size: 4096, max_position_embeddings: 256 }, { dtype: 'BF16', seed: 2 });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const text = join(dir, 'calib.txt');
  writeFileSync(text, readFileSync(VALID, 'utf8').slice(0, 20000));
  const cache = join(dir, 'calib.safetensors');
  const work = mkdtempSync(join(os.tmpdir(), 'moepress-calq-'));
  const calib = { file: text, windows: 4, seed: 3, cache };
  const m = await compress({ model: dir, out: join(work, 'a'), method: 'quant', budget: 0.25, calib, calibMode: 'original' });
  assert.deepEqual(m.options.calibration, { source: text, windows: 4, windowSize: 256, seed: 3, mode: 'original' });
  assert.ok(existsSync(cache));
  for (const r of m.layers) {
    const c = r.choices.calib as { mode: string; gptqMatrices: number; plainMatrices: number };
    assert.equal(c.mode, 'gptq');
    assert.equal(r.choices.codec, 'q3s-g16', 'MSE-fitted scales under GPTQ, groups of 16 spend the whole 4 bits');
    // gate/up (in = H = 32) and down (in = I = 16) all tile into g16 blocks
    assert.equal(c.gptqMatrices + c.plainMatrices, 3 * 4);
    assert.equal(c.plainMatrices, 0);
  }
  const again = await compress({ model: dir, out: join(work, 'b'), method: 'quant', budget: 0.25, calib, calibMode: 'original' });
  assert.deepEqual(again.layers.map((r) => r.storedBytes), m.layers.map((r) => r.storedBytes));
  const free = await compress({ model: dir, out: join(work, 'c'), method: 'quant', budget: 0.25 });
  assert.equal(free.options.calibration, 'data-free');
  assert.equal(free.layers[0].choices.calib, undefined);
  assert.equal(free.layers[0].choices.codec, 'q3s-g32-rtn');
  const svd = await compress({ model: dir, out: join(work, 'd'), method: 'svd', budget: 0.25, calib });
  for (const r of svd.layers) assert.equal((r.choices.calib as { mode: string }).mode, 'whitened');
  const lm = loadModel(join(work, 'a'));
  const ppl = await perplexity(new Transformer(lm.config, lm.weights, lm.banks), Int32Array.from({ length: 512 }, (_, i) => (i * 13) % 4096), { windows: 2 });
  assert.ok(Number.isFinite(ppl.perplexity));
  lm.checkpoint.close();
});

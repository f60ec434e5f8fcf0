/**
 * Streaming compression: experts read one at a time by position give exactly what the whole-layer
 * load gives, in every hub layout; the streamed methods store the same bytes as a reference built
 * in memory from the whole layer; the spilled layer store; the synthetic real-size generator (at
 * tiny sizes); the estimate; and the scale bench end to end on a tiny layer.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { computeBarycenter, expertPoints, permuteExpert } from '../src/compress/barycenter.js';
import { compress } from '../src/compress/compress.js';
import { calibrationCost, estimateCompress } from '../src/compress/estimate.js';
import { memorySource, openExpertSource, readLayerExperts } from '../src/compress/experts-io.js';
import { expertMatrix, LayerStore, type LayerExperts } from '../src/compress/method.js';
import { MATRICES, matrixShape } from '../src/compress/parts.js';
import { storedBytes } from '../src/compress/quant/codec.js';
import { chooseCodec, chooseScaleDtype } from '../src/compress/quant/select.js';
import { runScaleBench } from '../src/compress/scale-bench.js';
import { positionsToBitmask, topMagnitudePositions } from '../src/compress/sparse.js';
import { writeSyntheticMoe } from '../src/compress/synthetic.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import type { RawTensor } from '../src/io/dtype.js';
import { loadModel, openModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { fromFloat32, toFloat32 } from '../src/tensor/convert.js';
import { relErr } from './helpers/assert-close.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeFusedCopy, writeTinyModel } from './helpers/tiny-model.js';

const tmp = () => mkdtempSync(join(os.tmpdir(), 'moepress-s-'));

/** Same bits: the reads move bytes and widen bf16 exactly, so nothing may differ at all. */
function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  assert.ok(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), `${what}: values differ`);
}

const FAMILIES = ['mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe', 'deepseek_v2', 'deepseek_v3', 'phimoe', 'gpt_oss'] as const;

for (const family of [...FAMILIES, 'mixtral-fused'] as const) {
  test(`${family}: experts read one at a time by position equal the whole-layer load (matrices, row blocks, clouds)`, () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[family === 'mixtral-fused' ? 'mixtral' : family], { seed: 5, dtype: 'BF16', shardBytes: 8 * 1024 });
    const model = family === 'mixtral-fused' ? writeFusedCopy(dir) : dir;
    const src = openModel(model);
    try {
      if (family === 'mixtral-fused') assert.equal(src.config.expertLayout, 'fused');
      for (const [layer, spec] of src.config.layers.entries()) {
        if (spec.ffn !== 'moe') continue;
        const whole = readLayerExperts(src, layer);
        const x = openExpertSource(src, layer);
        for (let e = 0; e < x.E; e++) {
          for (const m of MATRICES) {
            const [out, inp] = matrixShape(m, x.I, x.H);
            const ref = expertMatrix(whole, m, e);
            sameBits(x.matrix(m, e), ref, `${family} layer ${layer} expert ${e} ${m}`);
            sameBits(x.rows(m, e, 3, 5), ref.subarray(3 * inp, 8 * inp), `${family} ${m} rows 3..7`);
            assert.ok(x.blockRows(m) >= 1 && x.blockRows(m) <= out);
          }
          const w = { gate: expertMatrix(whole, 'gate', e), up: expertMatrix(whole, 'up', e), down: expertMatrix(whole, 'down', e) };
          sameBits(x.cloud(e), expertPoints(w.gate, w.up, w.down, x.I, x.H), `${family} expert ${e} cloud`);
          sameBits(memorySource(whole).cloud(e), expertPoints(w.gate, w.up, w.down, x.I, x.H), `${family} memory cloud`);
        }
        assert.ok(x.stats.bytesRead > 0);
        x.close();
      }
    } finally {
      src.checkpoint.close();
      rmSync(dir, { recursive: true, force: true });
      if (model !== dir) rmSync(model, { recursive: true, force: true });
    }
  });
}

test('an expert with a NaN is refused naming the shard and the tensor', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 1, dtype: 'F32', edit: (w) => { w.get('layers.1.moe.experts.up')!.data[3 * 16 * 32 + 40] = NaN; } });
  const src = openModel(dir);
  try {
    const x = openExpertSource(src, 1);
    x.matrix('up', 2);
    assert.throws(() => x.matrix('up', 3), /experts\.3\.w3\.weight.*NaN or Inf/);
    x.close();
  } finally {
    src.checkpoint.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('LayerStore: a spilled store reads back and writes the same file as one held in memory', () => {
  const d = tmp();
  try {
    const a = new LayerStore(3, join(d, 'spill'));
    const b = new LayerStore(3);
    const tensors: [string, RawTensor][] = [
      ['base.gate', { dtype: 'BF16', shape: [4, 3], data: fromFloat32(Float32Array.from({ length: 12 }, (_, i) => i / 7 - 0.5), 'BF16') }],
      ['e0.mask', { dtype: 'U8', shape: [5], data: Uint8Array.from([1, 2, 3, 250, 0]) }],
      ['perm.0', { dtype: 'U16', shape: [3], data: new Uint8Array(Uint16Array.from([2, 0, 1]).buffer) }],
    ];
    for (const [n, t] of tensors) assert.equal(a.put(n, t), b.put(n, t));
    assert.equal(a.bytes(), b.bytes());
    assert.deepEqual(a.names(), b.names());
    for (const n of a.names()) assert.deepEqual(a.get(n), b.get(n));
    assert.throws(() => a.put('perm.0', tensors[2][1]), /stored twice/);
    a.writeSafetensors(join(d, 'a.safetensors'), { format: 'pt' });
    b.writeSafetensors(join(d, 'b.safetensors'), { format: 'pt' });
    assert.ok(readFileSync(join(d, 'a.safetensors')).equals(readFileSync(join(d, 'b.safetensors'))));
    a.dispose();
    assert.throws(() => readFileSync(join(d, 'spill')), /ENOENT/);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

/** The layer's stored tensors, by local name (moepress.layers.L. stripped). */
function storedTensors(out: string, layer: number): Map<string, RawTensor> {
  const ck = Checkpoint.open(out);
  const prefix = `moepress.layers.${layer}.`;
  const got = new Map(ck.names().filter((n) => n.startsWith(prefix)).map((n) => [n.slice(prefix.length), ck.read(n)] as [string, RawTensor]));
  ck.close();
  return got;
}

const bf16 = (x: Float32Array) => fromFloat32(x, 'BF16');
const sub = (a: Float32Array, b: Float32Array) => Float32Array.from(a, (v, i) => v - b[i]);

test('ders-quant streamed expert by expert stores what the in-memory computation gives (mean base, codec, every delta)', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 8, dtype: 'BF16' });
  const out = join(tmp(), 'c');
  try {
    await compress({ model: dir, out, method: 'ders-quant', budget: 0.5, seed: 1 });
    const src = openModel(dir);
    const x: LayerExperts = readLayerExperts(src, 1);
    src.checkpoint.close();
    const got = storedTensors(out, 1);
    const n = x.I * x.H;
    // reference: float64 mean of the whole stack, bf16; deltas from the rounded base
    const rounded = Object.fromEntries(MATRICES.map((m) => {
      const acc = new Float64Array(n);
      for (let e = 0; e < x.E; e++) expertMatrix(x, m, e).forEach((v, i) => (acc[i] += v));
      const base = bf16(Float32Array.from(acc, (v) => v / x.E));
      assert.ok(Buffer.from(got.get(`base.${m}`)!.data).equals(Buffer.from(base)), `base.${m}`);
      return [m, toFloat32({ dtype: 'BF16', shape: [n], data: base })];
    }));
    const left = 0.5 * x.E * 3 * n * 2 - 3 * n * 2;
    const codec = chooseCodec(left / (x.E * 3 * n * 2), { n, scaleDtype: chooseScaleDtype(sub(expertMatrix(x, 'gate', 0), rounded.gate), 4, 64) });
    for (let e = 0; e < x.E; e++) {
      for (const m of MATRICES) {
        const t = got.get(`e${e}.${m}.delta.q`)!;
        assert.equal(t.data.byteLength, storedBytes(codec, n));
        assert.ok(Buffer.from(t.data).equals(Buffer.from(codec.quantize(sub(expertMatrix(x, m, e), rounded[m])))), `e${e}.${m}.delta.q`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('resmoe-prune streamed (one expert cloud at a time) stores what the in-memory barycenter gives', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.olmoe, { seed: 9, dtype: 'BF16' });
  const out = join(tmp(), 'c');
  try {
    const m0 = await compress({ model: dir, out, method: 'resmoe-prune', budget: 0.5, seed: 4, alignIters: 5 });
    const src = openModel(dir);
    const x = readLayerExperts(src, 0);
    src.checkpoint.close();
    const got = storedTensors(out, 0);
    const n = x.I * x.H;
    const experts = Array.from({ length: x.E }, (_, e) => ({ gate: expertMatrix(x, 'gate', e), up: expertMatrix(x, 'up', e), down: expertMatrix(x, 'down', e) }));
    const r = await computeBarycenter(experts, x.I, x.H, { maxIters: 5, seed: 4 });
    assert.equal(m0.layers[0].choices.alignIters, r.iters);
    const rounded = Object.fromEntries(MATRICES.map((m) => {
      const b = bf16(r.bary[m]);
      assert.ok(Buffer.from(got.get(`bary.${m}`)!.data).equals(Buffer.from(b)), `bary.${m}`);
      return [m, toFloat32({ dtype: 'BF16', shape: [n], data: b })];
    }));
    const count = Math.round((m0.layers[0].choices.density as number) * 3 * n);
    for (let e = 0; e < x.E; e++) {
      assert.deepEqual([...new Uint16Array(got.get(`perm.${e}`)!.data.slice().buffer)], [...r.perms[e]], `perm.${e}`);
      const p = permuteExpert(experts[e], r.perms[e], x.I, x.H);
      const all = new Float32Array(3 * n);
      MATRICES.forEach((m, i) => all.set(sub(p[m], rounded[m]), i * n));
      const pos = topMagnitudePositions(all, count);
      MATRICES.forEach((m, i) => {
        const mine = pos.filter((q) => q >= i * n && q < (i + 1) * n).map((q) => q - i * n);
        const values = bf16(Float32Array.from(mine, (q) => all[i * n + q]));
        assert.ok(Buffer.from(got.get(`e${e}.${m}.residual.values`)!.data).equals(Buffer.from(values)), `e${e}.${m} values`);
        const index = got.get(`e${e}.${m}.residual.mask`) ?? got.get(`e${e}.${m}.residual.indices`)!;
        const want = index.dtype === 'U8' ? positionsToBitmask(mine, n) : new Uint8Array(mine.buffer);
        assert.ok(Buffer.from(index.data).equals(Buffer.from(want)), `e${e}.${m} positions`);
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('writeSyntheticMoe writes a loadable sharded Mixtral checkpoint with the asked shapes, deterministically', async () => {
  const d = tmp();
  try {
    const opts = { layers: 2, E: 4, I: 24, H: 16, heads: 2, kvHeads: 1, vocab: 32, seed: 3, shardBytes: 8 * 1024 };
    const a = writeSyntheticMoe(join(d, 'a'), opts);
    assert.ok(a.files.length > 1, 'sharded');
    assert.equal(a.expertBytes, 2 * 4 * 3 * 24 * 16 * 2);
    const ck = Checkpoint.open(a.dir);
    assert.equal(ck.info('model.layers.1.block_sparse_moe.experts.3.w2.weight').dtype, 'BF16');
    assert.deepEqual(ck.info('model.layers.1.block_sparse_moe.experts.3.w2.weight').shape, [16, 24]);
    assert.deepEqual(ck.info('model.layers.0.self_attn.k_proj.weight').shape, [8, 16]);
    assert.equal(ck.names().reduce((s, n) => s + ck.info(n).byteLength, 0), a.totalBytes);
    ck.close();
    const m = loadModel(a.dir);
    assert.equal(m.config.modelType, 'mixtral');
    assert.deepEqual([m.config.moe!.experts, m.config.moe!.intermediate, m.config.hidden, m.config.numLayers], [4, 24, 16, 2]);
    const logits = await new Transformer(m.config, m.weights, m.banks).logits([1, 5, 9], 1, 3);
    assert.ok(logits.every(Number.isFinite));
    const b = writeSyntheticMoe(join(d, 'b'), opts);
    for (const f of a.files) assert.ok(readFileSync(join(a.dir, f)).equals(readFileSync(join(b.dir, f))), `${f} differs between runs`);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('synthetic expert kinds: upcycled experts sit near each other; noiseless permuted experts align to a zero residual', async () => {
  const d = tmp();
  try {
    const up = writeSyntheticMoe(join(d, 'up'), { E: 4, I: 32, H: 16, heads: 2, vocab: 16, experts: 'upcycled', noise: 0.05, seed: 2 });
    const src = openModel(up.dir);
    const x = readLayerExperts(src, 0);
    src.checkpoint.close();
    const r = relErr(expertMatrix(x, 'gate', 1), expertMatrix(x, 'gate', 0));
    assert.ok(r > 0.03 && r < 0.15, `upcycled: experts differ by ${r} (noise 0.05 each)`);
    const perm = writeSyntheticMoe(join(d, 'perm'), { E: 4, I: 32, H: 16, heads: 2, vocab: 16, experts: 'permuted', noise: 0, seed: 2 });
    const out = join(d, 'c');
    const m = await compress({ model: perm.dir, out, method: 'resmoe-prune', budget: 0.5 });
    const rel = (m.layers[0].choices.relError as { all: number }).all;
    assert.ok(rel < 1e-6, `permuted copies: residual error ${rel}`);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('estimate: a Mixtral-8x7B layer fits in 8 GiB for every method, time grows with the shapes and the layers', () => {
  const rates = { gemmGflops: 60, readMBps: 800, writeMBps: 300 };
  const mixtral = { layers: 32, E: 8, I: 14336, H: 4096 };
  for (const method of ['resmoe-prune', 'resmoe-svd', 'merge', 'ders-quant', 'ders-drop', 'ders-magnitude', 'quant', 'prune', 'svd']) {
    const e = estimateCompress(mixtral, method, { budget: 0.25 }, rates);
    assert.ok(e.peakBytes > 1.5 * 2 ** 30 && e.peakBytes < 8 * 2 ** 30, `${method}: peak ${e.peakBytes}`);
    assert.ok(e.seconds > 0 && Math.abs(e.seconds - 32 * e.secondsPerLayer) < 1e-6 * e.seconds, method);
    assert.ok(e.workingSet.length > 0 && e.readBytesPerLayer === 8 * 3 * 14336 * 4096 * 2);
  }
  const r = estimateCompress(mixtral, 'resmoe-prune', { budget: 0.25, alignIters: 8 }, rates);
  assert.ok(r.gemmFlopsPerLayer > 1e12, 'alignment GEMMs are TFLOPs at this size');
  assert.ok(estimateCompress(mixtral, 'ders-quant', { budget: 0.25 }, rates).gemmFlopsPerLayer === 0);
  const small = estimateCompress({ ...mixtral, I: 1024 }, 'resmoe-prune', { budget: 0.25 }, rates);
  assert.ok(small.seconds < r.seconds && small.peakBytes < r.peakBytes);
  assert.ok(estimateCompress(mixtral, 'resmoe-prune', { budget: 0.25 }, { ...rates, gemmGflops: 30 }).seconds > r.seconds);
});

test('estimate with calibration: its hidden states and one layer of sums join the working set, its forward the GEMM time', () => {
  const rates = { gemmGflops: 60, readMBps: 800, writeMBps: 300 };
  const mixtral = { layers: 32, E: 8, I: 14336, H: 4096 };
  const calib = { tokens: 64 * 256, topK: 2, modelLayers: 32 };
  const c = calibrationCost(calib, 8, 14336, 4096);
  const bytes = Object.fromEntries(c.workingSet.map((w) => [w.what, w.bytes]));
  assert.equal(bytes['calibration hidden states'], 3 * 4 * 16384 * 4096);
  assert.equal(bytes['calibration sums (float64)'], 8 * 8 * (4096 * 4096 + 14336), 'I = 14336 > 4096 keeps only diag(Σaaᵀ)');
  assert.equal(calibrationCost(calib, 8, 1024, 4096).workingSet[1].bytes, 8 * 8 * (4096 * 4096 + 1024 * 1024));
  const plain = estimateCompress(mixtral, 'quant', { budget: 0.1875 }, rates);
  const withCalib = estimateCompress(mixtral, 'quant', { budget: 0.1875, calib }, rates);
  assert.ok(withCalib.peakBytes > plain.peakBytes + 1.5 * 2 ** 30 && withCalib.peakBytes < 8 * 2 ** 30, `peak ${withCalib.peakBytes}`);
  assert.equal(withCalib.gemmFlopsPerLayer - plain.gemmFlopsPerLayer, c.flopsPerLayer);
  // compressing only the first of 32 layers still runs no later layer; compressing layer 31 alone runs all 32
  const last = estimateCompress({ ...mixtral, layers: 1 }, 'quant', { budget: 0.1875, calib }, rates);
  assert.equal(last.gemmFlopsPerLayer, 32 * c.flopsPerLayer);
});

test('bench --scale end to end on a tiny layer: one child per method, the required keys, floors and extrapolation', async () => {
  const r = await runScaleBench({ E: 4, I: 48, H: 32, methods: ['resmoe-prune', 'ders-quant', 'quant+calib'], budget: 0.5, alignIters: 2, layers: 32, diskProbeBytes: 16 * 2 ** 20, calibWindows: 2 });
  assert.deepEqual(r.methods.map((m) => m.method), ['resmoe-prune', 'ders-quant', 'quant+calib']);
  assert.equal((r.methods[2].choices.calib as { mode: string }).mode, 'gptq', 'the +calib run calibrates');
  assert.ok(r.methods[2].gemmFlops >= 0);
  for (const k of ['compressPeakRssBytes', 'compressSeconds', 'gemmFloorSeconds', 'ioFloorSeconds', 'floorSeconds', 'extrapolatedSeconds'] as const) {
    assert.ok(Number.isFinite(r[k]) && r[k] > 0, `${k} = ${r[k]}`);
  }
  const rp = r.methods[0];
  assert.equal(r.compressPeakRssBytes, rp.compressPeakRssBytes);
  assert.ok(rp.compressPeakRssBytes > 20 * 2 ** 20 && rp.compressPeakRssBytes < 2 ** 30, 'a child process peak, not the test runner');
  assert.ok(rp.gemmFlops > 0 && rp.profile.layerMs.length === 1 && rp.bytesRead >= r.checkpoint.expertBytes);
  assert.ok(Math.abs(rp.extrapolated.seconds - (32 * rp.layerSeconds + rp.compressSeconds - rp.layerSeconds)) < 1e-6);
  assert.equal(r.methods[1].gemmFlops, 0);
  assert.ok(r.withinLimit);
});

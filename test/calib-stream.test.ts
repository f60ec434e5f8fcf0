/** Calibration one layer at a time (calib/stream.ts) and compress's sequential calibration. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { collectCalibration } from '../src/compress/calib/collect.js';
import { CalibrationStream } from '../src/compress/calib/stream.js';
import type { Calibration, LayerCalib } from '../src/compress/calib/types.js';
import { compress } from '../src/compress/compress.js';
import { restore } from '../src/compress/restore.js';
import { expertsFile } from '../src/compress/format.js';
import { calibrationTokens } from '../src/compress/calib/source.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { loadModel, openModel } from '../src/runtime/load-model.js';
import { Transformer } from '../src/runtime/transformer.js';
import { SHARED } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeFusedCopy, writeTinyModel } from './helpers/tiny-model.js';

const IDS = Int32Array.from({ length: 400 }, (_, i) => (i * 7 + 3) % 64);
const OPTS = { windows: 5, windowSize: 16, seed: 2, batch: 2, maxFullI: 64 };

/** Relative Frobenius distance of two sums. */
function rel(a: Float64Array, b: Float64Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

function assertSameLayer(got: LayerCalib, want: LayerCalib, what: string): void {
  assert.equal(got.tokens, want.tokens, `${what}: tokens`);
  got.experts.forEach((ec, e) => {
    const ref = want.experts[e];
    assert.equal(ec.tokens, ref.tokens, `${what} expert ${e}: tokens`);
    assert.ok(Math.abs(ec.weightSq - ref.weightSq) <= 1e-6 * Math.max(1, ref.weightSq), `${what} expert ${e}: weightSq`);
    assert.ok(rel(ec.xtx, ref.xtx) < 1e-6, `${what} expert ${e}: xtx ${rel(ec.xtx, ref.xtx)}`);
    assert.ok(rel(ec.ataDiag, ref.ataDiag) < 1e-5, `${what} expert ${e}: ataDiag`);
    assert.equal(ec.ata === null, ref.ata === null);
    if (ec.ata) assert.ok(rel(ec.ata, ref.ata!) < 1e-5, `${what} expert ${e}: ata`);
  });
}

/** Every MoE layer through the stream, on the original model's inputs. */
async function streamAll(dir: string): Promise<Map<number, LayerCalib>> {
  const src = openModel(dir);
  const s = CalibrationStream.start(src, IDS, OPTS);
  const out = new Map<number, LayerCalib>();
  for (let l = 0; l < src.config.numLayers; l++) {
    await s.attention(l);
    if (src.config.layers[l].ffn === 'moe') out.set(l, await s.collect(l));
    await s.ffn(l);
  }
  src.checkpoint.close();
  return out;
}

async function inMemory(dir: string): Promise<Calibration> {
  const m = loadModel(dir);
  const c = await collectCalibration(new Transformer(m.config, m.weights, m.banks), IDS, OPTS);
  m.checkpoint.close();
  return c;
}

for (const [name, cfg] of [['mixtral', TINY_CONFIGS.mixtral], ['olmoe', TINY_CONFIGS.olmoe], ['deepseek_v3 (dense first layer, shared expert)', { ...TINY_CONFIGS.deepseek_v3, num_hidden_layers: 3 }]] as const) {
  test(`CalibrationStream (${name}): one layer at a time equals collection over the loaded model`, async () => {
    const { dir } = writeTinyModel(cfg, { seed: 6 });
    try {
      const want = await inMemory(dir);
      const got = await streamAll(dir);
      assert.deepEqual([...got.keys()], [...want.layers.keys()]);
      assert.ok(got.size >= 2);
      for (const [l, lc] of got) assertSameLayer(lc, want.layers.get(l)!, `layer ${l}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('CalibrationStream: the fused expert layout gives the same statistics', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 7, dtype: 'BF16' });
  const fused = writeFusedCopy(dir);
  try {
    const a = await streamAll(dir);
    const b = await streamAll(fused);
    for (const [l, lc] of a) assertSameLayer(b.get(l)!, lc, `layer ${l}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(fused, { recursive: true, force: true });
  }
});

test('CalibrationStream: misuse out of order is refused', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 8 });
  const src = openModel(dir);
  try {
    const s = CalibrationStream.start(src, IDS, OPTS);
    await assert.rejects(s.attention(1), /attention\(1\)/);
    await assert.rejects(s.collect(0), /needs attention\(0\) first/);
    await s.attention(0);
    await s.ffn(0);
    await assert.rejects(s.ffn(0), /needs attention\(0\) first/);
  } finally {
    src.checkpoint.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');
const VALID = join(SHARED, 'corpus/valid.txt');
const skip = existsSync(TOKENIZER) && existsSync(VALID) ? false : 'needs ../shared/corpus';

test('compress --calib-mode sequential: layer l is calibrated on the compressed layers before it; resume is identical', { skip }, async () => {
  const { dir } = writeTinyModel({ ...TINY_CONFIGS.mixtral, num_hidden_layers: 3, vocab_size: 4096, max_position_embeddings: 256 }, { dtype: 'BF16', seed: 2 });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const text = join(dir, 'calib.txt');
  writeFileSync(text, readFileSync(VALID, 'utf8').slice(0, 20000));
  const work = mkdtempSync(join(os.tmpdir(), 'moepress-calseq-'));
  const calib = { file: text, windows: 3, seed: 1 };
  const run = (out: string, calibMode: 'sequential' | 'original', extra = {}) => compress({ model: dir, out: join(work, out), method: 'quant', budget: 0.25, calib, calibMode, ...extra });
  try {
    const seq = await run('seq', 'sequential');
    assert.deepEqual(seq.options.calibration, { source: text, windows: 3, windowSize: 256, seed: 1, mode: 'sequential' });
    const orig = await run('orig', 'original');
    assert.equal((orig.options.calibration as { mode: string }).mode, 'original');
    const a = Checkpoint.open(join(work, 'seq'));
    const b = Checkpoint.open(join(work, 'orig'));
    // layer 0 sees the same inputs in both modes; later layers see the compressed layers' outputs
    const layerTensors = (ck: Checkpoint, l: number) => ck.names().filter((n) => ck.info(n).file.endsWith(expertsFile(l))).sort();
    for (const n of layerTensors(a, 0)) assert.deepEqual(a.read(n).data, b.read(n).data, n);
    const later = [1, 2].flatMap((l) => layerTensors(a, l));
    assert.ok(later.length > 0);
    assert.ok(later.some((n) => !Buffer.from(a.read(n).data).equals(Buffer.from(b.read(n).data))), 'sequential calibration changes the later layers');
    a.close();
    b.close();

    // layer 1's statistics in sequential mode are those of the model whose layer 0 is compressed
    await compress({ model: dir, out: join(work, 'l0'), method: 'quant', budget: 0.25, calib, calibMode: 'sequential', layers: [0] });
    const ids = calibrationTokens(dir, calib);
    // the reference runs the restored (dense, float32) checkpoint of that model in memory
    await restore(join(work, 'l0'), join(work, 'l0-dense'), { dtype: 'F32' });
    const m = loadModel(join(work, 'l0-dense'));
    const want = await collectCalibration(new Transformer(m.config, m.weights, m.banks), await ids, { windows: 3, windowSize: 256, seed: 1 });
    m.checkpoint.close();
    const src = openModel(dir);
    const s = CalibrationStream.start(src, await ids, { windows: 3, windowSize: 256, seed: 1 });
    await s.attention(0);
    await s.ffn(0, loadModel(join(work, 'l0')).banks[0]!);
    await s.attention(1);
    assertSameLayer(await s.collect(1), want.layers.get(1)!, 'layer 1 after compressed layer 0');
    src.checkpoint.close();

    // killed after the first layer, resumed: the same bytes
    const out = join(work, 'res');
    await assert.rejects(run('res', 'sequential', { onProgress: (e: { task: string; done: number }) => { if (e.task === 'compress' && e.done === 1) throw new Error('killed'); } }), /killed/);
    await assert.rejects(run('res', 'original', { resume: true }), /different options/);
    await run('res', 'sequential', { resume: true });
    const r = Checkpoint.open(out);
    const s2 = Checkpoint.open(join(work, 'seq'));
    for (const n of s2.names()) assert.deepEqual(r.read(n).data, s2.read(n).data, n);
    r.close();
    s2.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
});

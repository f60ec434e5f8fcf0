/**
 * auto: the allocation against exhaustive search, bytes under the budget on disk, the choices in
 * the manifest and `inspect`, lower proxy error than every single method, the shared base chosen
 * for upcycled-style experts, calibrated weighting (unreached experts get the fewest bits, GPTQ
 * encodes), and every family's tiny model running through it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { allocate, allocateExact, lowerHull, type AllocOption } from '../src/compress/auto/allocate.js';
import { layerChoices, modelChoices } from '../src/compress/auto/choices.js';
import type { LayerCalib } from '../src/compress/calib/types.js';
import { compress } from '../src/compress/compress.js';
import { memorySource, readLayerExperts } from '../src/compress/experts-io.js';
import { readManifest } from '../src/compress/format.js';
import { LayerStore, referenceBytes, type MethodOptions } from '../src/compress/method.js';
import { auto } from '../src/compress/methods/auto.js';
import { METHODS } from '../src/compress/methods/index.js';
import { MATRICES } from '../src/compress/parts.js';
import { restore } from '../src/compress/restore.js';
import { MoepressError } from '../src/io/errors.js';
import { loadModel, openModel } from '../src/runtime/load-model.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { Transformer } from '../src/runtime/transformer.js';
import { Rng } from '../src/tensor/random.js';
import { upcycledExperts } from './helpers/expert-shapes.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';
import { storedOnDisk } from './helpers/stored-bytes.js';

const tmp = () => mkdtempSync(join(os.tmpdir(), 'moepress-auto-'));

test('lowerHull drops dominated and non-convex options', () => {
  const o: AllocOption[] = [
    { bytes: 0, error: 10 }, // 0 hull
    { bytes: 1, error: 9.5 }, // 1 above the segment 0–2
    { bytes: 2, error: 4 }, // 2 hull
    { bytes: 3, error: 5 }, // 3 dominated by 2
    { bytes: 4, error: 1 }, // 4 hull
    { bytes: 8, error: 0.5 }, // 5 hull (slope 0.125 < 1.5)
  ];
  assert.deepEqual(lowerHull(o), [0, 2, 4, 5]);
});

test('allocate: the optimum of a hand example (where picking the best ratio first is wrong)', () => {
  // cap 10. A: 4 bytes buys 8 (ratio 2) — B: 6 bytes buys 9 (1.5), 10 bytes buys 12 (1.2).
  const items: AllocOption[][] = [
    [{ bytes: 0, error: 10 }, { bytes: 4, error: 2 }],
    [{ bytes: 0, error: 12 }, { bytes: 6, error: 3 }, { bytes: 10, error: 0 }],
  ];
  const a = allocate(items, 10);
  assert.deepEqual(a.choice, [1, 1]); // 4 + 6 bytes, error 2 + 3 = 5 (vs B alone at 10 bytes: 10 + 0)
  assert.equal(a.error, 5);
  assert.equal(a.bytes, 10);
  assert.deepEqual(allocateExact(items, 10), a);
  // with 9 bytes only one upgrade fits: B's 6-byte one drops 9, A's (steeper, taken first) drops 8
  assert.deepEqual(allocate(items, 9).choice, [0, 1]);
  assert.deepEqual(allocateExact(items, 9).choice, [0, 1]);
  assert.throws(() => allocate([[{ bytes: 5, error: 1 }]], 4), MoepressError);
});

test('allocate equals exhaustive search on convex unit-step items, and never exceeds the cap', () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 40; trial++) {
    const items: AllocOption[][] = Array.from({ length: 4 }, () => {
      // convex: decreasing gains per unit byte
      const gains = Array.from({ length: 4 }, () => rng.next() * 5).sort((a, b) => b - a);
      let err = 30;
      return [{ bytes: 0, error: err }, ...gains.map((g, k) => ({ bytes: k + 1, error: (err -= g) }))];
    });
    const cap = 1 + rng.int(15);
    const a = allocate(items, cap);
    const x = allocateExact(items, cap);
    assert.ok(a.bytes <= cap);
    assert.ok(Math.abs(a.error - x.error) < 1e-9 * Math.max(1, x.error), `trial ${trial}: ${a.error} vs optimum ${x.error}`);
  }
  // arbitrary (non-convex) items: still within the cap, and never better than the optimum
  for (let trial = 0; trial < 40; trial++) {
    const items: AllocOption[][] = Array.from({ length: 3 }, () => Array.from({ length: 4 }, () => ({ bytes: rng.int(6), error: rng.next() * 10 })));
    const cap = 8 + rng.int(8);
    const a = allocate(items, cap);
    const x = allocateExact(items, cap);
    assert.ok(a.bytes <= cap && a.error >= x.error - 1e-12);
  }
});

/** Σ over expert matrices of ‖W − Ŵ‖² / ‖W‖²: the data-free proxy auto minimises. */
async function proxyError(dir: string, out: string, method: string, budget: number): Promise<number> {
  await compress({ model: dir, out, method, budget, seed: 3, overwrite: true });
  const back = `${out}-r`;
  await restore(out, back, { dtype: 'F32' });
  const a = openModel(dir);
  const b = openModel(back);
  let total = 0;
  a.config.layers.forEach((spec, l) => {
    if (spec.ffn !== 'moe') return;
    const wa = readLayerExperts(a, l);
    const wb = readLayerExperts(b, l);
    const n = wa.I * wa.H;
    for (const m of MATRICES) {
      for (let e = 0; e < wa.E; e++) {
        let num = 0;
        let den = 0;
        for (let i = e * n; i < (e + 1) * n; i++) {
          num += (wa[m][i] - wb[m][i]) ** 2;
          den += wa[m][i] ** 2;
        }
        total += num / den;
      }
    }
  });
  a.checkpoint.close();
  b.checkpoint.close();
  rmSync(back, { recursive: true, force: true });
  return total;
}

test('auto: bytes on disk within the budget, choices in the manifest and inspect, proxy error <= every single method', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'BF16' });
  const root = tmp();
  try {
    for (const budget of [0.5, 0.25, 0.15]) {
      const out = join(root, `auto-${budget}`);
      const m = await compress({ model: dir, out, method: 'auto', budget, seed: 3 });
      const onDisk = storedOnDisk(out);
      assert.equal(onDisk, m.bytes.stored);
      assert.ok(m.bytes.stored <= budget * m.bytes.reference, `budget ${budget}: stored ${m.bytes.stored} > ${budget * m.bytes.reference}`);
      assert.ok(m.bytes.stored > 0.9 * budget * m.bytes.reference, `budget ${budget}: spends its bytes`);
      const man = readManifest(out);
      for (const r of man.layers) {
        assert.equal(r.choices.proxy, 'data-free-relative-frobenius');
        const plan = r.choices.plan as string[][];
        assert.equal(plan.length, 4);
        // the recorded plan is what the parts say
        assert.deepEqual(layerChoices(r).plan, plan);
      }
      const c = modelChoices(man);
      assert.equal(c.layers.length, 2);
      assert.ok(c.layers.every((l) => Object.values(l.matrices.gate).reduce((s, v) => s + v, 0) === 4));
    }
    const budget = 0.25;
    const mine = await proxyError(dir, join(root, 'p-auto'), 'auto', budget);
    for (const method of METHODS) {
      if (method.name === 'auto') continue;
      let theirs: number;
      try {
        theirs = await proxyError(dir, join(root, `p-${method.name}`), method.name, budget);
      } catch (e) {
        if (e instanceof MoepressError) continue; // the method refuses this budget
        throw e;
      }
      assert.ok(mine <= theirs * (1 + 1e-9), `auto ${mine} vs ${method.name} ${theirs}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
});

test('auto stores a shared base for upcycled-style experts and not for unrelated ones', async () => {
  const up = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'F32', edit: upcycledExperts(0.01) });
  const plain = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'F32' });
  const root = tmp();
  try {
    const a = await compress({ model: up.dir, out: join(root, 'up'), method: 'auto', budget: 0.3 });
    for (const r of a.layers) {
      assert.match(r.choices.base as string, /^mean/, 'a shared base (bf16 or quantized)');
      assert.ok((r.choices.spread as number) < 0.01);
      assert.ok((r.choices.plan as string[][]).flat().every((l) => l.startsWith('base')));
    }
    const q = await compress({ model: up.dir, out: join(root, 'q'), method: 'quant', budget: 0.3 });
    for (let i = 0; i < a.layers.length; i++) {
      const ea = (a.layers[i].choices.relError as { all: number }).all;
      const eq = (q.layers[i].choices.relError as { all: number }).all;
      assert.ok(ea < eq / 2, `layer ${i}: auto ${ea} vs quant ${eq}`);
    }
    const b = await compress({ model: plain.dir, out: join(root, 'plain'), method: 'auto', budget: 0.3 });
    for (const r of b.layers) assert.equal(r.choices.base, null);
    // below 1/E = 0.25 a bf16 base does not fit: the base is quantized, and still beats quant
    const lowOut = join(root, 'low');
    const low = await compress({ model: up.dir, out: lowOut, method: 'auto', budget: 0.15 });
    const ql = await compress({ model: up.dir, out: join(root, 'ql'), method: 'quant', budget: 0.15 });
    for (let i = 0; i < low.layers.length; i++) {
      const r = low.layers[i];
      assert.match(r.choices.base as string, /^mean:q[348]s-g64$/);
      assert.ok(r.storedBytes <= 0.15 * r.referenceBytes);
      const ea = (r.choices.relError as { all: number }).all;
      const eq = (ql.layers[i].choices.relError as { all: number }).all;
      assert.ok(ea < eq / 2, `layer ${i}: auto ${ea} vs quant ${eq}`);
    }
    // the runtime runs the quantized base as the restored checkpoint does
    const dense = join(root, 'low-dense');
    await restore(lowOut, dense, { dtype: 'F32' });
    const ids = Int32Array.from({ length: 64 }, (_, i) => (i * 5 + 1) % 64);
    const run = async (d: string) => {
      const m = loadModel(d);
      const r = await perplexity(new Transformer(m.config, m.weights, m.banks), ids, { windows: 2, windowSize: 32 });
      m.checkpoint.close();
      return r.perplexity;
    };
    const [pc, pd] = [await run(lowOut), await run(dense)];
    assert.ok(Math.abs(pc - pd) <= 1e-4 * pd, `compressed ${pc} vs restored ${pd}`);
  } finally {
    for (const d of [up.dir, plain.dir, root]) rmSync(d, { recursive: true, force: true });
  }
});

/** A layer's experts and a synthetic calibration of them (expert `unreached` never routed). */
function syntheticLayer(E: number, I: number, H: number, unreached: number) {
  const rng = new Rng(21);
  const n = I * H;
  const x = { layer: 0, E, I, H, gate: rng.normals(E * n, 0.2), up: rng.normals(E * n, 0.2), down: rng.normals(E * n, 0.2) };
  const experts = Array.from({ length: E }, (_, e) => {
    const tokens = e === unreached ? 0 : 50 + 10 * e;
    const xtx = new Float64Array(H * H);
    // Σ x xᵀ of `tokens` random inputs with uneven column scales
    const v = new Float64Array(H);
    for (let t = 0; t < tokens; t++) {
      for (let j = 0; j < H; j++) v[j] = rng.normal() * (1 + (j % 4));
      for (let a = 0; a < H; a++) for (let b = 0; b < H; b++) xtx[a * H + b] += v[a] * v[b];
    }
    const ataDiag = Float64Array.from({ length: I }, () => (tokens ? tokens * (0.5 + rng.next()) : 0));
    return { tokens, weightSq: tokens * 0.3, xtx, ata: null, ataDiag };
  });
  const calib: LayerCalib = { layer: 0, E, I, H, tokens: experts.reduce((s, c) => s + c.tokens, 0) / 2, experts };
  return { x, calib };
}

function opts(budget: number, calib: LayerCalib | null): MethodOptions {
  return { budget, seed: 1, base: 'mean', denseBase: null, alignIters: 0, calib } as MethodOptions;
}

test('auto with calibration: Hessian-weighted proxy, GPTQ codes, an unreached expert gets the fewest bits', async () => {
  const E = 4;
  const I = 32;
  const H = 64;
  const { x, calib } = syntheticLayer(E, I, H, 2);
  const store = new LayerStore(0);
  const budget = 0.2;
  const rec = await auto.compressLayer(memorySource(x), store, opts(budget, calib));
  assert.ok(rec.storedBytes <= budget * referenceBytes(E, I, H));
  assert.equal(rec.choices.proxy, 'calibrated-diag-hessian');
  assert.deepEqual(rec.choices.unreachedExperts, [2]);
  assert.ok((rec.choices.gptqMatrices as number) > 0, 'GPTQ used for calibrated experts');
  const bits = (e: number) => MATRICES.reduce((s, m) => s + rec.experts[e][m].reduce((b, p) => b + (p.kind === 'quant' ? store.get(p.ref).data.byteLength : 0), 0), 0);
  for (let e = 0; e < E; e++) if (e !== 2) assert.ok(bits(2) < bits(e), `unreached expert 2 (${bits(2)} B) vs expert ${e} (${bits(e)} B)`);
  // a calibration of another shape is refused, naming both
  const wrong = { ...calib, H: H + 1 };
  await assert.rejects(auto.compressLayer(memorySource(x), new LayerStore(0), opts(budget, wrong)), /calibration for layer 0/);
});

for (const family of ['olmoe', 'qwen2_moe', 'qwen3_moe', 'deepseek_v3', 'deepseek_v2', 'phimoe', 'gpt_oss']) {
  test(`auto runs on a tiny ${family}: within the budget, and the compressed model runs`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS[family], { seed: 4, dtype: 'BF16' });
    const out = join(tmp(), 'c');
    try {
      const m = await compress({ model: dir, out, method: 'auto', budget: 0.25 });
      assert.ok(m.bytes.stored <= 0.25 * m.bytes.reference);
      const lm = loadModel(out);
      const logits = await new Transformer(lm.config, lm.weights, lm.banks).logits([1, 5, 9, 3], 1, 4);
      lm.checkpoint.close();
      assert.ok(logits.every(Number.isFinite));
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('inspect shows the per-layer and per-expert choices of a compressed model (readable and --json)', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.olmoe, { seed: 5, dtype: 'BF16' });
  const out = join(tmp(), 'c');
  try {
    const m = await compress({ model: dir, out, method: 'auto', budget: 0.2 });
    const main = resolve(process.cwd(), 'dist/src/cli/main.js');
    const run = (...a: string[]) => spawnSync(process.execPath, [main, 'inspect', out, ...a], { encoding: 'utf8' });
    const human = run('--plan');
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stdout, /compressed with auto at budget 0\.2/);
    assert.match(human.stdout, /data-free-relative-frobenius/);
    const plan0 = m.layers[0].choices.plan as string[][];
    assert.ok(human.stdout.includes(`layer ${m.layers[0].layer}, per expert:`));
    assert.ok(human.stdout.includes(plan0[0][0]), 'expert 0 gate label shown');
    const js = run('--json');
    assert.equal(js.status, 0, js.stderr);
    const c = JSON.parse(js.stdout).compression;
    assert.equal(c.method, 'auto');
    assert.deepEqual(c.layers[0].plan, plan0);
    assert.equal(c.layers[0].details.proxy, 'data-free-relative-frobenius');
    // The parameters the compressed experts represent are the original's; their bytes are the stored ones.
    const orig = spawnSync(process.execPath, [main, 'inspect', dir, '--json'], { encoding: 'utf8' });
    const o = JSON.parse(orig.stdout);
    const j = JSON.parse(js.stdout);
    assert.equal(j.params.total, o.params.total);
    assert.equal(j.params.routedExperts, o.params.routedExperts);
    assert.equal(j.params.activePerToken, o.params.activePerToken);
    assert.equal(j.bytes.routedExperts, m.bytes.stored);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  }
});

test('auto below the cheapest codec: only a shared base fits, and below that the budget is refused', async () => {
  const E = 32;
  const I = 16;
  const H = 64;
  const rng = new Rng(8);
  const x = { layer: 0, E, I, H, gate: rng.normals(E * I * H, 0.2), up: rng.normals(E * I * H, 0.2), down: rng.normals(E * I * H, 0.2) };
  const budget = 0.05; // 1/E = 0.03125 <= 0.05 < the cheapest codec (1 bit + a scale per 256 values: 0.066)
  const store = new LayerStore(0);
  const rec = await auto.compressLayer(memorySource(x), store, opts(budget, null));
  assert.match(rec.choices.base as string, /^mean/);
  assert.ok(rec.storedBytes <= budget * referenceBytes(E, I, H));
  // the cheapest base: q3s-g64 (3.25 bits) shared by 32 experts, 0.0063 of bf16
  auto.check(E, I, H, 0.0065, { base: 'mean', denseBase: null });
  assert.throws(() => auto.check(E, I, H, 0.006, { base: 'mean', denseBase: null }), MoepressError);
});

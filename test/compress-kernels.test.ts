/**
 * The compressed-expert kernels against their naive twin (densify + naive GEMM), on the parts every
 * method stores, for one token (sparse scatter path) and many (densified path); and the DeRS bases.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { applyParts, applyPartsNaive, prepareParts } from '../src/compress/apply.js';
import { compress } from '../src/compress/compress.js';
import { METHODS } from '../src/compress/methods/index.js';
import { MATRICES, matrixShape } from '../src/compress/parts.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { toFloat32 } from '../src/tensor/convert.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';
import { upcycledExperts } from './helpers/expert-shapes.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const tmp = () => mkdtempSync(join(os.tmpdir(), 'moepress-k-'));

for (const method of METHODS) {
  test(`${method.name}: applyParts matches densify + naive GEMM for 1 and 48 tokens`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 3, dtype: 'BF16' });
    const out = join(tmp(), 'c');
    try {
      const m = await compress({ model: dir, out, method: method.name, budget: 0.5 });
      const ck = Checkpoint.open(out);
      const get = (n: string) => ck.read(n);
      const f32 = (n: string) => toFloat32(ck.read(n));
      const rng = new Rng(1);
      const rec = m.layers[1];
      for (const e of [0, 3]) {
        for (const mat of MATRICES) {
          const [o, i] = matrixShape(mat, 16, 32);
          const parts = prepareParts(rec.experts[e][mat], o, i, get, f32);
          for (const n of [1, 48]) {
            const x = rng.normals(n * i);
            assertClose(await applyParts(parts, x, n, o, i), applyPartsNaive(parts, x, n, o, i), 1e-5, `${method.name} e${e} ${mat} n=${n}`);
          }
        }
      }
      ck.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('--base-from the dense model beats the mean base when expert updates are sparse', async () => {
  // A dense model, and a MoE whose experts are that dense FFN plus a sparse update each (5% of the
  // entries). Deltas from the dense FFN are exactly those sparse updates; deltas from the mean also
  // carry -1/E of every other expert's update, so they are dense. (With iid dense noise the mean is
  // the better centre: its deltas have variance (1 - 1/E)σ².)
  const denseJson = { ...TINY_CONFIGS.mistral, intermediate_size: 16, sliding_window: null };
  const dense = writeTinyModel(denseJson, { seed: 12, dtype: 'F32' });
  const moe = writeTinyModel(TINY_CONFIGS.mixtral, {
    seed: 12,
    dtype: 'F32',
    edit: (w, cfg) => {
      const rng = new Rng(2);
      for (let l = 0; l < cfg.numLayers; l++) {
        for (const m of MATRICES) {
          const d = dense.weights.get(`layers.${l}.mlp.${m}`)!.data;
          const t = w.get(`layers.${l}.moe.experts.${m}`)!.data;
          for (let e = 0; e < cfg.moe!.experts; e++) {
            for (let i = 0; i < d.length; i++) t[e * d.length + i] = d[i] + (rng.next() < 0.05 ? 0.1 * rng.normal() : 0);
          }
        }
      }
    },
  });
  const a = join(tmp(), 'a');
  const b = join(tmp(), 'b');
  try {
    const withDense = await compress({ model: moe.dir, out: a, method: 'ders-magnitude', budget: 0.4, baseFrom: dense.dir });
    const withMean = await compress({ model: moe.dir, out: b, method: 'ders-magnitude', budget: 0.4 });
    const err = (x: typeof withDense) => (x.layers[0].choices.relError as { all: number }).all;
    assert.equal(withDense.layers[0].choices.base, 'dense');
    assert.ok(err(withDense) < err(withMean), `dense base ${err(withDense)} vs mean ${err(withMean)}`);
    await assert.rejects(compress({ model: moe.dir, out: join(tmp(), 'x'), method: 'ders-quant', budget: 0.5, baseFrom: writeTinyModel(TINY_CONFIGS.llama, { seed: 1 }).dir }), /--base-from/);
  } finally {
    for (const d of [dense.dir, moe.dir, a, b]) rmSync(d, { recursive: true, force: true });
  }
});

for (const base of ['median', { expert: 2 }, 'aligned'] as const) {
  test(`ders-quant with --base ${typeof base === 'object' ? 'expert:2' : base} compresses upcycled experts within budget`, async () => {
    const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 2, dtype: 'F32', edit: upcycledExperts(1e-3) });
    const out = join(tmp(), 'c');
    try {
      const m = await compress({ model: dir, out, method: 'ders-quant', budget: 0.5, base });
      assert.ok(m.bytes.stored <= 0.5 * m.bytes.reference);
      assert.ok((m.layers[0].choices.relError as { all: number }).all < 0.01);
      assert.equal((m.layers[0].perms ?? []).length, base === 'aligned' ? 4 : 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  });
}

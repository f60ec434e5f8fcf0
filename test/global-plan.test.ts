/**
 * Model-wide allocation (--allocate global): identical layers get what the per-layer allocation
 * gives them, a layer that gains more per byte gets more bytes, and a compressed model stays
 * within budget × its bf16 expert bytes on disk with each layer's cap in the manifest.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { allocate, type AllocOption } from '../src/compress/auto/allocate.js';
import { compress } from '../src/compress/compress.js';
import { globalPlan } from '../src/compress/global-plan.js';
import { MoepressError } from '../src/io/errors.js';
import { Rng } from '../src/tensor/random.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';
import { storedOnDisk } from './helpers/stored-bytes.js';

/** n items with options at 0, 10, 20, 30 bytes and convex decreasing errors. */
function convexItems(rng: Rng, n: number, gain = 1): AllocOption[][] {
  return Array.from({ length: n }, () => {
    let err = gain * (10 + 10 * rng.next());
    const out: AllocOption[] = [{ bytes: 10, error: err }];
    for (let k = 1; k < 4; k++) {
      err *= 0.2 + 0.3 * rng.next();
      out.push({ bytes: 10 + 10 * k, error: err });
    }
    return out;
  });
}

test('globalPlan: identical layers get the per-layer allocation', () => {
  const rng = new Rng(7);
  const items = convexItems(rng, 12);
  const ref = 12 * 80; // "bf16" bytes of a layer: 80 per item
  for (const budget of [0.25, 0.3, 0.5, 0.4]) {
    const cap = Math.floor(budget * ref);
    const one = allocate(items, cap);
    const plan = globalPlan([0, 1, 2].map((layer) => ({ layer, referenceBytes: ref, items, energy: 1 })), budget);
    assert.equal(plan.capBytes, Math.floor(budget * (3 * ref)));
    const caps = Object.values(plan.layerCaps);
    assert.ok(caps.reduce((s, c) => s + c, 0) <= plan.capBytes);
    // the per-layer solution is feasible globally, so the global one is never worse
    assert.ok(plan.error <= 3 * one.error * (1 + 1e-12), `budget ${budget}: ${plan.error} > 3 × ${one.error}`);
    if (cap % 10 === 0) {
      // unit steps, caps on a step: the same bytes in every layer and the same error
      assert.deepEqual(caps, [one.bytes, one.bytes, one.bytes]);
      assert.ok(Math.abs(plan.error - 3 * one.error) <= 1e-9 * plan.error);
    }
  }
});

test('globalPlan: the layer that loses more per byte gets more bytes, within the model cap', () => {
  const rng = new Rng(3);
  const quiet = convexItems(rng, 8, 1);
  const loud = convexItems(rng, 8, 100);
  const ref = 8 * 80;
  const plan = globalPlan([{ layer: 0, referenceBytes: ref, items: quiet, energy: 1 }, { layer: 2, referenceBytes: ref, items: loud, energy: 1 }], 0.3, 'absolute');
  assert.ok(plan.layerCaps[2] > plan.layerCaps[0], `caps ${JSON.stringify(plan.layerCaps)}`);
  assert.ok(plan.layerCaps[2] > Math.floor(0.3 * ref));
  assert.ok(plan.layerCaps[0] + plan.layerCaps[2] <= plan.capBytes);
  const perLayer = allocate(quiet, Math.floor(0.3 * ref)).error + allocate(loud, Math.floor(0.3 * ref)).error;
  assert.ok(plan.error < perLayer, `global ${plan.error} vs per-layer ${perLayer}`);
  // 'relative': the same items scaled by 100 with 100× the energy count the same as unscaled ones
  const scaled = quiet.map((o) => o.map((c) => ({ bytes: c.bytes, error: 100 * c.error })));
  const rel = globalPlan([{ layer: 0, referenceBytes: ref, items: quiet, energy: 1 }, { layer: 1, referenceBytes: ref, items: scaled, energy: 100 }], 0.3, 'relative');
  assert.equal(rel.layerCaps[0], rel.layerCaps[1]);
  const abs = globalPlan([{ layer: 0, referenceBytes: ref, items: quiet, energy: 1 }, { layer: 1, referenceBytes: ref, items: scaled, energy: 100 }], 0.3, 'absolute');
  assert.ok(abs.layerCaps[1] > abs.layerCaps[0], `caps ${JSON.stringify(abs.layerCaps)}`);
});

test('compress --allocate global: bytes on disk within the model budget, each layer within its recorded cap', async () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 5, dtype: 'BF16' });
  const root = mkdtempSync(join(os.tmpdir(), 'moepress-global-'));
  try {
    for (const budget of [0.15, 0.25]) {
      const out = join(root, `g-${budget}`);
      const m = await compress({ model: dir, out, method: 'auto', budget, seed: 1, allocation: 'global' });
      assert.equal(m.options.allocation, 'global');
      const onDisk = storedOnDisk(out);
      assert.equal(onDisk, m.bytes.stored);
      assert.ok(m.bytes.stored <= budget * m.bytes.reference, `budget ${budget}: stored ${m.bytes.stored} > ${budget * m.bytes.reference}`);
      assert.ok(m.bytes.stored > 0.9 * budget * m.bytes.reference, `budget ${budget}: spends its bytes`);
      let caps = 0;
      for (const r of m.layers) {
        const cap = r.choices.capBytes as number;
        assert.ok(Number.isInteger(cap) && r.storedBytes <= cap, `layer ${r.layer}: ${r.storedBytes} > cap ${cap}`);
        caps += cap;
      }
      assert.ok(caps <= Math.floor(budget * m.bytes.reference));
      // the per-layer default records the uniform cap
      const u = await compress({ model: dir, out: join(root, `u-${budget}`), method: 'auto', budget, seed: 1 });
      assert.equal(u.options.allocation, 'layer');
      for (const r of u.layers) assert.equal(r.choices.capBytes, Math.floor(budget * r.referenceBytes));
    }
    await assert.rejects(compress({ model: dir, out: join(root, 'q'), method: 'quant', budget: 0.25, allocation: 'global' }), MoepressError);
    // killed after the first layer: --resume keeps the stored plan and ends with the same model
    const whole = await compress({ model: dir, out: join(root, 'whole'), method: 'auto', budget: 0.2, seed: 1, allocation: 'global' });
    const out = join(root, 'killed');
    const stop = (p: { task: string; done: number }) => {
      if (p.task === 'compress' && p.done === 1) throw new Error('killed');
    };
    await assert.rejects(compress({ model: dir, out, method: 'auto', budget: 0.2, seed: 1, allocation: 'global', onProgress: stop }), /killed/);
    assert.ok(existsSync(join(`${out}.partial`, 'plan.json')));
    await assert.rejects(compress({ model: dir, out, method: 'auto', budget: 0.2, seed: 1, allocation: 'layer', resume: true }), MoepressError);
    const resumed = await compress({ model: dir, out, method: 'auto', budget: 0.2, seed: 1, allocation: 'global', resume: true });
    assert.deepEqual(resumed.layers.map((r) => [r.choices.capBytes, r.storedBytes, r.choices.plan]), whole.layers.map((r) => [r.choices.capBytes, r.storedBytes, r.choices.plan]));
    assert.ok(!existsSync(join(out, 'plan.json')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RopeConfig } from '../src/models/canonical.js';
import { Rng } from '../src/tensor/random.js';
import { applyRope, ropeTables } from '../src/tensor/rope.js';
import { assertClose } from './helpers/assert-close.js';

const rope = (over: Partial<RopeConfig> = {}): RopeConfig => ({ theta: 10000, dim: 8, style: 'half', scaling: { type: 'default' }, ...over });

test('half-style rope matches the rotate_half formula', () => {
  const rng = new Rng(1);
  const x = rng.normals(2 * 8);
  const y = x.slice();
  applyRope(y, 1, 2, 8, 0, [5], ropeTables(rope(), 64));
  for (let h = 0; h < 2; h++) {
    for (let i = 0; i < 4; i++) {
      const f = 5 / Math.pow(10000, (2 * i) / 8);
      const a = x[h * 8 + i];
      const b = x[h * 8 + i + 4];
      assert.ok(Math.abs(y[h * 8 + i] - (a * Math.cos(f) - b * Math.sin(f))) < 1e-5);
      assert.ok(Math.abs(y[h * 8 + i + 4] - (b * Math.cos(f) + a * Math.sin(f))) < 1e-5);
    }
  }
});

test('rope preserves norms and makes q·k depend only on relative position', () => {
  const rng = new Rng(2);
  const q = rng.normals(8);
  const k = rng.normals(8);
  const dot = (p: number, r: number, style: 'half' | 'interleaved') => {
    const tab = ropeTables(rope({ style }), 64);
    const a = q.slice();
    const b = k.slice();
    applyRope(a, 1, 1, 8, 0, [p], tab);
    applyRope(b, 1, 1, 8, 0, [r], tab);
    return a.reduce((s, x, i) => s + x * b[i], 0);
  };
  for (const style of ['half', 'interleaved'] as const) {
    assert.ok(Math.abs(dot(7, 3, style) - dot(14, 10, style)) < 1e-4, style);
    assert.ok(Math.abs(dot(7, 3, style) - dot(3, 7, style)) > 1e-4, `${style}: relative direction matters`);
  }
});

test('partial rotary leaves the dims outside the rotated range unchanged', () => {
  const rng = new Rng(4);
  const x = rng.normals(12);
  const y = x.slice();
  applyRope(y, 1, 1, 12, 4, [9], ropeTables(rope({ dim: 8 }), 64));
  assert.deepEqual([...y.subarray(0, 4)], [...x.subarray(0, 4)]);
  assert.ok(y.subarray(4).some((v, i) => Math.abs(v - x[4 + i]) > 1e-3));
});

test('linear scaling equals default rope at position / factor', () => {
  const rng = new Rng(5);
  const x = rng.normals(8);
  const a = x.slice();
  const b = x.slice();
  applyRope(a, 1, 1, 8, 0, [12], ropeTables(rope({ scaling: { type: 'linear', factor: 4 } }), 64));
  applyRope(b, 1, 1, 8, 0, [3], ropeTables(rope(), 64));
  assertClose(a, b, 1e-6);
});

test('yarn keeps high frequencies, interpolates low ones, and scales by its attention factor', () => {
  const tab = ropeTables(rope({ dim: 64, scaling: { type: 'yarn', factor: 4, originalMaxPositions: 4096, betaFast: 32, betaSlow: 1, mscale: 0, mscaleAllDim: 0, truncate: true } }), 16384);
  const plain = ropeTables(rope({ dim: 64 }), 16384);
  assert.ok(Math.abs(tab.invFreq[0] - plain.invFreq[0]) < 1e-12, 'highest frequency kept');
  assert.ok(Math.abs(tab.invFreq[31] - plain.invFreq[31] / 4) < 1e-12, 'lowest frequency interpolated');
  assert.ok(Math.abs(tab.attentionFactor - (0.1 * Math.log(4) + 1)) < 1e-12);
});

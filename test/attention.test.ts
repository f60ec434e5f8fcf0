import assert from 'node:assert/strict';
import { test } from 'node:test';
import { attend, type AttentionParams } from '../src/tensor/attention.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';

/** Brute force in float64: full score matrix, explicit mask, softmax with optional sink column. */
function reference(q: Float32Array, k: Float32Array, v: Float32Array, Tq: number, Tk: number, p: AttentionParams): Float64Array {
  const out = new Float64Array(Tq * p.heads * p.dv);
  const g = p.heads / p.kvHeads;
  for (let t = 0; t < Tq; t++) {
    const pos = p.qPos0 + t;
    for (let h = 0; h < p.heads; h++) {
      const kh = Math.floor(h / g);
      const s: number[] = [];
      for (let j = 0; j < Tk; j++) {
        const visible = j <= pos && (p.window === null || pos - j < p.window);
        let dot = 0;
        for (let d = 0; d < p.dk; d++) dot += q[(t * p.heads + h) * p.dk + d] * k[(j * p.kvHeads + kh) * p.dk + d];
        s.push(visible ? dot * p.scale : -Infinity);
      }
      const all = p.sinks ? [...s, p.sinks[h]] : s;
      const m = Math.max(...all);
      const z = all.reduce((a, x) => a + Math.exp(x - m), 0);
      for (let d = 0; d < p.dv; d++) {
        let acc = 0;
        for (let j = 0; j < Tk; j++) acc += (Math.exp(s[j] - m) / z) * v[(j * p.kvHeads + kh) * p.dv + d];
        out[(t * p.heads + h) * p.dv + d] = acc;
      }
    }
  }
  return out;
}

const cases: [string, Partial<AttentionParams> & { Tq: number; Tk: number }][] = [
  ['MHA, full causal', { heads: 2, kvHeads: 2, dk: 8, dv: 8, Tq: 9, Tk: 9 }],
  ['GQA 4/2', { heads: 4, kvHeads: 2, dk: 16, dv: 16, Tq: 17, Tk: 17 }],
  ['GQA 6/1 with dk != dv (MLA)', { heads: 6, kvHeads: 1, dk: 12, dv: 5, Tq: 7, Tk: 7 }],
  ['sliding window 3', { heads: 2, kvHeads: 1, dk: 4, dv: 4, Tq: 11, Tk: 11, window: 3 }],
  ['decode step over a cache', { heads: 4, kvHeads: 2, dk: 8, dv: 8, Tq: 1, Tk: 13, qPos0: 12 }],
  ['attention sinks', { heads: 3, kvHeads: 3, dk: 4, dv: 4, Tq: 6, Tk: 6, sinks: new Float32Array([0.5, -1, 2]) }],
];

for (const [name, c] of cases) {
  test(`attention matches brute force: ${name}`, () => {
    const rng = new Rng(7);
    const p: AttentionParams = { heads: c.heads!, kvHeads: c.kvHeads!, dk: c.dk!, dv: c.dv!, scale: 1 / Math.sqrt(c.dk!), qPos0: c.qPos0 ?? 0, window: c.window ?? null, sinks: c.sinks ?? null };
    const q = rng.normals(c.Tq * p.heads * p.dk);
    const k = rng.normals(c.Tk * p.kvHeads * p.dk);
    const v = rng.normals(c.Tk * p.kvHeads * p.dv);
    assertClose(attend(q, k, v, c.Tq, p), reference(q, k, v, c.Tq, c.Tk, p), 1e-6, name);
  });
}

test('the first query attends only to itself', () => {
  const rng = new Rng(3);
  const p: AttentionParams = { heads: 1, kvHeads: 1, dk: 4, dv: 4, scale: 0.5, qPos0: 0, window: null, sinks: null };
  const v = rng.normals(3 * 4);
  const out = attend(rng.normals(12), rng.normals(12), v, 3, p);
  assert.deepEqual([...out.subarray(0, 4)], [...v.subarray(0, 4)]);
});

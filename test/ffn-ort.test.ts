/** swigluFfn (one ORT graph) and its TS path against the float64 twin swigluFfnNaive (STYLE rule 3). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { swigluFfn, swigluFfnNaive, swigluFfnOrt, type FfnBiases } from '../src/tensor/ffn-ort.js';
import { backendName } from '../src/tensor/gemm.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';

const ort = backendName() === 'ort';
const noOrt = !ort && 'onnxruntime-node unavailable';

/** Weights scaled like a trained layer (1/sqrt(fan-in)) so activations stay O(1). */
function problem(n: number, H: number, F: number, seed: number) {
  const rng = new Rng(seed);
  return {
    x: rng.normals(n * H),
    gate: rng.normals(F * H, 1 / Math.sqrt(H)),
    up: rng.normals(F * H, 1 / Math.sqrt(H)),
    down: rng.normals(H * F, 1 / Math.sqrt(F)),
  };
}

const SHAPES: [number, number, number][] = [
  // [n, H, F]
  [1, 256, 512], // one token of the fixtures' expert shape
  [3, 33, 17], // odd sizes, under the TS threshold for swigluFfn
  [1, 1, 1],
  [7, 64, 48],
  [40, 128, 96],
  [256, 256, 512], // an expert's share of an eval batch
];

for (const [n, H, F] of SHAPES) {
  test(`swigluFfnOrt matches the naive twin: n=${n} H=${H} F=${F}`, { skip: noOrt }, async () => {
    const { x, gate, up, down } = problem(n, H, F, n + H + F);
    assertClose(await swigluFfnOrt(x, gate, up, down, n, H, F), swigluFfnNaive(x, gate, up, down, n, H, F), 1e-5);
  });
  test(`swigluFfn (dispatching) matches the naive twin: n=${n} H=${H} F=${F}`, async () => {
    const { x, gate, up, down } = problem(n, H, F, 3 * n + F);
    assertClose(await swigluFfn(x, gate, up, down, n, H, F), swigluFfnNaive(x, gate, up, down, n, H, F), 1e-5);
  });
}

test('biases: all three, and only some (the missing ones count as zero)', async () => {
  const [n, H, F] = [5, 33, 17];
  const { x, gate, up, down } = problem(n, H, F, 4);
  const rng = new Rng(8);
  const all: FfnBiases = { gate: rng.normals(F), up: rng.normals(F), down: rng.normals(H) };
  for (const b of [all, { up: all.up }, { down: all.down }]) {
    const want = swigluFfnNaive(x, gate, up, down, n, H, F, b);
    assertClose(await swigluFfn(x, gate, up, down, n, H, F, b), want, 1e-5, 'dispatching');
    if (ort) assertClose(await swigluFfnOrt(x, gate, up, down, n, H, F, b), want, 1e-5, 'ort');
  }
  // The biases must matter, or the test above proves nothing about them.
  const plain = swigluFfnNaive(x, gate, up, down, n, H, F);
  assert.ok(Math.abs(plain[0] - swigluFfnNaive(x, gate, up, down, n, H, F, all)[0]) > 1e-3);
});

test('experts sliced out of stacked [E, F, H] tensors (byteOffset != 0) reach ORT intact', { skip: noOrt }, async () => {
  const [E, n, H, F] = [4, 6, 33, 17];
  const rng = new Rng(12);
  const gates = rng.normals(E * F * H, 0.2), ups = rng.normals(E * F * H, 0.2), downs = rng.normals(E * H * F, 0.2);
  const gateB = rng.normals(E * F), downB = rng.normals(E * H);
  const x = rng.normals(n * H);
  const outs: Float32Array[] = [];
  for (let e = 0; e < E; e++) {
    const m = F * H;
    const view = (a: Float32Array) => a.subarray(e * m, (e + 1) * m);
    const b: FfnBiases = { gate: gateB.subarray(e * F, (e + 1) * F), down: downB.subarray(e * H, (e + 1) * H) };
    const got = await swigluFfnOrt(x, view(gates), view(ups), view(downs), n, H, F, b);
    // The reference gets fresh copies, so it cannot share a byteOffset mistake with ORT.
    const copy = (a: Float32Array) => a.slice(e * m, (e + 1) * m);
    assertClose(got, swigluFfnNaive(x, copy(gates), copy(ups), copy(downs), n, H, F, { gate: b.gate!.slice(), down: b.down!.slice() }), 1e-5, `expert ${e}`);
    outs.push(got);
  }
  // Different experts give different outputs (a view ignoring its offset would repeat expert 0).
  assert.ok(Math.abs(outs[1][0] - outs[0][0]) > 1e-4);
  // An x view at an offset too.
  const big = rng.normals(n * H + 5);
  big.set(x, 5);
  assertClose(await swigluFfnOrt(big.subarray(5), gates.subarray(0, F * H), ups.subarray(0, F * H), downs.subarray(0, F * H), n, H, F), swigluFfnNaive(x, gates.slice(0, F * H), ups.slice(0, F * H), downs.slice(0, F * H), n, H, F), 1e-5, 'x view');
});

test('swigluFfn rejects mismatched shapes with the shape in the message', async () => {
  const { x, gate, up, down } = problem(2, 8, 4, 1);
  await assert.rejects(swigluFfn(x, gate, up.subarray(1), down, 2, 8, 4), /up \[F=4, H=8\] needs 32 values, got 31/);
  assert.throws(() => swigluFfnNaive(x, gate, up, down, 2, 8, 4, { down: new Float32Array(4) }), /down bias \[H=8\]/);
});

test('swigluFfn of zero tokens is empty', async () => {
  const { gate, up, down } = problem(0, 8, 4, 1);
  assert.equal((await swigluFfnOrt(new Float32Array(0), gate, up, down, 0, 8, 4)).length, 0);
});

/**
 * Calibration for the residual and delta methods (issue 5): resmoe-svd's activation-weighted
 * residual factorisation (calib/residual.ts), Wanda-style selection for resmoe-prune and
 * ders-magnitude (calib/scales.ts), and their data-free equivalents.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inputScales, topScaledPositions, topScaledPositionsNaive } from '../src/compress/calib/scales.js';
import { residualLowRank } from '../src/compress/calib/residual.js';
import type { LayerCalib } from '../src/compress/calib/types.js';
import { memorySource } from '../src/compress/experts-io.js';
import { LayerStore, type Method, type MethodOptions } from '../src/compress/method.js';
import { dersMagnitude } from '../src/compress/methods/ders.js';
import { resmoePrune, resmoeSvd } from '../src/compress/methods/resmoe.js';
import { MATRICES } from '../src/compress/parts.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';
import { calibratedLayer, diagonalError, outputError, rebuilt } from './helpers/synthetic-calib.js';

const E = 4, I = 24, H = 32;

function opts(calib: LayerCalib | null): MethodOptions {
  return { budget: 0.5, seed: 3, base: 'mean', denseBase: null, alignIters: 2, calib };
}

async function both(method: Method, x: ReturnType<typeof calibratedLayer>['x'], calib: LayerCalib) {
  const sc = new LayerStore(0);
  const rc = await method.compressLayer(memorySource(x), sc, opts(calib));
  const sf = new LayerStore(0);
  const rf = await method.compressLayer(memorySource(x), sf, opts(null));
  return { rc, rf, a: rebuilt(rc, sc, I, H), b: rebuilt(rf, sf, I, H) };
}

test('topScaledPositions matches its sort-based twin on random, tied and awkward shapes', () => {
  const rng = new Rng(5);
  for (const [rows, cols, count] of [[7, 13, 20], [1, 1, 1], [5, 9, 0], [3, 4, 12], [16, 33, 100], [6, 6, 17]]) {
    const x = rng.normals(rows * cols);
    const s = Float64Array.from({ length: cols }, () => 0.1 + 3 * rng.next());
    assert.deepEqual(topScaledPositions(x, rows, cols, s, count), topScaledPositionsNaive(x, rows, cols, s, count), `[${rows}, ${cols}] top ${count}`);
  }
  // ties: equal magnitudes and scales, lower index first
  const x = Float32Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? 1 : -0.5));
  const s = new Float64Array(6).fill(2);
  assert.deepEqual(topScaledPositions(x, 4, 6, s, 10), topScaledPositionsNaive(x, 4, 6, s, 10));
});

test('inputScales: mean square 1, dead inputs as the mean, a scaled identity gives 1, too few tokens gives null', () => {
  const { calib } = calibratedLayer(2, I, H, 6, { unreached: [1] });
  const s = inputScales(calib.experts[0], 'gate', H)!;
  assert.ok(Math.abs(s.reduce((t, v) => t + v * v, 0) / H - 1) < 1e-12);
  for (let j = 1; j < H; j++) {
    const ratio = (s[j] / s[0]) ** 2;
    const d = (k: number) => calib.experts[0].xtx[k * H + k];
    const mean = Array.from({ length: H }, (_, k) => d(k)).reduce((a, b) => a + b) / H;
    assert.ok(Math.abs(ratio - (d(j) + 0.01 * mean) / (d(0) + 0.01 * mean)) < 1e-9);
  }
  assert.equal(inputScales(calib.experts[1], 'gate', H), null, 'unreached');
  assert.equal(inputScales({ ...calib.experts[0], tokens: H - 1 }, 'gate', H), null, 'fewer tokens than inputs');
  const dead = { ...calib.experts[0], ataDiag: Float64Array.from({ length: I }, (_, i) => (i === 3 ? 0 : 1 + i)) };
  const sd = inputScales(dead, 'down', I)!;
  const mean = Array.from({ length: I }, (_, i) => (i === 3 ? 0 : 1 + i)).reduce((a, b) => a + b) / I;
  assert.ok(Math.abs((sd[3] / sd[0]) ** 2 - (mean * 1.01) / (1 + 0.01 * mean)) < 1e-9, 'a dead input counts as an average one');
  const { calib: id } = calibratedLayer(1, I, H, 7, { identity: true });
  for (const v of inputScales(id.experts[0], 'down', I)!) assert.ok(Math.abs(v - 1) < 1e-12);
});

test('residualLowRank: the shared left factor survives the weighting; with unit weights it is the plain SVD of [gate | up | downᵀ]', async () => {
  const rng = new Rng(8);
  const d = { gate: rng.normals(I * H, 0.1), up: rng.normals(I * H, 0.1), down: rng.normals(H * I, 0.1) };
  const r = 5;
  const xtx = new Float64Array(H * H);
  for (let j = 0; j < H; j++) xtx[j * H + j] = 7;
  const plain = await residualLowRank(d, I, H, r, 1, null);
  const unit = await residualLowRank(d, I, H, r, 1, { xtx, rows: new Float64Array(I).fill(1) });
  assertClose(unit.left, plain.left, 1e-5, 'left');
  for (const m of MATRICES) assertClose(unit.right[m], plain.right[m], 1e-5, m);
});

test('resmoe-svd with calibration: lower output error on correlated inputs, same bytes; identity Hessians give the plain method', async () => {
  const { x, calib } = calibratedLayer(E, I, H, 2, { unreached: [1] });
  const { rc, rf, a, b } = await both(resmoeSvd, x, calib);
  assert.equal(rc.storedBytes, rf.storedBytes);
  assert.deepEqual(rc.choices.calib, { mode: 'whitened-residual', uncalibrated: [1] });
  assert.equal(rf.choices.calib, undefined);
  const eC = outputError(x, a, calib);
  const eF = outputError(x, b, calib);
  assert.ok(eC < 0.85 * eF, `calibrated ${eC} vs plain ${eF}`);
  const id = calibratedLayer(E, I, H, 4, { identity: true });
  const same = await both(resmoeSvd, id.x, id.calib);
  for (const m of MATRICES) assertClose(same.a[m], same.b[m], 1e-4, m);
});

for (const method of [resmoePrune, dersMagnitude]) {
  test(`${method.name} with calibration (Wanda-style): lower output error on inputs of unequal scales, the same bytes; identity Hessians select the same entries`, async () => {
    const { x, calib } = calibratedLayer(E, I, H, 2, { unreached: [1] });
    const { rc, rf, a, b } = await both(method, x, calib);
    assert.equal(rc.storedBytes, rf.storedBytes, 'the same counts, the same bytes');
    assert.equal(rc.choices.density, rf.choices.density);
    assert.deepEqual(rc.choices.calib, { mode: 'wanda', uncalibrated: [1] });
    assert.equal(rf.choices.calib, undefined);
    const dC = diagonalError(x, a, calib);
    const dF = diagonalError(x, b, calib);
    assert.ok(dC < 0.7 * dF, `diagonal-Hessian error: calibrated ${dC} vs plain ${dF}`);
    const eC = outputError(x, a, calib);
    const eF = outputError(x, b, calib);
    assert.ok(eC < 0.8 * eF, `output error: calibrated ${eC} vs plain ${eF}`);
    // the uncalibrated expert keeps exactly the data-free entries
    const n = I * H;
    for (const m of MATRICES) assert.deepEqual(a[m].subarray(n, 2 * n), b[m].subarray(n, 2 * n), `expert 1 ${m}`);
    const id = calibratedLayer(E, I, H, 4, { identity: true });
    const same = await both(method, id.x, id.calib);
    for (const m of MATRICES) assert.deepEqual(same.a[m], same.b[m], m);
  });
}

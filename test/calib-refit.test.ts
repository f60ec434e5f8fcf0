/** Output-reconstruction refit of quantized block headers (calib/refit.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gptqQuantize } from '../src/compress/calib/gptq.js';
import { diagonalImportance, hessianError, hessianErrorDiag } from '../src/compress/calib/hessian.js';
import { refitHeaders, refitHeadersNaive, refitHeadersRows } from '../src/compress/calib/refit.js';
import { codecById, type BlockCodec } from '../src/compress/quant/codec.js';
import { headerBytes } from '../src/compress/quant/grid.js';
import { Rng } from '../src/tensor/random.js';

/** Σ x xᵀ of n correlated inputs with unequal scales, [inp, inp]. */
function correlatedHessian(inp: number, n: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  const X = rng.normals(n * inp, 1);
  for (let t = 0; t < n; t++) for (let i = 1; i < inp; i++) X[t * inp + i] = 0.7 * X[t * inp + i - 1] + 0.3 * X[t * inp + i] * (1 + (i % 7));
  const H = new Float64Array(inp * inp);
  for (let t = 0; t < n; t++) for (let a = 0; a < inp; a++) for (let b = 0; b < inp; b++) H[a * inp + b] += X[t * inp + a] * X[t * inp + b];
  return H;
}

/** The codes of every block (the packed bytes after each header). */
function codeBytes(codec: BlockCodec, packed: Uint8Array): Uint8Array[] {
  const hb = headerBytes(codec);
  const out: Uint8Array[] = [];
  for (let o = 0; o < packed.length; o += codec.bytesPerBlock) out.push(packed.slice(o + hb, o + codec.bytesPerBlock));
  return out;
}

const out = 8, inp = 64;
const H = correlatedHessian(inp, 200, 3);
const w = new Rng(5).normals(out * inp, 0.1);

for (const id of ['q2s-g32', 'q3s-g16', 'q1s-g32', 'q2a-g32', 'q3a-g16-bf16']) {
  test(`refitHeaders ${id}: the per-row version equals its naive twin; the GEMM version agrees with it, keeps the codes, never raises a row's error and lowers it after GPTQ`, async () => {
    const codec = codecById(id);
    const g = await gptqQuantize(w, out, inp, H, codec);
    const rowsV = refitHeadersRows(g.packed, codec, w, out, inp, H);
    const naive = refitHeadersNaive(g.packed, codec, w, out, inp, H);
    assert.deepEqual(rowsV.packed, naive.packed);
    const fast = await refitHeaders(g.packed, codec, w, out, inp, H);
    for (const r of [rowsV, fast]) {
      assert.deepEqual(codeBytes(codec, r.packed), codeBytes(codec, g.packed), 'only headers change');
      const before = hessianError(w, codec.dequantize(g.packed, out * inp), H);
      const after = hessianError(w, codec.dequantize(r.packed, out * inp), H);
      // the GEMM version's errors carry float32 rounding of H d
      assert.ok(Math.abs(r.before - before) <= 1e-5 * before && Math.abs(r.after - after) <= 1e-5 * before, `the reported errors are tr(ΔW H ΔWᵀ): ${r.before} ${before}, ${r.after} ${after}`);
      assert.ok(after < 0.99 * before, `${id}: ${before} -> ${after}`);
      assert.ok(r.rows > 0 && r.rows <= out);
      for (let row = 0; row < out; row++) {
        const rowErr = (p: Uint8Array) => hessianError(w.subarray(row * inp, (row + 1) * inp), codec.dequantize(p.subarray(row * (p.length / out), (row + 1) * (p.length / out)), inp), H);
        assert.ok(rowErr(r.packed) <= rowErr(g.packed) * (1 + 1e-6), `row ${row}: never worse than the input`);
      }
    }
    assert.ok(Math.abs(fast.after - rowsV.after) <= 1e-4 * rowsV.after, `GEMM ${fast.after} vs per-row ${rowsV.after}`);
    assert.deepEqual(g.packed, (await gptqQuantize(w, out, inp, H, codec)).packed, 'the input is not modified');
  });
}

test('refitHeaders: a row whose refit would not help keeps its headers; bad shapes are refused', async () => {
  const codec = codecById('q4s-g64');
  // with H = I and MSE-fitted codes the headers are already near the least-squares optimum
  const I64 = new Float64Array(inp * inp);
  for (let i = 0; i < inp; i++) I64[i * inp + i] = 1;
  const packed = codec.quantize(w);
  const r = await refitHeaders(packed, codec, w, out, inp, I64);
  assert.ok(r.after <= r.before);
  const kept = r.rows;
  assert.ok(kept <= out);
  for (let row = 0; row < out; row++) {
    const a = packed.subarray(row * codec.bytesPerBlock, (row + 1) * codec.bytesPerBlock);
    const b = r.packed.subarray(row * codec.bytesPerBlock, (row + 1) * codec.bytesPerBlock);
    const rowErr = (p: Uint8Array) => hessianError(w.subarray(row * inp, (row + 1) * inp), codec.dequantize(p, inp), I64);
    assert.ok(rowErr(b) <= rowErr(a) + 1e-12, `row ${row}`);
  }
  await assert.rejects(refitHeaders(codecById('q4s-g32').quantize(new Float32Array(8 * 48)), codecById('q4s-g32'), new Float32Array(8 * 48), 8, 48, new Float64Array(48 * 48)), /do not tile rows of 48/);
  await assert.rejects(refitHeaders(packed, codec, w, out, inp, new Float64Array(10)), /expected \[8, 64\]/);
  assert.throws(() => refitHeadersRows(packed, codec, w, out, inp, new Float64Array(10)), /expected \[8, 64\]/);
});

test('refitHeaders with a diagonal H given as its values: blocks solved alone, the same result as the dense diagonal matrix', async () => {
  const rng = new Rng(9);
  const d = Float64Array.from({ length: inp }, () => 0.1 + 3 * rng.next());
  const dense = new Float64Array(inp * inp);
  for (let i = 0; i < inp; i++) dense[i * inp + i] = d[i];
  for (const id of ['q2s-g32', 'q2a-g16', 'q1s-g64']) {
    const codec = codecById(id);
    const packed = codec.quantize(w, diagonalImportance(d, out));
    assert.deepEqual(packed, (await gptqQuantize(w, out, inp, dense, codec)).packed, `${id}: GPTQ with a diagonal H is the codec with importances diag`);
    const a = await refitHeaders(packed, codec, w, out, inp, d);
    const b = await refitHeaders(packed, codec, w, out, inp, dense);
    assert.ok(Math.abs(a.after - b.after) <= 1e-6 * b.after, `${id}: ${a.after} vs ${b.after}`);
    assert.ok(a.after <= a.before && Math.abs(a.before - b.before) <= 1e-6 * b.before);
    assert.ok(Math.abs(hessianErrorDiag(w, codec.dequantize(a.packed, out * inp), d) - a.after) <= 1e-6 * a.after);
    assert.deepEqual(codeBytes(codec, a.packed), codeBytes(codec, packed));
  }
});

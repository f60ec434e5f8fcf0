/**
 * Times one call of each stage of calibrated quantization on one real-size matrix (issue 5/6):
 * GPTQ's inverse factor, GPTQ with that factor cached, and the header refit, for a random
 * W: [out, in] and a random H = Xᵀ X (X: [tokens, in] Gaussian), optionally with the float64 JS
 * versions (gptqQuantizeNaive, refitHeadersRows: the code these replace) on the first `oldRows`
 * rows, whose cost is linear in the rows (the factor is not: it is timed once, at full size).
 *
 *   npx tsc -p . && node dist/bench/calib-quant.js [--out 14336] [--in 4096] [--tokens 4608]
 *     [--codec q3s-g32] [--old-rows 0] [--seed 1]
 *
 * Prints one JSON object: seconds per stage and the output errors tr(ΔW H ΔWᵀ) / tr(W H Wᵀ).
 */
import { gptqQuantize, gptqQuantizeNaive, inverseFactor, inverseFactorFast } from '../src/compress/calib/gptq.js';
import { hessianErrorFast } from '../src/compress/calib/hessian.js';
import { refitHeaders, refitHeadersRows } from '../src/compress/calib/refit.js';
import { codecById } from '../src/compress/quant/codec.js';
import { linear } from '../src/tensor/gemm.js';
import { Rng } from '../src/tensor/random.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const out = Number(arg('out', '14336'));
const inp = Number(arg('in', '4096'));
const tokens = Number(arg('tokens', String(inp + 512)));
const codec = codecById(arg('codec', 'q3s-g32'));
const oldRows = Number(arg('old-rows', '0'));
const seed = Number(arg('seed', '1'));

const secs = (t0: number) => (performance.now() - t0) / 1000;
// CPU seconds (all threads) beside wall seconds: the dev machine is shared, and wall time under
// contention overstates a stage's cost
let c0 = process.cpuUsage();
const cpu = (name: string) => {
  const c = process.cpuUsage(c0);
  result[`${name}Cpu`] = (c.user + c.system) / 1e6;
  c0 = process.cpuUsage();
};
const rng = new Rng(seed);
const Xt = rng.normals(inp * tokens); // Xᵀ: [in, tokens]
let t0 = performance.now();
const H = Float64Array.from(await linear(Xt, Xt, inp, inp, tokens)); // [in, in] = Xᵀ X
const hessianS = secs(t0);
const w = rng.normals(out * inp, 0.02);
const zero = new Float32Array(out * inp);
const energy = await hessianErrorFast(w, zero, H);

const result: Record<string, unknown> = { out, in: inp, tokens, codec: codec.id, hessianS };
c0 = process.cpuUsage();
t0 = performance.now();
await inverseFactorFast(H, inp, 0.01);
result.inverseFactorS = secs(t0);
cpu('inverseFactor');
t0 = performance.now();
const g = await gptqQuantize(w, out, inp, H, codec, { damp: 0.01 }); // the factor is cached by now
result.gptqS = secs(t0);
cpu('gptq');
result.gptqRelError = (await hessianErrorFast(w, g.dequantized, H)) / energy;
c0 = process.cpuUsage();
t0 = performance.now();
const r = await refitHeaders(g.packed, codec, w, out, inp, H);
result.refitS = secs(t0);
cpu('refit');
result.refitRelError = r.after / energy;
result.refitRows = r.rows;
result.rssMB = Math.round(process.memoryUsage().rss / 2 ** 20);

if (oldRows > 0) {
  const wr = w.subarray(0, oldRows * inp);
  t0 = performance.now();
  c0 = process.cpuUsage();
  inverseFactor(H, inp, 0.01);
  result.oldInverseFactorS = secs(t0);
  cpu('oldInverseFactor');
  t0 = performance.now();
  const gn = gptqQuantizeNaive(wr, oldRows, inp, H, codec, { damp: 0.01 }); // computes inverseFactor again: subtract it
  result.oldGptqS = secs(t0);
  cpu('oldGptq');
  t0 = performance.now();
  refitHeadersRows(gn.packed, codec, wr, oldRows, inp, H);
  result.oldRefitS = secs(t0);
  cpu('oldRefit');
  result.oldRows = oldRows;
}
console.log(JSON.stringify(result, null, 2));

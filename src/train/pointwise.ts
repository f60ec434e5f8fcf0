/**
 * The exponential-heavy pointwise kernels of a training step, through ORT (vectorised exp, every
 * core) with naive twins: row softmax (the [T, V] loss softmax, attention probabilities) and
 * sigmoid (SwiGLU). Measured on 2 cores: softmax of [2048, 4096] 30 ms in ORT vs 150 ms in JS;
 * sigmoid of 1 Mi values 3 ms vs 25 ms.
 *
 *   softmaxRows (ORT Softmax, axis -1)  <->  softmaxRowsNaive (float64 sums)
 *   sigmoid     (ORT Sigmoid)           <->  sigmoidNaive
 *
 * MLAS's Sigmoid is the one the inference FFN runs (tensor/ffn-ort.ts), an approximation with
 * absolute error below 2e-7 (relative error is large only where σ(x) < 1e-7, x < −16).
 */
import { backendName } from '../tensor/gemm.js';
import { DataType, buildModel } from '../tensor/onnx-proto.js';
import { cachedSession, runF32 } from '../tensor/ort.js';

/** Below this many values an ORT call costs more than the JS loop. */
export const POINTWISE_SMALL = 16384;

const F = DataType.FLOAT;

/** x: [R, N] -> softmax of each row: [R, N]. -Infinity entries get probability 0 (masks). */
export function softmaxRowsNaive(x: Float32Array, R: number, N: number): Float32Array {
  if (x.length !== R * N) throw new Error(`softmaxRowsNaive: x [R=${R}, N=${N}] needs ${R * N} values, got ${x.length}`);
  const y = new Float32Array(R * N);
  for (let r = 0; r < R; r++) {
    const o = r * N;
    let m = -Infinity;
    for (let i = 0; i < N; i++) m = Math.max(m, x[o + i]);
    let s = 0;
    for (let i = 0; i < N; i++) s += Math.exp(x[o + i] - m);
    for (let i = 0; i < N; i++) y[o + i] = Math.exp(x[o + i] - m) / s;
  }
  return y;
}

/** x -> 1 / (1 + exp(−x)) elementwise. */
export function sigmoidNaive(x: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = 1 / (1 + Math.exp(-x[i]));
  return y;
}

function softmaxModel(): Uint8Array {
  return buildModel({
    inputs: [{ name: 'x', elemType: F, dims: ['R', 'N'] }],
    outputs: [{ name: 'y', elemType: F, dims: ['R', 'N'] }],
    nodes: [{ opType: 'Softmax', inputs: ['x'], outputs: ['y'], attributes: [{ name: 'axis', type: 'int', value: -1 }] }],
    graphName: 'softmax_rows',
  });
}

function sigmoidModel(): Uint8Array {
  return buildModel({
    inputs: [{ name: 'x', elemType: F, dims: ['N'] }],
    outputs: [{ name: 'y', elemType: F, dims: ['N'] }],
    nodes: [{ opType: 'Sigmoid', inputs: ['x'], outputs: ['y'] }],
    graphName: 'sigmoid',
  });
}

/** x: [R, N] -> row softmax through ORT regardless of size. */
export async function softmaxRowsOrt(x: Float32Array, R: number, N: number): Promise<Float32Array> {
  if (x.length !== R * N) throw new Error(`softmaxRowsOrt: x [R=${R}, N=${N}] needs ${R * N} values, got ${x.length}`);
  const s = await cachedSession('softmax/rows', softmaxModel);
  return (await runF32(s, { x: { data: x, dims: [R, N] } })).y.data;
}

export async function sigmoidOrt(x: Float32Array): Promise<Float32Array> {
  const s = await cachedSession('sigmoid', sigmoidModel);
  return (await runF32(s, { x: { data: x, dims: [x.length] } })).y.data;
}

/** x: [R, N] -> row softmax: [R, N]; rows containing only -Infinity are not allowed. */
export async function softmaxRows(x: Float32Array, R: number, N: number): Promise<Float32Array> {
  if (R * N < POINTWISE_SMALL || backendName() === 'ts') return softmaxRowsNaive(x, R, N);
  return softmaxRowsOrt(x, R, N);
}

export async function sigmoid(x: Float32Array): Promise<Float32Array> {
  if (x.length < POINTWISE_SMALL || backendName() === 'ts') return sigmoidNaive(x);
  return sigmoidOrt(x);
}

/**
 * The one product backward passes need that gemm.ts does not offer: aᵀ·b (weight gradients
 * dW = dYᵀ·X, attention dK = dSᵀ·Q, dV = Pᵀ·dO). ORT's Gemm takes transA=1 and reads a as
 * stored, so no transpose copy of the (often largest) operand is made.
 *
 *   matmulTN (ORT Gemm, transA=1)  <->  matmulTNBlocked (transpose + blocked TS)  <->  matmulTNNaive
 *
 * Letters: R rows shared by both operands (tokens), M and N the output dims.
 */
import { DataType, buildModel } from '../tensor/onnx-proto.js';
import { MATMUL_SMALL_MNK, backendName, matmulBlocked } from '../tensor/gemm.js';
import { cachedSession, runF32 } from '../tensor/ort.js';

function check(fn: string, a: Float32Array, b: Float32Array, R: number, M: number, N: number): void {
  for (const [name, v] of [['R', R], ['M', M], ['N', N]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${fn}: ${name} must be a non-negative integer, got ${v}`);
  }
  if (a.length !== R * M) throw new Error(`${fn}: a [R=${R}, M=${M}] needs ${R * M} values, got ${a.length}`);
  if (b.length !== R * N) throw new Error(`${fn}: b [R=${R}, N=${N}] needs ${R * N} values, got ${b.length}`);
}

/** a: [R, M], b: [R, N] -> aᵀ b: [M, N], float64 accumulator (the reference). */
export function matmulTNNaive(a: Float32Array, b: Float32Array, R: number, M: number, N: number): Float32Array {
  check('matmulTNNaive', a, b, R, M, N);
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let r = 0; r < R; r++) acc += a[r * M + m] * b[r * N + n];
      y[m * N + n] = acc;
    }
  }
  return y;
}

/** a: [R, M], b: [R, N] -> [M, N]: transposes a (R*M copies) and runs the blocked TS matmul. */
export function matmulTNBlocked(a: Float32Array, b: Float32Array, R: number, M: number, N: number): Float32Array {
  check('matmulTNBlocked', a, b, R, M, N);
  const at = new Float32Array(M * R); // at: [M, R]
  for (let r = 0; r < R; r++) for (let m = 0; m < M; m++) at[m * R + r] = a[r * M + m];
  return matmulBlocked(at, b, M, N, R);
}

function gemmTAModel(): Uint8Array {
  return buildModel({
    inputs: [
      { name: 'a', elemType: DataType.FLOAT, dims: ['R', 'M'] },
      { name: 'b', elemType: DataType.FLOAT, dims: ['R', 'N'] },
    ],
    outputs: [{ name: 'y', elemType: DataType.FLOAT, dims: ['M', 'N'] }],
    nodes: [{ opType: 'Gemm', inputs: ['a', 'b'], outputs: ['y'], attributes: [{ name: 'transA', type: 'int', value: 1 }] }],
    graphName: 'gemm_transA',
  });
}

/** a: [R, M], b: [R, N] -> [M, N] through ORT regardless of size. */
export async function matmulTNOrt(a: Float32Array, b: Float32Array, R: number, M: number, N: number): Promise<Float32Array> {
  check('matmulTNOrt', a, b, R, M, N);
  const session = await cachedSession('gemm/transA', gemmTAModel);
  return (await runF32(session, { a: { data: a, dims: [R, M] }, b: { data: b, dims: [R, N] } })).y.data;
}

/** a: [R, M], b: [R, N] -> aᵀ b: [M, N]; tiny (and empty) problems stay in JS as in gemm.ts. */
export async function matmulTN(a: Float32Array, b: Float32Array, R: number, M: number, N: number): Promise<Float32Array> {
  if (R * M * N < MATMUL_SMALL_MNK || backendName() === 'ts') return matmulTNBlocked(a, b, R, M, N);
  return matmulTNOrt(a, b, R, M, N);
}

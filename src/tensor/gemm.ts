/**
 * Dense matrix products for the whole library, with one fast path and two TS twins:
 *
 *   linear  (ORT Gemm, transB=1)   <->  linearBlocked (cache-blocked TS)  <->  linearNaive
 *   matmul  (ORT MatMul)           <->  matmulBlocked                     <->  matmulNaive
 *
 * Dimension letters: M rows of the activation (tokens), N output features, K input features.
 * Weights use the nn.Linear layout w: [N, K] (out x in), matching the canonical expert layout
 * [E, out, in], so an expert is a subarray and nothing is transposed or copied per call.
 *
 * Backend: ORT when onnxruntime-node loads, unless MOEPRESS_BACKEND=ts; problems below
 * *_SMALL_MNK multiply-adds stay in JS because an ORT call costs more than the arithmetic.
 * The naive kernels are the float64-accumulating reference every other kernel is tested against.
 */
import { DataType, buildModel, type ModelSpec } from './onnx-proto.js';
import { cachedSession, loadOrt, runF32, sessionCacheSize } from './ort.js';

export { sessionCacheSize };

/**
 * Below these many multiply-adds (M*N*K) the TS kernel beats an ORT call, whose fixed cost
 * (tensor wrapping, setImmediate hop, dispatch) measured 12-20 us on the 2-core AVX2 dev
 * machine. Sweep of per-call times (us), TS blocked vs ORT:
 *   linear  1x128x128 15 vs 16, 4x64x64 9 vs 17, 1x128x256 27 vs 15, 32x32x32 18 vs 15,
 *           4x64x128 16 vs 18, 4x128x128 31 vs 21  -> crossover ~32k
 *   matmul  4x32x64 12 vs 13, 1x128x128 31 vs 14, 16x32x32 13 vs 16 -> crossover ~8k-16k
 * The blocked kernels beat the naive ones at every size (1.5-3x), so they serve the small path.
 */
export const LINEAR_SMALL_MNK = 32768;
export const MATMUL_SMALL_MNK = 8192;

export type Backend = 'ort' | 'ts';

/** Which backend linear/matmul use: 'ts' if forced by MOEPRESS_BACKEND=ts or ORT is missing. */
export function backendName(): Backend {
  const forced = process.env.MOEPRESS_BACKEND;
  if (forced === 'ts') return 'ts';
  const ort = loadOrt();
  if (forced === 'ort' && ort === null) throw new Error('MOEPRESS_BACKEND=ort but onnxruntime-node failed to load');
  return ort === null ? 'ts' : 'ort';
}

// ---------------------------------------------------------------------------------------------
// Shape checks (one message format for every kernel)

function checkDims(fn: string, M: number, N: number, K: number): void {
  for (const [name, v] of [['M', M], ['N', N], ['K', K]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${fn}: ${name} must be a non-negative integer, got ${v}`);
  }
}

function checkLen(fn: string, what: string, shape: string, arr: Float32Array, n: number): void {
  if (arr.length !== n) throw new Error(`${fn}: ${what} ${shape} needs ${n} values, got ${arr.length}`);
}

function checkLinear(fn: string, x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array): void {
  checkDims(fn, M, N, K);
  checkLen(fn, 'x', `[M=${M}, K=${K}]`, x, M * K);
  checkLen(fn, 'w', `[N=${N}, K=${K}]`, w, N * K);
  if (bias !== undefined) checkLen(fn, 'bias', `[N=${N}]`, bias, N);
}

function checkMatmul(fn: string, a: Float32Array, b: Float32Array, M: number, N: number, K: number): void {
  checkDims(fn, M, N, K);
  checkLen(fn, 'a', `[M=${M}, K=${K}]`, a, M * K);
  checkLen(fn, 'b', `[K=${K}, N=${N}]`, b, K * N);
}

// ---------------------------------------------------------------------------------------------
// Naive twins: the reference the fast kernels are tested against, and the tiny-problem path.

/**
 * x: [M, K], w: [N, K], bias: [N] -> y: [M, N] = x wᵀ + bias.
 * JS numbers are float64, so `acc` is a float64 accumulator: the reference is more accurate
 * than any float32 kernel it checks.
 */
export function linearNaive(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array): Float32Array {
  checkLinear('linearNaive', x, w, M, N, K, bias);
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    const xo = m * K;
    for (let n = 0; n < N; n++) {
      const wo = n * K;
      let acc = bias === undefined ? 0 : bias[n];
      for (let k = 0; k < K; k++) acc += x[xo + k] * w[wo + k];
      y[m * N + n] = acc;
    }
  }
  return y;
}

/** a: [M, K], b: [K, N] -> y: [M, N] = a b, float64 accumulator. */
export function matmulNaive(a: Float32Array, b: Float32Array, M: number, N: number, K: number): Float32Array {
  checkMatmul('matmulNaive', a, b, M, N, K);
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += a[m * K + k] * b[k * N + n];
      y[m * N + n] = acc;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Blocked TS kernel: the fallback when ORT is unavailable.

// K is cut into blocks so the 4 x rows and 4 w rows of a tile (8 * KB floats = 8 KiB) stay in
// L1 across the tile loop; a panel of NB w rows (NB * KB floats = 64 KiB) stays in L2 while
// every row-tile of x passes over it.
const KB = 256;
const NB = 64;

/** y[m..m+3, n..n+3] += x[m..m+3, k0..k1) · w[n..n+3, k0..k1)ᵀ, 16 accumulators in registers. */
function tile4x4(x: Float32Array, w: Float32Array, y: Float32Array, m: number, n: number, N: number, K: number, k0: number, k1: number): void {
  const a0 = m * K, a1 = a0 + K, a2 = a1 + K, a3 = a2 + K;
  const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let k = k0; k < k1; k++) {
    const w0 = w[b0 + k], w1 = w[b1 + k], w2 = w[b2 + k], w3 = w[b3 + k];
    let v = x[a0 + k];
    c00 += v * w0; c01 += v * w1; c02 += v * w2; c03 += v * w3;
    v = x[a1 + k];
    c10 += v * w0; c11 += v * w1; c12 += v * w2; c13 += v * w3;
    v = x[a2 + k];
    c20 += v * w0; c21 += v * w1; c22 += v * w2; c23 += v * w3;
    v = x[a3 + k];
    c30 += v * w0; c31 += v * w1; c32 += v * w2; c33 += v * w3;
  }
  let o = m * N + n;
  y[o] += c00; y[o + 1] += c01; y[o + 2] += c02; y[o + 3] += c03;
  o += N;
  y[o] += c10; y[o + 1] += c11; y[o + 2] += c12; y[o + 3] += c13;
  o += N;
  y[o] += c20; y[o + 1] += c21; y[o + 2] += c22; y[o + 3] += c23;
  o += N;
  y[o] += c30; y[o + 1] += c31; y[o + 2] += c32; y[o + 3] += c33;
}

/** One x row against four w rows: the M=1 (decode) and leftover-row case. */
function tile1x4(x: Float32Array, w: Float32Array, y: Float32Array, m: number, n: number, N: number, K: number, k0: number, k1: number): void {
  const a = m * K;
  const b0 = n * K, b1 = b0 + K, b2 = b1 + K, b3 = b2 + K;
  let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  for (let k = k0; k < k1; k++) {
    const v = x[a + k];
    c0 += v * w[b0 + k]; c1 += v * w[b1 + k]; c2 += v * w[b2 + k]; c3 += v * w[b3 + k];
  }
  const o = m * N + n;
  y[o] += c0; y[o + 1] += c1; y[o + 2] += c2; y[o + 3] += c3;
}

/** Single output element over one K block, for the leftover columns. */
function dot1x1(x: Float32Array, w: Float32Array, y: Float32Array, m: number, n: number, N: number, K: number, k0: number, k1: number): void {
  const a = m * K, b = n * K;
  let c = 0;
  for (let k = k0; k < k1; k++) c += x[a + k] * w[b + k];
  y[m * N + n] += c;
}

/**
 * x: [M, K], w: [N, K], bias: [N] -> y: [M, N]. Same contract as linearNaive; partial sums are
 * float64 within a K block and float32 across the K/KB blocks, which keeps the relative error
 * near float32 rounding.
 */
export function linearBlocked(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array): Float32Array {
  checkLinear('linearBlocked', x, w, M, N, K, bias);
  const y = new Float32Array(M * N);
  // With fewer than 4 rows no w tile is reused across row-tiles, so blocking K only adds
  // passes over y: decode (M = 1) streams each w row once, end to end.
  const kb = M >= 4 ? KB : Math.max(K, 1);
  for (let k0 = 0; k0 < K; k0 += kb) {
    const k1 = Math.min(K, k0 + kb);
    for (let n0 = 0; n0 < N; n0 += NB) {
      const n1 = Math.min(N, n0 + NB);
      const n4 = n0 + ((n1 - n0) & ~3); // end of the columns that fill whole 4-wide tiles
      let m = 0;
      for (; m + 4 <= M; m += 4) {
        for (let n = n0; n < n4; n += 4) tile4x4(x, w, y, m, n, N, K, k0, k1);
        for (let n = n4; n < n1; n++) {
          for (let r = m; r < m + 4; r++) dot1x1(x, w, y, r, n, N, K, k0, k1);
        }
      }
      for (; m < M; m++) {
        for (let n = n0; n < n4; n += 4) tile1x4(x, w, y, m, n, N, K, k0, k1);
        for (let n = n4; n < n1; n++) dot1x1(x, w, y, m, n, N, K, k0, k1);
      }
    }
  }
  if (bias !== undefined) {
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) y[m * N + n] += bias[n];
  }
  return y;
}

/**
 * a: [M, K], b: [K, N] -> y: [M, N]. For M >= 4, transposes b once (K*N copies, small next to
 * M*N*K multiply-adds) so the 4x4 tiles read both operands contiguously. For fewer rows the
 * transpose would cost as much as the product, so each output row is built as a sum of scaled
 * b rows (axpy) in a float64 row accumulator, which reads b contiguously as stored.
 */
export function matmulBlocked(a: Float32Array, b: Float32Array, M: number, N: number, K: number): Float32Array {
  checkMatmul('matmulBlocked', a, b, M, N, K);
  if (M < 4) {
    const y = new Float32Array(M * N);
    const acc = new Float64Array(N);
    for (let m = 0; m < M; m++) {
      acc.fill(0);
      const ao = m * K;
      let k = 0;
      // Four b rows per pass: one load/store of acc per four multiply-adds.
      for (; k + 4 <= K; k += 4) {
        const s0 = a[ao + k], s1 = a[ao + k + 1], s2 = a[ao + k + 2], s3 = a[ao + k + 3];
        const r0 = k * N, r1 = r0 + N, r2 = r1 + N, r3 = r2 + N;
        for (let n = 0; n < N; n++) acc[n] += s0 * b[r0 + n] + s1 * b[r1 + n] + s2 * b[r2 + n] + s3 * b[r3 + n];
      }
      for (; k < K; k++) {
        const s0 = a[ao + k];
        const r0 = k * N;
        for (let n = 0; n < N; n++) acc[n] += s0 * b[r0 + n];
      }
      y.set(acc, m * N);
    }
    return y;
  }
  const bt = new Float32Array(N * K); // bt: [N, K]
  for (let k = 0; k < K; k++) {
    const row = k * N;
    for (let n = 0; n < N; n++) bt[n * K + k] = b[row + n];
  }
  return linearBlocked(a, bt, M, N, K);
}

// ---------------------------------------------------------------------------------------------
// ORT kernels: one cached session per graph, symbolic dims so every shape reuses it.

const F = DataType.FLOAT;

function gemmModel(withBias: boolean): Uint8Array {
  const spec: ModelSpec = {
    inputs: [
      { name: 'x', elemType: F, dims: ['M', 'K'] },
      { name: 'w', elemType: F, dims: ['N', 'K'] },
      ...(withBias ? [{ name: 'bias', elemType: F, dims: ['N'] }] : []),
    ],
    outputs: [{ name: 'y', elemType: F, dims: ['M', 'N'] }],
    nodes: [{
      opType: 'Gemm',
      inputs: withBias ? ['x', 'w', 'bias'] : ['x', 'w'],
      outputs: ['y'],
      // transB lets MLAS read w in its stored [N, K] layout.
      attributes: [{ name: 'transB', type: 'int', value: 1 }],
    }],
    graphName: withBias ? 'linear_bias' : 'linear',
  };
  return buildModel(spec);
}

function matmulModel(): Uint8Array {
  return buildModel({
    inputs: [{ name: 'a', elemType: F, dims: ['M', 'K'] }, { name: 'b', elemType: F, dims: ['K', 'N'] }],
    outputs: [{ name: 'y', elemType: F, dims: ['M', 'N'] }],
    nodes: [{ opType: 'MatMul', inputs: ['a', 'b'], outputs: ['y'] }],
    graphName: 'matmul',
  });
}

/** x: [M, K], w: [N, K], bias: [N] -> [M, N] through ORT regardless of size (benchmarks, tests). */
export async function linearOrt(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array): Promise<Float32Array> {
  checkLinear('linearOrt', x, w, M, N, K, bias);
  const session = await cachedSession(bias ? 'gemm/transB/bias' : 'gemm/transB', () => gemmModel(bias !== undefined));
  const feeds = { x: { data: x, dims: [M, K] }, w: { data: w, dims: [N, K] } };
  const all = bias ? { ...feeds, bias: { data: bias, dims: [N] } } : feeds;
  // No preallocated output: the binding's own result array measured faster than handing it
  // a fresh zero-filled Float32Array (5.4 vs 7.4 ms for a 16 MiB y), and it is ours to keep.
  return (await runF32(session, all)).y.data;
}

/** a: [M, K], b: [K, N] -> [M, N] through ORT regardless of size. */
export async function matmulOrt(a: Float32Array, b: Float32Array, M: number, N: number, K: number): Promise<Float32Array> {
  checkMatmul('matmulOrt', a, b, M, N, K);
  const session = await cachedSession('matmul', matmulModel);
  return (await runF32(session, { a: { data: a, dims: [M, K] }, b: { data: b, dims: [K, N] } })).y.data;
}

// ---------------------------------------------------------------------------------------------
// Dispatching entry points

/** x: [M, K], w: [N, K] (out x in), bias: [N] -> y: [M, N] = x wᵀ + bias. */
export async function linear(x: Float32Array, w: Float32Array, M: number, N: number, K: number, bias?: Float32Array): Promise<Float32Array> {
  // Tiny (and empty: ORT rejects zero-sized dims) problems stay in JS.
  if (M * N * K < LINEAR_SMALL_MNK || backendName() === 'ts') return linearBlocked(x, w, M, N, K, bias);
  return linearOrt(x, w, M, N, K, bias);
}

/** a: [M, K], b: [K, N] -> y: [M, N] = a b. */
export async function matmul(a: Float32Array, b: Float32Array, M: number, N: number, K: number): Promise<Float32Array> {
  if (M * N * K < MATMUL_SMALL_MNK || backendName() === 'ts') return matmulBlocked(a, b, M, N, K);
  return matmulOrt(a, b, M, N, K);
}

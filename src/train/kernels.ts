/**
 * The kernels behind the ops, per precision:
 *   'f32' : gemm.ts linear / matmul (ORT above a size threshold), gemm-grad.ts matmulTN, and
 *           pointwise.ts row softmax and sigmoid;
 *   'f64' : float64 naive loops, only for finite-difference checks on tiny shapes.
 * Every f32 call is timed into `gemmStats`, which is how a training step's GEMM share is measured
 * (the awaits are sequential, so the sum of call times is wall time spent in products).
 */
import { linear, matmul } from '../tensor/gemm.js';
import { matmulTN } from './gemm-grad.js';
import { sigmoid, softmaxRows } from './pointwise.js';
import type { Buf, DType } from './tape.js';

export interface Kernels {
  /** x: [M, K], w: [N, K], bias: [N] -> x wᵀ + bias: [M, N]. */
  linear(x: Buf, w: Buf, M: number, N: number, K: number, bias?: Buf): Promise<Buf>;
  /** a: [M, K], b: [K, N] -> a b: [M, N]. */
  matmul(a: Buf, b: Buf, M: number, N: number, K: number): Promise<Buf>;
  /** a: [R, M], b: [R, N] -> aᵀ b: [M, N]. */
  matmulTN(a: Buf, b: Buf, R: number, M: number, N: number): Promise<Buf>;
  /** x: [R, N] -> softmax of each row (-Infinity -> 0). Not timed as GEMM. */
  softmaxRows(x: Buf, R: number, N: number): Promise<Buf>;
  /** x -> σ(x) elementwise. */
  sigmoid(x: Buf): Promise<Buf>;
}

export interface GemmStats {
  calls: number;
  ms: number;
  /** Multiply-adds issued. */
  macs: number;
}

export const gemmStats: GemmStats = { calls: 0, ms: 0, macs: 0 };

export function resetGemmStats(): void {
  gemmStats.calls = 0;
  gemmStats.ms = 0;
  gemmStats.macs = 0;
}

async function timed(macs: number, run: () => Promise<Float32Array>): Promise<Float32Array> {
  const t0 = performance.now();
  const y = await run();
  gemmStats.ms += performance.now() - t0;
  gemmStats.calls++;
  gemmStats.macs += macs;
  return y;
}

function f32(b: Buf | undefined, what: string): Float32Array {
  if (b === undefined || b instanceof Float32Array) return b as Float32Array;
  throw new Error(`f32 kernels: ${what} is a Float64Array`);
}

const F32: Kernels = {
  linear: (x, w, M, N, K, bias) => timed(M * N * K, () => linear(f32(x, 'x'), f32(w, 'w'), M, N, K, bias && f32(bias, 'bias'))),
  matmul: (a, b, M, N, K) => timed(M * N * K, () => matmul(f32(a, 'a'), f32(b, 'b'), M, N, K)),
  matmulTN: (a, b, R, M, N) => timed(R * M * N, () => matmulTN(f32(a, 'a'), f32(b, 'b'), R, M, N)),
  softmaxRows: (x, R, N) => softmaxRows(f32(x, 'x'), R, N),
  sigmoid: (x) => sigmoid(f32(x, 'x')),
};

function lenCheck(fn: string, pairs: [Buf, number][]): void {
  for (const [arr, n] of pairs) if (arr.length !== n) throw new Error(`${fn}: operand has ${arr.length} values, expected ${n}`);
}

const F64: Kernels = {
  async linear(x, w, M, N, K, bias) {
    lenCheck('linear64', [[x, M * K], [w, N * K]]);
    const y = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let acc = bias ? bias[n] : 0;
        for (let k = 0; k < K; k++) acc += x[m * K + k] * w[n * K + k];
        y[m * N + n] = acc;
      }
    }
    return y;
  },
  async matmul(a, b, M, N, K) {
    lenCheck('matmul64', [[a, M * K], [b, K * N]]);
    const y = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      for (let k = 0; k < K; k++) {
        const s = a[m * K + k];
        for (let n = 0; n < N; n++) y[m * N + n] += s * b[k * N + n];
      }
    }
    return y;
  },
  async matmulTN(a, b, R, M, N) {
    lenCheck('matmulTN64', [[a, R * M], [b, R * N]]);
    const y = new Float64Array(M * N);
    for (let r = 0; r < R; r++) {
      for (let m = 0; m < M; m++) {
        const s = a[r * M + m];
        for (let n = 0; n < N; n++) y[m * N + n] += s * b[r * N + n];
      }
    }
    return y;
  },
  async softmaxRows(x, R, N) {
    lenCheck('softmaxRows64', [[x, R * N]]);
    const y = new Float64Array(R * N);
    for (let r = 0; r < R; r++) {
      const o = r * N;
      let m = -Infinity;
      for (let i = 0; i < N; i++) m = Math.max(m, x[o + i]);
      let s = 0;
      for (let i = 0; i < N; i++) s += y[o + i] = Math.exp(x[o + i] - m);
      for (let i = 0; i < N; i++) y[o + i] /= s;
    }
    return y;
  },
  async sigmoid(x) {
    return Float64Array.from(x, (v) => 1 / (1 + Math.exp(-v)));
  },
};

export function kernelsFor(dtype: DType): Kernels {
  return dtype === 'f64' ? F64 : F32;
}

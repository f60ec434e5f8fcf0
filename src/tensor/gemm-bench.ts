/**
 * GEMM throughput of each backend on this machine, for `moepress bench`. Returns numbers and
 * never prints (the CLI renders them).
 *
 * Shapes are linear's (M tokens, N out features, K in features): x [M, K] · w[N, K]ᵀ.
 */
import { linearBlocked, linearNaive, linearOrt } from './gemm.js';
import { loadOrt } from './ort.js';

export type GemmBenchBackend = 'ort' | 'ts-blocked' | 'ts-naive';

export interface GemmBenchRow {
  backend: GemmBenchBackend;
  M: number;
  N: number;
  K: number;
  /** 2*M*N*K / seconds per call / 1e9. */
  gflops: number;
  msPerCall: number;
  /** Timed calls behind the figure (after one untimed warm-up call, when that fits the budget). */
  calls: number;
}

export interface GemmBenchOptions {
  /** [M, N, K] triples; defaults to DEFAULT_BENCH_SIZES. */
  sizes?: [number, number, number][];
  /** Time budget per (backend, size) measurement; at least one call is always timed. */
  seconds?: number;
  backends?: GemmBenchBackend[];
  /** Called after each measurement so a CLI can show progress. */
  onProgress?: (e: { done: number; total: number; row: GemmBenchRow }) => void;
}

/**
 * Decode (M = 1) and prefill-like shapes, and the trained fixtures' expert shape (512x512x256).
 * Kept moderate because the TS kernels run at a few GFLOP/s.
 */
export const DEFAULT_BENCH_SIZES: [number, number, number][] = [
  [1, 4096, 1024],
  [64, 1024, 1024],
  [512, 512, 256],
  [1024, 1024, 1024],
];

/** The naive kernel (~1 GFLOP/s) only runs up to this many multiply-adds (0.1 s a call). */
export const NAIVE_BENCH_MAX_MNK = 512 * 512 * 256;

/** Uniform values in [-1, 1) from a fixed-seed LCG: never zeros or denormals. */
function filled(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}

/** Mean seconds per call of `fn`: one warm-up (JIT, session build, page faults), then a budget. */
async function timeCalls(fn: () => Promise<unknown> | unknown, seconds: number): Promise<{ sPerCall: number; calls: number }> {
  let t0 = performance.now();
  await fn();
  const first = (performance.now() - t0) / 1000;
  // A single call longer than the budget is its own measurement: a second one would double
  // the bench time for a figure that warm-up barely affects at that size.
  if (first >= seconds) return { sPerCall: first, calls: 1 };
  let calls = 0;
  t0 = performance.now();
  do {
    await fn();
    calls++;
  } while (performance.now() - t0 < seconds * 1000);
  return { sPerCall: (performance.now() - t0) / 1000 / calls, calls };
}

export async function benchGemm(opts: GemmBenchOptions = {}): Promise<GemmBenchRow[]> {
  const sizes = opts.sizes ?? DEFAULT_BENCH_SIZES;
  const seconds = opts.seconds ?? 1;
  const wanted = opts.backends ?? ['ort', 'ts-blocked', 'ts-naive'];
  const backends = wanted.filter((b) => b !== 'ort' || loadOrt() !== null);
  const plan: [GemmBenchBackend, number, number, number][] = [];
  for (const [M, N, K] of sizes) {
    for (const b of backends) {
      if (b === 'ts-naive' && M * N * K > NAIVE_BENCH_MAX_MNK) continue;
      plan.push([b, M, N, K]);
    }
  }
  const rows: GemmBenchRow[] = [];
  for (const [backend, M, N, K] of plan) {
    const x = filled(M * K, 1); // x: [M, K]
    const w = filled(N * K, 2); // w: [N, K]
    const run =
      backend === 'ort' ? () => linearOrt(x, w, M, N, K) : backend === 'ts-blocked' ? () => linearBlocked(x, w, M, N, K) : () => linearNaive(x, w, M, N, K);
    const { sPerCall, calls } = await timeCalls(run, seconds);
    const row: GemmBenchRow = { backend, M, N, K, gflops: (2 * M * N * K) / sPerCall / 1e9, msPerCall: sPerCall * 1000, calls };
    rows.push(row);
    opts.onProgress?.({ done: rows.length, total: plan.length, row });
  }
  return rows;
}

/**
 * `moepress bench --scale`: compress a real-size synthetic MoE layer and say where the time and
 * memory go. A seeded Mixtral-8x7B-shaped checkpoint (one MoE layer, bf16, sharded) is written to
 * a temporary directory; each method then runs `compress` in its own child process (so peak RSS
 * is that run's alone) and reports time per layer, peak RSS, and the split between alignment
 * GEMMs, the assignment solver, I/O and everything else, next to the floors: the alignment's
 * FLOPs at the measured GEMM rate, and the layer's bytes at the measured disk rates.
 * Returns numbers, never prints.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProgressFn } from '../progress.js';
import { estimateCompress, type CompressEstimate } from './estimate.js';
import type { CompressProfile } from './profile.js';
import { measureAlignGemm, measureDisk, type DiskRate, type GemmRate } from './rates.js';
import type { ScaleChildMessage, ScaleChildRequest } from './scale-bench-child.js';
import { writeSyntheticMoe, type SyntheticExperts } from './synthetic.js';

export interface ScaleBenchOptions {
  E?: number;
  I?: number;
  H?: number;
  experts?: SyntheticExperts;
  seed?: number;
  budget?: number;
  /** Methods to run; a name ending in '+calib' compresses with calibration on calibWindows windows of random tokens. */
  methods?: string[];
  alignIters?: number;
  /** Windows of 256 random tokens for the '+calib' methods (default 8). */
  calibWindows?: number;
  /** Layers to extrapolate to (Mixtral-8x7B: 32). */
  layers?: number;
  /** Parent of the temporary directory (default the OS temp dir). */
  dir?: string;
  /** Keep the temporary directory (checkpoint and outputs). */
  keep?: boolean;
  /** Bytes written and read back to measure the disk (default 256 MiB). */
  diskProbeBytes?: number;
  onProgress?: ProgressFn;
}

/** The memory bound the issue sets for compressing one Mixtral-8x7B layer. */
export const PEAK_RSS_LIMIT_BYTES = 8 * 2 ** 30;

export interface ScaleMethodResult {
  method: string;
  /** Wall seconds of compress() (the layer, plus copying the other tensors and the manifest). */
  compressSeconds: number;
  compressPeakRssBytes: number;
  layerSeconds: number;
  /**
   * Where the layer's time went, seconds: waiting for alignment GEMMs (the part not overlapped
   * with the JavaScript scans), the assignment solver (LAPJV), exact costs of its candidate edges,
   * disk reads + writes, bf16 decoding, and the rest (scans, mean updates, residuals, top-k
   * selection or quantization, error measurement).
   */
  split: { gemmSeconds: number; assignSeconds: number; edgeCostSeconds: number; ioSeconds: number; decodeSeconds: number; otherSeconds: number };
  /** The same as fractions of the layer's time. */
  shares: { gemm: number; assign: number; edgeCost: number; io: number; decode: number; other: number };
  /** The whole barycenter computation, seconds (inside the layer time). */
  alignSeconds: number;
  /** Alignment FLOPs at the measured GEMM rate; the layer read once and its stored bytes written once at the measured disk rates. */
  floors: { gemmSeconds: number; ioSeconds: number; seconds: number };
  gemmFlops: number;
  /** Bytes actually moved: expert reads (re-reads hit the page cache), spill + final writes. */
  bytesRead: number;
  bytesWritten: number;
  storedBytes: number;
  referenceBytes: number;
  choices: Record<string, unknown>;
  /** What estimate.ts predicted before the run. */
  estimate: Pick<CompressEstimate, 'peakBytes' | 'secondsPerLayer'>;
  /** Every layer of the real model: layer time × layers + the one-off rest. */
  extrapolated: { layers: number; seconds: number; floorSeconds: number };
  profile: CompressProfile;
}

export interface ScaleBenchResult {
  shape: { E: number; I: number; H: number; experts: SyntheticExperts; seed: number; budget: number; alignIters: number };
  machine: { cpus: number; cpu: string; memoryBytes: number; node: string };
  checkpoint: { totalBytes: number; expertBytes: number; files: number; generateSeconds: number };
  rates: { gemm: GemmRate; disk: DiskRate };
  methods: ScaleMethodResult[];
  /** The resmoe-prune run (else the first): the numbers the issue asks for. */
  compressPeakRssBytes: number;
  compressSeconds: number;
  layerSeconds: number;
  gemmFloorSeconds: number;
  ioFloorSeconds: number;
  floorSeconds: number;
  extrapolatedSeconds: number;
  extrapolatedLayers: number;
  peakRssLimitBytes: number;
  withinLimit: boolean;
}

const CHILD = fileURLToPath(new URL('./scale-bench-child.js', import.meta.url));

/** Runs one compress in a child process; resolves with its result message. */
function runChild(req: ScaleChildRequest, onProgress?: ProgressFn): Promise<Extract<ScaleChildMessage, { kind: 'result' }>> {
  return new Promise((resolve, reject) => {
    const child = fork(CHILD, [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let stderr = '';
    let result: Extract<ScaleChildMessage, { kind: 'result' }> | null = null;
    let error: string | null = null;
    child.stderr?.on('data', (d) => { stderr = (stderr + String(d)).slice(-4000); });
    child.on('message', (m: ScaleChildMessage) => {
      if (m.kind === 'progress') onProgress?.({ ...m.event, task: `${req.method}: ${m.event.task}` });
      else if (m.kind === 'result') result = m;
      else error = m.message;
    });
    child.on('exit', (code, signal) => {
      if (result) resolve(result);
      else reject(new Error(`compress ${req.method} in a child process failed (${error ?? (signal ? `killed by ${signal}` : `exit code ${code}`)})${stderr ? `: ${stderr.trim()}` : ''}`));
    });
    child.send(req);
  });
}

function methodResult(method: string, r: Extract<ScaleChildMessage, { kind: 'result' }>, rates: ScaleBenchResult['rates'], expertBytes: number, layers: number, estimate: CompressEstimate): ScaleMethodResult {
  const p = r.profile;
  const layerSeconds = p.layerMs.reduce((s, x) => s + x, 0) / 1000;
  const split = {
    gemmSeconds: p.gemmMs / 1000,
    assignSeconds: p.assignMs / 1000,
    edgeCostSeconds: p.refineMs / 1000,
    ioSeconds: (p.readMs + p.writeMs) / 1000,
    decodeSeconds: p.decodeMs / 1000,
    otherSeconds: 0,
  };
  split.otherSeconds = Math.max(0, layerSeconds - split.gemmSeconds - split.assignSeconds - split.edgeCostSeconds - split.ioSeconds - split.decodeSeconds);
  const share = (s: number) => (layerSeconds > 0 ? s / layerSeconds : 0);
  const gemmFloor = p.gemmFlops / (rates.gemm.gflops * 1e9);
  const ioFloor = expertBytes / (rates.disk.readMBps * 1e6) + r.storedBytes / (rates.disk.writeMBps * 1e6);
  const rest = Math.max(0, r.seconds - layerSeconds);
  return {
    method,
    compressSeconds: r.seconds,
    compressPeakRssBytes: r.peakRssBytes,
    layerSeconds,
    split,
    shares: { gemm: share(split.gemmSeconds), assign: share(split.assignSeconds), edgeCost: share(split.edgeCostSeconds), io: share(split.ioSeconds), decode: share(split.decodeSeconds), other: share(split.otherSeconds) },
    alignSeconds: p.alignMs / 1000,
    floors: { gemmSeconds: gemmFloor, ioSeconds: ioFloor, seconds: gemmFloor + ioFloor },
    gemmFlops: p.gemmFlops,
    bytesRead: p.bytesRead,
    bytesWritten: p.bytesWritten,
    storedBytes: r.storedBytes,
    referenceBytes: r.referenceBytes,
    choices: r.layers[0] ?? {},
    estimate: { peakBytes: estimate.peakBytes, secondsPerLayer: estimate.secondsPerLayer },
    extrapolated: { layers, seconds: layerSeconds * layers + rest, floorSeconds: (gemmFloor + ioFloor) * layers },
    profile: p,
  };
}

export async function runScaleBench(opts: ScaleBenchOptions = {}): Promise<ScaleBenchResult> {
  const shape = {
    E: opts.E ?? 8, I: opts.I ?? 14336, H: opts.H ?? 4096, experts: opts.experts ?? 'random', seed: opts.seed ?? 0,
    budget: opts.budget ?? 0.25, alignIters: opts.alignIters ?? 8,
  };
  const methods = opts.methods ?? ['resmoe-prune', 'ders-quant'];
  const layers = opts.layers ?? 32;
  const tmp = mkdtempSync(join(opts.dir ?? os.tmpdir(), 'moepress-scale-'));
  try {
    const model = join(tmp, 'model');
    const t0 = performance.now();
    opts.onProgress?.({ task: 'generate', done: 0, total: 1, unit: 'checkpoints', detail: model });
    const ck = writeSyntheticMoe(model, { E: shape.E, I: shape.I, H: shape.H, experts: shape.experts, seed: shape.seed });
    const generateSeconds = (performance.now() - t0) / 1000;
    opts.onProgress?.({ task: 'generate', done: 1, total: 1, unit: 'checkpoints', detail: model });
    const rates = { gemm: await measureAlignGemm(shape.I, shape.H), disk: measureDisk(tmp, opts.diskProbeBytes) };
    const runs: ScaleMethodResult[] = [];
    for (const method of methods) {
      const out = join(tmp, `out-${method}`);
      const name = method.replace(/\+calib$/, '');
      const calibWindows = name !== method ? opts.calibWindows ?? 8 : undefined;
      const calib = calibWindows ? { tokens: calibWindows * 256, topK: 2, modelLayers: 1 } : undefined;
      const est = estimateCompress({ layers: 1, E: shape.E, I: shape.I, H: shape.H }, name, { budget: shape.budget, alignIters: shape.alignIters, calib }, { gemmGflops: rates.gemm.gflops, readMBps: rates.disk.readMBps, writeMBps: rates.disk.writeMBps });
      const r = await runChild({ model, out, method: name, budget: shape.budget, seed: shape.seed, alignIters: shape.alignIters, calibWindows }, opts.onProgress);
      runs.push(methodResult(method, r, rates, ck.expertBytes, layers, est));
      if (!opts.keep) rmSync(out, { recursive: true, force: true });
    }
    const main = runs.find((r) => r.method === 'resmoe-prune') ?? runs[0];
    return {
      shape,
      machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memoryBytes: os.totalmem(), node: process.version },
      checkpoint: { totalBytes: ck.totalBytes, expertBytes: ck.expertBytes, files: ck.files.length, generateSeconds },
      rates,
      methods: runs,
      compressPeakRssBytes: main?.compressPeakRssBytes ?? 0,
      compressSeconds: main?.compressSeconds ?? 0,
      layerSeconds: main?.layerSeconds ?? 0,
      gemmFloorSeconds: main?.floors.gemmSeconds ?? 0,
      ioFloorSeconds: main?.floors.ioSeconds ?? 0,
      floorSeconds: main?.floors.seconds ?? 0,
      extrapolatedSeconds: main?.extrapolated.seconds ?? 0,
      extrapolatedLayers: layers,
      peakRssLimitBytes: PEAK_RSS_LIMIT_BYTES,
      withinLimit: runs.every((r) => r.compressPeakRssBytes <= PEAK_RSS_LIMIT_BYTES),
    };
  } finally {
    if (!opts.keep) rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Entry point forked by scale-bench.ts: one `compress` run in its own process, so its peak RSS
 * (getrusage maxrss) is that run's alone. Receives a ScaleChildRequest on the IPC channel, sends
 * back progress events and one ScaleChildResult, then exits.
 */
import { compress } from './compress.js';
import { newProfile, type CompressProfile } from './profile.js';
import type { LayerRecord } from './parts.js';
import type { ProgressEvent } from '../progress.js';
import { openModel } from '../runtime/load-model.js';
import { Rng } from '../tensor/random.js';
import type { CalibrationRequest } from './calib/source.js';

export interface ScaleChildRequest {
  model: string;
  out: string;
  method: string;
  budget: number;
  seed: number;
  alignIters: number;
  /** Calibrate on this many windows of 256 seeded random token ids (method name suffix '+calib'). */
  calibWindows?: number;
}

export type ScaleChildMessage =
  | { kind: 'progress'; event: ProgressEvent }
  | { kind: 'result'; seconds: number; peakRssBytes: number; profile: CompressProfile; storedBytes: number; referenceBytes: number; layers: LayerRecord['choices'][] }
  | { kind: 'error'; message: string };

/** `windows` windows of 256 seeded random token ids, as calibration text stands in for at real size. */
function randomCalibration(model: string, windows: number, seed: number): CalibrationRequest {
  const src = openModel(model);
  const V = src.config.vocabSize;
  src.checkpoint.close();
  const rng = new Rng(seed + 1);
  return { file: `${windows * 256} random tokens`, windows, tokens: Int32Array.from({ length: windows * 256 }, () => rng.int(V)) };
}

function send(m: ScaleChildMessage): Promise<void> {
  return new Promise((resolve) => process.send!(m, () => resolve()));
}

async function run(req: ScaleChildRequest): Promise<void> {
  const profile = newProfile();
  const t0 = performance.now();
  let last = 0;
  const calib = req.calibWindows ? randomCalibration(req.model, req.calibWindows, req.seed) : undefined;
  const m = await compress({
    model: req.model, out: req.out, method: req.method, budget: req.budget, seed: req.seed, alignIters: req.alignIters, overwrite: true, profile, calib,
    onProgress: (event) => {
      const t = performance.now();
      if (t - last < 1000 && event.done !== event.total) return;
      last = t;
      void send({ kind: 'progress', event });
    },
  });
  const seconds = (performance.now() - t0) / 1000;
  await send({
    kind: 'result', seconds, peakRssBytes: process.resourceUsage().maxRSS * 1024, profile,
    storedBytes: m.bytes.stored, referenceBytes: m.bytes.reference, layers: m.layers.map((l) => l.choices),
  });
}

if (process.send) {
  process.once('message', (req: ScaleChildRequest) => {
    run(req).catch(async (e: unknown) => {
      await send({ kind: 'error', message: e instanceof Error ? e.message : String(e) });
    }).finally(() => process.disconnect());
  });
}

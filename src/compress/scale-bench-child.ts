/**
 * Entry point forked by scale-bench.ts: one `compress` run in its own process, so its peak RSS
 * (getrusage maxrss) is that run's alone. Receives a ScaleChildRequest on the IPC channel, sends
 * back progress events and one ScaleChildResult, then exits.
 */
import { compress } from './compress.js';
import { newProfile, type CompressProfile } from './profile.js';
import type { LayerRecord } from './parts.js';
import type { ProgressEvent } from '../progress.js';

export interface ScaleChildRequest {
  model: string;
  out: string;
  method: string;
  budget: number;
  seed: number;
  alignIters: number;
}

export type ScaleChildMessage =
  | { kind: 'progress'; event: ProgressEvent }
  | { kind: 'result'; seconds: number; peakRssBytes: number; profile: CompressProfile; storedBytes: number; referenceBytes: number; layers: LayerRecord['choices'][] }
  | { kind: 'error'; message: string };

function send(m: ScaleChildMessage): Promise<void> {
  return new Promise((resolve) => process.send!(m, () => resolve()));
}

async function run(req: ScaleChildRequest): Promise<void> {
  const profile = newProfile();
  const t0 = performance.now();
  let last = 0;
  const m = await compress({
    model: req.model, out: req.out, method: req.method, budget: req.budget, seed: req.seed, alignIters: req.alignIters, overwrite: true, profile,
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

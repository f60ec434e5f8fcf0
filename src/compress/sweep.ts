/**
 * Quality sweep: every method at every budget on a model, perplexity vs stored bytes, measured with
 * the evaluation protocol (perplexity.ts). Compressed models go to a temporary directory. Methods
 * named in `calibrated` get the calibration (sequential by default: collected during each run, on
 * the layers as compressed; `calibMode: 'original'` collects once per model into a cache file in
 * that directory and reuses it), the others run data-free.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';
import { loadModel } from '../runtime/load-model.js';
import { perplexity } from '../runtime/perplexity.js';
import { Transformer } from '../runtime/transformer.js';
import type { CalibrationRequest } from './calib/source.js';
import { compress, type CalibrationMode } from './compress.js';

/** Methods that get the calibration when the caller names none: `auto`, and d2-moe, which D²-MoE defines with it. */
export const DEFAULT_CALIBRATED: readonly string[] = ['auto', 'd2-moe'];

export interface SweepRow {
  model: string;
  method: string;
  budget: number;
  /** Fraction of bf16 expert bytes actually stored (null: the method refused this budget). */
  stored: number | null;
  perplexity: number | null;
  /** Whether this run had calibration statistics. */
  calibrated: boolean;
  /** Perplexity relative to the uncompressed model, in percent. */
  lossPercent: number | null;
  compressSeconds: number | null;
  note?: string;
}

export interface SweepOptions {
  methods: string[];
  budgets: number[];
  ids: number[];
  windows: number;
  seed?: number;
  onProgress?: ProgressFn;
  /** Calibration text and options, for the methods in `calibrated` (the cache file is the sweep's own). */
  calib?: Omit<CalibrationRequest, 'cache'>;
  /** compress's calibMode (default 'sequential'). */
  calibMode?: CalibrationMode;
  /** Methods that get the calibration (default: DEFAULT_CALIBRATED). */
  calibrated?: string[];
  /** Called with each row as it is measured. */
  onRow?: (r: SweepRow) => void;
}

async function ppl(dir: string, ids: number[], windows: number): Promise<number> {
  const m = loadModel(dir);
  return (await perplexity(new Transformer(m.config, m.weights, m.banks), ids, { windows })).perplexity;
}

export async function qualitySweep(model: string, name: string, opts: SweepOptions): Promise<SweepRow[]> {
  const rows: SweepRow[] = [];
  const base = await ppl(model, opts.ids, opts.windows);
  const push = (r: SweepRow) => {
    rows.push(r);
    opts.onRow?.(r);
  };
  push({ model: name, method: 'original', budget: 1, stored: 1, perplexity: base, calibrated: false, lossPercent: 0, compressSeconds: 0 });
  const tmp = mkdtempSync(join(os.tmpdir(), 'moepress-sweep-'));
  const total = opts.methods.length * opts.budgets.length;
  let done = 0;
  try {
    for (const method of opts.methods) {
      for (const budget of opts.budgets) {
        const out = join(tmp, `${method}-${budget}`);
        const mode = opts.calibMode ?? 'sequential';
        const calib = opts.calib && (opts.calibrated ?? DEFAULT_CALIBRATED).includes(method) ? { ...opts.calib, ...(mode === 'original' ? { cache: join(tmp, 'calibration.safetensors') } : {}) } : undefined;
        const t0 = performance.now();
        try {
          const m = await compress({ model, out, method, budget, seed: opts.seed ?? 0, calib, calibMode: mode });
          const secs = (performance.now() - t0) / 1000;
          const p = await ppl(out, opts.ids, opts.windows);
          push({ model: name, method, budget, stored: m.bytes.fraction, perplexity: p, calibrated: !!calib, lossPercent: 100 * (p / base - 1), compressSeconds: secs });
        } catch (e) {
          if (!(e instanceof MoepressError)) throw e;
          push({ model: name, method, budget, stored: null, perplexity: null, calibrated: !!calib, lossPercent: null, compressSeconds: null, note: e.detail });
        } finally {
          rmSync(out, { recursive: true, force: true });
        }
        opts.onProgress?.({ task: `sweep ${name}`, done: ++done, total, unit: 'runs', detail: `${method} @ ${budget}` });
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return rows;
}

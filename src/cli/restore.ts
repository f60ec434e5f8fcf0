/** moepress restore DIR --out DENSE_DIR [--dtype bf16|f16|f32] [--overwrite] [--json] */
import { restore } from '../compress/restore.js';
import { estimateRestore } from '../compress/restore-estimate.js';
import { fmtBytes } from './format.js';
import { modelArg, parse, UsageError } from './args.js';
import { progressRenderer } from './progress.js';

export async function restoreCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { out: { type: 'string' }, dtype: { type: 'string' }, overwrite: { type: 'boolean' }, json: { type: 'boolean' } });
  const dir = modelArg(p, 'restore');
  const d = p.str('dtype')?.toUpperCase();
  if (d !== undefined && d !== 'BF16' && d !== 'F16' && d !== 'F32') throw new UsageError(`--dtype expects bf16, f16 or f32, got '${p.str('dtype')}'`);
  const json = p.flag('json');
  const progress = progressRenderer(json);
  if (!json) printRestoreEstimate(dir, d);
  const t0 = performance.now();
  const r = await restore(dir, p.req('out'), { dtype: d, overwrite: p.flag('overwrite'), onProgress: progress });
  progress.end();
  const seconds = (performance.now() - t0) / 1000;
  if (json) process.stdout.write(JSON.stringify({ out: p.req('out'), ...r, seconds }) + '\n');
  else process.stdout.write(`restored ${r.tensors} tensors into ${r.files.length} file(s) in ${seconds.toFixed(1)} s -> ${p.req('out')}\n`);
}

/** Runs this long or this big are announced before they start. */
const LONG_RUN_SECONDS = 60;
const BIG_RUN_BYTES = 2 ** 30;

function printRestoreEstimate(dir: string, dtype: 'BF16' | 'F16' | 'F32' | undefined): void {
  let e;
  try {
    e = estimateRestore(dir, dtype);
  } catch {
    return; // restore itself reports a bad directory with its own message
  }
  if (e.seconds < LONG_RUN_SECONDS && e.peakBytes < BIG_RUN_BYTES) return;
  process.stderr.write(`estimate: peak memory ${fmtBytes(e.peakBytes)} (${e.workingSet.map((w) => `${w.what} ${fmtBytes(w.bytes)}`).join(', ')}), about ${Math.ceil(e.seconds / 60)} min to write ${fmtBytes(e.outputBytes)}\n`);
}

/** moepress restore DIR --out DENSE_DIR [--dtype bf16|f16|f32] [--overwrite] [--json] */
import { restore } from '../compress/restore.js';
import { modelArg, parse, UsageError } from './args.js';
import { progressRenderer } from './progress.js';

export async function restoreCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { out: { type: 'string' }, dtype: { type: 'string' }, overwrite: { type: 'boolean' }, json: { type: 'boolean' } });
  const dir = modelArg(p, 'restore');
  const d = p.str('dtype')?.toUpperCase();
  if (d !== undefined && d !== 'BF16' && d !== 'F16' && d !== 'F32') throw new UsageError(`--dtype expects bf16, f16 or f32, got '${p.str('dtype')}'`);
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const t0 = performance.now();
  const r = await restore(dir, p.req('out'), { dtype: d, overwrite: p.flag('overwrite'), onProgress: progress });
  progress.end();
  const seconds = (performance.now() - t0) / 1000;
  if (json) process.stdout.write(JSON.stringify({ out: p.req('out'), ...r, seconds }) + '\n');
  else process.stdout.write(`restored ${r.tensors} tensors into ${r.files.length} file(s) in ${seconds.toFixed(1)} s -> ${p.req('out')}\n`);
}

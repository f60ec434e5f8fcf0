/**
 * moepress export MODEL --gguf OUT.gguf [--dtype f32|f16] [--overwrite] [--json]
 * MODEL may be a compressed directory whose experts are quant q4s-g32 / q8s-g32: they become Q4_0 /
 * Q8_0 tensors, repacked losslessly; --dtype then applies to the other matrices.
 */
import { existsSync } from 'node:fs';
import { exportGguf } from '../export/export-gguf.js';
import { fmtBytes } from './format.js';
import { modelArg, parse, UsageError } from './args.js';
import { progressRenderer } from './progress.js';

export async function exportCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { gguf: { type: 'string' }, dtype: { type: 'string' }, overwrite: { type: 'boolean' }, json: { type: 'boolean' } });
  const dir = modelArg(p, 'export');
  const out = p.str('gguf');
  if (!out) throw new UsageError('--gguf OUT.gguf is required (GGUF is the only export format)');
  const d = (p.str('dtype') ?? 'f32').toUpperCase();
  if (d !== 'F16' && d !== 'F32') throw new UsageError(`--dtype expects f32 or f16, got '${p.str('dtype')}'`);
  if (existsSync(out) && !p.flag('overwrite')) throw new UsageError(`${out} exists; pass --overwrite to replace it`);
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const r = exportGguf(dir, out, { dtype: d, onProgress: progress });
  progress.end();
  if (json) process.stdout.write(JSON.stringify(r) + '\n');
  else process.stdout.write(`wrote ${r.tensors} tensors (${r.architecture}, ${d}${r.expertType ? `, experts ${r.expertType}` : ''}, ${fmtBytes(r.dataBytes)}) in ${r.seconds.toFixed(1)} s -> ${out}\n`);
}

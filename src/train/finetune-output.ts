/**
 * The model files of a fine-tuned compressed-experts directory. When only the vectors trained,
 * the source's safetensors shards, index, config and tokenizer files are copied byte for byte;
 * when model tensors trained too (ce+router, all), every hub tensor is rebuilt from the trained
 * canonical weights by the architecture's hubEntries, in the dtype the source stored it in and
 * with the source's expert layout, into shards of at most the source's largest shard size.
 */
import { copyFileSync, existsSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { writeCheckpoint } from '../io/checkpoint.js';
import type { DType, RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import type { ModelSource } from '../runtime/load-model.js';
import type { Weights } from '../runtime/weights.js';
import { fromFloat32 } from '../tensor/convert.js';

/** Files besides the weights that make a model directory (copied when present). */
export const SIDE_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

/** Copies the source's shards, index and side files into dir; returns the file names. */
export function copyModelFiles(src: ModelSource, dir: string): string[] {
  const ck = src.checkpoint;
  const names = [...ck.files(), ...(ck.indexFile ? [basename(ck.indexFile)] : []), ...SIDE_FILES.filter((f) => existsSync(join(src.dir, f)))];
  for (const f of names) copyFileSync(join(src.dir, f), join(dir, f));
  return names;
}

/** The dtype most of the checkpoint's floating-point bytes use (for tensors without a source). */
function dominantDtype(src: ModelSource): 'BF16' | 'F16' | 'F32' {
  const bytes = new Map<DType, number>();
  for (const n of src.checkpoint.names()) {
    const i = src.checkpoint.info(n);
    bytes.set(i.dtype, (bytes.get(i.dtype) ?? 0) + i.byteLength);
  }
  const floats = (['BF16', 'F16', 'F32'] as const).filter((d) => bytes.has(d));
  if (floats.length === 0) throw new MoepressError('no BF16, F16 or F32 tensors to take the dtype from', { file: src.dir });
  return floats.reduce((a, b) => (bytes.get(b)! > bytes.get(a)! ? b : a));
}

/**
 * Writes `weights` (canonical float32, the trained model) under hub names into dir; returns the
 * file names. Each canonical tensor takes the dtype of the first hub tensor it was read from.
 */
export function writeModelFiles(src: ModelSource, weights: Weights, dir: string): string[] {
  const { config: cfg, arch, checkpoint: ck } = src;
  const fallback = dominantDtype(src);
  const dtypeOf = new Map<string, 'BF16' | 'F16' | 'F32'>();
  for (const e of arch.canonicalEntries(cfg, (n) => ck.has(n))) {
    const d = e.hub.length && ck.has(e.hub[0]) ? ck.info(e.hub[0]).dtype : fallback;
    dtypeOf.set(e.name, d === 'BF16' || d === 'F16' || d === 'F32' ? d : fallback);
  }
  const get = (name: string): RawTensor => {
    const t = weights.get(name);
    const dtype = dtypeOf.get(name) ?? fallback;
    return { dtype, shape: [...t.shape], data: fromFloat32(t.data, dtype) };
  };
  const hub = arch.hubEntries(cfg, (n) => weights.has(n));
  // as many shards as the source had, roughly: no shard larger than its largest
  const shardBytes = ck.files().length > 1 ? Math.max(...ck.files().map((f) => statSync(join(src.dir, f)).size)) : undefined;
  function* tensors(): Generator<[string, RawTensor]> {
    for (const h of hub) yield [h.name, h.build(get)];
  }
  const written = writeCheckpoint(dir, tensors(), { shardBytes });
  const side = SIDE_FILES.filter((f) => existsSync(join(src.dir, f)));
  for (const f of side) copyFileSync(join(src.dir, f), join(dir, f));
  return [...written.files, ...(written.indexFile ? [basename(written.indexFile)] : []), ...side];
}

/**
 * Export a Hugging Face model directory to one GGUF file for llama.cpp. Streams: each canonical
 * tensor is read from the shards, converted (Q/K permutation, F32/F16) and written before the next
 * is read, so peak memory is about one tensor (for MoE layers, one stacked [E, I, H] expert tensor).
 */
import { basename } from 'node:path';
import { MoepressError } from '../io/errors.js';
import { isCompressedDir } from '../compress/format.js';
import { openModel, readChecked } from '../runtime/load-model.js';
import { toFloat32 } from '../tensor/convert.js';
import type { ProgressFn } from '../progress.js';
import type { GgufTensorType } from './gguf-format.js';
import { ggufPlan } from './gguf-mapping.js';
import { tokenizerKvs } from './gguf-tokenizer.js';
import { GgufWriter, tensorByteLength } from './gguf-writer.js';

export interface ExportGgufOptions {
  dtype?: GgufTensorType;
  onProgress?: ProgressFn;
}

export interface ExportGgufResult {
  file: string;
  architecture: string;
  tensors: number;
  dataBytes: number;
  seconds: number;
}

export function exportGguf(dir: string, out: string, opts: ExportGgufOptions = {}): ExportGgufResult {
  const t0 = performance.now();
  if (isCompressedDir(dir)) throw new MoepressError('a moepress compressed checkpoint cannot be exported to GGUF; run `moepress restore` to a dense checkpoint first', { file: dir });
  const { config, arch, checkpoint } = openModel(dir);
  const entries = new Map(arch.canonicalEntries(config, (n) => checkpoint.has(n)).map((e) => [e.name, e]));
  const plan = ggufPlan(config, basename(dir), opts.dtype ?? 'F32', (n) => entries.has(n), `${dir}/config.json`);
  const kvs = [...plan.kvs, ...tokenizerKvs(dir, config)];
  const writer = new GgufWriter(out, kvs, plan.tensors);
  try {
    plan.tensors.forEach((t, i) => {
      const entry = entries.get(t.canonical);
      if (!entry) throw new MoepressError(`canonical tensor '${t.canonical}' is not in the checkpoint`, { file: dir, tensor: t.name });
      const raw = entry.load((n) => readChecked(checkpoint, n));
      if (raw.shape.length !== t.shape.length || raw.shape.some((d, j) => d !== t.shape[j])) {
        throw new MoepressError(`shape [${raw.shape}] does not match config.json, which implies [${t.shape}]`, { file: dir, tensor: entry.hub.join(', ') });
      }
      const x = toFloat32(raw, entry.name);
      writer.write(t.name, t.transform ? t.transform(x) : x);
      opts.onProgress?.({ task: 'export', done: i + 1, total: plan.tensors.length, unit: 'tensors', detail: t.name });
    });
    writer.close();
  } catch (e) {
    writer.abort();
    throw e;
  }
  const dataBytes = plan.tensors.reduce((s, t) => s + tensorByteLength(t), 0);
  return { file: out, architecture: plan.arch, tensors: plan.tensors.length, dataBytes, seconds: (performance.now() - t0) / 1000 };
}

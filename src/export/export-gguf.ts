/**
 * Export a Hugging Face model directory to one GGUF file for llama.cpp. Streams: each canonical
 * tensor is read from the shards, converted (Q/K permutation, F32/F16) and written before the next
 * is read, so peak memory is about one tensor (for MoE layers, one stacked [E, I, H] expert tensor).
 *
 * A moepress compressed directory exports too when every compressed expert matrix is one `quant`
 * part whose codec has a lossless GGML twin (gguf-quants.ts): q4s-g32 -> Q4_0, q8s-g32 -> Q8_0. Its
 * stacked expert tensors are then the stored blocks repacked, not requantized, so llama.cpp runs
 * exactly the weights moepress runs; everything else is written as for a hub checkpoint.
 */
import { basename } from 'node:path';
import { MoepressError } from '../io/errors.js';
import { join } from 'node:path';
import { isCompressedDir, MANIFEST_FILE, readManifest } from '../compress/format.js';
import { MATRICES, matrixShape, type LayerRecord, type MatrixName } from '../compress/parts.js';
import { hasCompressedExperts } from '../runtime/compressed-experts.js';
import { compressedLayers, modelEntries, openModel, readChecked, type ModelSource } from '../runtime/load-model.js';
import { toFloat32 } from '../tensor/convert.js';
import type { ProgressFn } from '../progress.js';
import { FILE_TYPE, kv, TENSOR_BLOCK, type GgufFloatType } from './gguf-format.js';
import { ggufPlan } from './gguf-mapping.js';
import { ggmlTypeForCodec, repackBlocks, REPACKABLE_CODECS, type GgufBlockType } from './gguf-quants.js';
import { tokenizerKvs } from './gguf-tokenizer.js';
import { GgufWriter, tensorByteLength } from './gguf-writer.js';

export interface ExportGgufOptions {
  /** Type of the float matrices (vectors and routers stay F32). */
  dtype?: GgufFloatType;
  onProgress?: ProgressFn;
}

export interface ExportGgufResult {
  file: string;
  architecture: string;
  tensors: number;
  dataBytes: number;
  /** For a compressed directory: the GGML type its experts were repacked into; null otherwise. */
  expertType: GgufBlockType | null;
  seconds: number;
}

/** One stacked expert tensor of a compressed layer: its GGML type and each expert's stored blocks. */
interface RepackedExperts {
  type: GgufBlockType;
  refs: string[];
}

/**
 * How matrix m of a compressed layer maps onto GGML blocks, or an error naming the layer, expert and
 * stored tensor and what export takes.
 */
function repackPlan(src: ModelSource, rec: LayerRecord, m: MatrixName, manifestFile: string): RepackedExperts {
  const [, cols] = matrixShape(m, src.config.moe!.intermediate, src.config.hidden);
  if (rec.perms) throw new MoepressError(`layer ${rec.layer}: experts are stored with permuted neurons (method '${rec.method}'); GGUF export takes unpermuted quant experts only`, { file: manifestFile });
  let type: GgufBlockType | null = null;
  const refs = rec.experts.map((parts, e) => {
    const where = `layer ${rec.layer} expert ${e} '${m}'`;
    const ps = parts[m];
    const p = ps[0];
    if (ps.length !== 1 || p.kind !== 'quant') {
      throw new MoepressError(`${where} is stored as ${ps.map((x) => x.kind).join(' + ')} (method '${rec.method}'); GGUF export takes experts stored as one quant part with codec ${REPACKABLE_CODECS}. Run \`moepress restore\` and export the dense checkpoint instead`, { file: manifestFile });
    }
    const t = ggmlTypeForCodec(p.codec);
    if (!t) throw new MoepressError(`${where} uses codec '${p.codec}', which has no lossless GGML block type; supported: ${REPACKABLE_CODECS}`, { file: manifestFile, tensor: p.ref });
    if (type !== null && t !== type) throw new MoepressError(`${where} is ${t} but earlier experts are ${type}; one stacked GGUF tensor takes one type`, { file: manifestFile, tensor: p.ref });
    type = t;
    return p.ref;
  });
  if (!type) throw new MoepressError(`layer ${rec.layer} has no experts`, { file: manifestFile });
  const block = TENSOR_BLOCK[type as GgufBlockType].values;
  if (cols % block !== 0) throw new MoepressError(`layer ${rec.layer} '${m}': rows of ${cols} values are not whole ${type} blocks of ${block}`, { file: manifestFile });
  return { type, refs };
}

/** Experts e = 0..E-1 of one matrix, each [out, in] of stored blocks, stacked into one GGML tensor's bytes. */
function repackedBytes(src: ModelSource, r: RepackedExperts, n: number, tensor: string): Uint8Array {
  const per = (n / TENSOR_BLOCK[r.type].values) * TENSOR_BLOCK[r.type].bytes;
  const out = new Uint8Array(per * r.refs.length);
  r.refs.forEach((ref, e) => {
    const raw = src.checkpoint.read(ref);
    if (raw.dtype !== 'U8' || raw.data.length !== per) {
      throw new MoepressError(`expected ${per} bytes (U8) of ${r.type}-compatible blocks for expert ${e} of ${tensor}, got ${raw.data.length} (${raw.dtype})`, { file: src.checkpoint.info(ref).file, tensor: ref });
    }
    repackBlocks(r.type, raw.data, out, e * per);
  });
  return out;
}

export function exportGguf(dir: string, out: string, opts: ExportGgufOptions = {}): ExportGgufResult {
  const t0 = performance.now();
  const src = openModel(dir);
  const { config, checkpoint } = src;
  const manifestFile = join(dir, MANIFEST_FILE);
  const compressed = compressedLayers(isCompressedDir(dir) ? readManifest(dir) : null);
  if (compressed.size && hasCompressedExperts(dir)) throw new MoepressError('compressed experts (moepress-ce) have no GGUF form; export the directory without them', { file: dir });
  const entries = new Map(modelEntries(src, compressed).map((e) => [e.name, e]));
  const plan = ggufPlan(config, basename(dir), opts.dtype ?? 'F32', (n) => entries.has(n), `${dir}/config.json`);
  // Stacked expert tensors of compressed layers: canonical name -> stored blocks to repack.
  const repacked = new Map<string, RepackedExperts>();
  for (const [layer, rec] of compressed) {
    for (const m of MATRICES) repacked.set(`layers.${layer}.moe.experts.${m}`, repackPlan(src, rec, m, manifestFile));
  }
  const types = new Set([...repacked.values()].map((r) => r.type));
  const expertType = types.size ? ([...types].sort()[0] as GgufBlockType) : null;
  const tensors = plan.tensors.map((t) => (repacked.has(t.canonical) ? { ...t, type: repacked.get(t.canonical)!.type } : t));
  // general.file_type names the most common quantized type, as llama-quantize's --type would.
  const kvs = [...plan.kvs.map((k) => (k.key === 'general.file_type' && expertType ? kv.u32(k.key, FILE_TYPE[expertType]) : k)), ...tokenizerKvs(dir, config)];
  const writer = new GgufWriter(out, kvs, tensors);
  try {
    tensors.forEach((t, i) => {
      const r = repacked.get(t.canonical);
      if (r) writer.writeBytes(t.name, repackedBytes(src, r, t.shape.slice(1).reduce((a, b) => a * b, 1), t.name));
      else {
        const entry = entries.get(t.canonical);
        if (!entry) throw new MoepressError(`canonical tensor '${t.canonical}' is not in the checkpoint`, { file: dir, tensor: t.name });
        const raw = entry.load((n) => readChecked(checkpoint, n));
        if (raw.shape.length !== t.shape.length || raw.shape.some((d, j) => d !== t.shape[j])) {
          throw new MoepressError(`shape [${raw.shape}] does not match config.json, which implies [${t.shape}]`, { file: dir, tensor: entry.hub.join(', ') });
        }
        const x = toFloat32(raw, entry.name);
        writer.write(t.name, t.transform ? t.transform(x) : x);
      }
      opts.onProgress?.({ task: 'export', done: i + 1, total: tensors.length, unit: 'tensors', detail: t.name });
    });
    writer.close();
  } catch (e) {
    writer.abort();
    throw e;
  }
  const dataBytes = tensors.reduce((s, t) => s + tensorByteLength(t), 0);
  return { file: out, architecture: plan.arch, tensors: tensors.length, dataBytes, expertType, seconds: (performance.now() - t0) / 1000 };
}

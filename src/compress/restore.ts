/**
 * restore: a compressed checkpoint back to a plain hub-layout checkpoint (original tensor names,
 * expert layout and shard size) that transformers loads. Non-expert tensors are copied byte for
 * byte; experts are rebuilt from their parts, un-permuted, and stored in the requested dtype.
 * Streams one layer at a time; writes to `${out}.partial` and renames when complete.
 */
import { copyFileSync, existsSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeCheckpoint } from '../io/checkpoint.js';
import type { RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';
import { fromFloat32, toFloat32 } from '../tensor/convert.js';
import { openModel, readChecked } from '../runtime/load-model.js';
import { densifyMatrix, prepareParts } from './apply.js';
import { isExpertWeight } from './experts-io.js';
import { readManifest } from './format.js';
import { MATRICES, matrixShape, type LayerRecord, type MatrixName } from './parts.js';
import { unpermute } from './methods/record.js';

export interface RestoreOptions {
  dtype?: 'BF16' | 'F16' | 'F32';
  overwrite?: boolean;
  onProgress?: ProgressFn;
}

const SIDE_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

/**
 * One layer's experts rebuilt dense in original neuron order, one matrix kind, stored as `dtype`:
 * [E, out, in]. Built expert by expert through one reused float32 matrix, so the float32 stack of
 * all E experts (1.9 GB per matrix kind for Mixtral-8x7B) never exists.
 */
export function rebuildExperts(rec: LayerRecord, m: MatrixName, I: number, H: number, get: (n: string) => RawTensor, dtype: 'BF16' | 'F16' | 'F32' = 'F32'): RawTensor {
  const [out, inp] = matrixShape(m, I, H);
  const n = out * inp;
  const size = dtype === 'F32' ? 4 : 2;
  const data = new Uint8Array(rec.experts.length * n * size);
  const cache = new Map<string, Float32Array>();
  const shared = new Set(rec.experts[0]?.[m].flatMap((p) => (p.kind === 'dense' ? [p.ref] : [])) ?? []);
  const f32 = (name: string) => {
    const hit = cache.get(name);
    if (hit) return hit;
    const v = toFloat32(get(name));
    if (shared.has(name)) cache.set(name, v); // only the shared base is worth keeping between experts
    return v;
  };
  const w = new Float32Array(n);
  rec.experts.forEach((parts, e) => {
    densifyMatrix(prepareParts(parts[m], out, inp, get, f32), out, inp, w);
    let back: Float32Array = w;
    if (rec.perms) {
      const p = get(rec.perms[e]);
      const perm = p.dtype === 'U16' ? Int32Array.from(new Uint16Array(p.data.buffer, p.data.byteOffset, I)) : new Int32Array(p.data.buffer.slice(p.data.byteOffset, p.data.byteOffset + 4 * I));
      back = unpermute(w, perm, m, I, H);
    }
    data.set(fromFloat32(back, dtype), e * n * size);
  });
  return { dtype, shape: [rec.experts.length, out, inp], data };
}

export async function restore(dir: string, out: string, opts: RestoreOptions = {}): Promise<{ files: string[]; tensors: number }> {
  const manifest = readManifest(dir);
  const src = openModel(dir);
  const cfg = { ...src.config, expertLayout: manifest.source.expertLayout as 'per-expert' | 'fused' | 'gpt-oss' };
  const moe = cfg.moe;
  if (!moe) throw new MoepressError('the compressed model has no MoE config', { file: join(dir, 'config.json') });
  const dst = resolve(out);
  if (existsSync(dst) && !opts.overwrite) throw new MoepressError('output directory already exists; choose another --out or pass --overwrite', { file: dst });
  const dtype = opts.dtype ?? (['BF16', 'F16', 'F32'].includes(manifest.source.dtype) ? (manifest.source.dtype as 'BF16') : 'BF16');
  const records = new Map(manifest.layers.map((r) => [r.layer, r]));
  const ck = src.checkpoint;
  const entries = new Map(src.arch.canonicalEntries(cfg, (n) => ck.has(n)).filter((e) => !(e.layer !== null && records.has(e.layer) && isExpertWeight(e.name))).map((e) => [e.name, e]));
  const canonicalNames = new Set(entries.keys());
  for (const l of records.keys()) for (const m of MATRICES) canonicalNames.add(`layers.${l}.moe.experts.${m}`);
  // Rebuilt experts of the current layer only: memory stays at one layer.
  let cachedLayer = -1;
  let cached = new Map<string, RawTensor>();
  const get = (name: string): RawTensor => {
    const mm = /^layers\.(\d+)\.moe\.experts\.(gate|up|down)$/.exec(name);
    if (mm && records.has(Number(mm[1]))) {
      const l = Number(mm[1]);
      if (l !== cachedLayer) {
        cachedLayer = l;
        cached = new Map();
      }
      if (!cached.has(name)) {
        cached.set(name, rebuildExperts(records.get(l)!, mm[2] as MatrixName, moe.intermediate, cfg.hidden, (n) => ck.read(n), dtype));
      }
      return cached.get(name)!;
    }
    const e = entries.get(name);
    if (!e) throw new MoepressError(`canonical tensor '${name}' has no source in the compressed checkpoint`, { file: dir });
    return e.load((n) => readChecked(ck, n));
  };
  const hub = src.arch.hubEntries(cfg, (n) => canonicalNames.has(n));
  const partial = `${dst}.partial`;
  rmSync(partial, { recursive: true, force: true });
  let done = 0;
  function* tensors(): Generator<[string, RawTensor]> {
    for (const h of hub) {
      yield [h.name, h.build(get)];
      opts.onProgress?.({ task: 'restore', done: ++done, total: hub.length, unit: 'tensors', detail: h.name });
    }
  }
  const written = writeCheckpoint(partial, tensors(), { shardBytes: manifest.source.shardBytes || undefined });
  for (const f of SIDE_FILES) if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(partial, f));
  ck.close();
  if (existsSync(dst)) rmSync(dst, { recursive: true, force: true });
  renameSync(partial, dst);
  return { files: written.files, tensors: hub.length };
}

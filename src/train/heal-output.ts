/**
 * The output of `moepress finetune --teacher` (healing, heal.ts): the compressed directory again.
 * Every file but the rest shards, the index and the manifest is copied byte for byte (the experts
 * files, hence the routed-expert budget, and config/tokenizer); the rest shards are rewritten in
 * the input's tensor order, each hub tensor rebuilt from the trained canonical weights in the dtype
 * the input stored it in when any of its canonical tensors trained, copied raw otherwise; the index
 * points the rest names at the new shards; the manifest gains a `heal` entry.
 */
import { copyFileSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { INDEX_FILE, writeCheckpoint } from '../io/checkpoint.js';
import type { RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import { MANIFEST_FILE, type HealRecord, type Manifest } from '../compress/format.js';
import type { ModelSource } from '../runtime/load-model.js';
import type { Weights } from '../runtime/weights.js';
import { fromFloat32 } from '../tensor/convert.js';

const REST_FILE = /^rest(-\d{5,}-of-\d{5,})?\.safetensors(\.index\.json)?$/;

/** The input's non-expert (rest) tensor names in storage order: shard by shard, by offset. */
export function restNames(src: ModelSource): string[] {
  const ck = src.checkpoint;
  const names = ck.names().filter((n) => REST_FILE.test(ck.info(n).file.split('/').pop()!));
  const files = ck.files();
  const key = (n: string) => [files.indexOf(ck.info(n).file.split('/').pop()!), ck.info(n).offset];
  return names.sort((a, b) => {
    const [fa, oa] = key(a);
    const [fb, ob] = key(b);
    return fa - fb || oa - ob;
  });
}

/**
 * Writes the healed compressed directory into dir. `weights`: the trained canonical float32
 * weights; `trained(name)`: whether a canonical tensor trained (others are copied raw).
 */
export function writeHealedDir(src: ModelSource, manifest: Manifest, weights: Weights, trained: (canonical: string) => boolean, heal: HealRecord, dir: string): string[] {
  const ck = src.checkpoint;
  const copied: string[] = [];
  for (const f of readdirSync(src.dir)) {
    if (REST_FILE.test(f) || f === INDEX_FILE || f === MANIFEST_FILE || !statSync(join(src.dir, f)).isFile()) continue;
    rmSync(join(dir, f), { force: true }); // a resumed run may find a read-only copy (tokenizer, config) here
    copyFileSync(join(src.dir, f), join(dir, f));
    copied.push(f);
  }
  const names = restNames(src);
  const cfg = { ...src.config, expertLayout: manifest.source.expertLayout as 'per-expert' | 'fused' | 'gpt-oss' };
  const hub = new Map(src.arch.hubEntries(cfg, (n) => weights.has(n)).map((h) => [h.name, h]));
  // each canonical tensor is stored in the dtype of the (first) hub tensor it was read from
  const dtypeOf = new Map<string, RawTensor['dtype']>();
  for (const e of src.arch.canonicalEntries(cfg, (n) => ck.has(n))) if (e.hub.length && ck.has(e.hub[0])) dtypeOf.set(e.name, ck.info(e.hub[0]).dtype);
  const get = (name: string): RawTensor => {
    const t = weights.get(name);
    const dtype = dtypeOf.get(name) ?? 'F32';
    if (dtype !== 'BF16' && dtype !== 'F16' && dtype !== 'F32') throw new MoepressError(`canonical '${name}' was stored as ${dtype}; only BF16, F16 and F32 tensors can be written back after training`, { file: src.dir });
    return { dtype, shape: [...t.shape], data: fromFloat32(t.data, dtype) };
  };
  function* tensors(): Generator<[string, RawTensor]> {
    for (const n of names) {
      const h = hub.get(n);
      if (!h || !h.canonical.some(trained)) {
        yield [n, ck.read(n)];
        continue;
      }
      const t = h.build(get);
      const was = ck.info(n);
      if (t.dtype !== was.dtype || t.shape.join() !== was.shape.join()) {
        throw new MoepressError(`rebuilt as ${t.dtype} [${t.shape}], but the input stores ${was.dtype} [${was.shape}]`, { file: was.file, tensor: n });
      }
      yield [n, t];
    }
  }
  const written = writeCheckpoint(dir, tensors(), { prefix: 'rest' });
  const restFile = new Map<string, string>();
  if (written.indexFile) {
    const idx = JSON.parse(readFileSync(written.indexFile, 'utf8')) as { weight_map: Record<string, string> };
    for (const [n, f] of Object.entries(idx.weight_map)) restFile.set(n, f);
  } else for (const n of names) restFile.set(n, written.files[0]);

  // the index: the input's weight map with the rest names moved to the new shards
  const index = JSON.parse(readFileSync(join(src.dir, INDEX_FILE), 'utf8')) as { metadata: Record<string, unknown>; weight_map: Record<string, string> };
  for (const n of names) index.weight_map[n] = restFile.get(n)!;
  writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index, null, 2));
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify({ ...manifest, heal }, null, 2));
  return [...copied, ...written.files, ...(written.indexFile ? ['rest.safetensors.index.json'] : []), INDEX_FILE, MANIFEST_FILE].sort();
}

/**
 * A Hugging Face checkpoint directory: one or more safetensors shards, located through
 * model.safetensors.index.json ({ metadata: { total_size }, weight_map: name -> shard file }) when
 * present, else model.safetensors, else every *.safetensors file in the directory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RawTensor } from './dtype.js';
import { MoepressError } from './errors.js';
import { readJsonObject } from './config.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';
import { writeSafetensors } from './safetensors-writer.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';
/**
 * Default shard size for writeCheckpoint. The writer holds one shard's tensors in memory until the
 * shard is written, so this also bounds its peak memory.
 */
export const DEFAULT_SHARD_BYTES = 2 * 1024 ** 3;

export class Checkpoint {
  readonly dir: string;
  /** Path of the index file used, or null when shards were found without one. */
  readonly indexFile: string | null;
  private readonly shardOf: Map<string, string>; // tensor name -> shard file name (in dir)
  private readonly namesOf = new Map<string, string[]>(); // shard file name -> tensors the index puts there
  private readonly open_ = new Map<string, SafetensorsFile>(); // shards opened so far

  private constructor(dir: string, indexFile: string | null, shardOf: Map<string, string>,
    opened: SafetensorsFile[]) {
    this.dir = dir;
    this.indexFile = indexFile;
    this.shardOf = shardOf;
    for (const [name, file] of shardOf) {
      const list = this.namesOf.get(file);
      if (list) list.push(name);
      else this.namesOf.set(file, [name]);
    }
    for (const f of opened) this.open_.set(path.basename(f.path), f);
  }

  /**
   * Locates the shards of `dir`. With an index, shards are only checked to exist here and are
   * opened (header read and checked against the index) on first use; without one, every shard's
   * header must be read now to learn which tensors it holds.
   */
  static open(dir: string): Checkpoint {
    let entries: string[];
    try {
      if (!fs.statSync(dir).isDirectory()) throw new MoepressError('not a directory', { file: dir });
      entries = fs.readdirSync(dir);
    } catch (e) {
      if (e instanceof MoepressError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      throw new MoepressError(code === 'ENOENT' ? 'checkpoint directory not found'
        : `cannot read checkpoint directory: ${(e as Error).message}`, { file: dir });
    }
    const indexes = entries.filter((e) => e.endsWith('.safetensors.index.json'));
    const index = entries.includes(INDEX_FILE) ? INDEX_FILE : indexes.length === 1 ? indexes[0] : null;
    if (index !== null) {
      const indexFile = path.join(dir, index);
      return new Checkpoint(dir, indexFile, readIndex(dir, indexFile), []);
    }
    const files = entries.includes(SINGLE_FILE) ? [SINGLE_FILE]
      : entries.filter((e) => e.endsWith('.safetensors')).sort();
    if (files.length === 0) {
      throw new MoepressError(`no safetensors weights: expected ${INDEX_FILE}, ${SINGLE_FILE} ` +
        'or *.safetensors files', { file: dir });
    }
    const opened: SafetensorsFile[] = [];
    const shardOf = new Map<string, string>();
    try {
      for (const file of files) {
        const st = SafetensorsFile.open(path.join(dir, file));
        opened.push(st);
        for (const name of st.tensors.keys()) {
          const other = shardOf.get(name);
          if (other !== undefined) {
            throw new MoepressError(`tensor is stored in two shards, '${other}' and '${file}'; ` +
              'expected each tensor in exactly one', { file: dir, tensor: name });
          }
          shardOf.set(name, file);
        }
      }
    } catch (e) {
      for (const st of opened) st.close();
      throw e;
    }
    return new Checkpoint(dir, null, shardOf, opened);
  }

  /** Tensor names, in index order (or shard then data order without an index). */
  names(): string[] {
    return [...this.shardOf.keys()];
  }

  has(name: string): boolean {
    return this.shardOf.has(name);
  }

  /** Shard file names (relative to dir) in first-use order of the index. */
  files(): string[] {
    return [...this.namesOf.keys()];
  }

  /** Header entry of `name` plus the path of the shard that holds it. */
  info(name: string): TensorInfo & { file: string } {
    const shard = this.shard(this.fileOf(name));
    const info = shard.info(name);
    return { ...info, shape: [...info.shape], file: shard.path };
  }

  read(name: string): RawTensor {
    return this.shard(this.fileOf(name)).read(name);
  }

  /** Reads `name` into `dest`, which must be exactly its byte length (see SafetensorsFile.readInto). */
  readInto(name: string, dest: Uint8Array): void {
    this.shard(this.fileOf(name)).readInto(name, dest);
  }

  /** Opens every shard, so all header and index errors surface now rather than on first read. */
  validate(): void {
    for (const file of this.namesOf.keys()) this.shard(file);
  }

  /** Closes every open shard; reads after close reopen them. */
  close(): void {
    for (const st of this.open_.values()) st.close();
    this.open_.clear();
  }

  private fileOf(name: string): string {
    const file = this.shardOf.get(name);
    if (file === undefined) {
      const source = this.indexFile ? `its index ${path.basename(this.indexFile)}` : 'its shards';
      throw new MoepressError(`no such tensor in this checkpoint (${this.shardOf.size} tensors listed in ${
        source})`, { file: this.dir, tensor: name });
    }
    return file;
  }

  /** The open shard `file`, opening it and checking it holds what the index says on first use. */
  private shard(file: string): SafetensorsFile {
    let st = this.open_.get(file);
    if (st) return st;
    st = SafetensorsFile.open(path.join(this.dir, file));
    for (const name of this.namesOf.get(file) ?? []) {
      if (!st.tensors.has(name)) {
        st.close();
        throw new MoepressError(`tensor is mapped to this shard by ${
          path.basename(this.indexFile ?? INDEX_FILE)} but is not in its header`, { file: st.path, tensor: name });
      }
    }
    this.open_.set(file, st);
    return st;
  }
}

/** Parses and checks an index file: weight_map of name -> shard file, every shard present. */
function readIndex(dir: string, indexFile: string): Map<string, string> {
  const index = readJsonObject(indexFile);
  const map = index.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw new MoepressError('expected a "weight_map" object mapping tensor names to shard files',
      { file: indexFile });
  }
  const shardOf = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file === '' || path.basename(file) !== file || file === '..') {
      throw new MoepressError(`weight_map entry ${JSON.stringify(file)} is not a shard file name ` +
        'in the checkpoint directory', { file: indexFile, tensor: name });
    }
    shardOf.set(name, file);
  }
  if (shardOf.size === 0) throw new MoepressError('weight_map lists no tensors', { file: indexFile });
  const checked = new Set<string>();
  for (const [name, file] of shardOf) {
    if (checked.has(file)) continue;
    checked.add(file);
    if (!fs.existsSync(path.join(dir, file))) {
      throw new MoepressError(`shard '${file}' named in the index does not exist in ${dir}`,
        { file: indexFile, tensor: name });
    }
  }
  return shardOf;
}

export interface WriteCheckpointOptions {
  /** Start a new shard when the next tensor would push the current one past this many bytes. */
  shardBytes?: number;
  /** safetensors __metadata__ for every shard; "format": "pt" is added unless given (transformers needs it). */
  metadata?: Record<string, string>;
  /** File name prefix: `${prefix}.safetensors` or `${prefix}-00001-of-0000N.safetensors`. Default "model". */
  prefix?: string;
}

export interface WrittenCheckpoint {
  /** Shard file names written, in order. */
  files: string[];
  /** Path of the index written, or null for a single unsharded file (as transformers does). */
  indexFile: string | null;
  /** Sum of tensor data bytes (the index's metadata.total_size). */
  totalSize: number;
}

/**
 * Writes tensors as a Hugging Face checkpoint in `dir` (created if needed), in iteration order.
 * Tensors accumulate until a shard is full, then that shard is written under a temporary name, so
 * peak memory is about one shard plus one tensor even when `tensors` is a lazy generator; the
 * caller must not reuse a yielded tensor's buffer. The shard count N is known only at the end,
 * when the shards are renamed to `model-0000i-of-0000N.safetensors` (or `model.safetensors`
 * when one shard suffices; the index is written only when sharded, like transformers). Stale
 * shards and index from an earlier save with the same prefix are removed.
 */
export function writeCheckpoint(dir: string, tensors: Iterable<[string, RawTensor]>,
  opts: WriteCheckpointOptions = {}): WrittenCheckpoint {
  const prefix = opts.prefix ?? 'model';
  const shardBytes = opts.shardBytes ?? DEFAULT_SHARD_BYTES;
  if (!(shardBytes > 0)) throw new MoepressError(`shardBytes must be positive, got ${shardBytes}`, { file: dir });
  const metadata = { format: 'pt', ...opts.metadata };
  fs.mkdirSync(dir, { recursive: true });

  const temps: { tmp: string; names: string[] }[] = [];
  let pending: [string, RawTensor][] = [];
  let pendingBytes = 0;
  let totalSize = 0;
  const seen = new Set<string>();
  const flush = (): void => {
    const tmp = path.join(dir, `.${prefix}-shard-${temps.length + 1}.safetensors.tmp`);
    temps.push({ tmp, names: pending.map(([n]) => n) });
    writeSafetensors(tmp, pending, metadata);
    pending = []; // release this shard's tensors before the next fills up
    pendingBytes = 0;
  };
  try {
    for (const [name, t] of tensors) {
      if (seen.has(name)) throw new MoepressError('tensor name given twice', { file: dir, tensor: name });
      seen.add(name);
      const n = t.data.byteLength;
      if (pending.length > 0 && pendingBytes + n > shardBytes) flush();
      pending.push([name, t]);
      pendingBytes += n;
      totalSize += n;
    }
    if (pending.length > 0 || temps.length === 0) flush();
  } catch (e) {
    for (const { tmp } of temps) fs.rmSync(tmp, { force: true });
    throw e;
  }
  return finish(dir, prefix, temps, totalSize);
}

/** Renames temporary shards to their final names, writes the index, removes stale files. */
function finish(dir: string, prefix: string, temps: { tmp: string; names: string[] }[],
  totalSize: number): WrittenCheckpoint {
  const n = temps.length;
  const width = Math.max(5, String(n).length);
  const files = n === 1 ? [`${prefix}.safetensors`]
    : temps.map((_, i) => `${prefix}-${String(i + 1).padStart(width, '0')}-of-${String(n).padStart(width, '0')}.safetensors`);
  temps.forEach(({ tmp }, i) => fs.renameSync(tmp, path.join(dir, files[i])));

  let indexFile: string | null = null;
  const indexName = `${prefix}.safetensors.index.json`;
  if (n > 1) {
    const weightMap: Record<string, string> = {};
    const pairs = temps.flatMap(({ names }, i) => names.map((name) => [name, files[i]] as const));
    pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)); // transformers sorts the weight map
    for (const [name, file] of pairs) weightMap[name] = file;
    indexFile = path.join(dir, indexName);
    const tmp = `${indexFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n');
    fs.renameSync(tmp, indexFile);
  }

  // A stale index would point readers at old shards, and stale shards would be globbed.
  const ours = new RegExp(`^${escapeRegExp(prefix)}(-\\d{5,}-of-\\d{5,})?\\.safetensors(\\.index\\.json)?$`);
  const keep = new Set([...files, ...(indexFile ? [indexName] : [])]);
  for (const entry of fs.readdirSync(dir)) {
    if (ours.test(entry) && !keep.has(entry)) fs.rmSync(path.join(dir, entry), { force: true });
  }
  return { files, indexFile, totalSize };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

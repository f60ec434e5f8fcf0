/**
 * Writes an upcycled model as a moepress compressed checkpoint (compress/format.ts), which eval,
 * generate, inspect and restore already run:
 *   config.json                  the Mixtral config (upcycle-config.ts); tokenizer files copied
 *   rest*.safetensors            embeddings, attention, norms, routers under Mixtral hub names
 *   experts-LLLLL.safetensors    per layer: the shared base `moepress.layers.L.base.{gate,up,down}`
 *                                and each expert's delta `moepress.layers.L.delta.e.{m}.*`
 *   model.safetensors.index.json weight_map over all of the above
 *   moepress.json                manifest: method 'ders-upcycle', per layer experts = [base, delta]
 * Every expert's matrix is two parts: the one stored dense base, shared by all E experts, plus a
 * lowrank (left [out, r] · right [r, in]) or sparse (values + I32 ascending indices) delta.
 */
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expertsFile, FORMAT, FORMAT_VERSION, MANIFEST_FILE, packageVersion, type Manifest } from '../compress/format.js';
import { LayerStore, referenceBytes } from '../compress/method.js';
import { isExpertWeight } from '../compress/experts-io.js';
import { MATRICES, matrixShape, type ExpertParts, type LayerRecord, type MatrixName, type MatrixPart } from '../compress/parts.js';
import { INDEX_FILE, writeCheckpoint } from '../io/checkpoint.js';
import type { RawTensor } from '../io/dtype.js';
import { architectureFor } from '../models/registry.js';
import { fromFloat32 } from '../tensor/convert.js';
import type { Buf, Var } from './tape.js';
import type { MatrixDelta, UpcycledModel } from './upcycle-model.js';

export type StoreDType = 'BF16' | 'F16' | 'F32';

export const UPCYCLE_METHOD = 'ders-upcycle';

/** Files copied unchanged from the dense model. */
const SIDE_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

export interface WriteUpcycledOptions {
  /** The Mixtral config.json (upcycle-config.ts). */
  configJson: Record<string, unknown>;
  denseDir: string;
  /** dtype every trained tensor is stored in (also the manifest's source dtype: restore writes it). */
  dtype: StoreDType;
  seed: number;
  /** Every option of the run, for the manifest. */
  options: Record<string, unknown>;
}

function sumSquares(b: Buf): number {
  let s = 0;
  for (let i = 0; i < b.length; i++) s += b[i] * b[i];
  return s;
}

function f32(b: Buf): Float32Array {
  return b instanceof Float32Array ? b : Float32Array.from(b);
}

function tensor(data: Buf, shape: number[], dtype: StoreDType): RawTensor {
  return { dtype, shape, data: fromFloat32(f32(data), dtype) };
}

/** Expert e's [A, B] slab of a stacked [E, A, B] (or [E, N]) parameter, as a view. */
function slab(v: Var, e: number): Buf {
  const n = v.size / v.shape[0];
  return v.data.subarray(e * n, (e + 1) * n);
}

/**
 * ‖F(Δ_e)‖² summed over experts, in float64. Low-rank: ‖A B‖² = Σ_kl (AᵀA)_kl (B Bᵀ)_kl with
 * r×r Gram matrices, so no [out, in] product is formed.
 */
function deltaNorm2(d: MatrixDelta, E: number, out: number, inp: number): number {
  if (d.kind === 'sparse') return sumSquares(d.values.data);
  const r = d.rank;
  let total = 0;
  for (let e = 0; e < E; e++) {
    const A = slab(d.left, e); // [out, r]
    const B = slab(d.right, e); // [r, in]
    for (let k = 0; k < r; k++) {
      for (let l = 0; l < r; l++) {
        let ata = 0;
        for (let i = 0; i < out; i++) ata += A[i * r + k] * A[i * r + l];
        let bbt = 0;
        for (let j = 0; j < inp; j++) bbt += B[k * inp + j] * B[l * inp + j];
        total += ata * bbt;
      }
    }
  }
  return total;
}

/** One layer's base and deltas into `dir`'s experts file; returns its record and the tensor names. */
function writeLayer(u: UpcycledModel, l: number, dir: string, dtype: StoreDType): { record: LayerRecord; names: string[] } {
  const { experts: E, delta: form } = u.spec;
  const I = u.config.moe!.intermediate;
  const H = u.config.hidden;
  const layer = u.layers[l];
  const store = new LayerStore(l);
  const base = {} as Record<MatrixName, MatrixPart>;
  let num = 0;
  let den = 0;
  for (const m of MATRICES) {
    const [out, inp] = matrixShape(m, I, H);
    base[m] = { kind: 'dense', ref: store.put(`base.${m}`, tensor(layer.base[m].data, [out, inp], dtype)) };
    num += deltaNorm2(layer.delta[m], E, out, inp);
    den += E * sumSquares(layer.base[m].data);
  }
  const experts: ExpertParts[] = [];
  for (let e = 0; e < E; e++) {
    const parts = {} as ExpertParts;
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, I, H);
      const d = layer.delta[m];
      const p = `delta.${e}.${m}`;
      let part: MatrixPart;
      if (d.kind === 'lowrank') {
        const left = store.put(`${p}.left`, tensor(slab(d.left, e), [out, d.rank], dtype));
        const right = store.put(`${p}.right`, tensor(slab(d.right, e), [d.rank, inp], dtype));
        part = { kind: 'lowrank', left, right, rank: d.rank, transposed: false };
      } else {
        const pos = d.positions[e];
        const values = store.put(`${p}.values`, tensor(slab(d.values, e), [d.count], dtype));
        const ref = store.put(`${p}.indices`, { dtype: 'I32', shape: [d.count], data: new Uint8Array(pos.buffer, pos.byteOffset, pos.byteLength) });
        part = { kind: 'sparse', values, index: { kind: 'indices', ref } };
      }
      parts[m] = [base[m], part];
    }
    experts.push(parts);
  }
  store.writeSafetensors(join(dir, expertsFile(l)), { format: 'pt', moepress: 'experts' });
  const choices: Record<string, unknown> = { delta: form.kind, experts: E, topK: u.spec.topK, dtype };
  if (form.kind === 'lowrank') choices.rank = form.rank;
  else {
    choices.density = form.density;
    choices.entries = sparseEntries(layer.delta.gate);
    choices.positionsSeed = layer.positionsSeed;
    choices.positionSampler = 'selection sampling (Knuth S) over Rng(positionsSeed): gate of experts 0..E-1, then up, then down';
  }
  // how far the experts moved from the shared base: sqrt(Σ_e ‖F(Δ_e)‖² / (E ‖W_shared‖²)) over all matrices
  choices.relDelta = Math.sqrt(num / den);
  const bytes = store.bytes();
  const names = store.names();
  store.dispose();
  return { record: { layer: l, method: UPCYCLE_METHOD, experts, perms: null, storedBytes: bytes, referenceBytes: referenceBytes(E, I, H), choices }, names };
}

function sparseEntries(d: MatrixDelta): number {
  return d.kind === 'sparse' ? d.count : 0;
}

/** The non-expert tensors under Mixtral hub names, as `rest*.safetensors`: hub name -> file, and their bytes. */
function writeRest(u: UpcycledModel, dir: string, dtype: StoreDType): { fileOf: Map<string, string>; bytes: number } {
  const params = u.model.params;
  const rest = new Set([...params.keys()].filter((n) => !isExpertWeight(n) && !/\.moe\.delta\./.test(n)));
  const arch = architectureFor('mixtral', join(dir, 'config.json'));
  const hub = arch.hubEntries(u.config, (n) => rest.has(n)).filter((h) => !h.canonical.some(isExpertWeight));
  const get = (n: string): RawTensor => {
    const v = params.get(n);
    if (!v || !rest.has(n)) throw new Error(`upcycle: canonical tensor '${n}' is not in the model`);
    return tensor(v.data, [...v.shape], dtype);
  };
  function* tensors(): Generator<[string, RawTensor]> {
    for (const h of hub) yield [h.name, h.build(get)];
  }
  const written = writeCheckpoint(dir, tensors(), { prefix: 'rest' });
  const fileOf = new Map<string, string>();
  if (written.indexFile) {
    const map = JSON.parse(readFileSync(written.indexFile, 'utf8')).weight_map as Record<string, string>;
    for (const [n, f] of Object.entries(map)) fileOf.set(n, f);
    rmSync(written.indexFile, { force: true }); // model.safetensors.index.json covers these
  } else for (const h of hub) fileOf.set(h.name, written.files[0]);
  return { fileOf, bytes: written.totalSize };
}

/** Writes the whole checkpoint into `dir` (the caller's `.partial` directory); returns the manifest. */
export function writeUpcycled(u: UpcycledModel, dir: string, o: WriteUpcycledOptions): Manifest {
  rmSync(join(dir, INDEX_FILE), { force: true });
  rmSync(join(dir, MANIFEST_FILE), { force: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(o.configJson, null, 2) + '\n');
  for (const f of SIDE_FILES) if (existsSync(join(o.denseDir, f))) copyFileSync(join(o.denseDir, f), join(dir, f));
  const rest = writeRest(u, dir, o.dtype);
  const weightMap = Object.fromEntries(rest.fileOf);
  let total = rest.bytes;
  const records: LayerRecord[] = [];
  for (let l = 0; l < u.config.numLayers; l++) {
    const { record, names } = writeLayer(u, l, dir, o.dtype);
    records.push(record);
    total += record.storedBytes;
    for (const n of names) weightMap[n] = expertsFile(l);
  }
  const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  writeFileSync(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total, format: FORMAT }, weight_map: sorted }, null, 2));
  const stored = records.reduce((s, r) => s + r.storedBytes, 0);
  const reference = records.reduce((s, r) => s + r.referenceBytes, 0);
  const fraction = stored / reference;
  const manifest: Manifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    method: UPCYCLE_METHOD,
    // nothing was requested: upcycling adds experts rather than compressing them, so the
    // "budget" is the fraction the stored experts take of E full bf16 experts
    budget: fraction,
    seed: o.seed,
    options: o.options,
    source: {
      dir: resolve(o.denseDir),
      modelType: String(o.configJson.model_type),
      family: 'mixtral',
      expertLayout: 'per-expert', // what restore writes: Mixtral's experts.e.{w1,w3,w2}
      dtype: o.dtype,
      shardFiles: 0,
      shardBytes: 0, // restore uses its default shard size
    },
    bytes: { stored, reference, fraction },
    layers: records,
    moepressVersion: packageVersion(),
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
  return manifest;
}

/**
 * compress: stream a model layer by layer through a method and write a compressed checkpoint.
 * Output goes to `${out}.partial/`, one experts file + record per finished layer, so a killed run
 * leaves nothing at `out` and `resume` continues from the finished layers; the directory is renamed
 * into place only when complete.
 */
import { CALIB_WINDOWS } from './calib/collect.js';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Checkpoint, INDEX_FILE, writeCheckpoint } from '../io/checkpoint.js';
import type { RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import type { ProgressFn } from '../progress.js';
import { compressedBank, openModel, type ModelSource } from '../runtime/load-model.js';
import { expertHubNames, openExpertSource, readDenseFfn } from './experts-io.js';
import { expertsFile, FORMAT, FORMAT_VERSION, MANIFEST_FILE, packageVersion, type Manifest } from './format.js';
import { LayerStore, referenceBytes, type BaseKind, type Method, type MethodOptions } from './method.js';
import type { AllocOption } from './auto/allocate.js';
import { globalPlan, type GlobalPlan, type LayerItems, type LayerWeighting } from './global-plan.js';
import { methodByName } from './methods/index.js';
import type { LayerRecord } from './parts.js';
import type { CompressProfile } from './profile.js';
import { calibrate, openCalibrationStream, type CalibrationRequest } from './calib/source.js';
import type { CalibrationStream } from './calib/stream.js';
import type { Calibration, LayerCalib } from './calib/types.js';
import { SafetensorsFile } from '../io/safetensors.js';
import type { ExpertBank } from '../runtime/experts.js';

export interface CompressRequest {
  model: string;
  out: string;
  method: string;
  budget: number;
  seed?: number;
  base?: BaseKind;
  /** The dense model the MoE was upcycled from (delta family base). */
  baseFrom?: string;
  /** Layers to compress (default: every MoE layer). */
  layers?: number[];
  alignIters?: number;
  resume?: boolean;
  overwrite?: boolean;
  onProgress?: ProgressFn;
  /** Filled with where the time went (alignment GEMMs and assignment, reads, writes, per layer). */
  profile?: CompressProfile;
  /** Calibration text (issue 5): activation statistics for calibration-aware methods; absent: data-free. */
  calib?: CalibrationRequest;
  /**
   * Whose inputs calibrate layer l: 'sequential' (default) the model's with layers before l as
   * compressed, what the compressed model will see (GPTQ's order); 'original' the original
   * model's (the only mode a --calib-cache file can serve).
   */
  calibMode?: CalibrationMode;
  /**
   * 'layer' (default): every layer stores at most budget × its bf16 bytes. 'global': one
   * allocation over every layer under budget × the model's bf16 expert bytes (global-plan.ts;
   * methods with `measureLayer` only, i.e. auto).
   */
  allocation?: Allocation;
  /** --allocate global: how layers' errors are compared (global-plan.ts); default 'relative'. */
  layerWeighting?: LayerWeighting;
}

export type Allocation = 'layer' | 'global';
export type CalibrationMode = 'sequential' | 'original';

/** Files copied unchanged next to the weights. */
const SIDE_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

function runKey(req: CompressRequest, layers: number[]): string {
  return JSON.stringify({ model: resolve(req.model), method: req.method, budget: req.budget, seed: req.seed ?? 0, base: req.base ?? 'mean', baseFrom: req.baseFrom ?? null, layers, alignIters: req.alignIters ?? 8, calib: calibrationLabel(req, null), allocation: req.allocation ?? 'layer', layerWeighting: req.allocation === 'global' ? req.layerWeighting ?? 'relative' : null });
}

/** What the manifest records: the calibration's source, windows, seed and mode, or 'data-free'. */
function calibrationLabel(req: CompressRequest, calib: CalibrationWindows | null): unknown {
  if (!req.calib) return 'data-free';
  const c = req.calib;
  return { source: c.file, windows: calib?.windows ?? c.windows ?? CALIB_WINDOWS, windowSize: calib?.windowSize ?? c.windowSize ?? 256, seed: calib?.seed ?? c.seed ?? 0, mode: req.calibMode ?? 'sequential' };
}

/** The windows a calibration ran on. */
type CalibrationWindows = Pick<Calibration, 'windows' | 'windowSize' | 'seed'>;

/**
 * `visit` for each layer to compress, in order; with a calibration stream, inside its walk
 * (CalibrationStream.walk: `collect` gives the layer's statistics on the stream, and the bank
 * `visit` returns, the layer as compressed, carries the windows on to the next layer).
 */
async function walkLayers(stream: CalibrationStream | null, layers: number[], visit: (layer: number, collect: (() => Promise<LayerCalib>) | null) => Promise<ExpertBank | undefined>): Promise<void> {
  if (!stream) {
    for (const l of layers) await visit(l, null);
    return;
  }
  await stream.walk(layers, (l) => visit(l, () => stream.collect(l)));
}

/** A finished layer of the partial directory as an expert bank (its parts read from its experts file). */
function partialBank(src: ModelSource, dir: string, rec: LayerRecord): ExpertBank {
  const file = SafetensorsFile.open(join(dir, expertsFile(rec.layer)));
  try {
    return compressedBank(src, rec, (n) => file.read(n));
  } finally {
    file.close();
  }
}

/** The dense model's FFN of one layer (only its three tensors are read), checked against the experts' shape. */
function denseBaseFor(dense: ModelSource, layer: number, I: number, H: number) {
  if (dense.config.layers[layer]?.ffn !== 'dense') throw new MoepressError(`--base-from: layer ${layer} has no dense FFN`, { file: join(dense.dir, 'config.json') });
  const F = dense.config.denseIntermediate;
  if (F !== I || dense.config.hidden !== H) {
    const got = (m: string) => (m === 'down' ? [dense.config.hidden, F] : [F, dense.config.hidden]);
    const m = F !== I ? 'gate' : 'down';
    throw new MoepressError(`--base-from layer ${layer} mlp.${m} has shape [${got(m)}], but the experts are [${m === 'down' ? [H, I] : [I, H]}]`, { file: dense.dir });
  }
  return readDenseFfn(dense, layer);
}

export async function compress(req: CompressRequest): Promise<Manifest> {
  const src = openModel(req.model);
  const cfg = src.config;
  if (!cfg.moe) throw new MoepressError(`model_type '${cfg.modelType}' has no routed experts to compress`, { file: join(req.model, 'config.json') });
  const method = methodByName(req.method);
  const { experts: E, intermediate: I } = cfg.moe;
  const H = cfg.hidden;
  const moeLayers = cfg.layers.flatMap((l, i) => (l.ffn === 'moe' ? [i] : []));
  const layers = req.layers ?? moeLayers;
  for (const l of layers) if (!moeLayers.includes(l)) throw new MoepressError(`--layers: layer ${l} is not a MoE layer (MoE layers: ${moeLayers.join(', ')})`);
  if (!(req.budget > 0 && req.budget <= 1)) throw new MoepressError(`--budget must be in (0, 1], the fraction of bf16 expert bytes to keep; got ${req.budget}`);
  const base = req.base ?? 'mean';
  const allocation = req.allocation ?? 'layer';
  if (allocation === 'global' && !method.measureLayer) throw new MoepressError(`--allocate global needs a method that measures its options (auto), not ${method.name}`);
  method.check(E, I, H, req.budget, { base, denseBase: req.baseFrom ? { gate: new Float32Array(0), up: new Float32Array(0), down: new Float32Array(0) } : null });

  const out = resolve(req.out);
  if (existsSync(out) && !req.overwrite) throw new MoepressError('output directory already exists; choose another --out or pass --overwrite', { file: out });
  const partial = `${out}.partial`;
  const key = runKey(req, layers);
  const keyFile = join(partial, 'run.json');
  if (existsSync(partial)) {
    if (!req.resume) throw new MoepressError('an interrupted run left this directory; pass --resume to continue it or delete it', { file: partial });
    if (!existsSync(keyFile) || readFileSync(keyFile, 'utf8') !== key) throw new MoepressError('--resume: the interrupted run used different options (model, method, budget, seed, base or layers)', { file: partial });
  } else {
    mkdirSync(partial, { recursive: true });
    writeFileSync(keyFile, key);
  }

  const records: LayerRecord[] = [];
  const seed = req.seed ?? 0;
  const dense = req.baseFrom ? openModel(req.baseFrom) : null;
  const mode = req.calib ? req.calibMode ?? 'sequential' : null;
  // With a cache file, every layer's statistics on the original inputs are collected (or read) up front.
  const calibration = req.calib && ((mode === 'original' && req.calib.cache) || allocation === 'global') ? await calibrate(req.model, req.calib, req.onProgress) : null;
  const optsFor = (layer: number, calib: LayerCalib | null): MethodOptions => ({ budget: req.budget, seed, base, denseBase: dense ? denseBaseFor(dense, layer, I, H) : null, alignIters: req.alignIters ?? 8, onProgress: req.onProgress, profile: req.profile, calib });
  // Else each layer's are collected just before it is compressed, on the inputs of the layers before it as compressed (sequential) or as they were (original).
  const stream = req.calib && (mode === 'sequential' || !calibration) ? await openCalibrationStream(src, req.calib) : null;
  try {
    const planned = allocation === 'global' ? await planCaps(src, partial, layers, method, (l) => optsFor(l, calibration?.layers.get(l) ?? null), req.layerWeighting ?? 'relative') : null;
    let i = 0;
    await walkLayers(stream, layers, async (layer, collect) => {
      const recFile = join(partial, `layer-${layer}.json`);
      let rec: LayerRecord;
      if (existsSync(recFile) && existsSync(join(partial, expertsFile(layer)))) {
        rec = JSON.parse(readFileSync(recFile, 'utf8'));
      } else {
        const t0 = performance.now();
        const calib = collect ? await collect() : calibration?.layers.get(layer) ?? null;
        const opts: MethodOptions = { ...optsFor(layer, calib), ...(planned ? { capBytes: planned.plan.layerCaps[layer], measured: planned.measured.get(layer) } : {}) };
        rec = await compressOneLayer(src, layer, partial, opts, method.compressLayer, req.profile);
        writeAtomic(recFile, (tmp) => writeFileSync(tmp, JSON.stringify(rec)));
        req.profile?.layerMs.push(performance.now() - t0);
      }
      records.push(rec);
      req.onProgress?.({ task: 'compress', done: ++i, total: layers.length, unit: 'layers', detail: `layer ${layer}` });
      return mode === 'sequential' ? partialBank(src, partial, rec) : undefined;
    });
  } finally {
    dense?.checkpoint.close();
  }
  const label = calibration ?? (stream ? { windows: stream.windows, windowSize: stream.windowSize, seed: stream.seed } : null);
  const manifest = finish(src, req, partial, layers, records, label);
  src.checkpoint.close();
  if (existsSync(out)) rmSync(out, { recursive: true, force: true });
  renameSync(partial, out);
  return manifest;
}

const PLAN_FILE = 'plan.json';

/**
 * The model-wide plan: read back from the partial directory when a resumed run made it, else every
 * layer measured (the measurements are kept to spare the layers measuring again) and allocated.
 */
async function planCaps(src: ModelSource, partial: string, layers: number[], method: Method, optsFor: (layer: number) => MethodOptions, weighting: LayerWeighting): Promise<{ plan: GlobalPlan; measured: Map<number, AllocOption[][]> }> {
  const file = join(partial, PLAN_FILE);
  const measured = new Map<number, AllocOption[][]>();
  if (existsSync(file)) return { plan: JSON.parse(readFileSync(file, 'utf8')) as GlobalPlan, measured };
  const items: LayerItems[] = [];
  for (const layer of layers) {
    const x = openExpertSource(src, layer);
    try {
      const m = await method.measureLayer!(x, optsFor(layer));
      measured.set(layer, m.items);
      items.push({ layer, referenceBytes: referenceBytes(x.E, x.I, x.H), items: m.items, energy: m.energy });
    } finally {
      x.close();
    }
  }
  const plan = globalPlan(items, optsFor(layers[0]).budget, weighting);
  writeAtomic(file, (tmp) => writeFileSync(tmp, JSON.stringify(plan)));
  return { plan, measured };
}

/**
 * One layer: experts read one at a time from the checkpoint, stored tensors spilled to disk as
 * they are made, then written as the layer's experts file. Peak memory is the method's working
 * set for one expert plus its base, never the layer.
 */
async function compressOneLayer(src: ModelSource, layer: number, dir: string, opts: MethodOptions, run: Method['compressLayer'], profile?: CompressProfile): Promise<LayerRecord> {
  const x = openExpertSource(src, layer);
  const store = new LayerStore(layer, join(dir, `${expertsFile(layer)}.spill`));
  try {
    const rec = await run(x, store, opts);
    writeAtomic(join(dir, expertsFile(layer)), (tmp) => store.writeSafetensors(tmp, { format: 'pt', moepress: 'experts' }));
    return rec;
  } finally {
    x.close();
    store.dispose();
    if (profile) {
      profile.bytesRead += x.stats.bytesRead;
      profile.readMs += x.stats.readMs;
      profile.decodeMs += x.stats.decodeMs;
      profile.bytesWritten += store.io.bytesWritten;
      profile.writeMs += store.io.writeMs + store.io.readMs;
    }
  }
}

function writeAtomic(file: string, write: (tmp: string) => void): void {
  const tmp = `${file}.tmp`;
  write(tmp);
  renameSync(tmp, file);
}

/** Copy the untouched tensors and side files, write the index and manifest. */
function finish(src: ModelSource, req: CompressRequest, dir: string, layers: number[], records: LayerRecord[], calib: CalibrationWindows | null): Manifest {
  const skip = expertHubNames(src, layers);
  const ck = src.checkpoint;
  const restNames = ck.names().filter((n) => !skip.has(n));
  const dtypes = new Set(ck.names().map((n) => ck.info(n).dtype));
  function* rest(): Generator<[string, RawTensor]> {
    for (const n of restNames) yield [n, ck.read(n)];
  }
  const written = writeCheckpoint(dir, rest(), { prefix: 'rest' });
  const weightMap: Record<string, string> = {};
  const restCk = Checkpoint.open(dir);
  for (const n of restNames) weightMap[n] = restCk.info(n).file.split('/').pop()!;
  restCk.close();
  let total = written.totalSize;
  for (const r of records) {
    const file = expertsFile(r.layer);
    for (const n of tensorNames(r)) weightMap[n] = file;
    total += r.storedBytes;
  }
  writeFileSync(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total, format: FORMAT }, weight_map: Object.fromEntries(Object.entries(weightMap).sort()) }, null, 2));
  for (const f of SIDE_FILES) if (existsSync(join(src.dir, f))) copyFileSync(join(src.dir, f), join(dir, f));
  const stored = records.reduce((s, r) => s + r.storedBytes, 0);
  const reference = records.reduce((s, r) => s + r.referenceBytes, 0);
  const perFile = new Map<string, number>();
  for (const n of ck.names()) perFile.set(ck.info(n).file, (perFile.get(ck.info(n).file) ?? 0) + ck.info(n).byteLength);
  const manifest: Manifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    method: req.method,
    budget: req.budget,
    seed: req.seed ?? 0,
    options: { base: req.base ?? 'mean', baseFrom: req.baseFrom ?? null, layers, alignIters: req.alignIters ?? 8, calibration: calibrationLabel(req, calib), allocation: req.allocation ?? 'layer', ...(req.allocation === 'global' ? { layerWeighting: req.layerWeighting ?? 'relative' } : {}) },
    source: {
      dir: resolve(src.dir),
      modelType: src.config.modelType,
      family: src.config.family,
      expertLayout: src.config.expertLayout ?? 'per-expert',
      dtype: [...dtypes].join(','),
      shardFiles: perFile.size,
      shardBytes: Math.max(...perFile.values()),
    },
    bytes: { stored, reference, fraction: reference ? stored / reference : 0 },
    layers: records,
    moepressVersion: packageVersion(),
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
  for (const r of records) rmSync(join(dir, `layer-${r.layer}.json`), { force: true });
  rmSync(join(dir, 'run.json'), { force: true });
  rmSync(join(dir, PLAN_FILE), { force: true });
  return manifest;
}

/** Every stored tensor a layer record refers to. */
export function tensorNames(r: LayerRecord): string[] {
  const names = new Set<string>();
  for (const e of r.experts) {
    for (const parts of [e.gate, e.up, e.down]) {
      for (const p of parts) {
        if (p.kind === 'dense' || p.kind === 'quant') names.add(p.ref);
        else if (p.kind === 'lowrank') [p.left, p.right].forEach((n) => names.add(n));
        else {
          names.add(p.values);
          if (p.index.kind !== 'seeded') names.add(p.index.ref);
        }
      }
    }
  }
  for (const p of r.perms ?? []) names.add(p);
  return [...names];
}

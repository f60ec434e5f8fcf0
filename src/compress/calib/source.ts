/**
 * Where calibration comes from: a text file the user gives (plain or .gz; e.g. a slice of the
 * training corpus, never the test text), tokenized with the model's tokenizer, seeded windows, the
 * model run over them one layer at a time; or a cache file from an earlier run with the same options.
 *
 *   readCalibrationText(file, maxChars = 4 Mi) -> the first ≈maxChars characters, cut at a line start
 *   calibrationTokens(modelDir, req) -> the text's token ids
 *   openCalibrationStream(src, req) -> a layer-by-layer pass (calib/stream.ts) over req's windows
 *   calibrate(modelDir, req, onProgress?) -> Calibration of every layer on the original model's
 *     inputs (reads req.cache when it matches, writes it otherwise)
 *
 * Only the text's first maxChars are tokenized (the windows are drawn from them): enough for 64-256
 * windows of 256 tokens, and a 40 MB corpus need not be tokenized whole.
 */
import { CALIB_WINDOWS } from './collect.js';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { createGunzip } from 'node:zlib';
import { MoepressError } from '../../io/errors.js';
import type { ProgressFn } from '../../progress.js';
import { isCompressedDir } from '../format.js';
import { openModel, type ModelSource } from '../../runtime/load-model.js';
import { loadTokenizer } from '../../runtime/tokenizer.js';
import { loadCalibration, saveCalibration } from './cache.js';
import { CalibrationStream } from './stream.js';
import type { Calibration, LayerCalib } from './types.js';

export interface CalibrationRequest {
  /** Calibration text (plain or .gz). */
  file: string;
  windows?: number;
  windowSize?: number;
  seed?: number;
  maxChars?: number;
  maxFullI?: number;
  /** Cache file: read when its options match, else written after collecting. */
  cache?: string;
  /** Token ids to calibrate on instead of tokenizing `file` (benchmarks: seeded random ids); `file` then only names them. */
  tokens?: ArrayLike<number>;
}

export async function readCalibrationText(file: string, maxChars = 4 << 20): Promise<string> {
  if (!existsSync(file) || !statSync(file).isFile()) throw new MoepressError('calibration text file not found', { file });
  const raw = createReadStream(file);
  const stream = file.endsWith('.gz') ? raw.pipe(createGunzip()) : raw;
  raw.on('error', (e) => stream.destroy(e));
  stream.setEncoding('utf8');
  let text = '';
  try {
    for await (const chunk of stream as AsyncIterable<string>) {
      text += chunk;
      if (text.length >= maxChars) break;
    }
  } catch (e) {
    throw new MoepressError(`cannot read the calibration text (${(e as Error).message})`, { file });
  } finally {
    raw.destroy();
  }
  if (text.length > maxChars) {
    // cut after a newline followed by a non-space, where the tokenizer splits anyway
    let cut = -1;
    for (let p = maxChars; p > 0; p--) if (text.charCodeAt(p - 1) === 10 && !/\s/.test(text[p])) { cut = p; break; }
    text = text.slice(0, cut > 0 ? cut : maxChars);
  }
  if (!/\S/.test(text)) throw new MoepressError('the calibration text file is empty', { file });
  return text;
}

function cacheKey(modelDir: string, req: CalibrationRequest): string {
  return JSON.stringify({ model: resolve(modelDir), file: resolve(req.file), windows: req.windows ?? CALIB_WINDOWS, windowSize: req.windowSize ?? 256, seed: req.seed ?? 0, maxChars: req.maxChars ?? 4 << 20, maxFullI: req.maxFullI ?? 4096 });
}

/** The calibration text's tokens (its first maxChars, tokenized with the model's tokenizer). */
export async function calibrationTokens(modelDir: string, req: CalibrationRequest): Promise<ArrayLike<number>> {
  if (req.tokens) return req.tokens;
  const text = await readCalibrationText(req.file, req.maxChars);
  return loadTokenizer(modelDir).encode(text);
}

/** A layer-by-layer calibration pass over the original model (calib/stream.ts) for req's windows. */
export async function openCalibrationStream(src: ModelSource, req: CalibrationRequest): Promise<CalibrationStream> {
  if (isCompressedDir(src.dir)) throw new MoepressError('calibration runs the original model; this directory is already compressed', { file: src.dir });
  return CalibrationStream.start(src, await calibrationTokens(src.dir, req), { windows: req.windows, windowSize: req.windowSize, seed: req.seed, maxFullI: req.maxFullI });
}

/**
 * Every MoE layer's statistics on the original model's inputs, one layer of weights in memory at a
 * time (all layers' sums are kept: E·H² float64 per layer). Reads req.cache when its options match,
 * writes it otherwise.
 */
export async function calibrate(modelDir: string, req: CalibrationRequest, onProgress?: ProgressFn): Promise<Calibration> {
  const key = cacheKey(modelDir, req);
  if (req.cache && existsSync(req.cache)) {
    const got = loadCalibration(req.cache);
    if (got.key === key) return got.calib;
  }
  const src = openModel(modelDir);
  try {
    const stream = await openCalibrationStream(src, req);
    const layers = new Map<number, LayerCalib>();
    const moeLayers = src.config.layers.flatMap((spec, l) => (spec.ffn === 'moe' ? [l] : []));
    await stream.walk(moeLayers, async (l) => {
      layers.set(l, await stream.collect(l));
      onProgress?.({ task: 'calibrate', done: layers.size, total: moeLayers.length, unit: 'layers' });
      return undefined;
    });
    const calib: Calibration = { source: req.file, windows: stream.windows, windowSize: stream.windowSize, seed: stream.seed, layers };
    if (req.cache) saveCalibration(req.cache, calib, key);
    return calib;
  } finally {
    src.checkpoint.close();
  }
}

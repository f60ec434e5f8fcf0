/**
 * The compressed checkpoint directory:
 *   config.json, tokenizer files       copied unchanged from the source
 *   rest*.safetensors                  every tensor that is not a compressed routed expert, with its
 *                                      original hub name and bytes (uncompressed layers included)
 *   experts-LLLLL.safetensors          one file per compressed layer: the `moepress.layers.L.*` tensors
 *   model.safetensors.index.json       weight_map over all of the above, so any safetensors reader opens it
 *   moepress.json                      the manifest: method, options, seed, per-layer parts and bytes
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readJsonObject } from '../io/config.js';
import { MoepressError } from '../io/errors.js';
import type { LayerRecord } from './parts.js';

export const MANIFEST_FILE = 'moepress.json';
export const FORMAT = 'moepress-compressed';
export const FORMAT_VERSION = 1;

export interface Manifest {
  format: typeof FORMAT;
  version: number;
  method: string;
  /** Requested fraction of bf16 routed-expert bytes. */
  budget: number;
  seed: number;
  /** Every option that shaped the result (base, alignment iterations, layers...). */
  options: Record<string, unknown>;
  source: { dir: string; modelType: string; family: string; expertLayout: string; dtype: string; shardFiles: number; shardBytes: number };
  /** Bytes of routed experts in compressed layers: stored vs the same experts in bf16. */
  bytes: { stored: number; reference: number; fraction: number };
  layers: LayerRecord[];
  moepressVersion: string;
  /** Set by `moepress finetune --teacher` (train/heal.ts): the non-expert tensors were distilled from the original. */
  heal?: HealRecord;
}

/** How a compressed model's non-expert tensors were healed (its experts files are unchanged). */
export interface HealRecord {
  teacher: string;
  text: string;
  /** Which non-expert tensors trained ('all', 'no-embed', 'norms+router'). */
  train: string;
  loss: 'distill';
  steps: number;
  lr: number;
  batch: number;
  seqLen: number;
  accumulate: number;
  seed: number;
  /** Mean KL of the first step and of the last 10% of steps. */
  initialLoss: number;
  finalLoss: number;
  /** An earlier healing of the input, when it was healed already. */
  previous?: HealRecord;
  moepressVersion: string;
}

export function expertsFile(layer: number): string {
  return `experts-${String(layer).padStart(5, '0')}.safetensors`;
}

export function isCompressedDir(dir: string): boolean {
  return existsSync(join(dir, MANIFEST_FILE));
}

export function readManifest(dir: string): Manifest {
  const file = join(dir, MANIFEST_FILE);
  const m = readJsonObject(file) as unknown as Manifest;
  if (m.format !== FORMAT) throw new MoepressError(`not a moepress manifest (format '${String(m.format)}', expected '${FORMAT}')`, { file });
  if (m.version > FORMAT_VERSION) throw new MoepressError(`manifest version ${m.version} is newer than this moepress reads (${FORMAT_VERSION}); upgrade moepress`, { file });
  if (!Array.isArray(m.layers)) throw new MoepressError("manifest has no 'layers' list", { file });
  return m;
}

export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    return String(pkg.version);
  } catch {
    return 'unknown';
  }
}

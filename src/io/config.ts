/** JSON files in a checkpoint directory (config.json, index files), read with errors that name the file. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoepressError } from './errors.js';

/** Parses a JSON file; throws MoepressError naming the file if it is missing or not valid JSON. */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'file not found' : `cannot read file: ${err.message}`;
    throw new MoepressError(why, { file });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MoepressError(`not valid JSON: ${(e as Error).message}`, { file });
  }
}

/** Like readJsonFile, but the top level must be a JSON object. */
export function readJsonObject(file: string): Record<string, unknown> {
  const value = readJsonFile(file);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
    throw new MoepressError(`expected a JSON object at the top level, got ${got}`, { file });
  }
  return value as Record<string, unknown>;
}

/** Reads `dir/config.json` (the Hugging Face model config) as a plain object. */
export function readConfig(dir: string): Record<string, unknown> {
  return readJsonObject(path.join(dir, 'config.json'));
}

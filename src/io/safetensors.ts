/**
 * Streaming safetensors reader. File layout (https://github.com/huggingface/safetensors):
 *   [8 bytes: little-endian u64 header length N] [N bytes: UTF-8 JSON header] [data section]
 * The header maps tensor name -> { dtype, shape, data_offsets: [begin, end] } with offsets relative
 * to the start of the data section, plus an optional "__metadata__" string -> string map.
 *
 * Only the header is read at open; tensor bytes are read by position on demand, so files of any
 * size (including over 2 GiB) cost only their header in memory until a tensor is asked for.
 * Validation follows the Rust reference implementation: the tensors must tile the data section
 * exactly (no overlaps, no gaps, no trailing bytes).
 */
import * as fs from 'node:fs';
import { DTYPE_BYTES, type DType, type RawTensor, isDType } from './dtype.js';
import { MoepressError } from './errors.js';
import { readFullyAt } from './fileio.js';

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute byte offset of the tensor's first byte in the file. */
  offset: number;
  byteLength: number;
}

/** Largest header accepted; the Rust reference implementation uses the same 100 MB limit. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = '__metadata__';

export class SafetensorsFile {
  readonly path: string;
  /** Tensors in data order (ascending offset), so iterating reads the file front to back. */
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string> | null;
  private fd: number | null;

  private constructor(path: string, fd: number, tensors: Map<string, TensorInfo>,
    metadata: Record<string, string> | null) {
    this.path = path;
    this.fd = fd;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /** Opens `path` and validates its header; the file stays open until close(). */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new MoepressError(`cannot open safetensors file: ${(e as Error).message}`, { file: path });
    }
    try {
      const { tensors, metadata } = readHeader(fd, path);
      return new SafetensorsFile(path, fd, tensors, metadata);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Header entry for `name`; throws naming the file when absent. */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) {
      const names = [...this.tensors.keys()];
      const shown = names.slice(0, 8).map((n) => `'${n}'`).join(', ');
      const more = names.length > 8 ? `, ... (${names.length} in all)` : '';
      throw new MoepressError(
        `no such tensor in this file; it holds ${names.length ? shown + more : 'no tensors'}`,
        { file: this.path, tensor: name });
    }
    return info;
  }

  /** Reads one tensor into a fresh buffer (own ArrayBuffer, offset 0, so any typed view fits). */
  read(name: string): RawTensor {
    const info = this.info(name);
    const data = new Uint8Array(info.byteLength);
    this.readInto(name, data);
    return { dtype: info.dtype, shape: [...info.shape], data };
  }

  /**
   * Reads one tensor's bytes into `dest`, which must be exactly its size; pass a subarray to
   * fill part of a bigger buffer (e.g. stacking experts without an extra copy).
   */
  readInto(name: string, dest: Uint8Array): void {
    const info = this.info(name);
    if (this.fd === null) throw new MoepressError('file is closed', { file: this.path, tensor: name });
    if (dest.byteLength !== info.byteLength) {
      throw new MoepressError(
        `destination holds ${dest.byteLength} bytes, expected ${info.byteLength} ` +
        `(${info.dtype} [${info.shape.join(', ')}])`, { file: this.path, tensor: name });
    }
    readFullyAt(this.fd, dest, info.offset, { file: this.path, tensor: name });
  }

  /** Releases the file descriptor; idempotent. The header stays available. */
  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** Reads and validates the length prefix and header of an open file. */
function readHeader(fd: number, file: string): {
  tensors: Map<string, TensorInfo>; metadata: Record<string, string> | null;
} {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) {
    throw new MoepressError(
      `file is ${fileSize} bytes, shorter than the 8-byte header length prefix (truncated?)`, { file });
  }
  const prefix = new Uint8Array(8);
  readFullyAt(fd, prefix, 0, { file });
  // Read as a u64 BigInt so absurd lengths are caught before any conversion loses precision.
  const headerLen64 = new DataView(prefix.buffer).getBigUint64(0, true);
  if (headerLen64 > BigInt(MAX_HEADER_BYTES)) {
    throw new MoepressError(
      `header length ${headerLen64} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`,
      { file });
  }
  const headerLen = Number(headerLen64);
  if (8 + headerLen > fileSize) {
    throw new MoepressError(
      `header length ${headerLen} runs past the end of the ${fileSize}-byte file ` +
      `(expected at most ${fileSize - 8}; truncated?)`, { file });
  }
  const headerBytes = new Uint8Array(headerLen);
  readFullyAt(fd, headerBytes, 8, { file });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new MoepressError('header is not valid UTF-8', { file });
  }
  return parseHeader(text, 8 + headerLen, fileSize - 8 - headerLen, file);
}

/**
 * Validates a header's JSON text. `dataStart` is the absolute offset of the data section and
 * `dataLength` its size in bytes; every check names the file and the tensor involved.
 */
export function parseHeader(text: string, dataStart: number, dataLength: number, file: string): {
  tensors: Map<string, TensorInfo>; metadata: Record<string, string> | null;
} {
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new MoepressError(`header is not valid JSON: ${(e as Error).message}`, { file });
  }
  if (!isPlainObject(header)) {
    throw new MoepressError(`header must be a JSON object, got ${describe(header)}`, { file });
  }
  let metadata: Record<string, string> | null = null;
  const entries: TensorInfo[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, file);
    else entries.push(parseEntry(name, value, dataStart, dataLength, file));
  }
  checkTiling(entries, dataStart, dataLength, file);
  return { tensors: new Map(entries.map((t) => [t.name, t])), metadata };
}

function parseMetadata(value: unknown, file: string): Record<string, string> | null {
  if (value === null) return null;
  if (!isPlainObject(value)) {
    throw new MoepressError(`${METADATA_KEY} must be an object of string -> string, got ${describe(value)}`,
      { file });
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      throw new MoepressError(
        `${METADATA_KEY} value for key '${k}' must be a string, got ${describe(v)}`, { file });
    }
    out[k] = v;
  }
  return out;
}

function parseEntry(name: string, value: unknown, dataStart: number, dataLength: number,
  file: string): TensorInfo {
  const where = { file, tensor: name };
  if (!isPlainObject(value)) {
    throw new MoepressError(`header entry must be an object with dtype, shape and data_offsets, got ${
      describe(value)}`, where);
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string' || !isDType(dtype)) {
    throw new MoepressError(`unknown dtype ${JSON.stringify(dtype)} (expected one of ${
      Object.keys(DTYPE_BYTES).join(', ')})`, where);
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
    throw new MoepressError(
      `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`, where);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInt)) {
    throw new MoepressError(`data_offsets must be [begin, end] with non-negative integers, got ${
      JSON.stringify(offsets)}`, where);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) {
    throw new MoepressError(`data_offsets [${begin}, ${end}]: begin is after end`, where);
  }
  if (end > dataLength) {
    throw new MoepressError(`data_offsets [${begin}, ${end}] run past the end of the ${dataLength}-byte ` +
      `data section (file truncated?)`, where);
  }
  let expected = DTYPE_BYTES[dtype];
  for (const d of shape as number[]) expected *= d;
  if (expected !== end - begin) {
    throw new MoepressError(`shape [${shape.join(', ')}] x ${dtype} (${DTYPE_BYTES[dtype]} bytes) needs ${
      expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`, where);
  }
  return { name, dtype, shape: [...(shape as number[])], offset: dataStart + begin, byteLength: end - begin };
}

/**
 * safetensors requires the tensors to cover the data section exactly: sorted by offset, each
 * begins where the previous ended and the last ends at the end of the file. Sorts `entries` in place.
 */
function checkTiling(entries: TensorInfo[], dataStart: number, dataLength: number, file: string): void {
  entries.sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let covered = 0; // relative end of the data tiled so far
  let prev: TensorInfo | null = null;
  for (const t of entries) {
    const begin = t.offset - dataStart;
    const range = `[${begin}, ${begin + t.byteLength}]`;
    if (begin < covered) {
      throw new MoepressError(`data_offsets ${range} overlap tensor '${prev!.name}', which ends at ${
        covered}; tensors must not overlap`, { file, tensor: t.name });
    }
    if (begin > covered) {
      const after = prev ? `tensor '${prev.name}' ends` : 'the data section starts';
      throw new MoepressError(`data_offsets ${range} leave a gap of ${begin - covered} bytes: ${after} at ${
        covered}; tensor data must be contiguous`, { file, tensor: t.name });
    }
    covered = begin + t.byteLength;
    prev = t;
  }
  if (covered !== dataLength) {
    const after = prev ? `after tensor '${prev.name}' (ends at ${covered})` : 'and no tensors';
    throw new MoepressError(`data section is ${dataLength} bytes but tensors cover only ${covered}: ${
      dataLength - covered} unaccounted bytes ${after}`, { file, tensor: prev?.name });
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

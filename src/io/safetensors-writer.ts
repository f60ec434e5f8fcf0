/**
 * safetensors writer. The header must precede the data and names every tensor's offsets, so the
 * streaming writer takes the full list of (name, dtype, shape) up front, writes the header, then
 * accepts each tensor's bytes in that order and checks its size: one tensor in memory at a time.
 */
import * as fs from 'node:fs';
import { DTYPE_BYTES, type DType, type RawTensor, isDType } from './dtype.js';
import { MoepressError } from './errors.js';
import { writeFullyAt } from './fileio.js';

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

/**
 * Serialises the header: 8-byte little-endian length, then JSON padded with spaces so the data
 * section starts at a multiple of 8 bytes (as the Rust library does, so typed views stay aligned
 * when the file is memory-mapped). Returns the header bytes and each tensor's byte length.
 */
export function encodeHeader(specs: readonly TensorSpec[], metadata: Record<string, string> | undefined,
  file: string): { header: Uint8Array; byteLengths: number[] } {
  // Built by hand rather than JSON.stringify(object): objects move integer-like keys ("0", "12")
  // to the front, and the header should list tensors in the order they are written.
  const parts: string[] = [];
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new MoepressError(`metadata value for key '${k}' must be a string, got ${typeof v}`, { file });
      }
    }
    parts.push(`${JSON.stringify('__metadata__')}:${JSON.stringify(metadata)}`);
  }
  const seen = new Set<string>();
  const byteLengths: number[] = [];
  let offset = 0;
  for (const s of specs) {
    checkSpec(s, seen, file);
    const n = byteLengthOf(s);
    byteLengths.push(n);
    const entry = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + n] };
    parts.push(`${JSON.stringify(s.name)}:${JSON.stringify(entry)}`);
    offset += n;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const header = new Uint8Array(8 + padded).fill(0x20); // spaces: valid trailing JSON whitespace
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, byteLengths };
}

function checkSpec(s: TensorSpec, seen: Set<string>, file: string): void {
  const where = { file, tensor: s.name };
  if (typeof s.name !== 'string' || s.name.length === 0 || s.name === '__metadata__') {
    throw new MoepressError(`invalid tensor name ${JSON.stringify(s.name)}`, { file });
  }
  if (seen.has(s.name)) throw new MoepressError('tensor name appears twice', where);
  seen.add(s.name);
  if (!isDType(s.dtype)) {
    throw new MoepressError(`unknown dtype ${JSON.stringify(s.dtype)} (expected one of ${
      Object.keys(DTYPE_BYTES).join(', ')})`, where);
  }
  if (!Array.isArray(s.shape) || !s.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new MoepressError(`shape must be non-negative integers, got ${JSON.stringify(s.shape)}`, where);
  }
}

function byteLengthOf(s: TensorSpec): number {
  let n = DTYPE_BYTES[s.dtype];
  for (const d of s.shape) n *= d;
  return n;
}

export class SafetensorsWriter {
  readonly path: string;
  private fd: number | null;
  private readonly specs: TensorSpec[];
  private readonly byteLengths: number[];
  private next = 0; // index into specs of the tensor expected next
  private position: number; // absolute file offset where the next tensor's bytes go

  /** Creates (or truncates) `path` and writes the header for `specs`, in that order. */
  constructor(path: string, specs: readonly TensorSpec[], metadata?: Record<string, string>) {
    this.path = path;
    this.specs = specs.map((s) => ({ name: s.name, dtype: s.dtype, shape: [...s.shape] }));
    const { header, byteLengths } = encodeHeader(this.specs, metadata, path);
    this.byteLengths = byteLengths;
    try {
      this.fd = fs.openSync(path, 'w');
    } catch (e) {
      throw new MoepressError(`cannot create safetensors file: ${(e as Error).message}`, { file: path });
    }
    writeFullyAt(this.fd, header, 0);
    this.position = header.byteLength;
  }

  /** True once every declared tensor has been written. */
  get done(): boolean {
    return this.next === this.specs.length;
  }

  /** Writes the bytes of `name`, which must be the next declared tensor, with exactly its size. */
  write(name: string, data: Uint8Array): void {
    if (this.fd === null) throw new MoepressError('writer is closed', { file: this.path, tensor: name });
    if (this.done) {
      throw new MoepressError(`all ${this.specs.length} declared tensors are already written`,
        { file: this.path, tensor: name });
    }
    const spec = this.specs[this.next];
    if (name !== spec.name) {
      throw new MoepressError(`tensors must be written in declared order: expected '${spec.name}' next`,
        { file: this.path, tensor: name });
    }
    const expected = this.byteLengths[this.next];
    if (data.byteLength !== expected) {
      throw new MoepressError(`got ${data.byteLength} bytes, expected ${expected} for ${spec.dtype} [${
        spec.shape.join(', ')}]`, { file: this.path, tensor: name });
    }
    writeFullyAt(this.fd, data, this.position);
    this.position += expected;
    this.next++;
  }

  /** Closes the file; throws (after closing) if some declared tensors were never written. */
  close(): void {
    if (this.fd === null) return;
    fs.closeSync(this.fd);
    this.fd = null;
    if (!this.done) {
      const missing = this.specs.slice(this.next).map((s) => `'${s.name}'`);
      throw new MoepressError(`closed with ${missing.length} declared tensors unwritten: ${
        missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`, { file: this.path });
    }
  }

  /** Closes and deletes the partial file; for error paths. */
  abort(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
    fs.rmSync(this.path, { force: true });
  }
}

/**
 * Writes tensors to one safetensors file in the given order. The header needs every shape first,
 * so a lazy iterable is collected here; to stream with one tensor in memory, use
 * SafetensorsWriter (or writeCheckpoint, which shards). On error the partial file is removed.
 */
export function writeSafetensors(path: string,
  tensors: Iterable<[string, RawTensor]> | Map<string, RawTensor>,
  metadata?: Record<string, string>): void {
  const list = [...tensors];
  const specs = list.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  const writer = new SafetensorsWriter(path, specs, metadata);
  try {
    for (const [name, t] of list) writer.write(name, t.data);
    writer.close();
  } catch (e) {
    writer.abort();
    throw e;
  }
}

/**
 * A small GGUF reader: the header, metadata, tensor infos and F32/F16/Q4_0/Q8_0 tensor data. Enough to check
 * what gguf-writer.ts wrote (tests, the bench's sanity checks); it validates what it reads and
 * names the file and tensor in its errors.
 */
import * as fs from 'node:fs';
import { MoepressError } from '../io/errors.js';
import { readFullyAt } from '../io/fileio.js';
import { f16ToF32 } from '../tensor/convert.js';
import { dequantizeGgml } from './gguf-quants.js';
import {
  alignUp, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, TENSOR_TYPE, typeByteLength, VALUE_TYPE,
  type GgufScalar, type GgufScalarType, type GgufTensorType,
} from './gguf-format.js';

export interface GgufTensorInfo {
  name: string;
  type: GgufTensorType;
  /** Row-major shape (outermost first): ne reversed. */
  shape: number[];
  /** Absolute byte offset in the file. */
  offset: number;
  byteLength: number;
}

export interface GgufFile {
  path: string;
  version: number;
  metadata: Map<string, GgufScalar | GgufScalar[]>;
  /** Each key's declared type ('array:<item>' for arrays). */
  types: Map<string, string>;
  tensors: GgufTensorInfo[];
  alignment: number;
  dataStart: number;
}

const TYPE_NAMES = new Map<number, GgufScalarType | 'array'>(Object.entries(VALUE_TYPE).map(([k, v]) => [v, k as GgufScalarType | 'array']));
const TENSOR_NAMES = new Map<number, GgufTensorType>(Object.entries(TENSOR_TYPE).map(([k, v]) => [v, k as GgufTensorType]));

class Cursor {
  pos = 0;
  private readonly view: DataView;
  constructor(private readonly buf: Uint8Array, private readonly file: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.buf.byteLength) throw new MoepressError(`truncated header: needs ${n} bytes at byte ${this.pos}, file has ${this.buf.byteLength}`, { file: this.file });
  }
  u8() { this.need(1); return this.view.getUint8(this.pos++); }
  private take<T>(n: number, f: (o: number) => T): T { this.need(n); const v = f(this.pos); this.pos += n; return v; }
  i8() { return this.take(1, (o) => this.view.getInt8(o)); }
  u16() { return this.take(2, (o) => this.view.getUint16(o, true)); }
  i16() { return this.take(2, (o) => this.view.getInt16(o, true)); }
  u32() { return this.take(4, (o) => this.view.getUint32(o, true)); }
  i32() { return this.take(4, (o) => this.view.getInt32(o, true)); }
  f32() { return this.take(4, (o) => this.view.getFloat32(o, true)); }
  f64() { return this.take(8, (o) => this.view.getFloat64(o, true)); }
  u64big() { return this.take(8, (o) => this.view.getBigUint64(o, true)); }
  i64big() { return this.take(8, (o) => this.view.getBigInt64(o, true)); }
  /** A u64 that must fit a JS number (counts, lengths, offsets). */
  u64(what: string) {
    const v = this.u64big();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MoepressError(`${what} ${v} is too large`, { file: this.file });
    return Number(v);
  }
  str(what: string) {
    const n = this.u64(`${what} length`);
    this.need(n);
    const s = new TextDecoder('utf-8', { fatal: false }).decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
}

function readScalar(c: Cursor, type: GgufScalarType, key: string, file: string): GgufScalar {
  switch (type) {
    case 'uint8': return c.u8();
    case 'int8': return c.i8();
    case 'uint16': return c.u16();
    case 'int16': return c.i16();
    case 'uint32': return c.u32();
    case 'int32': return c.i32();
    case 'float32': return c.f32();
    case 'float64': return c.f64();
    case 'uint64': return c.u64big();
    case 'int64': return c.i64big();
    case 'string': return c.str(`metadata '${key}' string`);
    case 'bool': {
      const b = c.u8();
      if (b > 1) throw new MoepressError(`metadata '${key}': bool byte must be 0 or 1, got ${b}`, { file });
      return b === 1;
    }
  }
}

/** Parses the header from the file's first bytes; too short a prefix fails with 'truncated header'. */
function parseHeader(buf: Uint8Array, file: string, fileSize: number): GgufFile {
  const c = new Cursor(buf, file);
  const magic = c.u32();
  if (magic !== GGUF_MAGIC) throw new MoepressError(`not a GGUF file: magic 0x${magic.toString(16)}, expected 0x${GGUF_MAGIC.toString(16)} ("GGUF")`, { file });
  const version = c.u32();
  if (version !== 2 && version !== 3) throw new MoepressError(`unsupported GGUF version ${version} (expected 2 or 3)`, { file });
  const nTensors = c.u64('tensor count');
  const nKv = c.u64('metadata count');
  const metadata = new Map<string, GgufScalar | GgufScalar[]>();
  const types = new Map<string, string>();
  for (let i = 0; i < nKv; i++) {
    const key = c.str('metadata key');
    const t = TYPE_NAMES.get(c.u32());
    if (!t) throw new MoepressError(`metadata '${key}': unknown value type`, { file });
    if (t === 'array') {
      const it = TYPE_NAMES.get(c.u32());
      if (!it || it === 'array') throw new MoepressError(`metadata '${key}': unsupported array item type`, { file });
      const n = c.u64(`metadata '${key}' array length`);
      const values: GgufScalar[] = [];
      for (let j = 0; j < n; j++) values.push(readScalar(c, it, key, file));
      metadata.set(key, values);
      types.set(key, `array:${it}`);
    } else {
      metadata.set(key, readScalar(c, t, key, file));
      types.set(key, t);
    }
  }
  const alignment = metadata.has('general.alignment') ? Number(metadata.get('general.alignment')) : GGUF_DEFAULT_ALIGNMENT;
  if (!(Number.isInteger(alignment) && alignment > 0 && (alignment & (alignment - 1)) === 0)) throw new MoepressError(`general.alignment must be a power of two, got ${alignment}`, { file });
  const infos: { name: string; type: GgufTensorType; shape: number[]; rel: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = c.str('tensor name');
    const nd = c.u32();
    if (nd < 1 || nd > 4) throw new MoepressError(`${nd} dimensions (expected 1 to 4)`, { file, tensor: name });
    const ne: number[] = [];
    for (let d = 0; d < nd; d++) ne.push(c.u64('dimension'));
    const code = c.u32();
    const type = TENSOR_NAMES.get(code);
    if (!type) throw new MoepressError(`tensor type ${code} is not one this reader handles (${[...TENSOR_NAMES.values()].join(', ')})`, { file, tensor: name });
    const rel = c.u64('tensor offset');
    if (rel % alignment !== 0) throw new MoepressError(`data offset ${rel} is not a multiple of the alignment ${alignment}`, { file, tensor: name });
    infos.push({ name, type, shape: ne.reverse(), rel });
  }
  const dataStart = alignUp(c.pos, alignment);
  const tensors = infos.map((t) => {
    const byteLength = typeByteLength(t.type, t.shape);
    if (byteLength === null) throw new MoepressError(`${t.type} tensor of shape [${t.shape}]: rows are not whole blocks`, { file, tensor: t.name });
    const offset = dataStart + t.rel;
    if (offset + byteLength > fileSize) throw new MoepressError(`data [${offset}, ${offset + byteLength}) runs past the end of the file (${fileSize} bytes)`, { file, tensor: t.name });
    return { name: t.name, type: t.type, shape: t.shape, offset, byteLength };
  });
  return { path: file, version, metadata, types, tensors, alignment, dataStart };
}

/** Reads the header of a GGUF file (metadata and tensor infos; no tensor data). */
export function readGguf(path: string): GgufFile {
  const fd = fs.openSync(path, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    // Headers are small except for tokenizer arrays; read 1 MiB, then the whole prefix if needed.
    for (let n = Math.min(size, 1 << 20); ; n = Math.min(size, n * 4)) {
      const buf = new Uint8Array(n);
      readFullyAt(fd, buf, 0, { file: path });
      try {
        return parseHeader(buf, path, size);
      } catch (e) {
        if (n === size || !(e instanceof MoepressError && e.detail.startsWith('truncated header'))) throw e;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** One tensor's stored bytes, as they are in the file (Q4_0/Q8_0 blocks undecoded). */
export function readGgufTensorBytes(g: GgufFile, name: string): Uint8Array {
  const t = g.tensors.find((x) => x.name === name);
  if (!t) throw new MoepressError('no such tensor', { file: g.path, tensor: name });
  const bytes = new Uint8Array(t.byteLength);
  const fd = fs.openSync(g.path, 'r');
  try {
    readFullyAt(fd, bytes, t.offset, { file: g.path, tensor: name });
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}

/** One tensor's values as float32, row-major in its shape (block types dequantized). */
export function readGgufTensor(g: GgufFile, name: string): Float32Array {
  const bytes = readGgufTensorBytes(g, name);
  const t = g.tensors.find((x) => x.name === name)!;
  if (t.type === 'F32') return new Float32Array(bytes.buffer);
  if (t.type === 'F16') return Float32Array.from(new Uint16Array(bytes.buffer), f16ToF32);
  return dequantizeGgml(t.type, bytes, t.shape.reduce((a, b) => a * b, 1));
}

/**
 * Streaming GGUF v3 writer (layout in gguf-format.ts). The header names every tensor's type, shape
 * and data offset, so the writer takes all metadata and tensor specs up front, writes the header,
 * then accepts each tensor's float32 values in declared order, converts them to the declared type
 * and writes them at their aligned offset: one tensor in memory at a time.
 */
import * as fs from 'node:fs';
import { MoepressError } from '../io/errors.js';
import { writeFullyAt } from '../io/fileio.js';
import { fromFloat32 } from '../tensor/convert.js';
import {
  alignUp, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, TENSOR_BLOCK, TENSOR_TYPE, typeByteLength, VALUE_TYPE,
  type GgufKV, type GgufScalar, type GgufScalarType, type GgufTensorSpec,
} from './gguf-format.js';

/** Little-endian byte sink that grows as needed. */
class ByteSink {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(x: number) { this.reserve(1); this.view.setUint8(this.length, x); this.length += 1; }
  i8(x: number) { this.reserve(1); this.view.setInt8(this.length, x); this.length += 1; }
  u16(x: number) { this.reserve(2); this.view.setUint16(this.length, x, true); this.length += 2; }
  i16(x: number) { this.reserve(2); this.view.setInt16(this.length, x, true); this.length += 2; }
  u32(x: number) { this.reserve(4); this.view.setUint32(this.length, x, true); this.length += 4; }
  i32(x: number) { this.reserve(4); this.view.setInt32(this.length, x, true); this.length += 4; }
  f32(x: number) { this.reserve(4); this.view.setFloat32(this.length, x, true); this.length += 4; }
  f64(x: number) { this.reserve(8); this.view.setFloat64(this.length, x, true); this.length += 8; }
  u64(x: number | bigint) { this.reserve(8); this.view.setBigUint64(this.length, BigInt(x), true); this.length += 8; }
  i64(x: number | bigint) { this.reserve(8); this.view.setBigInt64(this.length, BigInt(x), true); this.length += 8; }
  bytes(b: Uint8Array) { this.reserve(b.length); this.buf.set(b, this.length); this.length += b.length; }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  padTo(alignment: number) {
    const n = alignUp(this.length, alignment) - this.length;
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

const INT_RANGE: Partial<Record<GgufScalarType, [number, number]>> = {
  uint8: [0, 0xff], int8: [-0x80, 0x7f], uint16: [0, 0xffff], int16: [-0x8000, 0x7fff],
  uint32: [0, 0xffffffff], int32: [-0x80000000, 0x7fffffff],
};

function writeScalar(s: ByteSink, type: GgufScalarType, v: GgufScalar, key: string, file: string): void {
  const bad = (want: string) => new MoepressError(`metadata '${key}': ${type} expects ${want}, got ${JSON.stringify(String(v))}`, { file });
  if (type === 'string') {
    if (typeof v !== 'string') throw bad('a string');
    return s.str(v);
  }
  if (type === 'bool') {
    if (typeof v !== 'boolean') throw bad('a boolean');
    return s.u8(v ? 1 : 0);
  }
  if (type === 'uint64' || type === 'int64') {
    if (typeof v !== 'bigint' && !(typeof v === 'number' && Number.isSafeInteger(v))) throw bad('an integer');
    return type === 'uint64' ? s.u64(v) : s.i64(v);
  }
  if (typeof v !== 'number') throw bad('a number');
  if (type === 'float32') return s.f32(v);
  if (type === 'float64') return s.f64(v);
  const [lo, hi] = INT_RANGE[type]!;
  if (!Number.isInteger(v) || v < lo || v > hi) throw bad(`an integer in [${lo}, ${hi}]`);
  ({ uint8: s.u8, int8: s.i8, uint16: s.u16, int16: s.i16, uint32: s.u32, int32: s.i32 } as Record<string, (x: number) => void>)[type].call(s, v);
}

/** Bytes of one tensor's data (before alignment padding). */
export function tensorByteLength(t: GgufTensorSpec): number {
  const n = typeByteLength(t.type, t.shape);
  if (n === null) throw new MoepressError(`a ${t.type} row must be whole blocks of ${TENSOR_BLOCK[t.type].values} values, got shape [${t.shape}]`, { tensor: t.name });
  return n;
}

/**
 * Header bytes (padded so the data section starts aligned) and each tensor's offset inside the
 * data section.
 */
export function encodeGgufHeader(kvs: readonly GgufKV[], tensors: readonly GgufTensorSpec[], file: string,
  alignment = GGUF_DEFAULT_ALIGNMENT): { header: Uint8Array; offsets: number[]; dataBytes: number } {
  const s = new ByteSink();
  s.u32(GGUF_MAGIC);
  s.u32(GGUF_VERSION);
  s.u64(tensors.length);
  s.u64(kvs.length);
  const keys = new Set<string>();
  for (const e of kvs) {
    if (keys.has(e.key)) throw new MoepressError(`metadata key '${e.key}' appears twice`, { file });
    keys.add(e.key);
    s.str(e.key);
    s.u32(VALUE_TYPE[e.type]);
    if (e.type === 'array') {
      s.u32(VALUE_TYPE[e.itemType]);
      s.u64(e.value.length);
      for (const v of e.value) writeScalar(s, e.itemType, v, e.key, file);
    } else writeScalar(s, e.type, e.value, e.key, file);
  }
  const names = new Set<string>();
  const offsets: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    const where = { file, tensor: t.name };
    if (names.has(t.name)) throw new MoepressError('tensor name appears twice', where);
    names.add(t.name);
    if (!(t.type in TENSOR_TYPE)) throw new MoepressError(`unsupported tensor type '${t.type}' (expected ${Object.keys(TENSOR_TYPE).join(', ')})`, where);
    if (t.shape.length < 1 || t.shape.length > 4 || !t.shape.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw new MoepressError(`shape must be 1 to 4 positive integers, got [${t.shape}]`, where);
    }
    if (typeByteLength(t.type, t.shape) === null) {
      throw new MoepressError(`a ${t.type} row must be whole blocks of ${TENSOR_BLOCK[t.type].values} values; the innermost dimension of [${t.shape}] is not`, where);
    }
    s.str(t.name);
    s.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) s.u64(t.shape[i]); // ne: innermost first
    s.u32(TENSOR_TYPE[t.type]);
    s.u64(offset);
    offsets.push(offset);
    offset = alignUp(offset + tensorByteLength(t), alignment);
  }
  s.padTo(alignment);
  return { header: s.result(), offsets, dataBytes: offset };
}

export class GgufWriter {
  private fd: number | null;
  private next = 0;
  private readonly dataStart: number;
  private readonly offsets: number[];
  private readonly dataBytes: number;

  /** Creates (or truncates) `path` and writes the header; tensors must then come in `tensors` order. */
  constructor(readonly path: string, kvs: readonly GgufKV[], private readonly tensors: readonly GgufTensorSpec[]) {
    const { header, offsets, dataBytes } = encodeGgufHeader(kvs, tensors, path);
    this.offsets = offsets;
    this.dataBytes = dataBytes;
    this.dataStart = header.byteLength;
    try {
      this.fd = fs.openSync(path, 'w');
    } catch (e) {
      throw new MoepressError(`cannot create GGUF file: ${(e as Error).message}`, { file: path });
    }
    writeFullyAt(this.fd, header, 0);
  }

  get done(): boolean {
    return this.next === this.tensors.length;
  }

  /** data: the tensor's values, row-major in its declared shape; converted to its declared type (F32 or F16). */
  write(name: string, data: Float32Array): void {
    const spec = this.expect(name);
    if (spec.type !== 'F32' && spec.type !== 'F16') throw new MoepressError(`declared ${spec.type}: write its packed blocks with writeBytes`, { file: this.path, tensor: name });
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new MoepressError(`got ${data.length} values, expected ${n} for [${spec.shape}]`, { file: this.path, tensor: name });
    this.put(fromFloat32(data, spec.type));
  }

  /** bytes: the tensor's data already in its declared type (e.g. Q4_0 blocks), row-major. */
  writeBytes(name: string, bytes: Uint8Array): void {
    const spec = this.expect(name);
    const want = tensorByteLength(spec);
    if (bytes.length !== want) throw new MoepressError(`got ${bytes.length} bytes, expected ${want} for ${spec.type} [${spec.shape}]`, { file: this.path, tensor: name });
    this.put(bytes);
  }

  /** The next declared tensor, which must be `name`. */
  private expect(name: string): GgufTensorSpec {
    const where = { file: this.path, tensor: name };
    if (this.fd === null) throw new MoepressError('writer is closed', where);
    const spec = this.tensors[this.next];
    if (!spec || spec.name !== name) throw new MoepressError(`tensors must be written in declared order: expected ${spec ? `'${spec.name}'` : 'none'} next`, where);
    return spec;
  }

  private put(bytes: Uint8Array): void {
    writeFullyAt(this.fd!, bytes, this.dataStart + this.offsets[this.next]);
    this.next++;
  }

  /** Pads the file to the end of the data section and closes it; throws if tensors are missing. */
  close(): void {
    if (this.fd === null) return;
    if (this.done && this.dataBytes > 0) {
      // The last tensor's padding: the file ends on an aligned boundary, as gguf-py writes it.
      const end = this.dataStart + this.dataBytes;
      const size = fs.fstatSync(this.fd).size;
      if (size < end) writeFullyAt(this.fd, new Uint8Array(end - size), size);
    }
    fs.closeSync(this.fd);
    this.fd = null;
    if (!this.done) {
      throw new MoepressError(`closed with ${this.tensors.length - this.next} declared tensors unwritten, first '${this.tensors[this.next].name}'`, { file: this.path });
    }
  }

  /** Closes and deletes the partial file; for error paths. */
  abort(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    fs.rmSync(this.path, { force: true });
  }
}

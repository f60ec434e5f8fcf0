import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { SafetensorsWriter, writeSafetensors } from '../src/io/safetensors-writer.js';
import { DTYPE_BYTES, type DType, type RawTensor, numel } from '../src/io/dtype.js';
import { MoepressError } from '../src/io/errors.js';
import { uniformFn as rng } from './helpers/random.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'moepress-st-'));
process.on('exit', () => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let counter = 0;
const tmpFile = (): string => path.join(tmpRoot, `t${counter++}.safetensors`);


function randomBytes(n: number, seed: number): Uint8Array {
  const r = rng(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(r() * 256);
  return out;
}

/** Hand-assembles a file: u64 length prefix (or `lengthOverride`), header text, data bytes. */
function handMade(header: string | object, data: Uint8Array | number = 0, lengthOverride?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const bytes = typeof data === 'number' ? new Uint8Array(data).fill(7) : data;
  const buf = new Uint8Array(8 + json.byteLength + bytes.byteLength);
  new DataView(buf.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.byteLength), true);
  buf.set(json, 8);
  buf.set(bytes, 8 + json.byteLength);
  const p = tmpFile();
  fs.writeFileSync(p, buf);
  return p;
}

/** Asserts `fn` throws a MoepressError whose message contains every part. */
function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof MoepressError, `expected MoepressError, got ${String(e)}`);
    for (const p of parts) {
      if (typeof p === 'string') assert.ok(e.message.includes(p), `'${e.message}' should mention '${p}'`);
      else assert.match(e.message, p);
    }
    return true;
  });
}

const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

// ---- one test per validation error ----

test('file shorter than 8 bytes', () => {
  const p = tmpFile();
  fs.writeFileSync(p, new Uint8Array(5));
  expectError(() => SafetensorsFile.open(p), p, 'shorter than the 8-byte', '5 bytes');
});

test('missing file', () => {
  const p = path.join(tmpRoot, 'nope.safetensors');
  expectError(() => SafetensorsFile.open(p), p, 'cannot open');
});

test('header length beyond the file size', () => {
  const p = handMade({ w: ok }, 8, 10_000n);
  expectError(() => SafetensorsFile.open(p), p, 'header length 10000', 'past the end');
});

test('absurd header length (> 100 MB)', () => {
  const p = handMade({ w: ok }, 8, 1n << 40n);
  expectError(() => SafetensorsFile.open(p), p, String(1n << 40n), 'limit');
});

test('header is not valid JSON', () => {
  const p = handMade('{"w": {"dtype": "F32",', 8);
  expectError(() => SafetensorsFile.open(p), p, 'not valid JSON');
});

test('header is not valid UTF-8', () => {
  const p = tmpFile();
  const buf = new Uint8Array(8 + 4);
  new DataView(buf.buffer).setBigUint64(0, 4n, true);
  buf.set([0x7b, 0xff, 0xfe, 0x7d], 8);
  fs.writeFileSync(p, buf);
  expectError(() => SafetensorsFile.open(p), p, 'UTF-8');
});

test('header is not an object', () => {
  expectError(() => SafetensorsFile.open(handMade('[1, 2]')), 'must be a JSON object', 'an array');
  expectError(() => SafetensorsFile.open(handMade('null')), 'must be a JSON object', 'null');
});

test('tensor entry is not an object', () => {
  const p = handMade({ w: [1, 2] });
  expectError(() => SafetensorsFile.open(p), p, "tensor 'w'", 'must be an object');
});

test('unknown dtype', () => {
  const p = handMade({ w: { ...ok, dtype: 'Q4_K' } }, 8);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'w'", 'unknown dtype "Q4_K"', 'BF16');
});

test('shape not an array of non-negative integers', () => {
  for (const shape of [[-2], [1.5], ['2'], 2, null]) {
    const p = handMade({ w: { ...ok, shape } }, 8);
    expectError(() => SafetensorsFile.open(p), p, "tensor 'w'", 'shape must be an array of non-negative integers');
  }
});

test('data_offsets not [begin, end] integers', () => {
  for (const data_offsets of [[0], [0, 8, 9], [0, '8'], [-1, 7], [0.5, 8], 'x']) {
    const p = handMade({ w: { ...ok, data_offsets } }, 8);
    expectError(() => SafetensorsFile.open(p), p, "tensor 'w'", 'data_offsets must be [begin, end]');
  }
});

test('data_offsets begin after end', () => {
  const p = handMade({ w: { ...ok, data_offsets: [8, 0] } }, 8);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'w'", 'begin is after end');
});

test('data_offsets end beyond the data section (truncated file)', () => {
  const p = handMade({ a: ok, b: { ...ok, data_offsets: [8, 16] } }, 12);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'b'", '[8, 16]', '12-byte data section');
});

test('shape x dtype size differs from the byte length', () => {
  const p = handMade({ w: { dtype: 'BF16', shape: [3], data_offsets: [0, 8] } }, 8);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'w'", 'needs 6 bytes', 'span 8');
});

test('overlapping tensors', () => {
  const p = handMade({ a: { ...ok, data_offsets: [0, 8] }, b: { ...ok, data_offsets: [4, 12] } }, 12);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'b'", "overlap tensor 'a'");
});

test('gap between tensors', () => {
  const p = handMade({ a: { ...ok, data_offsets: [0, 8] }, b: { ...ok, data_offsets: [12, 20] } }, 20);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'b'", 'gap of 4 bytes', "'a' ends at 8");
});

test('gap before the first tensor', () => {
  const p = handMade({ a: { ...ok, data_offsets: [4, 12] } }, 12);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'a'", 'gap of 4 bytes');
});

test('trailing bytes after the last tensor', () => {
  const p = handMade({ a: ok }, 11);
  expectError(() => SafetensorsFile.open(p), p, "tensor 'a'", '3 unaccounted bytes');
});

test('__metadata__ must map strings to strings', () => {
  const p1 = handMade({ __metadata__: { format: 'pt', n: 3 }, w: ok }, 8);
  expectError(() => SafetensorsFile.open(p1), p1, "key 'n' must be a string");
  const p2 = handMade({ __metadata__: ['pt'], w: ok }, 8);
  expectError(() => SafetensorsFile.open(p2), p2, '__metadata__ must be an object');
});

test('reading a tensor that does not exist names the file and what it holds', () => {
  const p = handMade({ a: ok }, 8);
  const f = SafetensorsFile.open(p);
  expectError(() => f.read('b'), p, "tensor 'b'", "'a'");
  expectError(() => f.readInto('a', new Uint8Array(4)), p, "tensor 'a'", 'expected 8');
  f.close();
  expectError(() => f.read('a'), p, 'closed');
});

// ---- valid files ----

test('hand-made header is read with absolute offsets and metadata', () => {
  const data = randomBytes(8 + 6, 1);
  const p = handMade({
    __metadata__: { format: 'pt' },
    b: { dtype: 'BF16', shape: [3], data_offsets: [8, 14] },
    a: ok,
  }, data);
  const headerLen = Number(fs.readFileSync(p).readBigUInt64LE(0));
  const f = SafetensorsFile.open(p);
  assert.deepEqual(f.metadata, { format: 'pt' });
  assert.deepEqual([...f.tensors.keys()], ['a', 'b']); // data order
  assert.deepEqual(f.tensors.get('b'), { name: 'b', dtype: 'BF16', shape: [3], offset: 8 + headerLen + 8, byteLength: 6 });
  assert.deepEqual(f.read('b').data, data.subarray(8));
  f.close();
});

test('empty file with header {} and zero-size tensors are valid', () => {
  const f = SafetensorsFile.open(handMade({}));
  assert.equal(f.tensors.size, 0);
  assert.equal(f.metadata, null);
  f.close();
  const g = SafetensorsFile.open(handMade({ z: { dtype: 'F32', shape: [0, 4], data_offsets: [0, 0] }, a: ok }, 8));
  assert.equal(g.read('z').data.byteLength, 0);
  g.close();
});

test('write -> read is byte-identical for every dtype', () => {
  const dtypes = Object.keys(DTYPE_BYTES) as DType[];
  const tensors = new Map<string, RawTensor>();
  dtypes.forEach((dtype, i) => {
    const shape = [3, i + 1, 5];
    tensors.set(`t.${dtype}`, { dtype, shape, data: randomBytes(numel(shape) * DTYPE_BYTES[dtype], i + 10) });
  });
  tensors.set('scalar', { dtype: 'F32', shape: [], data: randomBytes(4, 99) });
  tensors.set('empty', { dtype: 'BF16', shape: [0], data: new Uint8Array(0) });
  tensors.set('7', { dtype: 'U8', shape: [1], data: new Uint8Array([42]) }); // integer-like name keeps its place
  const p = tmpFile();
  writeSafetensors(p, tensors, { format: 'pt', note: 'hi' });

  const bytes = fs.readFileSync(p);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  assert.equal(headerLen % 8, 0, 'header padded to a multiple of 8');
  const headerText = bytes.subarray(8, 8 + headerLen).toString('utf8');
  assert.match(headerText, /^\{"__metadata__":/);
  assert.match(headerText, /\} *$/);
  assert.ok(headerText.indexOf('"empty"') < headerText.indexOf('"7"'), 'header in given order');

  const f = SafetensorsFile.open(p);
  assert.deepEqual(f.metadata, { format: 'pt', note: 'hi' });
  assert.equal(f.tensors.size, tensors.size);
  for (const [name, t] of tensors) {
    const got = f.read(name);
    assert.equal(got.dtype, t.dtype, name);
    assert.deepEqual(got.shape, t.shape, name);
    assert.deepEqual(got.data, t.data, name);
    assert.equal(got.data.byteOffset, 0);
  }
  // Data is laid out in the given order, contiguously.
  const offsets = [...tensors.keys()].map((n) => f.tensors.get(n)!.offset);
  assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b));
  f.close();
});

test('read returns a buffer a Float32Array can view', () => {
  const p = tmpFile();
  const values = new Float32Array([1.5, -2, 3.25]);
  writeSafetensors(p, [['odd', { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) }],
    ['f', { dtype: 'F32', shape: [3], data: new Uint8Array(values.buffer) }]]);
  const f = SafetensorsFile.open(p);
  const t = f.read('f');
  assert.deepEqual(new Float32Array(t.data.buffer, t.data.byteOffset, 3), values);
  f.close();
});

test('streaming writer: order, sizes and completeness are checked', () => {
  const p = tmpFile();
  const specs = [{ name: 'a', dtype: 'F32' as const, shape: [2] }, { name: 'b', dtype: 'BF16' as const, shape: [2, 2] }];
  const w = new SafetensorsWriter(p, specs);
  expectError(() => w.write('b', new Uint8Array(8)), p, "tensor 'b'", "expected 'a' next");
  expectError(() => w.write('a', new Uint8Array(6)), p, "tensor 'a'", 'got 6 bytes, expected 8');
  w.write('a', new Uint8Array(8).fill(1));
  expectError(() => w.close(), p, "1 declared tensors unwritten: 'b'");

  const q = tmpFile();
  const w2 = new SafetensorsWriter(q, specs);
  w2.write('a', randomBytes(8, 3));
  w2.write('b', randomBytes(8, 4));
  assert.ok(w2.done);
  expectError(() => w2.write('c', new Uint8Array(1)), q, 'already written');
  w2.close();
  const f = SafetensorsFile.open(q);
  assert.deepEqual(f.read('b').data, randomBytes(8, 4));
  f.close();

  expectError(() => new SafetensorsWriter(tmpFile(), [specs[0], specs[0]]), "tensor 'a'", 'twice');
  expectError(() => new SafetensorsWriter(tmpFile(), [{ name: 'x', dtype: 'F64' as DType, shape: [1] }]),
    "tensor 'x'", 'unknown dtype');
});

test('writeSafetensors removes the partial file on error', () => {
  const p = tmpFile();
  const bad: [string, RawTensor][] = [['a', { dtype: 'F32', shape: [4], data: new Uint8Array(15) }]];
  expectError(() => writeSafetensors(p, bad), "tensor 'a'", 'expected 16');
  assert.equal(fs.existsSync(p), false);
});

test('reads a tensor stored past 2^31 bytes (sparse file)', (t) => {
  const padBytes = 2_200_000_000; // > 2^31 = 2_147_483_648
  const header = {
    pad: { dtype: 'U8', shape: [padBytes], data_offsets: [0, padBytes] },
    tail: { dtype: 'F32', shape: [4], data_offsets: [padBytes, padBytes + 16] },
  };
  const p = handMade(header);
  const headerEnd = fs.statSync(p).size;
  const tail = new Float32Array([1, -2.5, 3e-7, 65504]);
  const fd = fs.openSync(p, 'r+');
  try {
    // ftruncate extends with a hole, so the 2.2 GB costs no disk blocks.
    fs.ftruncateSync(fd, headerEnd + padBytes + 16);
    fs.writeSync(fd, new Uint8Array(tail.buffer), 0, 16, headerEnd + padBytes);
  } catch (e) {
    fs.closeSync(fd);
    t.skip(`filesystem cannot hold a sparse 2.2 GB file: ${(e as Error).message}`);
    return;
  }
  fs.closeSync(fd);
  const f = SafetensorsFile.open(p);
  const info = f.tensors.get('tail')!;
  assert.equal(info.offset, headerEnd + padBytes);
  assert.ok(info.offset > 2 ** 31);
  const got = f.read('tail');
  assert.deepEqual(new Float32Array(got.data.buffer), tail);
  const part = new Uint8Array(32);
  f.readInto('tail', part.subarray(8, 24));
  assert.deepEqual(part.subarray(8, 24), new Uint8Array(tail.buffer));
  f.close();
  fs.rmSync(p);
});

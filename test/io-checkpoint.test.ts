import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Checkpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import { writeSafetensors } from '../src/io/safetensors-writer.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import type { RawTensor } from '../src/io/dtype.js';
import { MoepressError } from '../src/io/errors.js';
import { toFloat32 } from '../src/tensor/convert.js';

const FIXTURES = path.resolve(process.cwd(), '../shared/fixtures');
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'moepress-ckpt-'));
process.on('exit', () => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let counter = 0;
const tmpDir = (): string => {
  const d = path.join(tmpRoot, `d${counter++}`);
  fs.mkdirSync(d);
  return d;
};

function expectError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof MoepressError, `expected MoepressError, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `'${e.message}' should mention '${p}'`);
    return true;
  });
}

/** A small tensor whose bytes encode its index, so mix-ups show. */
function tensorNo(i: number, elems = 16): RawTensor {
  const data = new Uint8Array(elems * 2);
  for (let j = 0; j < data.length; j++) data[j] = (i * 31 + j * 7) & 0xff;
  return { dtype: 'BF16', shape: [elems / 4, 4], data };
}

const tiny = (): [string, RawTensor][] => [['a', tensorNo(1)], ['b', tensorNo(2)]];

// ---- the real fixtures ----

test('mixtral fixture: every index name resolves, known tensor has the expected shape', () => {
  const dir = path.join(FIXTURES, 'mixtral');
  const ckpt = Checkpoint.open(dir);
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.deepEqual(ckpt.names(), Object.keys(index.weight_map));
  assert.deepEqual(ckpt.files(), ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
  let total = 0;
  for (const name of ckpt.names()) {
    const info = ckpt.info(name);
    assert.equal(path.basename(info.file), index.weight_map[name], name);
    total += info.byteLength;
  }
  assert.equal(total, index.metadata.total_size);

  const w1 = ckpt.info('model.layers.0.block_sparse_moe.experts.0.w1.weight');
  assert.equal(w1.dtype, 'BF16');
  assert.deepEqual(w1.shape, [512, 256]); // [I, H]
  assert.deepEqual(ckpt.info('model.layers.0.block_sparse_moe.gate.weight').shape, [8, 256]); // [E, H]

  // Bytes match an independent whole-file read at the header's offset.
  const t = ckpt.read('model.layers.0.block_sparse_moe.experts.0.w1.weight');
  const file = fs.readFileSync(w1.file);
  assert.deepEqual(t.data, new Uint8Array(file.buffer, file.byteOffset + w1.offset, w1.byteLength));
  const x = toFloat32(t);
  let sumSq = 0;
  for (const v of x) {
    assert.ok(Number.isFinite(v));
    sumSq += v * v;
  }
  const rms = Math.sqrt(sumSq / x.length);
  assert.ok(rms > 1e-3 && rms < 1, `trained weights have a plausible scale, rms=${rms}`);
  ckpt.close();
});

test('olmoe and dense fixtures validate', () => {
  for (const name of ['olmoe', 'dense']) {
    const ckpt = Checkpoint.open(path.join(FIXTURES, name));
    ckpt.validate();
    assert.ok(ckpt.names().length > 0);
    assert.ok(ckpt.has('model.embed_tokens.weight'), name);
    ckpt.close();
  }
});

// ---- writeCheckpoint ----

test('sharded writeCheckpoint -> Checkpoint.open reads back identical, shards written as we go', () => {
  const dir = tmpDir();
  const count = 10;
  const each = tensorNo(0).data.byteLength; // 32 bytes
  let maxTmpSeen = 0;
  function* lazy(): Generator<[string, RawTensor]> {
    for (let i = 0; i < count; i++) {
      // Shards of 3 tensors; a shard is flushed when the tensor that does not fit arrives, so
      // before tensor i the shards ending before tensor i - 1 must already be on disk.
      const tmps = fs.readdirSync(dir).filter((e) => e.endsWith('.tmp')).length;
      assert.equal(tmps, i === 0 ? 0 : Math.floor((i - 1) / 3), `shards flushed before tensor ${i}`);
      maxTmpSeen = Math.max(maxTmpSeen, tmps);
      yield [`layers.${i}.w`, tensorNo(i)];
    }
  }
  const res = writeCheckpoint(dir, lazy(), { shardBytes: 3 * each + 5, metadata: { producer: 'test' } });
  assert.equal(maxTmpSeen, 2);
  assert.deepEqual(res.files, ['model-00001-of-00004.safetensors', 'model-00002-of-00004.safetensors',
    'model-00003-of-00004.safetensors', 'model-00004-of-00004.safetensors']);
  assert.equal(res.totalSize, count * each);
  assert.deepEqual(fs.readdirSync(dir).sort(), [...res.files, 'model.safetensors.index.json'].sort());

  const index = JSON.parse(fs.readFileSync(res.indexFile!, 'utf8'));
  assert.equal(index.metadata.total_size, count * each);
  assert.equal(index.weight_map['layers.4.w'], 'model-00002-of-00004.safetensors');
  const keys = Object.keys(index.weight_map);
  assert.deepEqual(keys, [...keys].sort());

  const shard = SafetensorsFile.open(path.join(dir, res.files[0]));
  assert.deepEqual(shard.metadata, { format: 'pt', producer: 'test' });
  shard.close();

  const ckpt = Checkpoint.open(dir);
  assert.equal(ckpt.names().length, count);
  for (let i = 0; i < count; i++) {
    const t = ckpt.read(`layers.${i}.w`);
    assert.deepEqual(t, tensorNo(i));
  }
  ckpt.close();
});

test('single-shard writeCheckpoint writes model.safetensors, no index, and removes a stale save', () => {
  const dir = tmpDir();
  writeCheckpoint(dir, [['x', tensorNo(1)], ['y', tensorNo(2)]], { shardBytes: 40 });
  assert.ok(fs.existsSync(path.join(dir, 'model.safetensors.index.json')));
  fs.writeFileSync(path.join(dir, 'config.json'), '{}');

  const res = writeCheckpoint(dir, tiny());
  assert.deepEqual(res.files, ['model.safetensors']);
  assert.equal(res.indexFile, null);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'model.safetensors']);
  const ckpt = Checkpoint.open(dir);
  assert.deepEqual(ckpt.names(), ['a', 'b']);
  assert.deepEqual(ckpt.read('b'), tensorNo(2));
  ckpt.close();
});

test('writeCheckpoint: a tensor larger than shardBytes gets its own shard; custom prefix', () => {
  const dir = tmpDir();
  const big = tensorNo(9, 64);
  const res = writeCheckpoint(dir, [['s', tensorNo(1)], ['big', big], ['t', tensorNo(2)]],
    { shardBytes: 40, prefix: 'pruned' });
  assert.deepEqual(res.files, ['pruned-00001-of-00003.safetensors', 'pruned-00002-of-00003.safetensors',
    'pruned-00003-of-00003.safetensors']);
  assert.equal(path.basename(res.indexFile!), 'pruned.safetensors.index.json');
  const ckpt = Checkpoint.open(dir); // found as the only *.safetensors.index.json
  assert.equal(ckpt.indexFile, res.indexFile);
  assert.deepEqual(ckpt.read('big'), big);
  assert.equal(path.basename(ckpt.info('big').file), res.files[1]);
  ckpt.close();
});

test('writeCheckpoint rejects duplicate names and leaves no temporary files', () => {
  const dir = tmpDir();
  expectError(() => writeCheckpoint(dir, [['a', tensorNo(1)], ['b', tensorNo(2)], ['a', tensorNo(3)]],
    { shardBytes: 40 }), dir, "tensor 'a'", 'twice');
  assert.deepEqual(fs.readdirSync(dir), []);
});

// ---- Checkpoint.open errors, one test each ----

test('directory missing', () => {
  const dir = path.join(tmpRoot, 'missing');
  expectError(() => Checkpoint.open(dir), dir, 'directory not found');
});

test('path is not a directory', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, '{}');
  expectError(() => Checkpoint.open(file), file, 'not a directory');
});

test('directory without safetensors', () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'config.json'), '{}');
  expectError(() => Checkpoint.open(dir), dir, 'no safetensors weights');
});

test('index JSON invalid', () => {
  const dir = tmpDir();
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, '{"weight_map": {');
  expectError(() => Checkpoint.open(dir), index, 'not valid JSON');
  fs.writeFileSync(index, '{"metadata": {}}');
  expectError(() => Checkpoint.open(dir), index, 'weight_map');
  fs.writeFileSync(index, '{"weight_map": {"a": 3}}');
  expectError(() => Checkpoint.open(dir), index, "tensor 'a'", 'not a shard file name');
  fs.writeFileSync(index, '{"weight_map": {"a": "../elsewhere.safetensors"}}');
  expectError(() => Checkpoint.open(dir), index, "tensor 'a'", 'not a shard file name');
});

test('shard named in the index is missing', () => {
  const dir = tmpDir();
  const res = writeCheckpoint(dir, [['a', tensorNo(1)], ['b', tensorNo(2)]], { shardBytes: 40 });
  fs.rmSync(path.join(dir, res.files[1]));
  expectError(() => Checkpoint.open(dir), res.indexFile!, `shard '${res.files[1]}'`, "tensor 'b'", 'does not exist');
});

test('tensor in the index but not in its shard header', () => {
  const dir = tmpDir();
  writeSafetensors(path.join(dir, 'model-00001-of-00001.safetensors'), tiny());
  const index = { metadata: { total_size: 64 }, weight_map: { a: 'model-00001-of-00001.safetensors',
    ghost: 'model-00001-of-00001.safetensors' } };
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  const ckpt = Checkpoint.open(dir); // shards open lazily ...
  const shard = path.join(dir, 'model-00001-of-00001.safetensors');
  expectError(() => ckpt.read('a'), shard, "tensor 'ghost'", 'not in its header'); // ... and are checked then
  expectError(() => ckpt.validate(), shard, "tensor 'ghost'");
});

test('tensor stored in two shards (no index)', () => {
  const dir = tmpDir();
  writeSafetensors(path.join(dir, 'part1.safetensors'), tiny());
  writeSafetensors(path.join(dir, 'part2.safetensors'), [['b', tensorNo(5)], ['c', tensorNo(6)]]);
  expectError(() => Checkpoint.open(dir), dir, "tensor 'b'", "'part1.safetensors' and 'part2.safetensors'");
});

test('unknown tensor name names the checkpoint', () => {
  const dir = tmpDir();
  writeCheckpoint(dir, tiny());
  const ckpt = Checkpoint.open(dir);
  expectError(() => ckpt.read('nope'), dir, "tensor 'nope'", '2 tensors');
  ckpt.close();
});

test('bad shard header surfaces through Checkpoint with the shard path', () => {
  const dir = tmpDir();
  const shard = path.join(dir, 'model.safetensors');
  fs.writeFileSync(shard, new Uint8Array(3));
  expectError(() => Checkpoint.open(dir), shard, 'shorter than the 8-byte');
});

test('without an index: model.safetensors alone, or every *.safetensors', () => {
  const dir = tmpDir();
  writeSafetensors(path.join(dir, 'b.safetensors'), [['y', tensorNo(2)]]);
  writeSafetensors(path.join(dir, 'a.safetensors'), [['x', tensorNo(1)]]);
  const ckpt = Checkpoint.open(dir);
  assert.deepEqual(ckpt.names(), ['x', 'y']);
  assert.deepEqual(ckpt.read('y'), tensorNo(2));
  ckpt.close();
  assert.deepEqual(ckpt.read('x'), tensorNo(1), 'reopens after close');
  ckpt.close();

  writeSafetensors(path.join(dir, 'model.safetensors'), [['m', tensorNo(3)]]);
  const only = Checkpoint.open(dir);
  assert.deepEqual(only.names(), ['m']);
  only.close();
});

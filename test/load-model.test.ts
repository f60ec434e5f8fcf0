/** Bad checkpoints give clear errors naming the file and tensor. */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Checkpoint, writeCheckpoint } from '../src/io/checkpoint.js';
import type { RawTensor } from '../src/io/dtype.js';
import { MoepressError } from '../src/io/errors.js';
import { loadModel } from '../src/runtime/load-model.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

/** Rewrite a tiny model's checkpoint with one tensor replaced (or dropped when t is null). */
function rewrite(dir: string, name: string, t: RawTensor | null): void {
  const ck = Checkpoint.open(dir);
  const all: [string, RawTensor][] = ck.names().map((n) => [n, n === name && t ? t : ck.read(n)] as [string, RawTensor]).filter(([n]) => n !== name || t);
  ck.close();
  writeCheckpoint(dir, all, { shardBytes: 64 * 1024 });
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof MoepressError, `expected MoepressError, got ${e}`);
    for (const p of parts) assert.match(e.message, typeof p === 'string' ? new RegExp(p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : p);
    return true;
  });
}

test('NaN weights are refused, naming the shard and tensor', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { dtype: 'BF16' });
  try {
    const name = 'model.layers.1.block_sparse_moe.experts.2.w3.weight';
    const t = Checkpoint.open(dir).read(name);
    new Uint16Array(t.data.buffer, t.data.byteOffset, 4)[3] = 0x7fc0; // bf16 NaN
    rewrite(dir, name, t);
    expectError(() => loadModel(dir), name, 'NaN or Inf', '.safetensors');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Inf weights are refused in float32 checkpoints too', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.olmoe, { dtype: 'F32' });
  try {
    const name = 'model.layers.0.self_attn.q_proj.weight';
    const t = Checkpoint.open(dir).read(name);
    new Float32Array(t.data.buffer, t.data.byteOffset, 8)[5] = Infinity;
    rewrite(dir, name, t);
    expectError(() => loadModel(dir), name, 'NaN or Inf');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tensor whose shape disagrees with config.json is refused', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { dtype: 'F32' });
  try {
    const cfgFile = join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
    writeFileSync(cfgFile, JSON.stringify({ ...cfg, vocab_size: 80 }));
    expectError(() => loadModel(dir), 'embed_tokens', '80');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a layer missing an expert tensor is refused, naming the tensor and layer', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.mixtral, { dtype: 'F32' });
  try {
    const name = 'model.layers.1.block_sparse_moe.experts.3.w2.weight';
    rewrite(dir, name, null);
    expectError(() => loadModel(dir), name, /layer 1/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an unknown model_type names config.json and the supported families', () => {
  const { dir } = writeTinyModel(TINY_CONFIGS.llama, { dtype: 'F32' });
  try {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...TINY_CONFIGS.llama, model_type: 'jamba' }));
    expectError(() => loadModel(dir), 'config.json', "'jamba'", 'mixtral');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

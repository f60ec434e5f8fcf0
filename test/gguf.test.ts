import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { MoepressError } from '../src/io/errors.js';
import { exportGguf } from '../src/export/export-gguf.js';
import { GGUF_MAGIC, kv, type GgufKV, type GgufTensorSpec } from '../src/export/gguf-format.js';
import { permuteQK, unpermuteQK } from '../src/export/gguf-mapping.js';
import { readGguf, readGgufTensor } from '../src/export/gguf-reader.js';
import { TOKEN_TYPE } from '../src/export/gguf-tokenizer.js';
import { encodeGgufHeader, GgufWriter } from '../src/export/gguf-writer.js';
import { compareLogProbs, interleavedBest, timeTokens, type Decoder } from '../src/export/llama-cpp.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose } from './helpers/assert-close.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';
import { writeTinyTokenizer } from './helpers/tiny-tokenizer.js';

const tmp = () => mkdtempSync(join(os.tmpdir(), 'moepress-gguf-test-'));

function writeFile(kvs: GgufKV[], tensors: GgufTensorSpec[], data: Float32Array[]): string {
  const file = join(tmp(), 'x.gguf');
  const w = new GgufWriter(file, kvs, tensors);
  tensors.forEach((t, i) => w.write(t.name, data[i]));
  w.close();
  return file;
}

test('GGUF round trip: every metadata type, F32 and F16 tensors, aligned offsets', () => {
  const kvs: GgufKV[] = [
    { key: 'a.u8', type: 'uint8', value: 250 }, { key: 'a.i8', type: 'int8', value: -7 },
    { key: 'a.u16', type: 'uint16', value: 60000 }, { key: 'a.i16', type: 'int16', value: -300 },
    kv.u32('a.u32', 4000000000), kv.i32('a.i32', -123456), kv.f32('a.f32', 1e-5), kv.bool('a.bool', true),
    kv.str('a.str', 'héllo ĠGGUF'), { key: 'a.u64', type: 'uint64', value: 2n ** 40n + 3n }, { key: 'a.i64', type: 'int64', value: -(2n ** 40n) },
    { key: 'a.f64', type: 'float64', value: Math.PI }, kv.strs('a.strs', ['x', '', 'Ġthe']), kv.i32s('a.i32s', [1, -2, 3]),
  ];
  const rng = new Rng(3);
  const tensors: GgufTensorSpec[] = [{ name: 'm', type: 'F32', shape: [3, 5] }, { name: 'h', type: 'F16', shape: [7] }, { name: 'e', type: 'F32', shape: [2, 3, 4] }];
  const data = tensors.map((t) => rng.normals(t.shape.reduce((a, b) => a * b, 1), 1));
  const g = readGguf(writeFile(kvs, tensors, data));
  assert.equal(g.version, 3);
  for (const e of kvs) {
    const got = g.metadata.get(e.key);
    if (e.type === 'float32') assert.equal(got, Math.fround(e.value as number));
    else assert.deepEqual(got, e.value, e.key);
    assert.equal(g.types.get(e.key), e.type === 'array' ? `array:${e.itemType}` : e.type);
  }
  assert.equal(g.dataStart % 32, 0);
  for (const [i, t] of tensors.entries()) {
    const info = g.tensors[i];
    assert.deepEqual([info.name, info.type, info.shape], [t.name, t.type, t.shape]);
    assert.equal((info.offset - g.dataStart) % 32, 0);
    const back = readGgufTensor(g, t.name);
    if (t.type === 'F32') assert.deepEqual(back, data[i]);
    else assertClose(back, data[i], 1e-3, 'F16 values');
  }
});

test('GGUF header bytes: magic, counts, dims innermost first, type and offset', () => {
  const { header, offsets } = encodeGgufHeader([], [{ name: 'w', type: 'F16', shape: [3, 5] }, { name: 'b', type: 'F32', shape: [3] }], 'x.gguf');
  const v = new DataView(header.buffer);
  assert.equal(v.getUint32(0, true), GGUF_MAGIC);
  assert.equal(new TextDecoder().decode(header.subarray(0, 4)), 'GGUF');
  assert.equal(v.getUint32(4, true), 3);
  assert.equal(v.getBigUint64(8, true), 2n); // tensors
  assert.equal(v.getBigUint64(16, true), 0n); // KVs
  let p = 24;
  assert.equal(v.getBigUint64(p, true), 1n); // name length
  assert.equal(String.fromCharCode(header[p + 8]), 'w');
  p += 9;
  assert.equal(v.getUint32(p, true), 2); // n_dims
  assert.equal(v.getBigUint64(p + 4, true), 5n); // ne[0] = columns
  assert.equal(v.getBigUint64(p + 12, true), 3n); // ne[1] = rows
  assert.equal(v.getUint32(p + 20, true), 1); // F16
  assert.equal(v.getBigUint64(p + 24, true), 0n);
  // 3*5 F16 = 30 bytes, so the next tensor starts at the next multiple of 32.
  assert.deepEqual(offsets, [0, 32]);
  assert.equal(header.byteLength % 32, 0);
});

function expectError(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof MoepressError && re.test(e.message));
}

function hand(bytes: number[] | Uint8Array): string {
  const file = join(tmp(), 'bad.gguf');
  writeFileSync(file, Uint8Array.from(bytes));
  return file;
}

test('GGUF reader errors name the file and what was expected', () => {
  const good = writeFile([kv.u32('k', 1)], [{ name: 't', type: 'F32', shape: [4] }], [Float32Array.of(1, 2, 3, 4)]);
  const bytes = readFileSync(good);
  // 16 data bytes padded to 32: cutting 20 bytes cuts into the tensor.
  assert.equal(bytes.length % 32, 0);
  expectError(() => readGguf(hand([0x47, 0x47, 0x4d, 0x4c, 3, 0, 0, 0])), /bad\.gguf: not a GGUF file: magic/);
  const v1 = Uint8Array.from(bytes);
  v1[4] = 1;
  expectError(() => readGguf(hand(v1)), /unsupported GGUF version 1/);
  expectError(() => readGguf(hand(bytes.subarray(0, 30))), /truncated header/);
  expectError(() => readGguf(hand(bytes.subarray(0, bytes.length - 20))), /tensor 't': data \[\d+, \d+\) runs past the end of the file/);
  // The tensor info's type field (u32) sits just before its u64 offset at the end of the infos.
  // Header 24 bytes, KV 'k' (8+1 key, 4 type, 4 value), tensor info 't' (8+1 name, 4 n_dims, 8 ne, 4 type, 8 offset).
  const infoEnd = 24 + (8 + 1 + 4 + 4) + (8 + 1 + 4 + 8 + 4 + 8);
  const badType = Uint8Array.from(bytes);
  new DataView(badType.buffer).setUint32(infoEnd - 12, 12, true); // Q4_K
  expectError(() => readGguf(hand(badType)), /tensor 't': tensor type 12 is not one this reader handles \(F32, F16, Q4_0, Q8_0\)/);
  const badOffset = Uint8Array.from(bytes);
  new DataView(badOffset.buffer).setBigUint64(infoEnd - 8, 4n, true);
  expectError(() => readGguf(hand(badOffset)), /tensor 't': data offset 4 is not a multiple of the alignment 32/);
  const badKvType = Uint8Array.from(bytes);
  new DataView(badKvType.buffer).setUint32(24 + 8 + 1, 99, true);
  expectError(() => readGguf(hand(badKvType)), /metadata 'k': unknown value type/);
});

test('GGUF writer refuses bad input and unfinished files', () => {
  const dir = tmp();
  expectError(() => encodeGgufHeader([kv.u32('k', 1), kv.u32('k', 2)], [], 'x.gguf'), /metadata key 'k' appears twice/);
  expectError(() => encodeGgufHeader([kv.u32('k', -1)], [], 'x.gguf'), /'k': uint32 expects an integer in \[0, 4294967295\]/);
  expectError(() => encodeGgufHeader([], [{ name: 't', type: 'F32', shape: [0] }], 'x.gguf'), /tensor 't': shape must be 1 to 4 positive integers/);
  const w = new GgufWriter(join(dir, 'a.gguf'), [], [{ name: 'a', type: 'F32', shape: [2] }, { name: 'b', type: 'F32', shape: [2] }]);
  expectError(() => w.write('b', new Float32Array(2)), /tensor 'b': tensors must be written in declared order: expected 'a'/);
  expectError(() => w.write('a', new Float32Array(3)), /tensor 'a': got 3 values, expected 2/);
  w.write('a', new Float32Array(2));
  expectError(() => w.close(), /closed with 1 declared tensors unwritten, first 'b'/);
});

test('permuteQK: the hand-computed order, and unpermuteQK inverts it', () => {
  // One head, D = 4, C = 1: rows (x0, x1 | x2, x3) in rotate_half halves -> pairs (x0, x2), (x1, x3).
  assert.deepEqual([...permuteQK(Float32Array.of(0, 1, 2, 3), 1, 1)], [0, 2, 1, 3]);
  // Two heads of D = 4, two columns.
  const x = Float32Array.from({ length: 16 }, (_, i) => i);
  assert.deepEqual([...permuteQK(x, 2, 2)], [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]);
  const r = new Rng(5).normals(6 * 8 * 3, 1);
  assert.deepEqual(unpermuteQK(permuteQK(r, 6, 3), 6, 3), r);
});

/** RoPE at position p on one head of D: 'half' (transformers rotate_half) or 'pairs' (llama.cpp's llama rope). */
function rope(x: Float64Array, p: number, theta: number, style: 'half' | 'pairs'): Float64Array {
  const D = x.length;
  const out = new Float64Array(D);
  for (let i = 0; i < D / 2; i++) {
    const f = p * theta ** (-(2 * i) / D);
    const [a, b] = style === 'half' ? [i, i + D / 2] : [2 * i, 2 * i + 1];
    out[a] = x[a] * Math.cos(f) - x[b] * Math.sin(f);
    out[b] = x[b] * Math.cos(f) + x[a] * Math.sin(f);
  }
  return out;
}

test('permuteQK turns rotate_half RoPE into adjacent-pair RoPE: attention scores unchanged', () => {
  const D = 8;
  const rng = new Rng(9);
  const H = 5;
  const wq = rng.normals(D * H, 1);
  const wk = rng.normals(D * H, 1);
  const x = rng.normals(H, 1);
  const proj = (w: Float32Array) => Float64Array.from({ length: D }, (_, r) => w.subarray(r * H, (r + 1) * H).reduce((s, v, c) => s + v * x[c], 0));
  const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, v, i) => s + v * b[i], 0);
  for (const [pq, pk] of [[3, 1], [17, 4], [0, 0]]) {
    const hf = dot(rope(proj(wq), pq, 10000, 'half'), rope(proj(wk), pk, 10000, 'half'));
    const ll = dot(rope(proj(permuteQK(wq, 1, H)), pq, 10000, 'pairs'), rope(proj(permuteQK(wk, 1, H)), pk, 10000, 'pairs'));
    assert.ok(Math.abs(hf - ll) <= 1e-9 * Math.max(1, Math.abs(hf)), `positions ${pq},${pk}: ${hf} vs ${ll}`);
    // Without the permutation the scores differ: the test can fail.
    const wrong = dot(rope(proj(wq), pq, 10000, 'pairs'), rope(proj(wk), pk, 10000, 'pairs'));
    if (pq !== pk) assert.ok(Math.abs(hf - wrong) > 1e-6);
  }
});

const writeTokenizer = writeTinyTokenizer;

test('export --gguf, dense llama with biases: metadata, tokenizer, names, permuted Q/K and exact weights', () => {
  const { dir, cfg, weights } = writeTinyModel({ ...TINY_CONFIGS.llama, attention_bias: true }, { seed: 4 });
  writeTokenizer(dir);
  const out = join(tmp(), 'm.gguf');
  const r = exportGguf(dir, out);
  const g = readGguf(out);
  const md = g.metadata;
  assert.equal(md.get('general.architecture'), 'llama');
  assert.equal(md.get('general.file_type'), 0);
  assert.equal(md.get('llama.block_count'), 2);
  assert.equal(md.get('llama.embedding_length'), 32);
  assert.equal(md.get('llama.feed_forward_length'), 40);
  assert.equal(md.get('llama.attention.head_count'), 4);
  assert.equal(md.get('llama.attention.head_count_kv'), 2);
  assert.equal(md.get('llama.context_length'), 128);
  assert.equal(md.get('llama.rope.dimension_count'), 8);
  assert.equal(md.get('llama.rope.freq_base'), 10000);
  assert.equal(md.get('llama.attention.layer_norm_rms_epsilon'), Math.fround(1e-5));
  assert.equal(md.get('llama.vocab_size'), 64);
  assert.equal(md.get('tokenizer.ggml.model'), 'gpt2');
  assert.equal(md.get('tokenizer.ggml.pre'), 'gpt-2');
  const tokens = md.get('tokenizer.ggml.tokens') as string[];
  assert.equal(tokens.length, 64);
  assert.deepEqual(tokens.slice(0, 7), ['<|endoftext|>', 'a', 'b', 'ab', 'Ġ', '<x>', '[PAD6]']);
  assert.deepEqual((md.get('tokenizer.ggml.token_type') as number[]).slice(0, 7), [TOKEN_TYPE.CONTROL, 1, 1, 1, 1, TOKEN_TYPE.USER_DEFINED, TOKEN_TYPE.UNUSED]);
  assert.deepEqual(md.get('tokenizer.ggml.merges'), ['a b']);
  assert.equal(md.get('tokenizer.ggml.bos_token_id'), 1);
  assert.equal(md.get('tokenizer.ggml.eos_token_id'), 2);
  assert.equal(r.tensors, g.tensors.length);
  const names = new Set(g.tensors.map((t) => t.name));
  for (const n of ['token_embd.weight', 'output_norm.weight', 'output.weight', 'blk.1.attn_q.weight', 'blk.1.attn_q.bias', 'blk.1.attn_k.bias', 'blk.1.attn_output.bias', 'blk.0.ffn_gate.weight', 'blk.0.ffn_down.weight']) assert.ok(names.has(n), n);
  assert.deepEqual(g.tensors.find((t) => t.name === 'blk.0.ffn_down.weight')!.shape, [32, 40]);
  const get = (n: string) => readGgufTensor(g, n);
  assert.deepEqual(get('token_embd.weight'), weights.get('embed')!.data);
  assert.deepEqual(get('blk.1.attn_v.weight'), weights.get('layers.1.attn.v.weight')!.data);
  assert.deepEqual(get('blk.0.ffn_up.weight'), weights.get('layers.0.mlp.up')!.data);
  const a = cfg.attention;
  assert.deepEqual(unpermuteQK(get('blk.1.attn_q.weight'), a.heads, 32), weights.get('layers.1.attn.q.weight')!.data);
  assert.deepEqual(unpermuteQK(get('blk.1.attn_k.weight'), a.kvHeads, 32), weights.get('layers.1.attn.k.weight')!.data);
  assert.deepEqual(unpermuteQK(get('blk.0.attn_q.bias'), a.heads, 1), weights.get('layers.0.attn.q.bias')!.data);
  assert.notDeepEqual(get('blk.1.attn_q.weight'), weights.get('layers.1.attn.q.weight')!.data);
});

test('export --gguf, mixtral F16: stacked experts, F32 router and norms, F16 matrices', () => {
  const { dir, weights } = writeTinyModel(TINY_CONFIGS.mixtral, { seed: 6 });
  writeTokenizer(dir);
  const out = join(tmp(), 'm.gguf');
  exportGguf(dir, out, { dtype: 'F16' });
  const g = readGguf(out);
  assert.equal(g.metadata.get('general.file_type'), 1);
  assert.equal(g.metadata.get('llama.expert_count'), 4);
  assert.equal(g.metadata.get('llama.expert_used_count'), 2);
  assert.equal(g.metadata.get('llama.feed_forward_length'), 16);
  const info = (n: string) => g.tensors.find((t) => t.name === n)!;
  assert.deepEqual([info('blk.0.ffn_gate_exps.weight').shape, info('blk.0.ffn_gate_exps.weight').type], [[4, 16, 32], 'F16']);
  assert.deepEqual(info('blk.0.ffn_down_exps.weight').shape, [4, 32, 16]);
  assert.equal(info('blk.0.ffn_gate_inp.weight').type, 'F32');
  assert.equal(info('blk.0.attn_norm.weight').type, 'F32');
  assert.deepEqual(readGgufTensor(g, 'blk.1.ffn_gate_inp.weight'), weights.get('layers.1.moe.router.weight')!.data);
  assertClose(readGgufTensor(g, 'blk.1.ffn_down_exps.weight'), weights.get('layers.1.moe.experts.down')!.data, 1e-3, 'F16 experts');
  assert.equal(g.tensors.some((t) => t.name.startsWith('blk.0.ffn_gate.')), false);
});

test('export --gguf caps the context at a sliding window and refuses what llama cannot run', () => {
  const m = writeTinyModel(TINY_CONFIGS.mistral, { seed: 2 });
  writeTokenizer(m.dir);
  const out = join(tmp(), 'm.gguf');
  exportGguf(m.dir, out);
  assert.equal(readGguf(out).metadata.get('llama.context_length'), 6);
  const q = writeTinyModel(TINY_CONFIGS.qwen3_moe, { seed: 2 });
  writeTokenizer(q.dir);
  expectError(() => exportGguf(q.dir, join(tmp(), 'q.gguf')), /config\.json: cannot export to GGUF: family 'qwen3-moe' has no GGUF mapping/);
  const n = writeTinyModel(TINY_CONFIGS.llama, { seed: 2 });
  expectError(() => exportGguf(n.dir, join(tmp(), 'n.gguf')), /tokenizer\.json: tokenizer\.json not found/);
});

test('export --gguf, olmoe: olmoe keys, full-width q/k norms, Q/K not permuted (NEOX RoPE)', () => {
  const { dir, weights } = writeTinyModel(TINY_CONFIGS.olmoe, { seed: 7 });
  writeTokenizer(dir);
  const out = join(tmp(), 'o.gguf');
  assert.equal(exportGguf(dir, out).architecture, 'olmoe');
  const g = readGguf(out);
  assert.equal(g.metadata.get('general.architecture'), 'olmoe');
  assert.equal(g.metadata.get('olmoe.expert_count'), 4);
  assert.equal(g.metadata.get('olmoe.expert_used_count'), 2);
  assert.equal(g.metadata.has('llama.block_count'), false);
  assert.deepEqual(g.tensors.find((t) => t.name === 'blk.0.attn_q_norm.weight')!.shape, [32]);
  assert.deepEqual(readGgufTensor(g, 'blk.1.attn_k_norm.weight'), weights.get('layers.1.attn.k_norm.weight')!.data);
  assert.deepEqual(readGgufTensor(g, 'blk.1.attn_q.weight'), weights.get('layers.1.attn.q.weight')!.data);
});

test('compareLogProbs: zero for the same distribution, the shift when one differs, argmax and missing positions', () => {
  const V = 5;
  const logits = Float32Array.of(1, 2, 3, 0, -1, 0.5, 0.5, 2, 1, 0);
  const logp = new Float64Array(10);
  for (let s = 0; s < 2; s++) {
    const row = [...logits.subarray(s * V, (s + 1) * V)];
    const lse = Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
    row.forEach((x, v) => (logp[s * V + v] = x - lse));
  }
  const same = compareLogProbs(logits, logp, 2, V);
  assert.ok(same.maxAbsLogProbDiff < 1e-6 && same.argmaxAgree === 2 && same.missing === 0);
  const moved = Float64Array.from(logp);
  moved[V + 4] += 0.25;
  assert.ok(Math.abs(compareLogProbs(logits, moved, 2, V).maxAbsLogProbDiff - 0.25) < 1e-6);
  const other = Float64Array.from(logp);
  other[1] = 0; // token 1 becomes the other engine's argmax at position 0
  other.fill(NaN, V);
  const r = compareLogProbs(logits, other, 2, V);
  assert.equal(r.argmaxAgree, 0);
  assert.equal(r.missing, 1);
});

test('timeTokens and interleavedBest: decode rate excludes the first token, runs alternate', async () => {
  async function* stream(n: number) {
    for (let i = 0; i < n; i++) yield i;
  }
  const r = await timeTokens(stream(100), 10);
  assert.deepEqual(r.tokens, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.ok(r.decodeTokensPerSecond > 0);
  const order: string[] = [];
  const dec = (name: string): Decoder => ({ engine: name, run: async (p, n) => { order.push(name); return timeTokens(stream(n), n); }, close: async () => {} });
  const best = await interleavedBest([dec('a'), dec('b')], [1], 4, 3);
  assert.deepEqual(order, ['a', 'b', 'a', 'b', 'a', 'b']);
  assert.equal(best[1].runsTokensPerSecond.length, 3);
  assert.equal(best[0].decodeTokensPerSecond, Math.max(...best[0].runsTokensPerSecond));
});

test('moepress export: --gguf writes the file (--json), usage errors exit 2', () => {
  const main = resolve(process.cwd(), 'dist/src/cli/main.js');
  const { dir } = writeTinyModel(TINY_CONFIGS.llama, { seed: 8 });
  writeTokenizer(dir);
  const out = join(tmp(), 'cli.gguf');
  const ok = spawnSync(process.execPath, [main, 'export', dir, '--gguf', out, '--dtype', 'f16', '--json'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  const r = JSON.parse(ok.stdout) as { file: string; tensors: number; architecture: string };
  assert.equal(r.architecture, 'llama');
  assert.equal(readGguf(out).tensors.length, r.tensors);
  const again = spawnSync(process.execPath, [main, 'export', dir, '--gguf', out], { encoding: 'utf8' });
  assert.equal(again.status, 2);
  assert.match(again.stderr, /exists; pass --overwrite/);
  const noOut = spawnSync(process.execPath, [main, 'export', dir], { encoding: 'utf8' });
  assert.equal(noOut.status, 2);
  assert.match(noOut.stderr, /--gguf OUT\.gguf is required/);
});

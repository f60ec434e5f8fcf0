import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { compress } from '../src/compress/compress.js';
import { readManifest } from '../src/compress/format.js';
import { codecById } from '../src/compress/quant/codec.js';
import { exportGguf } from '../src/export/export-gguf.js';
import { readGguf, readGgufTensor, readGgufTensorBytes } from '../src/export/gguf-reader.js';
import { dequantizeGgml, ggmlTypeForCodec, repackBlocks } from '../src/export/gguf-quants.js';
import { encodeGgufHeader, GgufWriter } from '../src/export/gguf-writer.js';
import { MoepressError } from '../src/io/errors.js';
import { Checkpoint } from '../src/io/checkpoint.js';
import { Rng } from '../src/tensor/random.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';
import { writeTinyTokenizer } from './helpers/tiny-tokenizer.js';

const tmp = () => mkdtempSync(join(os.tmpdir(), 'moepress-gguf-quants-'));

function expectError(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof MoepressError && re.test(e.message), `expected ${re}`);
}

/**
 * Random blocks with the awkward cases: an all-zero block, a block whose extreme is positive (scale
 * negative), one whose extreme is negative, a tiny-scale block (f16 subnormal scale), large values.
 */
function awkward(n: number, seed: number): Float32Array {
  const x = new Rng(seed).normals(n, 0.05);
  x.fill(0, 0, 32);
  x[32 + 5] = 0.9; // positive extreme
  x[64 + 20] = -0.9; // negative extreme
  for (let i = 96; i < 128; i++) x[i] *= 1e-4;
  for (let i = 128; i < 160; i++) x[i] *= 1e3;
  return x;
}

// Exact equality is the claim here (the repack moves bits, it computes nothing): every value the GGML
// dequantizer reads must be the value moepress's codec decodes, bit for bit.
test('repackBlocks: q4s-g32 -> Q4_0 and q8s-g32 -> Q8_0 decode to exactly what the codec decodes', () => {
  for (const id of ['q4s-g32', 'q4s-g32-rtn', 'q8s-g32', 'q8s-g32-rtn']) {
    const codec = codecById(id);
    const type = ggmlTypeForCodec(id)!;
    const n = 32 * 40;
    const packed = codec.quantize(awkward(n, 3));
    const ggml = new Uint8Array(packed.length);
    repackBlocks(type, packed, ggml);
    const ours = codec.dequantize(packed, n);
    const theirs = dequantizeGgml(type, ggml, n);
    assert.deepEqual(theirs, ours, id);
    assert.ok(ours.some((v) => v !== 0) && ours.some((v) => v < 0), `${id}: the blocks are not trivial`);
  }
  for (const id of ['q4s-g64', 'q4a-g32', 'q3s-g32-rtn', 'q4s-g32-bf16', 'q8s-g32-bf16']) assert.equal(ggmlTypeForCodec(id), null, id);
});

test('repackBlocks: hand-computed Q4_0 and Q8_0 blocks (ggml block_q4_0 / block_q8_0 layout)', () => {
  // Ours: codes u_i = i mod 16 in stream order (element 2k low nibble of byte k), scale 1.0 (f16 0x3c00).
  const src = new Uint8Array(18);
  src[0] = 0x00;
  src[1] = 0x3c;
  for (let k = 0; k < 16; k++) src[2 + k] = ((2 * k) % 16) | (((2 * k + 1) % 16) << 4);
  const q4 = new Uint8Array(18);
  repackBlocks('Q4_0', src, q4);
  // Q4_0 byte j: element j (code j) low, element j + 16 (code j) high.
  assert.deepEqual([...q4.subarray(0, 2)], [0x00, 0x3c]);
  for (let j = 0; j < 16; j++) assert.equal(q4[2 + j], j | (j << 4), `byte ${j}`);
  const v = dequantizeGgml('Q4_0', q4, 32);
  for (let j = 0; j < 32; j++) assert.equal(v[j], (j % 16) - 8);
  // Q8_0: stored u = q + 128 becomes the int8 q; scale 0.5 (f16 0x3800).
  const s8 = new Uint8Array(34);
  s8[1] = 0x38;
  for (let j = 0; j < 32; j++) s8[2 + j] = j * 8; // q = 8j - 128: -128 .. 120
  const q8 = new Uint8Array(34);
  repackBlocks('Q8_0', s8, q8);
  assert.equal(q8[2], 0x80); // -128
  assert.equal(q8[2 + 16], 0x00); // 0
  const w = dequantizeGgml('Q8_0', q8, 32);
  for (let j = 0; j < 32; j++) assert.equal(w[j], (8 * j - 128) * 0.5);
  expectError(() => repackBlocks('Q4_0', new Uint8Array(17), new Uint8Array(17)), /17 bytes are not whole Q4_0 blocks of 18 bytes/);
});

test('GGUF header: block types need whole blocks per row; sizes are blocks x bytes per block', () => {
  expectError(() => encodeGgufHeader([], [{ name: 'q', type: 'Q4_0', shape: [2, 48] }], 'x.gguf'), /tensor 'q': a Q4_0 row must be whole blocks of 32 values/);
  const h = encodeGgufHeader([], [{ name: 'q', type: 'Q4_0', shape: [3, 64] }, { name: 'r', type: 'Q8_0', shape: [2, 32] }], 'x.gguf');
  assert.equal(h.offsets[1], 128); // 3 rows x 2 blocks x 18 bytes = 108, padded to 32
  assert.equal(h.dataBytes, 224); // 128 + 2 x 34 = 196, padded
  const w = new GgufWriter(join(tmp(), 'w.gguf'), [], [{ name: 'q', type: 'Q4_0', shape: [3, 64] }]);
  expectError(() => w.write('q', new Float32Array(192)), /tensor 'q': declared Q4_0: write its packed blocks with writeBytes/);
  expectError(() => w.writeBytes('q', new Uint8Array(107)), /tensor 'q': got 107 bytes, expected 108 for Q4_0 \[3,64\]/);
  w.abort();
});

/** A tiny Mixtral whose expert rows are whole blocks of 32 (H = 32, I = 32), compressed with quant. */
async function compressedMixtral(budget: number, method = 'quant', layers?: number[]) {
  const { dir, weights } = writeTinyModel({ ...TINY_CONFIGS.mixtral, intermediate_size: 32 }, { seed: 11 });
  writeTinyTokenizer(dir);
  const out = join(tmp(), 'c');
  await compress({ model: dir, out, method, budget, layers });
  return { dir: out, weights };
}

test('export --gguf of a quant q4s-g32 directory: experts are Q4_0, exactly the stored weights; the rest as for a hub checkpoint', async () => {
  const { dir } = await compressedMixtral(0.28125);
  const m = readManifest(dir);
  assert.deepEqual(m.layers[0].experts[0].gate[0].kind === 'quant' && m.layers[0].experts[0].gate[0].codec, 'q4s-g32-rtn');
  const out = join(tmp(), 'q.gguf');
  const r = exportGguf(dir, out, { dtype: 'F16' });
  assert.equal(r.expertType, 'Q4_0');
  const g = readGguf(out);
  assert.equal(g.metadata.get('general.file_type'), 2);
  const info = (n: string) => g.tensors.find((t) => t.name === n)!;
  assert.deepEqual([info('blk.1.ffn_down_exps.weight').type, info('blk.1.ffn_down_exps.weight').shape], ['Q4_0', [4, 32, 32]]);
  assert.equal(info('blk.1.ffn_gate_inp.weight').type, 'F32');
  assert.equal(info('blk.1.attn_v.weight').type, 'F16');
  const ckpt = Checkpoint.open(dir);
  const read = (ref: string) => ckpt.read(ref).data;
  for (const rec of m.layers) {
    for (const mat of ['gate', 'up', 'down'] as const) {
      const name = `blk.${rec.layer}.ffn_${mat}_exps.weight`;
      const values = readGgufTensor(g, name);
      const n = 32 * 32;
      rec.experts.forEach((parts, e) => {
        const p = parts[mat][0] as { codec: string; ref: string };
        const want = codecById(p.codec).dequantize(read(p.ref), n);
        assert.deepEqual(values.subarray(e * n, (e + 1) * n), want, `${name} expert ${e}`);
      });
      // 18 bytes per 32 values: the stored bytes, not a requantization at another size.
      assert.equal(readGgufTensorBytes(g, name).length, 4 * n / 32 * 18);
    }
  }
});

test('export --gguf of a quant q8s-g32 directory writes Q8_0 experts', async () => {
  const { dir } = await compressedMixtral(0.53125);
  const out = join(tmp(), 'q8.gguf');
  assert.equal(exportGguf(dir, out).expertType, 'Q8_0');
  const g = readGguf(out);
  assert.equal(g.metadata.get('general.file_type'), 7);
  assert.equal(g.tensors.find((t) => t.name === 'blk.0.ffn_up_exps.weight')!.type, 'Q8_0');
});

test('export --gguf of a partly compressed directory: Q4_0 experts where compressed, F32 elsewhere', async () => {
  const { dir, weights } = await compressedMixtral(0.28125, 'quant', [1]);
  const out = join(tmp(), 'p.gguf');
  exportGguf(dir, out);
  const g = readGguf(out);
  const type = (n: string) => g.tensors.find((t) => t.name === n)!.type;
  assert.deepEqual([type('blk.0.ffn_gate_exps.weight'), type('blk.1.ffn_gate_exps.weight')], ['F32', 'Q4_0']);
  assert.deepEqual(readGgufTensor(g, 'blk.0.ffn_down_exps.weight'), weights.get('layers.0.moe.experts.down')!.data);
});

test('export --gguf refuses compressed experts it cannot repack, naming layer, expert and what it takes', async () => {
  const q3 = (await compressedMixtral(0.2)).dir;
  expectError(() => exportGguf(q3, join(tmp(), 'x.gguf')), /moepress\.json: tensor 'moepress\.layers\.0\.e0\.gate\.q': layer 0 expert 0 'gate' uses codec 'q3s-g\d+-rtn', which has no lossless GGML block type; supported: q4s-g32 \(-> Q4_0\)/);
  const svd = (await compressedMixtral(0.5, 'svd')).dir;
  expectError(() => exportGguf(svd, join(tmp(), 'y.gguf')), /layer 0 expert 0 'gate' is stored as lowrank.*GGUF export takes experts stored as one quant part/);
});

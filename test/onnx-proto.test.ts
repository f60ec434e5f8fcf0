import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType, ProtoWriter, buildModel, encodeVarint, floatTensor } from '../src/tensor/onnx-proto.js';
import { cachedSession, loadOrt, runF32, sessionCacheSize } from '../src/tensor/ort.js';

const hasOrt = loadOrt() !== null;
const F = DataType.FLOAT;

test('varint encodes hand-computed values', () => {
  assert.deepEqual([...encodeVarint(0)], [0x00]);
  assert.deepEqual([...encodeVarint(1)], [0x01]);
  assert.deepEqual([...encodeVarint(127)], [0x7f]);
  assert.deepEqual([...encodeVarint(128)], [0x80, 0x01]);
  assert.deepEqual([...encodeVarint(300)], [0xac, 0x02]);
  assert.deepEqual([...encodeVarint(16384)], [0x80, 0x80, 0x01]);
  // 2^32 + 1 needs the non-bitwise path: 5 groups of 7 bits.
  assert.deepEqual([...encodeVarint(2 ** 32 + 1)], [0x81, 0x80, 0x80, 0x80, 0x10]);
  // int64 -1 is ten bytes of two's complement.
  assert.deepEqual([...encodeVarint(-1)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  assert.throws(() => encodeVarint(1.5), /integer/);
});

test('field keys, strings and fixed32 floats have the protobuf layout', () => {
  // field 1 varint 150 -> 08 96 01 (the protobuf documentation example)
  assert.deepEqual([...new ProtoWriter().intField(1, 150).finish()], [0x08, 0x96, 0x01]);
  // field 2 string "ab" -> key (2<<3|2)=0x12, length 2, bytes
  assert.deepEqual([...new ProtoWriter().stringField(2, 'ab').finish()], [0x12, 0x02, 0x61, 0x62]);
  // field 2 float 1.0 -> key (2<<3|5)=0x15, little-endian 0x3f800000
  assert.deepEqual([...new ProtoWriter().floatField(2, 1).finish()], [0x15, 0x00, 0x00, 0x80, 0x3f]);
  // field 20 (AttributeProto.type) needs a two-byte key: 20<<3 = 160 -> a0 01
  assert.deepEqual([...new ProtoWriter().intField(20, 2).finish()], [0xa0, 0x01, 0x02]);
});

test('writer grows past its initial capacity without losing bytes', () => {
  const w = new ProtoWriter();
  const payload = new Uint8Array(1000).map((_, i) => (i * 7) & 0xff);
  w.bytesField(9, payload);
  const out = w.finish();
  assert.deepEqual([...out.subarray(0, 3)], [0x4a, 0xe8, 0x07]); // key 9/LEN, length 1000
  assert.deepEqual([...out.subarray(3)], [...payload]);
});

test('floatTensor checks its length against dims', () => {
  assert.throws(() => floatTensor('w', [2, 3], new Float32Array(5)), /initializer w \[2,3\] needs 6 floats, got 5/);
});

test('a hand-built model runs in ORT: symbolic dims, initializer, int/float/ints attributes', { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
  // y = Transpose(Gemm(x, W, b; alpha=0.5, transB=1), perm=[1, 0]) with W, b as initializers.
  // Exercises dim_param, dim_value, raw_data, int, float and ints attributes in one run.
  const W = new Float32Array([1, 2, 3, -1, 0.5, 4]); // [N=2, K=3]
  const b = new Float32Array([10, -20]); // [N=2]
  const bytes = buildModel({
    inputs: [{ name: 'x', elemType: F, dims: ['M', 3] }],
    outputs: [{ name: 'y', elemType: F, dims: [2, 'M'] }],
    nodes: [
      {
        opType: 'Gemm',
        inputs: ['x', 'W', 'b'],
        outputs: ['g'],
        attributes: [
          { name: 'alpha', type: 'float', value: 0.5 },
          { name: 'transB', type: 'int', value: 1 },
        ],
      },
      { opType: 'Transpose', inputs: ['g'], outputs: ['y'], attributes: [{ name: 'perm', type: 'ints', value: [1, 0] }] },
    ],
    initializers: [floatTensor('W', [2, 3], W), floatTensor('b', [2], b)],
  });
  const session = await cachedSession('test/onnx-proto/gemm-transpose', () => bytes);
  const x = new Float32Array([1, 1, 1, 2, 0, -2]); // [M=2, K=3]
  const { y } = await runF32(session, { x: { data: x, dims: [2, 3] } });
  assert.deepEqual(y.dims, [2, 2]);
  // g[m, n] = 0.5 * x[m] · W[n] + b[n]; y = gᵀ
  const expected = [0.5 * 6 + 10, 0.5 * -4 + 10, 0.5 * 3.5 - 20, 0.5 * -10 - 20];
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(y.data[i] - expected[i]) < 1e-6 * Math.abs(expected[i]), `y[${i}]`);
});

test('string attributes and com.microsoft domain nodes are accepted', { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
  // Gelu(approximate="tanh") from opset 20 is not in opset 17, so use the contrib FastGelu
  // (com.microsoft) for the domain and a string-attribute op from the standard set: Pad mode.
  const bytes = buildModel({
    inputs: [{ name: 'x', elemType: F, dims: [1, 'T'] }],
    outputs: [{ name: 'y', elemType: F, dims: [1, 'T2'] }],
    nodes: [
      { opType: 'FastGelu', domain: 'com.microsoft', inputs: ['x'], outputs: ['g'] },
      { opType: 'Pad', inputs: ['g', 'pads'], outputs: ['y'], attributes: [{ name: 'mode', type: 'string', value: 'edge' }] },
    ],
    initializers: [{ name: 'pads', elemType: DataType.INT64, dims: [4], data: new BigInt64Array([0n, 1n, 0n, 1n]) }],
  });
  const session = await cachedSession('test/onnx-proto/fastgelu-pad', () => bytes);
  const x = new Float32Array([-1, 0.5, 2]);
  const { y } = await runF32(session, { x: { data: x, dims: [1, 3] } });
  const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  const g = [...x].map(gelu);
  const want = [g[0], ...g, g[2]];
  assert.deepEqual(y.dims, [1, 5]);
  for (let i = 0; i < 5; i++) assert.ok(Math.abs(y.data[i] - want[i]) < 1e-5 * Math.max(1, Math.abs(want[i])), `y[${i}]`);
});

test('If with subgraph attributes: each branch reads outer values and its own initializers', { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
  // y = x * 3 when c > 0, else x - 1: the then-branch multiplies by its own initializer.
  const bytes = buildModel({
    inputs: [{ name: 'x', elemType: F, dims: [2] }, { name: 'c', elemType: F, dims: [1] }],
    outputs: [{ name: 'y', elemType: F, dims: [2] }],
    nodes: [
      { opType: 'Greater', inputs: ['c', 'zero'], outputs: ['cond'] },
      {
        opType: 'If', inputs: ['cond'], outputs: ['y'],
        attributes: [
          { name: 'then_branch', type: 'graph', value: { name: 'then', outputs: [{ name: 't', elemType: F, dims: [2] }], initializers: [floatTensor('three', [], Float32Array.of(3))], nodes: [{ opType: 'Mul', inputs: ['x', 'three'], outputs: ['t'] }] } },
          { name: 'else_branch', type: 'graph', value: { name: 'else', outputs: [{ name: 'e', elemType: F, dims: [2] }], nodes: [{ opType: 'Sub', inputs: ['x', 'one'], outputs: ['e'] }] } },
        ],
      },
    ],
    initializers: [floatTensor('zero', [], Float32Array.of(0)), floatTensor('one', [], Float32Array.of(1))],
  });
  const session = await cachedSession('test/onnx-proto/if', () => bytes);
  const x = { data: new Float32Array([2, -5]), dims: [2] };
  assert.deepEqual([...(await runF32(session, { x, c: { data: Float32Array.of(1), dims: [1] } })).y.data], [6, -15]);
  assert.deepEqual([...(await runF32(session, { x, c: { data: Float32Array.of(-1), dims: [1] } })).y.data], [1, -6]);
});

test('cachedSession builds each key once', { skip: !hasOrt && 'onnxruntime-node unavailable' }, async () => {
  let builds = 0;
  const build = () => {
    builds++;
    return buildModel({
      inputs: [{ name: 'x', elemType: F, dims: ['N'] }],
      outputs: [{ name: 'y', elemType: F, dims: ['N'] }],
      nodes: [{ opType: 'Relu', inputs: ['x'], outputs: ['y'] }],
    });
  };
  const [a, b] = await Promise.all([cachedSession('test/relu', build), cachedSession('test/relu', build)]);
  const size = sessionCacheSize();
  await cachedSession('test/relu', build);
  assert.equal(a, b);
  assert.equal(builds, 1);
  assert.equal(sessionCacheSize(), size);
  const { y } = await runF32(a, { x: { data: new Float32Array([-1, 2, -3]), dims: [3] } });
  assert.deepEqual([...y.data], [0, 2, 0]);
  // A preallocated output is filled and handed back.
  const buf = new Float32Array([7, 7, 7]);
  const pre = await runF32(a, { x: { data: new Float32Array([4, -5, 6]), dims: [3] } }, { y: { data: buf, dims: [3] } });
  assert.equal(pre.y.data, buf);
  assert.deepEqual([...buf], [4, 0, 6]);
});

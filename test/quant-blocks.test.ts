/** Hand-computed blocks (llama.cpp gguf-py/quants.py style): values chosen so codes and scales are exact. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { codecById, storedBytes } from '../src/compress/quant/codec.js';
import { assertClose } from './helpers/assert-close.js';

interface Case {
  id: string;
  x: number[];
  bytes: number[];
  xhat: number[];
  why: string;
}

const CASES: Case[] = [
  {
    id: 'q4s-g8-rtn',
    x: [-2, 1.3, 0.6, -0.4, 1.9, -1.1, 0.1, 0.8],
    // s = -2 / -8 = 0.25 (f16 0x3400); x/s = -8, 5.2, 2.4, -1.6, 7.6, -4.4, 0.4, 3.2
    // q = -8, 5, 2, -2, 7 (8 clipped), -4, 0, 3; u = q + 8 = 0, 13, 10, 6, 15, 4, 8, 11 -> nibbles low first
    bytes: [0x00, 0x34, 0xd0, 0x6a, 0x4f, 0xb8],
    xhat: [-2, 1.25, 0.5, -0.5, 1.75, -1, 0, 0.75],
    why: 'symmetric 4-bit, full range, clipping at +7',
  },
  {
    id: 'q4s-g8-rtn-bf16',
    x: [-2, 1.3, 0.6, -0.4, 1.9, -1.1, 0.1, 0.8],
    bytes: [0x80, 0x3e, 0xd0, 0x6a, 0x4f, 0xb8], // 0.25 in bf16 is 0x3e80
    xhat: [-2, 1.25, 0.5, -0.5, 1.75, -1, 0, 0.75],
    why: 'bf16 scale',
  },
  {
    id: 'q3s-g8-rtn',
    x: [-2, 1.2, 0.3, -0.9, 1.6, -1.4, 0.6, 0.1],
    // s = -2 / -4 = 0.5 (0x3800); q = -4, 2, 1, -2, 3, -3, 1, 0; u = 0, 6, 5, 2, 7, 1, 5, 4 -> 0x94f570
    bytes: [0x00, 0x38, 0x70, 0xf5, 0x94],
    xhat: [-2, 1, 0.5, -1, 1.5, -1.5, 0.5, 0],
    why: '3-bit codes straddling bytes',
  },
  {
    id: 'q5s-g4-rtn',
    x: [-2, 1.9, 0.3, -0.55],
    // s = 0.125 (0x3000); q = -16, 15, 2, -4; u = 0, 31, 18, 12 -> 0x064be0
    bytes: [0x00, 0x30, 0xe0, 0x4b, 0x06],
    xhat: [-2, 1.875, 0.25, -0.5],
    why: '5-bit',
  },
  {
    id: 'q8s-g4-rtn',
    x: [-2, 0.5, 1.99, -0.7],
    // s = 2^-6 (0x2400); q = -128, 32, 127, -45; u = 0, 160, 255, 83
    bytes: [0x00, 0x24, 0x00, 0xa0, 0xff, 0x53],
    xhat: [-2, 0.5, 127 / 64, -45 / 64],
    why: '8-bit',
  },
  {
    id: 'q2s-g4-rtn',
    x: [1, 1, 1, -3],
    // s = -3 / -2 = 1.5 (0x3e00); q = 1, 1, 1, -2; u = 3, 3, 3, 0 -> 0b00111111; error 3 * 0.25 = 0.75
    bytes: [0x00, 0x3e, 0x3f],
    xhat: [1.5, 1.5, 1.5, -3],
    why: '2-bit RTN',
  },
  {
    id: 'q2s-g4',
    x: [1, 1, 1, -3],
    // Fitted: codes (1, 1, 1, -2) have the best closed-form scale s* = Σxq / Σq² = 9/7, stored as
    // f16 1 + 293/1024 = 1.2861328125 (0x3d25); same codes; error 3(0.2861)² + 0.4277² = 0.4285 < 0.75
    bytes: [0x25, 0x3d, 0x3f],
    xhat: [1.2861328125, 1.2861328125, 1.2861328125, -2.572265625],
    why: '2-bit MSE-fitted scale',
  },
  {
    id: 'q4a-g8-rtn',
    x: [0.5, 2.1, 4.25, 1.3, 3.7, 0.8, 2.6, 1.0],
    // m = 0.5 (0x3800), s = (4.25 - 0.5) / 15 = 0.25 (0x3400); (x - m)/s = 0, 6.4, 15, 3.2, 12.8, 1.2, 8.4, 2
    // q = 0, 6, 15, 3, 13, 1, 8, 2 -> 0x60 0x3f 0x1d 0x28
    bytes: [0x00, 0x34, 0x00, 0x38, 0x60, 0x3f, 0x1d, 0x28],
    xhat: [0.5, 2, 4.25, 1.25, 3.75, 0.75, 2.5, 1],
    why: 'asymmetric 4-bit',
  },
  {
    id: 'q6a-g4-rtn',
    x: [-1, 0.96875, 0.1, -0.5],
    // m = -1 (0xbc00), s = 1.96875 / 63 = 1/32 (0x2800); q = 0, 63, 35, 16 -> 0x423fc0
    bytes: [0x00, 0x28, 0x00, 0xbc, 0xc0, 0x3f, 0x42],
    xhat: [-1, 0.96875, 0.09375, -0.5],
    why: 'asymmetric 6-bit, negative min',
  },
  {
    id: 'q1s-g8',
    x: [0.5, -1, 0.25, -0.25, 1, -0.5, 0.75, -0.75],
    // s = mean|x| = 5/8 = 0.625 (0x3900); bits (x >= 0) = 1,0,1,0,1,0,1,0 -> 0x55
    bytes: [0x00, 0x39, 0x55],
    xhat: [0.625, -0.625, 0.625, -0.625, 0.625, -0.625, 0.625, -0.625],
    why: '1-bit sign x mean|x|',
  },
];

for (const c of CASES) {
  test(`hand-computed block: ${c.id} (${c.why})`, () => {
    const codec = codecById(c.id);
    const packed = codec.quantize(Float32Array.from(c.x));
    assert.equal(packed.length, codec.bytesPerBlock);
    assert.deepEqual([...packed], c.bytes);
    assertClose(codec.dequantize(Uint8Array.from(c.bytes), c.x.length), c.xhat, 1e-7, c.id);
  });
}

test('padding: a short last block is zero-filled, stored, and ignored by the fit', () => {
  const codec = codecById('q4a-g8-rtn');
  // 8 + 3 values: the second block has 3 real values, all >= 1, so its min must be 1, not the padding's 0.
  const x = Float32Array.from([0.5, 2.1, 4.25, 1.3, 3.7, 0.8, 2.6, 1.0, 1, 2.5, 4]);
  const packed = codec.quantize(x);
  assert.equal(packed.length, storedBytes(codec, 11));
  assert.equal(packed.length, 2 * codec.bytesPerBlock);
  assert.deepEqual([...packed.subarray(0, 8)], CASES[7].bytes);
  // block 2: m = 1 (0x3c00), s = 3 / 15 = 0.2 -> f16 rounded up to 0x3267 (0.20007), codes 0, 7, 15
  assert.deepEqual([...packed.subarray(8, 12)], [0x67, 0x32, 0x00, 0x3c]);
  const xhat = codec.dequantize(packed, 11);
  assert.equal(xhat.length, 11);
  assertClose(xhat.subarray(8), [1, 1 + 7 * 0.20007324, 1 + 15 * 0.20007324], 1e-6);
});

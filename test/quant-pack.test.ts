import { test } from 'node:test';
import assert from 'node:assert/strict';
import { packBits, packBitsNaive, packedBytes, unpackBits, unpackBitsNaive } from '../src/compress/quant/pack.js';
import { Rng } from '../src/tensor/random.js';

function randomCodes(n: number, k: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const c = new Uint8Array(n);
  for (let i = 0; i < n; i++) c[i] = rng.int(1 << k);
  return c;
}

test('pack: hand-computed little-endian bit streams', () => {
  const cases: [number, number[], number[]][] = [
    [1, [1, 0, 1, 0, 1, 0, 1, 0, 1], [0x55, 0x01]],
    [2, [3, 0, 1, 2, 1], [0x93, 0x01]], // 3 | 0<<2 | 1<<4 | 2<<6
    [3, [0, 6, 5, 2, 7, 1, 5, 4], [0x70, 0xf5, 0x94]], // Σ u_i << 3i = 0x94f570
    [4, [0, 13, 10], [0xd0, 0x0a]],
    [5, [0, 31, 18, 12], [0xe0, 0x4b, 0x06]], // 0x64be0
    [6, [0, 63, 35, 16], [0xc0, 0x3f, 0x42]], // 0x423fc0
    [7, [127, 1], [0xff, 0x00]], // 127 | 1 << 7
    [8, [7, 255, 128], [7, 255, 128]],
  ];
  for (const [k, codes, bytes] of cases) {
    assert.equal(packedBytes(codes.length, k), bytes.length, `k=${k} length`);
    for (const pack of [packBits, packBitsNaive]) {
      const out = new Uint8Array(bytes.length).fill(0xff); // stale bytes must be overwritten
      pack(Uint8Array.from(codes), k, out);
      assert.deepEqual([...out], bytes, `k=${k} ${pack.name}`);
    }
    for (const unpack of [unpackBits, unpackBitsNaive]) {
      const back = new Uint8Array(codes.length);
      unpack(Uint8Array.from(bytes), 0, k, codes.length, back);
      assert.deepEqual([...back], codes, `k=${k} ${unpack.name}`);
    }
  }
});

test('pack: fast equals naive on random codes, every k and awkward lengths, at an offset', () => {
  for (let k = 1; k <= 8; k++) {
    for (const n of [1, 7, 8, 9, 1000]) {
      const codes = randomCodes(n, k, 100 * k + n);
      const nb = packedBytes(n, k);
      const fast = new Uint8Array(nb + 5).fill(0xaa);
      const naive = new Uint8Array(nb + 5).fill(0xaa);
      packBits(codes, k, fast, 3);
      packBitsNaive(codes, k, naive, 3);
      assert.deepEqual(fast, naive, `pack k=${k} n=${n}`);
      // Bytes outside [3, 3 + nb) are untouched.
      assert.deepEqual([fast[0], fast[1], fast[2], fast[nb + 3], fast[nb + 4]], [0xaa, 0xaa, 0xaa, 0xaa, 0xaa]);
      const a = new Uint8Array(n);
      const b = new Uint8Array(n);
      unpackBits(fast, 3, k, n, a);
      unpackBitsNaive(fast, 3, k, n, b);
      assert.deepEqual(a, codes, `unpack k=${k} n=${n}`);
      assert.deepEqual(b, codes, `naive unpack k=${k} n=${n}`);
    }
  }
});

test('pack: unused bits of the last byte are zero, out-of-range codes are masked alike', () => {
  for (let k = 1; k <= 7; k++) {
    const n = 9;
    const wide = randomCodes(n, 8, k); // up to 8 bits: fast and naive must both keep only k bits
    const fast = new Uint8Array(packedBytes(n, k));
    const naive = new Uint8Array(packedBytes(n, k));
    packBits(wide, k, fast);
    packBitsNaive(wide, k, naive);
    assert.deepEqual(fast, naive, `k=${k}`);
    const used = (n * k) % 8;
    if (used !== 0) assert.equal(fast[fast.length - 1] >> used, 0, `k=${k} trailing bits`);
  }
});

test('pack: bits outside 1..8 are rejected', () => {
  assert.throws(() => packBits(new Uint8Array(1), 0, new Uint8Array(1)), /1\.\.8/);
  assert.throws(() => unpackBits(new Uint8Array(2), 0, 9, 1, new Uint8Array(1)), /1\.\.8/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { budgetOf, candidateCodecs, chooseCodec, minimumBudget } from '../src/compress/quant/select.js';
import { codecById } from '../src/compress/quant/codec.js';
import { maxAbsError, mse, relFrobenius, relMse } from '../src/compress/quant/error.js';
import { MoepressError } from '../src/io/errors.js';

test('budgetOf: stored bytes over bf16 bytes', () => {
  assert.equal(budgetOf(codecById('q4s-g64')), 34 / 128); // 4.25 bits / 16
  assert.equal(budgetOf(codecById('q3s-g32')), 14 / 64); // 3.5 bits
  assert.equal(budgetOf(codecById('q4a-g32')), 20 / 64); // 5 bits: scale + min
  assert.equal(budgetOf(codecById('q1s-g256')), 34 / 512); // 1.0625 bits
  assert.equal(budgetOf(codecById('q4s-g64'), 100), (2 * 34) / 200); // padded to 2 blocks
});

test('chooseCodec: most bits first, then the smallest group that fits', () => {
  assert.equal(chooseCodec(0.25).id, 'q3s-g32'); // 4 bits: q4s-g256 needs 4.0625
  assert.equal(chooseCodec(0.25, { bits: [4, 3] }).id, 'q3s-g32');
  assert.equal(chooseCodec(0.27).id, 'q4s-g64'); // 4.32 bits: q4s-g32 needs 4.5
  assert.equal(chooseCodec(0.265).id, 'q4s-g128'); // 4.24 bits: q4s-g64 needs 4.25
  assert.equal(chooseCodec(0.53125).id, 'q8s-g32'); // exactly 8.5 bits
  assert.equal(chooseCodec(0.5).id, 'q7s-g32'); // 8 bits
  assert.equal(chooseCodec(0.5, { bits: [8, 6, 4] }).id, 'q6s-g32');
  assert.equal(chooseCodec(0.07).id, 'q1s-g256'); // 1.12 bits
  assert.equal(chooseCodec(0.28, { kind: 'asymmetric' }).id, 'q4a-g128'); // 4.48 bits: g64 needs 4.5
  assert.equal(chooseCodec(0.25, { rtn: true }).id, 'q3s-g32-rtn');
  assert.equal(chooseCodec(0.08, { rtn: true }).id, 'q1s-g64'); // the sign codec has no rtn variant
  assert.equal(chooseCodec(0.25, { scaleDtype: 'bf16' }).id, 'q3s-g32-bf16');
});

test('chooseCodec: overhead already spent (a shared base) comes off the budget', () => {
  assert.equal(chooseCodec(0.3, { overhead: 0.05 }).id, 'q3s-g32'); // 4 bits left
  assert.equal(chooseCodec(0.3).id, 'q4s-g32'); // 4.8 bits: q4s-g32 needs 4.5
  assert.equal(chooseCodec(0.25 + 1 / 8, { overhead: 1 / 8, bits: [4, 2] }).id, 'q2s-g32');
});

test('chooseCodec: n counts the padding of a short tensor', () => {
  // 100 values: q1s-g32 = 4 blocks x 6 bytes = 0.12, g64 = 2 x 10 = 0.10, g128 = 18 / 200 = 0.09
  assert.equal(chooseCodec(0.1, { n: 100 }).id, 'q1s-g64');
  assert.equal(chooseCodec(0.1).id, 'q1s-g32'); // whole blocks: 1.5 bits = 0.09375
});

test('chooseCodec: a budget below the smallest codec names the budget and the minimum', () => {
  assert.throws(() => chooseCodec(0.05), (e: unknown) => e instanceof MoepressError
    && e.message.includes('budget 0.05') && e.message.includes('0.8 bits/weight')
    && e.message.includes('q1s-g256') && e.message.includes('1.063 bits/weight') && e.message.includes('0.06641'));
  assert.throws(() => chooseCodec(0.2, { overhead: 0.19 }), /after 0\.19 spent elsewhere.*q1s-g256/);
  assert.throws(() => chooseCodec(0.2, { bits: [4], groupSizes: [32] }), /q4s-g32, needs 4\.5 bits/);
  for (const bad of [0, -1, NaN, Infinity]) assert.throws(() => chooseCodec(bad), /positive fraction/);
  assert.throws(() => chooseCodec(0.3, { overhead: -0.1 }), /overhead/);
});

test('minimumBudget: the cheapest allowed codec', () => {
  assert.equal(minimumBudget(), 34 / 512); // q1s-g256
  assert.equal(minimumBudget({ bits: [4, 3], groupSizes: [32, 64] }), 26 / 128); // q3s-g64: 3.25 bits
  assert.equal(minimumBudget({ n: 100 }), 18 / 200); // q1s-g128: one padded block
  assert.doesNotThrow(() => chooseCodec(minimumBudget()));
});

test('candidateCodecs: ordered by bits then group size', () => {
  const ids = candidateCodecs({ bits: [2, 4], groupSizes: [64, 32] }).map((c) => c.id);
  assert.deepEqual(ids, ['q4s-g32', 'q4s-g64', 'q2s-g32', 'q2s-g64']);
});

test('error helpers against hand-computed values', () => {
  const x = [1, -2, 3, 4];
  const y = [1.5, -2, 2, 4];
  assert.ok(Math.abs(mse(x, y) - 1.25 / 4) < 1e-12);
  assert.ok(Math.abs(relFrobenius(x, y) - Math.sqrt(1.25 / 30)) < 1e-12);
  assert.ok(Math.abs(relMse(x, y) - (1.25 / 4) / 5.25) < 1e-12); // mean 1.5, variance (0.25+12.25+2.25+6.25)/4
  assert.equal(maxAbsError(x, y), 1);
  assert.throws(() => mse([1], [1, 2]), /length mismatch/);
});

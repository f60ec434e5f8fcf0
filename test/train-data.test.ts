/** Token streams from plain and gzipped text, and seeded windows. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { loadTokenizer } from '../src/runtime/tokenizer.js';
import { loadTokens, WindowSampler } from '../src/train/data.js';
import { SHARED, haveFixtures } from './helpers/fixtures.js';

const dir = mkdtempSync(join(os.tmpdir(), 'moepress-data-'));
/** A character-code tokenizer: every character is one token. */
const chars = (s: string) => Array.from(s, (c) => c.codePointAt(0)!);

test('loadTokens: plain and .gz give the same tokens, multi-byte characters intact, across chunk cuts', async () => {
  const text = Array.from({ length: 400 }, (_, i) => `line ${i}: ünïcödé ✓ 文字 ${'x'.repeat(i % 17)}\n`).join('');
  writeFileSync(join(dir, 'a.txt'), text);
  writeFileSync(join(dir, 'a.txt.gz'), gzipSync(Buffer.from(text)));
  const want = chars(text);
  assert.deepEqual(Array.from(await loadTokens(join(dir, 'a.txt'), chars, { chunkChars: 100 })), want);
  assert.deepEqual(Array.from(await loadTokens(join(dir, 'a.txt.gz'), chars, { chunkChars: 333 })), want);
  // a line longer than several read chunks (64 KiB) is kept whole until it ends
  const long = 'x'.repeat(200000) + '\nshort\n' + 'y'.repeat(70000);
  writeFileSync(join(dir, 'long.txt'), long);
  const seen: number[] = [];
  const got = await loadTokens(join(dir, 'long.txt'), (t) => (seen.push(t.length), chars(t)), { chunkChars: 1000 });
  assert.equal(got.length, long.length);
  assert.deepEqual(seen, [200007, 70000], 'cut only at the last line start');
});

test('loadTokens: cutting at line starts keeps the BPE tokens of the whole text (corpus tokenizer)', { skip: haveFixtures ? false : 'shared corpus absent' }, async () => {
  const tok = loadTokenizer(resolve(SHARED, 'corpus'));
  const text = readFileSync(resolve(SHARED, 'corpus/valid.txt'), 'utf8').slice(0, 60000);
  writeFileSync(join(dir, 'v.txt.gz'), gzipSync(Buffer.from(text)));
  const got = await loadTokens(join(dir, 'v.txt.gz'), tok.encode, { chunkChars: 1500 });
  assert.deepEqual(Array.from(got), tok.encode(text));
});

test('loadTokens: missing, empty, whitespace-only and corrupt files are errors that name the file', async () => {
  await assert.rejects(() => loadTokens(join(dir, 'nope.txt'), chars), /nope\.txt: text file not found/);
  writeFileSync(join(dir, 'empty.txt'), '');
  await assert.rejects(() => loadTokens(join(dir, 'empty.txt'), chars), /empty\.txt: the text file is empty/);
  writeFileSync(join(dir, 'blank.txt.gz'), gzipSync(Buffer.from(' \n\n  \n')));
  await assert.rejects(() => loadTokens(join(dir, 'blank.txt.gz'), chars), /blank\.txt\.gz: the text file is empty/);
  writeFileSync(join(dir, 'bad.txt.gz'), Buffer.from('this is not gzip at all'));
  await assert.rejects(() => loadTokens(join(dir, 'bad.txt.gz'), chars), /bad\.txt\.gz: cannot read the text/);
  writeFileSync(join(dir, 'b.txt'), 'abc');
  await assert.rejects(() => loadTokens(join(dir, 'b.txt'), () => [1, -1]), /b\.txt: the tokenizer returned -1/);
});

test('WindowSampler: targets are inputs shifted by one, windows inside the stream, deterministic per seed', () => {
  const tokens = Int32Array.from({ length: 50 }, (_, i) => 100 + i); // token = 100 + position
  const S = 8;
  const a = new WindowSampler(tokens, S, 7);
  const b = new WindowSampler(tokens, S, 7);
  const c = new WindowSampler(tokens, S, 8);
  const starts = new Set<number>();
  for (let step = 0; step < 20; step++) {
    const x = a.next(4);
    assert.deepEqual(x, b.next(4), 'same seed, same batch');
    for (let w = 0; w < 4; w++) {
      const s0 = x.inputs[w * S] - 100;
      starts.add(s0);
      assert.ok(s0 >= 0 && s0 + S + 1 <= 50);
      for (let i = 0; i < S; i++) {
        assert.equal(x.inputs[w * S + i], 100 + s0 + i);
        assert.equal(x.targets[w * S + i], 100 + s0 + i + 1);
      }
    }
  }
  assert.ok(starts.size > 20, `starts spread over the stream (${starts.size} distinct)`);
  assert.notDeepEqual(new WindowSampler(tokens, S, 7).next(4).inputs, c.next(4).inputs, 'another seed, other windows');
  // the last valid start is reachable: a stream of exactly S+1 tokens has one window
  const one = new WindowSampler(tokens.subarray(0, S + 1), S, 1).next(2);
  assert.deepEqual(Array.from(one.targets.subarray(0, S)), Array.from(tokens.subarray(1, S + 1)));
  assert.throws(() => new WindowSampler(tokens.subarray(0, S), S, 1, 'short.txt'), /short\.txt: has 8 tokens, fewer than the 9/);
});

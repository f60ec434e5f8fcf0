/**
 * Parity with transformers on the trained fixtures (../shared/README.md): logits at positions 0-3
 * and perplexity on the first 64 windows of corpus/test.txt.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loadModel } from '../src/runtime/load-model.js';
import { perplexity } from '../src/runtime/perplexity.js';
import { loadTokenizer } from '../src/runtime/tokenizer.js';
import { Transformer } from '../src/runtime/transformer.js';
import { assertClose } from './helpers/assert-close.js';
import { fixture, haveFixtures, reference, TEST_TEXT } from './helpers/fixtures.js';

const skip = haveFixtures ? false : 'the shared fixtures are not present beside the project';

// transformers' numbers from ../shared/README.md (first 64 windows)
const PPL64: [string, number | undefined, number][] = [
  ['mixtral', undefined, 13.414],
  ['olmoe', undefined, 13.362],
  ['dense', undefined, 13.126],
  ['olmoe', 2, 14.492],
  ['olmoe', 1, 18.973],
];

const engines = new Map<string, Transformer>();
function engine(name: string): Transformer {
  if (!engines.has(name)) {
    const m = loadModel(fixture(name));
    engines.set(name, new Transformer(m.config, m.weights));
  }
  return engines.get(name)!;
}

for (const name of ['mixtral', 'olmoe', 'dense']) {
  test(`${name}: logits at positions 0-3 match transformers (relative error < 1e-3)`, { skip }, async () => {
    const ref = reference(name);
    const ids = loadTokenizer(fixture(name)).encode(readFileSync(TEST_TEXT, 'utf8').slice(0, 200));
    assert.deepEqual(ids.slice(0, 16), ref.first_window_ids, 'tokenizer gives the reference ids');
    const logits = await engine(name).logits(ref.first_window_ids.slice(0, 4), 1, 4);
    assertClose(logits, ref.logits_first_window_pos0_3.flat(), 1e-3, name);
  });
}

let ids: number[] | null = null;
for (const [name, topK, want] of PPL64) {
  test(`${name}${topK ? ` top-${topK}` : ''}: perplexity on 64 windows within 0.2% of transformers (${want})`, { skip }, async () => {
    ids ??= loadTokenizer(fixture('mixtral')).encode(readFileSync(TEST_TEXT, 'utf8'));
    const r = await perplexity(engine(name), ids, { windows: 64, topK });
    assert.equal(r.tokens, 64 * 255);
    const rel = Math.abs(r.perplexity - want) / want;
    assert.ok(rel < 0.002, `perplexity ${r.perplexity.toFixed(4)} vs ${want}: ${(100 * rel).toFixed(3)}%`);
  });
}

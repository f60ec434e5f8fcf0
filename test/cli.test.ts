/** The CLI end to end, as a subprocess: --json outputs, readable output, exit codes and error text. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { SHARED } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const MAIN = resolve(process.cwd(), 'dist/src/cli/main.js');
const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');
const skip = existsSync(TOKENIZER) ? false : 'needs ../shared/corpus/tokenizer.json';

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A tiny Mixtral with the shared 4096-token tokenizer, and a small text file. */
function tinyWithTokenizer() {
  const { dir } = writeTinyModel({ ...TINY_CONFIGS.mixtral, vocab_size: 4096, max_position_embeddings: 512 }, { dtype: 'BF16' });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const text = join(dir, 'text.txt');
  writeFileSync(text, 'The quick brown fox jumps over the lazy dog. '.repeat(60));
  return { dir, text };
}

test('inspect --json reports the architecture and parameter counts', { skip }, () => {
  const { dir } = tinyWithTokenizer();
  try {
    const r = run('inspect', dir, '--json');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.equal(j.family, 'mixtral');
    assert.equal(j.experts, 4);
    assert.equal(j.topK, 2);
    const routed = 2 * 4 * 3 * 16 * 32; // layers × experts × matrices × I × H
    assert.equal(j.params.routedExperts, routed);
    assert.equal(j.params.activePerToken, j.params.total - routed / 2);
    assert.equal(j.bytes.routedExperts, 2 * routed);
    const human = run('inspect', dir);
    assert.match(human.out, /routed-expert parameters/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('eval --json prints one object with perplexity, tokens, windows and seconds', { skip }, () => {
  const { dir, text } = tinyWithTokenizer();
  try {
    const r = run('eval', dir, '--text', text, '--windows', '2', '--json');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '', '--json keeps stderr quiet');
    const j = JSON.parse(r.out.trim());
    assert.equal(j.windows, 2);
    assert.equal(j.tokens, 2 * 255);
    assert.ok(j.perplexity > 1 && Number.isFinite(j.perplexity));
    assert.ok(j.seconds > 0);
    const k1 = JSON.parse(run('eval', dir, '--text', text, '--windows', '2', '--top-k', '1', '--json').out);
    assert.equal(k1.topK, 1);
    assert.notEqual(k1.perplexity, j.perplexity, '--top-k changes the model');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('generate is deterministic for a seed and honours --max-tokens', { skip }, () => {
  const { dir } = tinyWithTokenizer();
  try {
    const a = JSON.parse(run('generate', dir, '--prompt', 'Hello', '--max-tokens', '5', '--temperature', '0.8', '--seed', '7', '--json').out);
    const b = JSON.parse(run('generate', dir, '--prompt', 'Hello', '--max-tokens', '5', '--temperature', '0.8', '--seed', '7', '--json').out);
    assert.ok(a.tokens.length <= 5 && a.tokens.length > 0);
    assert.deepEqual(a.tokens, b.tokens);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('generate --expert-cache offloads the experts: same tokens, cache statistics in --json, estimate on stderr', { skip }, () => {
  const { dir } = tinyWithTokenizer();
  try {
    const args = ['generate', dir, '--prompt', 'Hello there', '--max-tokens', '6', '--json'];
    const mem = run(...args);
    assert.equal(mem.code, 0, mem.err);
    const a = JSON.parse(mem.out);
    assert.equal(a.mode, 'in-memory');
    assert.equal(a.expertCache, null);
    const off = run(...args, '--expert-cache', '8KiB');
    assert.equal(off.code, 0, off.err);
    const b = JSON.parse(off.out);
    assert.equal(b.mode, 'offloaded');
    assert.deepEqual(b.tokens, a.tokens);
    assert.equal(b.expertCache.capacityBytes, 8192);
    assert.ok(b.expertCache.misses > 0 && b.expertCache.bytesRead > 0);
    assert.ok(b.expertCache.peakCachedBytes <= 8192);
    assert.ok(b.estimatedPeakBytes > 0);
    assert.match(off.err, /estimate: peak memory ~.*routed experts offloaded.*expert cache 8\.00 KiB/);
    const tiny = run(...args, '--expert-cache', '1KiB');
    assert.equal(tiny.code, 1);
    assert.match(tiny.err, /needs at least 6144 bytes/);
    assert.equal(run(...args, '--expert-cache', 'plenty').code, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('errors: missing model directory, unknown command, bad option', () => {
  const missing = run('eval', '/nonexistent/model', '--text', 'package.json');
  assert.equal(missing.code, 1);
  assert.match(missing.err, /\/nonexistent\/model/);
  const unknown = run('squash');
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /unknown command 'squash'/);
  const bad = run('inspect', '--frobnicate');
  assert.equal(bad.code, 2);
  assert.match(bad.err, /frobnicate/);
});

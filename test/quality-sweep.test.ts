/** The quality sweep with calibrated `auto`, its table and summary, and the SVG plot. */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { autoSummary, mergeRows, qualityTable, rowLabel } from '../src/cli/bench-quality.js';
import { PLOT_CEILING, qualitySvg } from '../src/cli/quality-svg.js';
import { qualitySweep, type SweepRow } from '../src/compress/sweep.js';
import { loadTokenizer } from '../src/runtime/tokenizer.js';
import { SHARED } from './helpers/fixtures.js';
import { TINY_CONFIGS } from './helpers/tiny-configs.js';
import { writeTinyModel } from './helpers/tiny-model.js';

const TOKENIZER = join(SHARED, 'corpus/tokenizer.json');
const skip = existsSync(TOKENIZER) ? false : 'needs ../shared/corpus/tokenizer.json';

test('qualitySweep: auto runs with calibration, the others data-free; table and summary show it', { skip }, async () => {
  const { dir } = writeTinyModel({ ...TINY_CONFIGS.mixtral, vocab_size: 4096, max_position_embeddings: 512 }, { dtype: 'BF16', seed: 3 });
  copyFileSync(TOKENIZER, join(dir, 'tokenizer.json'));
  const text = join(dir, 'calib.txt');
  writeFileSync(text, 'The quick brown fox jumps over the lazy dog, and the dog sleeps on. '.repeat(80));
  try {
    const ids = loadTokenizer(dir).encode('A test sentence that is not the calibration text, repeated. '.repeat(40));
    const rows = await qualitySweep(dir, 'tiny', { methods: ['quant', 'auto'], budgets: [0.25], ids, windows: 2, calib: { file: text, windows: 4, windowSize: 32 } });
    assert.deepEqual(rows.map((r) => [r.method, r.calibrated]), [['original', false], ['quant', false], ['auto', true]]);
    for (const r of rows.slice(1)) assert.ok(r.stored! <= 0.25 && r.perplexity! > 1, `${r.method}: ${r.stored} ${r.perplexity}`);
    const table = qualityTable(rows, [0.25]);
    assert.match(table, /\| auto \(calib\) \|/);
    const summary = autoSummary(rows, [0.25]);
    assert.match(summary, /\| tiny \| 0\.25 \| [0-9.]+ \([+-][0-9.]+%\) \| quant: /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('qualitySvg: one panel per model, one line per method, clipped points marked', () => {
  const row = (model: string, method: string, budget: number, perplexity: number, calibrated = false): SweepRow =>
    ({ model, method, budget, stored: budget, perplexity, calibrated, lossPercent: 0, compressSeconds: 0 });
  const rows = [
    row('a', 'original', 1, 10), row('a', 'quant', 0.5, 10.1), row('a', 'quant', 0.25, 10 * PLOT_CEILING * 3), row('a', 'auto', 0.5, 10), row('a', 'auto', 0.25, 10.5, true),
    row('b', 'original', 1, 20), row('b', 'quant', 0.5, 21), row('b', 'quant', 0.25, 25), row('b', 'auto', 0.5, 20.2, true), row('b', 'auto', 0.25, 21, true),
  ];
  const svg = qualitySvg(rows, rowLabel);
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  assert.equal(svg.match(/<polyline /g)?.length, 5, 'a: quant, auto, auto (calib) as separate series with one point each for auto; b: quant, auto (calib)');
  assert.match(svg, /a \(original 10\.00\)/);
  assert.match(svg, /b \(original 20\.00\)/);
  assert.equal(svg.match(/fill="white" stroke=/g)?.length, 1, 'one point above the ceiling drawn open');
});

test('mergeRows: saved --json outputs merge, a later file replacing the same model, method, calibration and budget', () => {
  const dir = mkdtempSync(join(os.tmpdir(), 'moepress-rows-'));
  try {
    const r = (method: string, budget: number, perplexity: number, calibrated = false) => ({ model: 'm', method, budget, stored: budget, perplexity, calibrated, lossPercent: 0, compressSeconds: 1 });
    writeFileSync(join(dir, 'a.json'), JSON.stringify({ rows: [r('original', 1, 10), r('quant', 0.25, 12), r('auto', 0.25, 11, true)] }));
    writeFileSync(join(dir, 'b.json'), JSON.stringify({ rows: [r('original', 1, 10), r('auto', 0.25, 10.5, true), r('quant', 0.25, 11.5, true)] }));
    const rows = mergeRows([join(dir, 'a.json'), join(dir, 'b.json')]);
    assert.equal(rows.length, 4);
    assert.equal(rows.find((x) => x.method === 'auto')!.perplexity, 10.5);
    assert.deepEqual(rows.filter((x) => x.method === 'quant').map(rowLabel).sort(), ['quant', 'quant (calib)']);
    writeFileSync(join(dir, 'bad.json'), '{"nothing": 1}');
    assert.throws(() => mergeRows([join(dir, 'bad.json')]), /no 'rows' list/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

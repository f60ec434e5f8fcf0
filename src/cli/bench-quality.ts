/**
 * moepress bench-quality [--fixtures mixtral,olmoe] [--methods …] [--budgets 0.5,0.25] [--windows 64]
 *   [--calib FILE|none] [--calib-windows N] [--calib-methods auto,…] [--calib-mode sequential|original] [--svg FILE] [--json] [--shared DIR]
 * moepress bench-quality --rows a.json,b.json [--svg FILE] [--json]: re-render saved --json outputs
 *   (e.g. one run per fixture, or a re-run of one method) as one table and plot; later files win.
 * Perplexity vs stored bytes for every method and budget: the README's quality table and plot.
 * Calibration (default: the shared training corpus, never the test text) goes to the methods in
 * --calib-methods (default auto and d2-moe, which is defined by its calibration); the others run data-free.
 */
import { CALIB_WINDOWS } from '../compress/calib/collect.js';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { METHODS } from '../compress/methods/index.js';
import { DEFAULT_CALIBRATED, qualitySweep, type SweepRow } from '../compress/sweep.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { parse, UsageError } from './args.js';
import { readText } from './eval.js';
import { progressRenderer } from './progress.js';
import { qualitySvg } from './quality-svg.js';

const DEFAULT_BUDGETS = [0.5, 0.375, 0.25, 0.1875, 0.125];

/** A row's name in tables and plots: the method, marked when it ran with calibration. */
export function rowLabel(r: SweepRow): string {
  return r.calibrated ? `${r.method} (calib)` : r.method;
}

/** Markdown: per model and budget, `auto` against the best other method (lowest perplexity). */
export function autoSummary(rows: SweepRow[], budgets: number[]): string {
  const out = ['| model | budget | auto | best other method | original |', '|---|---|---|---|---|'];
  for (const model of [...new Set(rows.map((r) => r.model))]) {
    const mine = rows.filter((r) => r.model === model);
    const orig = mine.find((r) => r.method === 'original')?.perplexity ?? NaN;
    for (const b of budgets) {
      const a = mine.find((r) => r.method === 'auto' && r.budget === b && r.perplexity !== null);
      const others = mine.filter((r) => r.method !== 'auto' && r.method !== 'original' && r.budget === b && r.perplexity !== null).sort((x, y) => x.perplexity! - y.perplexity!);
      const cell = (r: SweepRow | undefined) => (r ? `${r.perplexity!.toFixed(2)} (${r.lossPercent! >= 0 ? '+' : ''}${r.lossPercent!.toFixed(1)}%)` : '—');
      out.push(`| ${model} | ${b} | ${cell(a)} | ${others[0] ? `${rowLabel(others[0])}: ${cell(others[0])}` : '—'} | ${orig.toFixed(2)} |`);
    }
  }
  return out.join('\n');
}

/** Markdown: one row per method, one column per budget, cells "perplexity (+loss%) · stored fraction". */
export function qualityTable(rows: SweepRow[], budgets: number[]): string {
  const models = [...new Set(rows.map((r) => r.model))];
  const out: string[] = [];
  for (const model of models) {
    const mine = rows.filter((r) => r.model === model);
    const orig = mine.find((r) => r.method === 'original');
    out.push(`**${model}** (original perplexity ${orig?.perplexity?.toFixed(3)})`, '');
    out.push(`| method | ${budgets.map((b) => `budget ${b}`).join(' | ')} |`, `|---|${budgets.map(() => '---').join('|')}|`);
    for (const label of [...new Set(mine.filter((r) => r.method !== 'original').map(rowLabel))]) {
      const cells = budgets.map((b) => {
        const r = mine.find((x) => rowLabel(x) === label && x.budget === b);
        if (!r || r.perplexity === null) return '—';
        const loss = r.lossPercent!;
        return `${r.perplexity.toFixed(2)} (${loss >= 0 ? '+' : ''}${loss.toFixed(1)}%) · ${r.stored!.toFixed(3)}`;
      });
      out.push(`| ${label} | ${cells.join(' | ')} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

/** Rows of saved `--json` outputs, merged: a later file's row replaces an earlier one for the same model, method, calibration and budget. */
export function mergeRows(files: string[]): SweepRow[] {
  const byKey = new Map<string, SweepRow>();
  for (const f of files) {
    let rows: SweepRow[];
    try {
      rows = (JSON.parse(readFileSync(f, 'utf8')) as { rows: SweepRow[] }).rows;
    } catch (e) {
      throw new UsageError(`--rows: cannot read ${f} as bench-quality --json output (${(e as Error).message})`);
    }
    if (!Array.isArray(rows)) throw new UsageError(`--rows: ${f} has no 'rows' list`);
    for (const r of rows) byKey.set(JSON.stringify([r.model, r.method, !!r.calibrated, r.budget]), { ...r, calibrated: !!r.calibrated });
  }
  return [...byKey.values()];
}

export async function benchQualityCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    fixtures: { type: 'string' }, methods: { type: 'string' }, budgets: { type: 'string' }, windows: { type: 'string' }, seed: { type: 'string' },
    calib: { type: 'string' }, 'calib-windows': { type: 'string' }, 'calib-methods': { type: 'string' }, 'calib-mode': { type: 'string' }, svg: { type: 'string' }, json: { type: 'boolean' }, shared: { type: 'string' }, rows: { type: 'string' },
  });
  const saved = p.str('rows');
  if (saved) {
    const rows = mergeRows(saved.split(','));
    const budgets = [...new Set(rows.filter((r) => r.method !== 'original').map((r) => r.budget))].sort((a, b) => b - a);
    return render(rows, budgets, { svg: p.str('svg'), json: p.flag('json'), header: `Merged from ${saved}.`, summary: rows.some((r) => r.method === 'auto') });
  }
  const shared = resolve(p.str('shared') ?? '../shared');
  const fixtures = (p.str('fixtures') ?? 'mixtral,olmoe').split(',');
  const methods = p.str('methods')?.split(',') ?? METHODS.map((m) => m.name);
  for (const m of methods) if (!METHODS.some((x) => x.name === m)) throw new UsageError(`unknown method '${m}'`);
  const budgets = p.str('budgets')?.split(',').map(Number) ?? DEFAULT_BUDGETS;
  const windows = p.int('windows') ?? 64;
  const calibFile = p.str('calib') ?? resolve(shared, 'corpus/train.txt.gz');
  const calib = calibFile === 'none' ? undefined : { file: resolve(calibFile), windows: p.int('calib-windows') ?? CALIB_WINDOWS };
  if (calib && !existsSync(calib.file)) throw new UsageError(`calibration text not found: ${calib.file} (pass --calib none for data-free runs)`);
  const calibrated = p.str('calib-methods')?.split(',') ?? [...DEFAULT_CALIBRATED];
  const calibMode = p.str('calib-mode') ?? 'sequential';
  if (calibMode !== 'sequential' && calibMode !== 'original') throw new UsageError(`--calib-mode must be sequential or original, got '${calibMode}'`);
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const text = readText(resolve(shared, 'corpus/test.txt'));
  const rows: SweepRow[] = [];
  for (const f of fixtures) {
    const dir = resolve(shared, 'fixtures', f);
    if (!existsSync(dir)) throw new UsageError(`fixture not found: ${dir}`);
    const ids = loadTokenizer(dir).encode(text);
    rows.push(...(await qualitySweep(dir, f, { methods, budgets, ids, windows, seed: p.int('seed'), calib, calibrated, calibMode, onProgress: progress })));
  }
  progress.end();
  const calibNote = calib ? `; calibration (${calibMode}): ${calib.windows} windows of ${calib.file} for ${calibrated.join(', ')}` : '; no calibration';
  render(rows, budgets, {
    svg: p.str('svg'), json, summary: methods.includes('auto'),
    header: `Perplexity on the first ${windows} windows of corpus/test.txt; budget = stored expert bytes / bf16 expert bytes${calibNote}.`,
    extra: { windows, calibration: calib ? { ...calib, mode: calibMode, methods: calibrated } : null },
  });
}

function render(rows: SweepRow[], budgets: number[], o: { svg?: string; json: boolean; summary: boolean; header: string; extra?: Record<string, unknown> }): void {
  if (o.svg) {
    mkdirSync(dirname(resolve(o.svg)), { recursive: true });
    writeFileSync(o.svg, qualitySvg(rows, rowLabel));
  }
  if (o.json) {
    process.stdout.write(JSON.stringify({ ...o.extra, budgets, rows }, null, 2) + '\n');
    return;
  }
  process.stdout.write(`${o.header}\n\n${qualityTable(rows, budgets)}\n${o.summary ? autoSummary(rows, budgets) + '\n' : ''}${o.svg ? `\nplot: ${o.svg}\n` : ''}`);
}

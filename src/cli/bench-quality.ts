/**
 * moepress bench-quality [--fixtures mixtral,olmoe] [--methods …] [--budgets 0.5,0.25] [--windows 64] [--json] [--shared DIR]
 * Perplexity vs stored bytes for every method and budget: the README's quality table.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { METHODS } from '../compress/methods/index.js';
import { qualitySweep, type SweepRow } from '../compress/sweep.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { parse, UsageError } from './args.js';
import { readText } from './eval.js';
import { progressRenderer } from './progress.js';

const DEFAULT_BUDGETS = [0.5, 0.375, 0.25, 0.1875, 0.125];

/** Markdown: one row per method, one column per budget, cells "perplexity (+loss%) · stored fraction". */
export function qualityTable(rows: SweepRow[], budgets: number[]): string {
  const models = [...new Set(rows.map((r) => r.model))];
  const out: string[] = [];
  for (const model of models) {
    const mine = rows.filter((r) => r.model === model);
    const orig = mine.find((r) => r.method === 'original');
    out.push(`**${model}** (original perplexity ${orig?.perplexity?.toFixed(3)})`, '');
    out.push(`| method | ${budgets.map((b) => `budget ${b}`).join(' | ')} |`, `|---|${budgets.map(() => '---').join('|')}|`);
    for (const method of [...new Set(mine.map((r) => r.method))].filter((m) => m !== 'original')) {
      const cells = budgets.map((b) => {
        const r = mine.find((x) => x.method === method && x.budget === b);
        if (!r || r.perplexity === null) return '—';
        const loss = r.lossPercent!;
        return `${r.perplexity.toFixed(2)} (${loss >= 0 ? '+' : ''}${loss.toFixed(1)}%) · ${r.stored!.toFixed(3)}`;
      });
      out.push(`| ${method} | ${cells.join(' | ')} |`);
    }
    out.push('');
  }
  return out.join('\n');
}

export async function benchQualityCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { fixtures: { type: 'string' }, methods: { type: 'string' }, budgets: { type: 'string' }, windows: { type: 'string' }, seed: { type: 'string' }, json: { type: 'boolean' }, shared: { type: 'string' } });
  const shared = resolve(p.str('shared') ?? '../shared');
  const fixtures = (p.str('fixtures') ?? 'mixtral,olmoe').split(',');
  const methods = p.str('methods')?.split(',') ?? METHODS.map((m) => m.name);
  for (const m of methods) if (!METHODS.some((x) => x.name === m)) throw new UsageError(`unknown method '${m}'`);
  const budgets = p.str('budgets')?.split(',').map(Number) ?? DEFAULT_BUDGETS;
  const windows = p.int('windows') ?? 64;
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const text = readText(resolve(shared, 'corpus/test.txt'));
  const rows: SweepRow[] = [];
  for (const f of fixtures) {
    const dir = resolve(shared, 'fixtures', f);
    if (!existsSync(dir)) throw new UsageError(`fixture not found: ${dir}`);
    const ids = loadTokenizer(dir).encode(text);
    rows.push(...(await qualitySweep(dir, f, { methods, budgets, ids, windows, seed: p.int('seed'), onProgress: progress })));
  }
  progress.end();
  if (json) process.stdout.write(JSON.stringify({ windows, budgets, rows }, null, 2) + '\n');
  else process.stdout.write(`Perplexity on the first ${windows} windows of corpus/test.txt; budget = stored expert bytes / bf16 expert bytes.\n\n${qualityTable(rows, budgets)}`);
}

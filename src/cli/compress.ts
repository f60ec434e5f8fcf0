/** moepress compress MODEL --out DIR --method M --budget B [--base …] [--base-from DIR] [--layers …] [--seed S] [--resume] [--json] */
import { compress } from '../compress/compress.js';
import type { BaseKind } from '../compress/method.js';
import { METHODS } from '../compress/methods/index.js';
import { modelArg, parse, UsageError } from './args.js';
import { fmtBytes, grid } from './format.js';
import { progressRenderer } from './progress.js';

export function parseBase(s: string | undefined): BaseKind | undefined {
  if (s === undefined) return undefined;
  if (s === 'mean' || s === 'median' || s === 'aligned') return s;
  const m = /^expert:(\d+)$/.exec(s);
  if (m) return { expert: Number(m[1]) };
  throw new UsageError(`--base expects mean, median, aligned or expert:N, got '${s}'`);
}

export function parseLayers(s: string | undefined): number[] | undefined {
  if (s === undefined) return undefined;
  const out: number[] = [];
  for (const part of s.split(',')) {
    const r = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!r) throw new UsageError(`--layers expects a list like 0,2,5-9, got '${s}'`);
    const a = Number(r[1]);
    const b = r[2] === undefined ? a : Number(r[2]);
    for (let i = a; i <= b; i++) out.push(i);
  }
  return [...new Set(out)].sort((x, y) => x - y);
}

export async function compressCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    out: { type: 'string' },
    method: { type: 'string' },
    budget: { type: 'string' },
    base: { type: 'string' },
    'base-from': { type: 'string' },
    layers: { type: 'string' },
    seed: { type: 'string' },
    'align-iters': { type: 'string' },
    resume: { type: 'boolean' },
    overwrite: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  const model = modelArg(p, 'compress');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const method = p.req('method');
  if (!METHODS.some((m) => m.name === method)) throw new UsageError(`--method must be one of: ${METHODS.map((m) => m.name).join(', ')}`);
  const t0 = performance.now();
  const m = await compress({
    model,
    out: p.req('out'),
    method,
    budget: p.num('budget') ?? (() => { throw new UsageError('--budget is required (fraction of bf16 expert bytes, e.g. 0.25)'); })(),
    seed: p.int('seed'),
    base: parseBase(p.str('base')),
    baseFrom: p.str('base-from'),
    layers: parseLayers(p.str('layers')),
    alignIters: p.int('align-iters'),
    resume: p.flag('resume'),
    overwrite: p.flag('overwrite'),
    onProgress: progress,
  });
  progress.end();
  const seconds = (performance.now() - t0) / 1000;
  if (json) {
    process.stdout.write(JSON.stringify({ out: p.req('out'), method: m.method, budget: m.budget, seed: m.seed, bytes: m.bytes, seconds, layers: m.layers.map((l) => ({ layer: l.layer, storedBytes: l.storedBytes, referenceBytes: l.referenceBytes, choices: l.choices })) }) + '\n');
    return;
  }
  const rows = m.layers.map((l) => {
    const c = l.choices as Record<string, unknown> & { relError?: { all: number } };
    const detail = Object.entries(c).filter(([k]) => k !== 'relError').map(([k, v]) => `${k}=${typeof v === 'number' ? +v.toPrecision(4) : v}`).join(' ');
    return [String(l.layer), fmtBytes(l.storedBytes), (l.storedBytes / l.referenceBytes).toFixed(4), c.relError ? c.relError.all.toFixed(4) : '-', detail];
  });
  process.stdout.write(grid(['layer', 'stored', 'budget used', 'rel. error', 'choices'], rows) + '\n');
  process.stdout.write(`\n${m.method}: experts stored in ${fmtBytes(m.bytes.stored)} = ${m.bytes.fraction.toFixed(4)} of bf16 (budget ${m.budget}), ${seconds.toFixed(1)} s -> ${p.req('out')}\n`);
}

/** moepress analyze MODEL [--layers 0,2-5] [--base-from DIR] [--seed S] [--align-iters N] [--json] */
import { analyzeModel, type Analysis, type Recommendation } from '../compress/analyze.js';
import { modelArg, parse } from './args.js';
import os from 'node:os';
import { join } from 'node:path';
import { parseLayers, printEstimate } from './compress.js';
import { grid } from './format.js';
import { progressRenderer } from './progress.js';

export async function analyzeCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    layers: { type: 'string' },
    'base-from': { type: 'string' },
    seed: { type: 'string' },
    'align-iters': { type: 'string' },
    json: { type: 'boolean' },
  });
  const model = modelArg(p, 'analyze');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const layers = parseLayers(p.str('layers'));
  // The analysis's heavy part is the aligned barycenter with its residuals, as `merge` computes them.
  if (!json) await printEstimate(model, join(os.tmpdir(), 'moepress-analyze'), { method: 'merge', budget: 1, layers, alignIters: p.int('align-iters') });
  const a = await analyzeModel(model, {
    layers,
    baseFrom: p.str('base-from'),
    seed: p.int('seed'),
    alignIters: p.int('align-iters'),
    onProgress: progress,
  });
  progress.end();
  if (json) {
    process.stdout.write(JSON.stringify(a) + '\n');
    return;
  }
  process.stdout.write(render(a));
}

function render(a: Analysis): string {
  const f = (v: number) => v.toFixed(4);
  const dense = a.baseFrom !== null;
  const header = ['layer', 'pairwise cos', 'cos to mean', 'rel. delta (mean)', 'rel. delta (aligned)', 'moved', 'iters'];
  if (dense) header.push('cos to dense', 'rel. delta (dense)');
  header.push('verdict', 'family');
  const rows = a.layers.map((l) => {
    const r = [String(l.layer), f(l.pairwiseCos.all.mean), f(l.meanBase.cos.mean), f(l.meanBase.relDelta.mean), f(l.aligned.relDelta.mean), f(l.aligned.moved), String(l.aligned.iters)];
    if (l.denseBase) r.push(f(l.denseBase.cos.mean), f(l.denseBase.relDelta.mean));
    r.push(l.verdict, l.recommendation.family);
    return r;
  });
  const s = a.summary;
  const counts = Object.entries(s.layerVerdicts).filter(([, n]) => n > 0).map(([v, n]) => `${n} ${v}`).join(', ');
  const lines = [
    `${a.modelType}: ${a.experts} experts of [I=${a.intermediate}, H=${a.hidden}], ${a.layers.length} MoE layers analyzed${a.baseFrom ? `, dense base ${a.baseFrom}` : ''}`,
    '',
    grid(header, rows),
    '',
    `means over layers: pairwise cos ${f(s.pairwiseCos)}, rel. delta ${f(s.meanRelDelta)} (mean base), ${f(s.alignedRelDelta)} (aligned)${s.denseRelDelta !== null ? `, ${f(s.denseRelDelta)} (dense base)` : ''}; layers: ${counts}`,
    `verdict: ${s.verdict} -> ${advice(s.recommendation)}`,
  ];
  return lines.join('\n') + '\n';
}

function advice(r: Recommendation): string {
  return `${r.family} family: ${r.methods.join(' or ')}${r.flags ? ` ${r.flags}` : ''} (${r.reason})`;
}

/**
 * moepress bench [--json] [--quick] [--threads 1,2] [--scale-methods resmoe-prune,ders-quant] [--decode-synthetic]
 *   [--sections gemm,engines,decode,training,gguf,scale]: every
 * speed figure on this machine in one run, as one JSON object (headline keys at the top level, null
 * with a reason under `unavailable` when not measured, details under `sections`) or as tables.
 * moepress bench --scale [...]: only the real-size compression bench (see bench-scale.ts).
 */
import os from 'node:os';
import { resolve } from 'node:path';
import { parse, UsageError } from './args.js';
import { decodeSection } from './bench-decode.js';
import { ggufSection } from './bench-gguf.js';
import { skipped, type BenchContext, type BenchSection } from './bench-section.js';
import { engineSection, gemmSection, scaleSection } from './bench-sections.js';
import { trainingSection } from './bench-training.js';
import { progressRenderer } from './progress.js';

/**
 * The sections, in the order they run. To add a measurement (e.g. a training bench), append a
 * BenchSection here; its summary keys join the top-level JSON object.
 */
export const SECTIONS: BenchSection[] = [gemmSection, engineSection, decodeSection, trainingSection, ggufSection, scaleSection];

function threadList(s: string): number[] {
  const t = s.split(',').map((x) => Number(x.trim()));
  if (!t.length || !t.every((x) => Number.isInteger(x) && x > 0)) throw new UsageError(`--threads expects positive integers separated by commas, got '${s}'`);
  return t;
}

export async function benchCommand(argv: string[]): Promise<void> {
  if (argv.includes('--scale')) return (await import('./bench-scale.js')).benchScaleCommand(argv);
  const spec = { json: { type: 'boolean' }, quick: { type: 'boolean' }, shared: { type: 'string' }, threads: { type: 'string' }, 'scale-methods': { type: 'string' }, 'decode-synthetic': { type: 'boolean' }, sections: { type: 'string' } } as const;
  const p = parse(argv, spec);
  const json = p.flag('json');
  const only = p.str('sections')?.split(',').map((x) => x.trim()).filter(Boolean);
  const unknown = only?.filter((n) => !SECTIONS.some((s) => s.name === n)) ?? [];
  if (unknown.length) throw new UsageError(`--sections: unknown section(s) ${unknown.join(', ')} (known: ${SECTIONS.map((s) => s.name).join(', ')})`);
  const progress = progressRenderer(json);
  const ctx: BenchContext = {
    quick: p.flag('quick'),
    shared: resolve(p.str('shared') ?? '../shared'),
    threads: threadList(p.str('threads') ?? '1,2'),
    onProgress: progress,
    options: { 'scale-methods': p.str('scale-methods'), 'decode-synthetic': p.flag('decode-synthetic') },
  };
  const machine = { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memoryBytes: os.totalmem(), node: process.version, platform: `${process.platform}-${process.arch}`, loadAverage: os.loadavg() };
  const summary: Record<string, number | boolean | null> = {};
  const unavailable: Record<string, string> = {};
  const sections: Record<string, unknown> = {};
  const texts: string[] = [];
  for (const s of SECTIONS) {
    const selected = !only || only.includes(s.name);
    const r = selected ? await s.run(ctx) : skipped(s.keys, `section '${s.name}' not selected (--sections)`);
    Object.assign(summary, r.summary);
    Object.assign(unavailable, r.unavailable ?? {});
    sections[s.name] = r.detail;
    if (selected) texts.push(r.text);
  }
  progress.end();
  if (json) {
    process.stdout.write(JSON.stringify({ machine, ...summary, unavailable, sections }, null, 2) + '\n');
    return;
  }
  process.stdout.write(`machine: ${machine.cpu}, ${machine.cpus} cores, ${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB, Node ${machine.node}, load average ${machine.loadAverage[0].toFixed(1)}\n\n`);
  process.stdout.write(texts.join('\n'));
}

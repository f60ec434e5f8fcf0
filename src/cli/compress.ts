/**
 * moepress compress MODEL --out DIR --method M --budget B [--base …] [--base-from DIR] [--layers …] [--seed S]
 *   [--calib TEXT [--calib-windows N] [--calib-seed S] [--calib-mode sequential|original] [--calib-cache FILE]
 *    [--heal N [--heal-lr X]]] [--allocate layer|global] [--resume] [--json]
 */
import { CALIB_WINDOWS } from '../compress/calib/collect.js';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { compress } from '../compress/compress.js';
import { compressAndHeal } from '../train/compress-heal.js';
import { estimateForModel, type CompressEstimate } from '../compress/estimate.js';
import type { BaseKind } from '../compress/method.js';
import { METHODS } from '../compress/methods/index.js';
import { measureAlignGemm, measureDisk } from '../compress/rates.js';
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
    calib: { type: 'string' },
    'calib-windows': { type: 'string' },
    'calib-seed': { type: 'string' },
    'calib-cache': { type: 'string' },
    'calib-mode': { type: 'string' },
    heal: { type: 'string' },
    'heal-lr': { type: 'string' },
    allocate: { type: 'string' },
    'layer-weighting': { type: 'string' },
    resume: { type: 'boolean' },
    overwrite: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  const model = modelArg(p, 'compress');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const method = p.req('method');
  if (!METHODS.some((m) => m.name === method)) throw new UsageError(`--method must be one of: ${METHODS.map((m) => m.name).join(', ')}`);
  const budget = p.num('budget') ?? (() => { throw new UsageError('--budget is required (fraction of bf16 expert bytes, e.g. 0.25)'); })();
  const base = parseBase(p.str('base'));
  const layers = parseLayers(p.str('layers'));
  const alignIters = p.int('align-iters');
  const calibFile = p.str('calib');
  if (!calibFile && (p.str('calib-windows') || p.str('calib-seed') || p.str('calib-cache') || p.str('calib-mode'))) throw new UsageError('--calib-windows, --calib-seed, --calib-mode and --calib-cache need --calib TEXT');
  const calibMode = p.str('calib-mode') ?? 'sequential';
  if (calibMode !== 'sequential' && calibMode !== 'original') throw new UsageError(`--calib-mode must be sequential or original, got '${calibMode}'`);
  if (p.str('calib-cache') && calibMode === 'sequential' && p.str('allocate') !== 'global') throw new UsageError('--calib-cache holds statistics on the original model\'s inputs: use it with --calib-mode original (sequential statistics depend on the compressed layers, so they are collected each run)');
  const calib = calibFile ? { file: calibFile, windows: p.int('calib-windows'), seed: p.int('calib-seed'), cache: p.str('calib-cache') } : undefined;
  if (!json && !calib) process.stderr.write('no --calib text: data-free compression (methods use weights only)\n');
  if (!json) await printEstimate(model, p.req('out'), { method, budget, base, layers, alignIters, calibTokens: calib ? (calib.windows ?? CALIB_WINDOWS) * 256 : undefined });
  const allocation = p.str('allocate') ?? 'layer';
  if (allocation !== 'layer' && allocation !== 'global') throw new UsageError(`--allocate must be layer or global, got '${allocation}'`);
  const layerWeighting = p.str('layer-weighting') ?? 'relative';
  if (layerWeighting !== 'relative' && layerWeighting !== 'absolute') throw new UsageError(`--layer-weighting must be relative or absolute, got '${layerWeighting}'`);
  const healSteps = p.int('heal');
  if (healSteps !== undefined && !calib) throw new UsageError('--heal N trains on the calibration text: give --calib TEXT');
  if (p.str('heal-lr') !== undefined && healSteps === undefined) throw new UsageError('--heal-lr needs --heal N');
  const t0 = performance.now();
  const request = {
    allocation,
    layerWeighting,
    model,
    out: p.req('out'),
    method,
    budget,
    seed: p.int('seed'),
    base,
    baseFrom: p.str('base-from'),
    layers,
    alignIters,
    resume: p.flag('resume'),
    overwrite: p.flag('overwrite'),
    calib,
    calibMode: calib ? calibMode : undefined,
    onProgress: progress,
  } as const;
  const healed = healSteps !== undefined ? await compressAndHeal(request, { steps: healSteps, lr: p.num('heal-lr') }) : null;
  const m = healed?.manifest ?? (await compress(request));
  progress.end();
  const seconds = (performance.now() - t0) / 1000;
  if (json) {
    process.stdout.write(JSON.stringify({ out: p.req('out'), method: m.method, budget: m.budget, seed: m.seed, calibration: m.options.calibration, heal: m.heal ?? null, bytes: m.bytes, seconds, layers: m.layers.map((l) => ({ layer: l.layer, storedBytes: l.storedBytes, referenceBytes: l.referenceBytes, choices: l.choices })) }) + '\n');
    return;
  }
  const rows = m.layers.map((l) => {
    const c = l.choices as Record<string, unknown> & { relError?: { all: number } };
    const detail = m.method === 'auto' ? autoChoiceText(c) : Object.entries(c).filter(([k]) => k !== 'relError').map(([k, v]) => choiceText(k, v)).filter((t) => t !== null).join(' ');
    return [String(l.layer), fmtBytes(l.storedBytes), (l.storedBytes / l.referenceBytes).toFixed(4), c.relError ? c.relError.all.toFixed(4) : '-', detail];
  });
  process.stdout.write(grid(['layer', 'stored', 'budget used', 'rel. error', 'choices'], rows) + '\n');
  if (m.layers.some((l) => Object.entries(l.choices).some(([k, v]) => choiceText(k, v) === null))) {
    process.stdout.write(`(per-matrix choices: moepress inspect ${p.req('out')} [--plan])\n`);
  }
  const cal = m.options.calibration as { source: string; windows: number; seed: number } | string;
  process.stdout.write(`\ncalibration: ${typeof cal === 'string' ? cal : `${cal.source}, ${cal.windows} windows, seed ${cal.seed}`}`);
  if (healed) process.stdout.write(`\nhealed: ${healed.heal.steps} steps against ${model}, distill KL ${healed.heal.initialLoss.toFixed(4)} -> ${healed.heal.finalLoss.toFixed(4)}`);
  process.stdout.write(`\n${m.method}: experts stored in ${fmtBytes(m.bytes.stored)} = ${m.bytes.fraction.toFixed(4)} of bf16 (budget ${m.budget}), ${seconds.toFixed(1)} s -> ${p.req('out')}\n`);
}

/** One layer choice as `key=value` for the table; null for values too long for a table cell (inspect shows them). */
function choiceText(k: string, v: unknown): string | null {
  const text = typeof v === 'number' ? String(+v.toPrecision(4)) : typeof v === 'object' && v !== null ? JSON.stringify(v, (_, x) => (typeof x === 'number' ? +x.toPrecision(4) : x)) : String(v);
  return text.length > 48 ? null : `${k}=${text}`;
}

/** auto's layer in one cell: bits per weight by matrix kind, GPTQ-coded matrices, the shared base, unreached experts. */
function autoChoiceText(c: Record<string, unknown>): string {
  const b = c.bitsPerWeight as Record<string, number> | undefined;
  const unreached = c.unreachedExperts as number[] | undefined;
  return [
    b ? `bits/w gate ${b.gate.toFixed(2)} up ${b.up.toFixed(2)} down ${b.down.toFixed(2)}` : null,
    c.gptqMatrices !== undefined ? `gptq ${c.gptqMatrices}` : null,
    c.base ? `base ${String(c.base)}` : null,
    unreached?.length ? `unreached ${unreached.join(',')}` : null,
  ].filter((x) => x !== null).join(', ');
}

/** Runs this long or this big are worth measuring the machine for (half a second) and announcing. */
const LONG_RUN_SECONDS = 60;
const BIG_RUN_BYTES = 2 ** 30;

function fmtDuration(s: number): string {
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** Before a long run: estimated peak memory and time on stderr, with this machine's GEMM and disk rates (analyze uses it too). */
export async function printEstimate(model: string, out: string, req: { method: string; budget: number; base?: BaseKind; layers?: number[]; alignIters?: number; calibTokens?: number }): Promise<void> {
  let est: CompressEstimate | null;
  try {
    est = estimateForModel(model, req);
  } catch {
    return; // compress itself reports a bad model with its own message
  }
  if (!est || (est.seconds < LONG_RUN_SECONDS && est.peakBytes < BIG_RUN_BYTES)) return;
  const parent = dirname(resolve(out));
  const disk = measureDisk(existsSync(parent) ? parent : os.tmpdir(), 64 * 2 ** 20);
  const gemm = await measureAlignGemm(est.I, est.H, 0.3);
  est = estimateForModel(model, req, { gemmGflops: gemm.gflops, readMBps: disk.readMBps, writeMBps: disk.writeMBps })!;
  const parts = est.parts;
  const share = (x: number) => `${((100 * x) / Math.max(est!.seconds, 1e-9)).toFixed(0)}%`;
  const ws = est.workingSet.map((w) => `${w.what} ${fmtBytes(w.bytes)}`).join(', ');
  // Barycenter methods stop when no assignment changes, often after 2-3 of the alignIters iterations.
  const upTo = est.gemmFlopsPerLayer > 0 ? 'up to ' : '';
  process.stderr.write(`estimate: peak memory ~${fmtBytes(est.peakBytes)} (${ws}); time ${upTo}~${fmtDuration(est.seconds)} for ${est.layers} layer${est.layers === 1 ? '' : 's'} ` +
    `(${fmtDuration(est.secondsPerLayer)} each: GEMM ${share(parts.gemmSeconds)}, compute ${share(parts.jsSeconds)}, I/O ${share(parts.ioSeconds)}) ` +
    `at ${gemm.gflops.toFixed(0)} GFLOP/s, disk ${disk.readMBps.toFixed(0)}/${disk.writeMBps.toFixed(0)} MB/s read/write\n`);
}

/**
 * moepress bench --scale [--json] [--methods resmoe-prune,ders-quant] [--budget 0.25] [--experts random|upcycled|permuted]
 *   [--align-iters N] [--num-experts E] [--intermediate I] [--hidden H] [--seed S] [--layers 32] [--dir DIR] [--keep]
 * Compress a real-size (Mixtral-8x7B-shaped) synthetic MoE layer, one method per child process,
 * and report time, peak RSS, where the time went and the floors, extrapolated to every layer.
 */
import { PEAK_RSS_LIMIT_BYTES, runScaleBench, type ScaleBenchResult } from '../compress/scale-bench.js';
import type { SyntheticExperts } from '../compress/synthetic.js';
import { parse, UsageError } from './args.js';
import { fmtBytes, grid } from './format.js';
import { progressRenderer } from './progress.js';

export const SCALE_OPTIONS = {
  methods: { type: 'string' },
  budget: { type: 'string' },
  experts: { type: 'string' },
  'align-iters': { type: 'string' },
  'num-experts': { type: 'string' },
  intermediate: { type: 'string' },
  hidden: { type: 'string' },
  seed: { type: 'string' },
  layers: { type: 'string' },
  dir: { type: 'string' },
  keep: { type: 'boolean' },
} as const;

function fmtSeconds(s: number): string {
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(2)} h`;
}

const pct = (x: number) => `${(100 * x).toFixed(0)}%`;

export async function benchScaleCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { scale: { type: 'boolean' }, json: { type: 'boolean' }, quick: { type: 'boolean' }, shared: { type: 'string' }, ...SCALE_OPTIONS });
  const experts = p.str('experts') ?? 'random';
  if (!['random', 'upcycled', 'permuted'].includes(experts)) throw new UsageError(`--experts must be random, upcycled or permuted, got '${experts}'`);
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const r = await runScaleBench({
    methods: p.str('methods')?.split(',').map((s) => s.trim()).filter(Boolean),
    budget: p.num('budget'),
    experts: experts as SyntheticExperts,
    alignIters: p.int('align-iters'),
    E: p.int('num-experts'),
    I: p.int('intermediate'),
    H: p.int('hidden'),
    seed: p.int('seed'),
    layers: p.int('layers'),
    dir: p.str('dir'),
    keep: p.flag('keep'),
    onProgress: progress,
  });
  progress.end();
  if (json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  process.stdout.write(render(r));
}

export function render(r: ScaleBenchResult): string {
  const s = r.shape;
  const lines: string[] = [];
  lines.push(`machine: ${r.machine.cpu}, ${r.machine.cpus} cores, ${(r.machine.memoryBytes / 2 ** 30).toFixed(0)} GiB, Node ${r.machine.node}`);
  lines.push(`layer: E=${s.E} experts of I=${s.I}, H=${s.H} (${s.experts}), bf16 ${fmtBytes(r.checkpoint.expertBytes)} in ${r.checkpoint.files} shards, generated in ${r.checkpoint.generateSeconds.toFixed(0)} s; budget ${s.budget}, ${s.alignIters} alignment iterations at most`);
  lines.push(`rates: GEMM ${r.rates.gemm.gflops.toFixed(1)} GFLOP/s at [${r.rates.gemm.shape.join(', ')}]; disk write ${r.rates.disk.writeMBps.toFixed(0)} MB/s, read ${r.rates.disk.readMBps.toFixed(0)} MB/s (${r.rates.disk.readKind})`);
  lines.push('');
  lines.push(grid(
    ['method', 'layer time', 'peak RSS', 'GEMM', 'assign', 'edge costs', 'I/O', 'decode', 'other', 'floor', 'all layers', 'estimate (time, peak)'],
    r.methods.map((m) => [
      m.method, fmtSeconds(m.layerSeconds), fmtBytes(m.compressPeakRssBytes),
      pct(m.shares.gemm), pct(m.shares.assign), pct(m.shares.edgeCost), pct(m.shares.io), pct(m.shares.decode), pct(m.shares.other),
      `${fmtSeconds(m.floors.seconds)} (GEMM ${fmtSeconds(m.floors.gemmSeconds)}, I/O ${fmtSeconds(m.floors.ioSeconds)})`,
      `${fmtSeconds(m.extrapolated.seconds)} for ${m.extrapolated.layers}`,
      `${fmtSeconds(m.estimate.secondsPerLayer)}, ${fmtBytes(m.estimate.peakBytes)}`,
    ]),
  ));
  lines.push('');
  for (const m of r.methods) {
    const rel = (m.choices.relError as { all?: number } | undefined)?.all;
    lines.push(`${m.method}: ${fmtBytes(m.storedBytes)} stored (${(m.storedBytes / m.referenceBytes).toFixed(4)} of bf16), rel. error ${rel?.toFixed(4) ?? '-'}, ` +
      `${(m.gemmFlops / 1e12).toFixed(2)} TFLOP in alignment GEMMs, read ${fmtBytes(m.bytesRead)}, wrote ${fmtBytes(m.bytesWritten)}`);
  }
  lines.push('GEMM = waiting for alignment GEMMs (they overlap the scans); floor = alignment FLOPs at the measured GEMM rate + the layer read once and its stored bytes written once at the measured disk rates.');
  lines.push(`peak RSS ${r.withinLimit ? 'within' : 'ABOVE'} the ${fmtBytes(PEAK_RSS_LIMIT_BYTES)} limit for every method`);
  return lines.join('\n') + '\n';
}

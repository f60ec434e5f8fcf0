/**
 * moepress upcycle DENSE --out DIR --experts E --top-k K --delta lowrank|sparse [--rank r | --density d]
 *   --text FILE --steps N [--lr 1e-4] [--warmup N] [--batch 8] [--seq 256] [--accumulate 1] [--seed 0]
 *   [--checkpoint-every 50] [--aux-coef 0.01] [--dtype bf16|f16|f32] [--resume] [--overwrite] [--json]
 * moepress upcycle DENSE --control --out DIR --text FILE --steps N [same training options]: the
 *   control run, the dense model trained alone with the same settings (expert options ignored).
 */
import { UPCYCLE_DEFAULTS, upcycle } from '../train/upcycle.js';
import { trainDenseControl } from '../train/upcycle-control.js';
import type { StoreDType } from '../train/upcycle-write.js';
import { modelArg, parse, UsageError } from './args.js';
import { fmtBytes } from './format.js';
import { progressRenderer } from './progress.js';
import { trainRunArgs } from './train-args.js';

function parseDType(s: string | undefined): StoreDType | undefined {
  if (s === undefined) return undefined;
  const d = s.toUpperCase();
  if (d === 'BF16' || d === 'F16' || d === 'F32') return d;
  throw new UsageError(`--dtype expects bf16, f16 or f32, got '${s}'`);
}

function required(v: number | undefined, name: string, what: string): number {
  if (v === undefined) throw new UsageError(`--${name} is required (${what})`);
  return v;
}

export async function upcycleCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    out: { type: 'string' },
    experts: { type: 'string' },
    'top-k': { type: 'string' },
    delta: { type: 'string' },
    rank: { type: 'string' },
    density: { type: 'string' },
    text: { type: 'string' },
    steps: { type: 'string' },
    lr: { type: 'string' },
    warmup: { type: 'string' },
    batch: { type: 'string' },
    seq: { type: 'string' },
    accumulate: { type: 'string' },
    seed: { type: 'string' },
    'checkpoint-every': { type: 'string' },
    'aux-coef': { type: 'string' },
    dtype: { type: 'string' },
    resume: { type: 'boolean' },
    overwrite: { type: 'boolean' },
    json: { type: 'boolean' },
    control: { type: 'boolean' },
  });
  const dense = modelArg(p, 'upcycle');
  const json = p.flag('json');
  if (p.flag('control')) {
    const progress = progressRenderer(json);
    const r = await trainDenseControl(dense, {
      out: p.req('out'), text: p.req('text'), steps: required(p.int('steps'), 'steps', 'optimizer steps'), lr: p.num('lr'),
      ...trainRunArgs(p, progress),
    });
    progress.end();
    const { losses, files: _, ...summary } = r;
    if (json) process.stdout.write(JSON.stringify({ control: true, ...summary, initialLoss: losses[0] }) + '\n');
    else process.stdout.write(`control: ${dense} trained alone -> ${r.out}: ${r.params.toLocaleString('en-US')} parameters, train loss ${losses[0].toFixed(4)} -> ${r.finalLoss.toFixed(4)} over ${r.steps} steps${r.resumedFrom ? ` (resumed at ${r.resumedFrom})` : ''}; ${r.seconds.toFixed(1)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s\n`);
    return;
  }
  const delta = p.req('delta');
  if (delta !== 'lowrank' && delta !== 'sparse') throw new UsageError(`--delta expects lowrank or sparse, got '${delta}'`);
  const progress = progressRenderer(json);
  const r = await upcycle(dense, {
    out: p.req('out'),
    experts: required(p.int('experts'), 'experts', 'experts per layer E'),
    topK: required(p.int('top-k'), 'top-k', 'experts per token K'),
    delta,
    rank: p.num('rank'),
    density: p.num('density'),
    text: p.req('text'),
    steps: required(p.int('steps'), 'steps', 'optimizer steps'),
    lr: p.num('lr'),
    ...trainRunArgs(p, progress),
    auxCoef: p.num('aux-coef'),
    dtype: parseDType(p.str('dtype')),
  });
  progress.end();
  const m = r.manifest;
  if (json) {
    process.stdout.write(JSON.stringify({
      out: r.out, steps: r.steps, finalLoss: r.finalLoss, finalCe: r.finalCe, seconds: r.seconds, tokensPerSecond: r.tokensPerSecond,
      resumedFrom: r.resumedFrom, addedParams: r.addedParams, addedParamsFormula: r.addedParamsFormula, formula: r.formula,
      fullUpcycleParams: r.fullUpcycleParams, denseParams: r.denseParams, step0RelError: r.step0RelError, dtype: r.dtype,
      lr: m.options.lr ?? UPCYCLE_DEFAULTS.lr, bytes: m.bytes, layers: m.layers.map((l) => ({ layer: l.layer, storedBytes: l.storedBytes, choices: l.choices })),
    }) + '\n');
    return;
  }
  const first = r.losses[0];
  process.stdout.write(
    `upcycled ${dense} -> ${r.out}: ${m.layers.length} layers of ${r.model.spec.experts} experts (top-${r.model.spec.topK}), ${r.model.spec.delta.kind} delta\n` +
      `step 0 equals the dense model: relative logit error ${r.step0RelError.toExponential(1)}\n` +
      `parameters added ${r.addedParams.toLocaleString('en-US')} = ${r.formula} (plain upcycling: ${r.fullUpcycleParams.toLocaleString('en-US')}); dense model ${r.denseParams.toLocaleString('en-US')}\n` +
      `train loss ${first.toFixed(4)} -> ${r.finalLoss.toFixed(4)} (cross-entropy ${r.finalCe.toFixed(4)}) over ${r.steps} steps${r.resumedFrom ? ` (resumed at ${r.resumedFrom})` : ''}\n` +
      `${r.seconds.toFixed(1)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s; experts stored in ${fmtBytes(m.bytes.stored)} (${r.dtype}) = ${m.bytes.fraction.toFixed(4)} of ${r.model.spec.experts} full bf16 experts\n`,
  );
}

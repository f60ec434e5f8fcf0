/**
 * moepress finetune MOE --out DIR --compressed-experts m --text FILE --steps N [--train all|ce|ce+router]
 *   [--loss distill|next-token] [--lr X] [--model-lr X] [--batch 8] [--seq 256] [--accumulate 1] [--seed 0] [--warmup N] [--checkpoint-every 50]
 *   [--resume] [--overwrite] [--json]
 * moepress finetune COMPRESSED --out DIR --teacher ORIGINAL --text FILE --steps N ...: healing (cli/heal.ts)
 */
import { finetune, LOSSES, type FinetuneLoss } from '../train/finetune.js';
import { TRAIN_MODES, type TrainMode } from '../train/finetune-model.js';
import { modelArg, parse, UsageError } from './args.js';
import { healRun } from './heal.js';
import { fmtCount, table } from './format.js';
import { progressRenderer } from './progress.js';
import { trainRunArgs } from './train-args.js';

function lossKind(s: string | undefined): FinetuneLoss | undefined {
  if (s === undefined || (LOSSES as readonly string[]).includes(s)) return s as FinetuneLoss | undefined;
  throw new UsageError(`--loss expects one of ${LOSSES.join(', ')}, got '${s}'`);
}

function trainMode(s: string | undefined): TrainMode | undefined {
  if (s === undefined) return undefined;
  if ((TRAIN_MODES as readonly string[]).includes(s)) return s as TrainMode;
  throw new UsageError(`--train expects one of ${TRAIN_MODES.join(', ')}, got '${s}'`);
}

export async function finetuneCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    out: { type: 'string' },
    'compressed-experts': { type: 'string' },
    teacher: { type: 'string' },
    text: { type: 'string' },
    steps: { type: 'string' },
    train: { type: 'string' },
    loss: { type: 'string' },
    lr: { type: 'string' },
    'model-lr': { type: 'string' },
    batch: { type: 'string' },
    seq: { type: 'string' },
    accumulate: { type: 'string' },
    seed: { type: 'string' },
    warmup: { type: 'string' },
    'checkpoint-every': { type: 'string' },
    resume: { type: 'boolean' },
    overwrite: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  const model = modelArg(p, 'finetune');
  if (p.str('teacher') !== undefined) return healRun(p, model);
  const json = p.flag('json');
  const m = p.int('compressed-experts');
  if (m === undefined) throw new UsageError('--compressed-experts is required (experts per token to replace by vectors, 1 <= m < top-k), or --teacher ORIGINAL to heal a compressed model');
  const steps = p.int('steps');
  if (steps === undefined) throw new UsageError('--steps is required');
  const train = trainMode(p.str('train'));
  const progress = progressRenderer(json);
  const r = await finetune(model, {
    out: p.req('out'),
    compressedExperts: m,
    text: p.req('text'),
    steps,
    train,
    loss: lossKind(p.str('loss')),
    lr: p.num('lr'),
    modelLr: p.num('model-lr'),
    ...trainRunArgs(p, progress),
  });
  progress.end();
  const a = r.activeExpertParams;
  if (json) {
    process.stdout.write(JSON.stringify({
      model, out: r.out, m: r.m, K: r.K, train: r.train, loss: r.loss, lr: r.lr, modelLr: r.modelLr, steps: r.steps, tokensPerStep: r.tokensPerStep,
      initialLoss: r.initialLoss, finalLoss: r.finalLoss, seconds: r.seconds, tokensPerSecond: r.tokensPerSecond, resumedFrom: r.resumedFrom,
      activeExpertParams: a,
    }) + '\n');
    return;
  }
  process.stdout.write(table([
    ['compressed experts', `${r.m} of top-${r.K} per token (${r.K - r.m} full experts + vectors)`],
    ['trained', `${r.train} (${r.loss} loss), ${r.steps} steps of ${r.tokensPerStep} tokens, lr ${r.lr}${r.modelLr !== null ? ` (vectors), ${r.modelLr} (${r.train === 'all' ? 'model' : 'routers'})` : ''}${r.resumedFrom ? `, resumed at step ${r.resumedFrom}` : ''}`],
    ['train loss', `${r.initialLoss.toFixed(4)} (first step) -> ${r.finalLoss.toFixed(4)} (last 10% of steps)`],
    ['time', `${r.seconds.toFixed(1)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s`],
    ['active expert params', `${fmtCount(a.after)} per token (${fmtCount(a.before)} before, ${(100 * a.reduction).toFixed(1)}% fewer)`],
    ['output', r.out],
  ]) + '\n');
}

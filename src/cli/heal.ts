/**
 * moepress finetune COMPRESSED --out DIR --teacher ORIGINAL --text FILE --steps N
 *   [--train all|no-embed|norms+router] [--lr X] [--batch 8] [--seq 256] [--accumulate 1] [--seed 0]
 *   [--warmup N] [--checkpoint-every 50] [--resume] [--overwrite] [--json]
 * Healing (train/heal.ts): finetune's path when --teacher is given.
 */
import { HEAL_TRAIN_MODES, heal, type HealTrainMode } from '../train/heal.js';
import { UsageError, type Parsed } from './args.js';
import { fmtCount, table } from './format.js';
import { progressRenderer } from './progress.js';
import { trainRunArgs } from './train-args.js';

function healMode(s: string | undefined): HealTrainMode | undefined {
  if (s === undefined) return undefined;
  if ((HEAL_TRAIN_MODES as readonly string[]).includes(s)) return s as HealTrainMode;
  throw new UsageError(`--train expects one of ${HEAL_TRAIN_MODES.join(', ')} when healing (--teacher), got '${s}'`);
}

export async function healRun(p: Parsed, model: string): Promise<void> {
  for (const f of ['compressed-experts', 'loss', 'model-lr']) if (p.str(f) !== undefined) throw new UsageError(`--${f} does not apply to healing (--teacher): the compressed model's non-expert tensors train against the teacher with the distillation loss`);
  const steps = p.int('steps');
  if (steps === undefined) throw new UsageError('--steps is required');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const r = await heal(model, {
    out: p.req('out'),
    teacher: p.req('teacher'),
    text: p.req('text'),
    steps,
    train: healMode(p.str('train')),
    lr: p.num('lr'),
    ...trainRunArgs(p, progress),
  });
  progress.end();
  if (json) {
    process.stdout.write(JSON.stringify({ model, ...r }) + '\n');
    return;
  }
  process.stdout.write(table([
    ['healed', `${model} against ${r.teacher} (routed experts frozen, files unchanged)`],
    ['trained', `${r.train}: ${fmtCount(r.trainedParams)} parameters, ${r.steps} steps of ${r.tokensPerStep} tokens, lr ${r.lr}${r.resumedFrom ? `, resumed at step ${r.resumedFrom}` : ''}`],
    ['distill KL', `${r.initialLoss.toFixed(4)} (first step) -> ${r.finalLoss.toFixed(4)} (last 10% of steps)`],
    ['time', `${r.seconds.toFixed(1)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s`],
    ['output', r.out],
  ]) + '\n');
}

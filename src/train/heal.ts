/**
 * `moepress finetune COMPRESSED --teacher ORIGINAL`: healing a compressed model by distillation.
 * The compressed model's routed experts stay frozen (densified to float32 for the training
 * forward, constants without gradients or optimizer state), and its small non-expert tensors
 * (norms, routers, attention, optionally embeddings and head) learn to match the original
 * model's next-token distribution on the same windows: the mean KL(teacher ‖ student) of
 * ops/distill.ts. The output is the compressed directory again (heal-output.ts): the same
 * experts files byte for byte, so the routed-expert budget is unchanged, the trained tensors in
 * the rest shards in their original dtype, and a `heal` entry in the manifest. Built in
 * `${out}.partial` with the loop's checkpoints, renamed when complete; --resume continues it.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MoepressError } from '../io/errors.js';
import type { ModelConfig } from '../models/canonical.js';
import { isExpertWeight } from '../compress/experts-io.js';
import { isCompressedDir, packageVersion, type HealRecord } from '../compress/format.js';
import { MATRICES, matrixShape } from '../compress/parts.js';
import { rebuildExperts } from '../compress/restore.js';
import { hasCompressedExperts } from '../runtime/compressed-experts.js';
import { loadModel, type LoadedModel } from '../runtime/load-model.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { toFloat32 } from '../tensor/convert.js';
import { loadTokens, WindowSampler } from './data.js';
import { trainLoop } from './loop.js';
import { TrainableModel, unsupported } from './model.js';
import { distillKL } from './ops/distill.js';
import { outputPaths, publishOutput } from './output-dir.js';
import { writeHealedDir } from './heal-output.js';
import { positiveInt, runShape, type TrainRunOptions } from './run-options.js';

/** Which non-expert tensors train: every one, every one but embed/lm_head, or only norms and routers. */
export type HealTrainMode = 'all' | 'no-embed' | 'norms+router';
export const HEAL_TRAIN_MODES: readonly HealTrainMode[] = ['all', 'no-embed', 'norms+router'];

export const DEFAULT_HEAL_TRAIN: HealTrainMode = 'all';
/**
 * Peak learning rate (warm-up then cosine to a tenth). Chosen on valid.txt perplexity after 150
 * steps of 8 × 256 at budget 0.125 (README, issue 5): 3e-4 beat 1e-3 on OLMoE (20.91 vs 21.09),
 * 1e-3 beat 3e-4 on Mixtral (25.11 vs 25.57); both rates healed both fixtures to the goal.
 */
export const DEFAULT_HEAL_LR = 3e-4;

/** Whether a canonical tensor trains under `mode`; routed experts never do. */
export function healTrains(mode: HealTrainMode, name: string): boolean {
  if (isExpertWeight(name)) return false;
  if (mode === 'all') return true;
  if (mode === 'no-embed') return name !== 'embed' && name !== 'lm_head' && name !== 'lm_head_bias';
  return /norm\.weight$/.test(name) || /\.moe\.router\.(weight|bias)$/.test(name);
}

export interface HealOptions extends TrainRunOptions {
  out: string;
  /** The original (uncompressed) model the compressed one was made from. */
  teacher: string;
  /** Training text (plain or .gz), tokenized with the model's tokenizer.json. */
  text: string;
  steps: number;
  train?: HealTrainMode;
  /** Peak learning rate; default DEFAULT_HEAL_LR. */
  lr?: number;
}

export interface HealResult {
  out: string;
  teacher: string;
  train: HealTrainMode;
  lr: number;
  steps: number;
  tokensPerStep: number;
  /** Trained parameters (the routed experts are frozen). */
  trainedParams: number;
  initialLoss: number;
  finalLoss: number;
  seconds: number;
  tokensPerSecond: number;
  resumedFrom: number;
  files: string[];
}

/** The first canonical config field in which teacher and student differ, or null. */
export function configMismatch(student: ModelConfig, teacher: ModelConfig): string | null {
  const fields = ['modelType', 'vocabSize', 'hidden', 'numLayers', 'norm', 'normEps', 'attention', 'rope', 'layers', 'moe', 'denseIntermediate', 'tieEmbeddings'] as const;
  for (const f of fields) {
    const a = JSON.stringify(student[f]);
    const b = JSON.stringify(teacher[f]);
    if (a !== b) return `${f}: compressed ${a.length > 80 ? a.slice(0, 80) + '…' : a}, teacher ${b.length > 80 ? b.slice(0, 80) + '…' : b}`;
  }
  return null;
}

/** Refuses a student that is not a moepress compressed directory, or a teacher that is not its original. */
function checkInputs(dir: string, teacherDir: string): void {
  if (!isCompressedDir(dir)) throw new MoepressError('not a moepress compressed directory (no moepress.json): healing trains a compressed model against its original; make one with moepress compress', { file: dir });
  if (hasCompressedExperts(dir)) throw new MoepressError('the model carries compressed experts (moepress-ce.json); healing needs a plain compressed directory', { file: dir });
  if (!existsSync(join(teacherDir, 'config.json'))) throw new MoepressError('teacher model not found (no config.json)', { file: teacherDir });
  if (isCompressedDir(teacherDir) || hasCompressedExperts(teacherDir)) throw new MoepressError('the teacher must be the original model, not a compressed one', { file: teacherDir });
  const tok = (d: string) => (existsSync(join(d, 'tokenizer.json')) ? readFileSync(join(d, 'tokenizer.json')) : null);
  const [a, b] = [tok(dir), tok(teacherDir)];
  if (a && b && !a.equals(b)) throw new MoepressError('the teacher has a different tokenizer.json than the compressed model', { file: join(teacherDir, 'tokenizer.json') });
}

/** The compressed layers' routed experts rebuilt dense (float32, original neuron order) into the model's weights. */
function densifyExperts(m: LoadedModel): void {
  const moe = m.config.moe!;
  const { intermediate: I } = moe;
  const H = m.config.hidden;
  for (const rec of m.manifest!.layers) {
    for (const mat of MATRICES) {
      const raw = rebuildExperts(rec, mat, I, H, (n) => m.checkpoint.read(n), 'F32');
      const name = `layers.${rec.layer}.moe.experts.${mat}`;
      m.weights.set(name, { shape: [rec.experts.length, ...matrixShape(mat, I, H)], data: toFloat32(raw, name) });
    }
  }
}

export async function heal(dir: string, o: HealOptions): Promise<HealResult> {
  const train = o.train ?? DEFAULT_HEAL_TRAIN;
  if (!HEAL_TRAIN_MODES.includes(train)) throw new MoepressError(`--train must be one of ${HEAL_TRAIN_MODES.join(', ')} when healing; got '${train}'`);
  positiveInt('--steps', o.steps);
  const { batch, seqLen, accumulate, seed } = runShape(o);
  const lr = o.lr ?? DEFAULT_HEAL_LR;
  if (!(lr > 0 && Number.isFinite(lr))) throw new MoepressError(`--lr must be a positive number, got ${lr}`);
  if (!existsSync(o.text) || !statSync(o.text).isFile()) throw new MoepressError('text file not found', { file: o.text });
  checkInputs(dir, o.teacher);
  if (resolve(o.out) === resolve(dir) || resolve(o.out) === resolve(o.teacher)) throw new MoepressError('--out must differ from the compressed and the teacher directories', { file: resolve(o.out) });
  const paths = outputPaths(o);

  const student = loadModel(dir, { onProgress: o.onProgress });
  const cfg = student.config;
  const configFile = join(dir, 'config.json');
  if (!cfg.moe) throw new MoepressError(`model_type '${cfg.modelType}' has no routed experts`, { file: configFile });
  const why = unsupported(cfg);
  if (why) throw new MoepressError(`cannot heal ${cfg.family}: ${why}`, { file: configFile });
  if (seqLen > cfg.maxPositions) throw new MoepressError(`--seq ${seqLen} exceeds max_position_embeddings ${cfg.maxPositions}`, { file: configFile });
  const teacherModel = loadModel(o.teacher);
  const mismatch = configMismatch(cfg, teacherModel.config);
  if (mismatch) throw new MoepressError(`the teacher's config.json does not match the compressed model's (${mismatch}); pass the model it was compressed from`, { file: join(o.teacher, 'config.json') });

  densifyExperts(student);
  const model = new TrainableModel(cfg, student.weights, { trainable: (n) => healTrains(train, n) });
  const params = model.parameters();
  if (params.length === 0) throw new MoepressError(`--train ${train} leaves nothing to train in this model`, { file: configFile });
  const teacher = new Transformer(teacherModel.config, teacherModel.weights, teacherModel.banks);

  const tokenizer = loadTokenizer(dir);
  const tokens = await loadTokens(o.text, (s) => tokenizer.encode(s));
  const sampler = new WindowSampler(tokens, seqLen, seed, o.text);
  mkdirSync(paths.partial, { recursive: true });
  const runKey = JSON.stringify({ heal: resolve(dir), teacher: resolve(o.teacher), text: resolve(o.text), train, lr, steps: o.steps, batch, seqLen, accumulate, seed, warmup: o.warmup ?? null });
  const r = await trainLoop(params, sampler, async (tape, b) => {
    const { logits } = await model.forward(tape, b.inputs, b.B, b.S);
    return distillKL(tape, logits, await teacher.logits(b.inputs, b.B, b.S));
  }, {
    steps: o.steps,
    batch,
    accumulate,
    lr,
    warmup: o.warmup,
    checkpointEvery: o.checkpointEvery ?? 50,
    checkpointDir: paths.stateDir,
    resume: o.resume,
    runKey,
    onProgress: o.onProgress,
  });

  const manifest = student.manifest!;
  const record: HealRecord = {
    teacher: resolve(o.teacher),
    text: resolve(o.text),
    train,
    loss: 'distill',
    steps: o.steps,
    lr,
    batch,
    seqLen,
    accumulate,
    seed,
    initialLoss: r.losses[0],
    finalLoss: r.finalLoss,
    ...(manifest.heal ? { previous: manifest.heal } : {}),
    moepressVersion: packageVersion(),
  };
  const files = writeHealedDir(student, manifest, model.toWeights(), (n) => healTrains(train, n), record, paths.partial);
  student.checkpoint.close();
  teacherModel.checkpoint.close();
  publishOutput(paths);
  return {
    out: paths.out,
    teacher: resolve(o.teacher),
    train,
    lr,
    steps: o.steps,
    tokensPerStep: batch * seqLen * accumulate,
    trainedParams: params.reduce((s, p) => s + p.size, 0),
    initialLoss: r.losses[0],
    finalLoss: r.finalLoss,
    seconds: r.seconds,
    tokensPerSecond: r.tokensPerSecond,
    resumedFrom: r.resumedFrom,
    files,
  };
}

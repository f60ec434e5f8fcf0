/**
 * `moepress finetune`: compressed experts (METHODS.md Family 3). Loads an MoE, replaces the m
 * lowest-weighted of each token's top-K experts by per-expert vectors c0, c2 ∈ R^H, c1 ∈ R^I
 * (initialised to ones), trains them (and, with --train ce+router / all, the routers or every
 * tensor) on random windows of a text with trainLoop, and writes a model directory that loads
 * and evaluates with the compressed routing: the model's files plus moepress-ce.safetensors and
 * moepress-ce.json (runtime/compressed-experts.ts).
 *
 * Loss: by default (--loss distill) the KL divergence from the original model's top-K predictions
 * on the same windows, or (--loss next-token) cross-entropy on the text; never a load-balancing term (as
 * transformers without output_router_logits). The output is built in `${out}.partial` (training checkpoints in its
 * train-state/ folder, for --resume) and renamed to `out` when complete.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MoepressError } from '../io/errors.js';
import { activeExpertParams, type ActiveExpertParams } from '../models/summary.js';
import { hasCompressedExperts, writeCompressedExperts } from '../runtime/compressed-experts.js';
import { loadModel } from '../runtime/load-model.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { isCompressedDir, packageVersion } from '../compress/format.js';
import { Transformer } from '../runtime/transformer.js';
import { loadTokens, WindowSampler, type Batch } from './data.js';
import { distillKL } from './ops/distill.js';
import type { Tape, Var } from './tape.js';
import { compressedExpertsModel, TRAIN_MODES, type TrainMode } from './finetune-model.js';
import { copyModelFiles, writeModelFiles } from './finetune-output.js';
import { trainLoop } from './loop.js';
import { outputPaths, publishOutput } from './output-dir.js';
import { unsupported } from './model.js';
import { positiveInt, runShape, type TrainRunOptions } from './run-options.js';

export interface FinetuneOptions extends TrainRunOptions {
  out: string;
  /** m: compressed experts per token, 1 <= m < K. */
  compressedExperts: number;
  /** Training text (plain or .gz), tokenized with the model's tokenizer.json. */
  text: string;
  /** Optimizer steps. */
  steps: number;
  /** What trains besides the vectors: nothing ('ce'), the routers, or everything ('all', default). */
  train?: TrainMode;
  /** Peak learning rate of the vectors (warm-up then cosine to a tenth); default DEFAULT_LR.ce. */
  lr?: number;
  /** Peak learning rate of the routers (ce+router) or of every model tensor (all); default DEFAULT_LR[train]. */
  modelLr?: number;
  /**
   * What the fine-tune minimises: 'next-token' cross-entropy on the text, or 'distill', the KL
   * divergence from the original model's own top-K next-token distribution on the same windows.
   * Default DEFAULT_LOSS.
   */
  loss?: FinetuneLoss;
}

export type FinetuneLoss = 'next-token' | 'distill';
export const LOSSES: readonly FinetuneLoss[] = ['next-token', 'distill'];

export interface FinetuneResult {
  out: string;
  m: number;
  K: number;
  train: TrainMode;
  loss: FinetuneLoss;
  lr: number;
  /** The model tensors' rate (null with --train ce). */
  modelLr: number | null;
  steps: number;
  /** Tokens per optimizer step: batch × seqLen × accumulate. */
  tokensPerStep: number;
  /** Training loss (`loss`) of the first step (vectors at 1) and the mean of the last 10% of steps. */
  initialLoss: number;
  finalLoss: number;
  /** Training wall time and throughput (this invocation; a resumed run counts only its own steps). */
  seconds: number;
  tokensPerSecond: number;
  resumedFrom: number;
  /** Routed-expert parameters per token: K full experts before, K − m + vectors after. */
  activeExpertParams: ActiveExpertParams;
  files: string[];
}

/**
 * Defaults chosen on the OLMoE fixture (m = 2 of top-4, 150 steps of 8 × 256 tokens, test
 * perplexity over 64 windows): distilling the model's own top-K outputs into the compressed model
 * while everything trains recovered the most of the top-K → top-(K − m) loss (README, issue 4).
 * DEFAULT_LR.ce is the vectors' rate (they start at 1 and need large steps); `ce+router` and `all`
 * the rate of the routers or of every model tensor, which must stay small not to undo the
 * pretrained weights.
 */
export const DEFAULT_LOSS: FinetuneLoss = 'distill';
export const DEFAULT_TRAIN: TrainMode = 'all';

export const DEFAULT_LR: Record<TrainMode, number> = { ce: 1e-2, 'ce+router': 1e-3, all: 3e-4 };

/** Refuses what the trainer cannot fine-tune, with the reason and the file to look at. */
function checkSource(dir: string): void {
  if (hasCompressedExperts(dir)) throw new MoepressError('the model already has compressed experts; fine-tune the original model', { file: dir });
  if (isCompressedDir(dir)) throw new MoepressError('the model is a moepress compressed checkpoint; restore it to a dense checkpoint first (moepress restore), or heal it with --teacher ORIGINAL_DIR', { file: dir });
}

export async function finetune(moeDir: string, o: FinetuneOptions): Promise<FinetuneResult> {
  const train = o.train ?? DEFAULT_TRAIN;
  const lossKind = o.loss ?? DEFAULT_LOSS;
  if (!LOSSES.includes(lossKind)) throw new MoepressError(`--loss must be one of ${LOSSES.join(', ')}; got '${lossKind}'`);
  if (!TRAIN_MODES.includes(train)) throw new MoepressError(`--train must be one of ${TRAIN_MODES.join(', ')}; got '${train}'`);
  const m = o.compressedExperts;
  positiveInt('--compressed-experts', m);
  positiveInt('--steps', o.steps);
  const { batch, seqLen, accumulate, seed } = runShape(o);
  const lr = o.lr ?? DEFAULT_LR.ce;
  if (!(lr > 0 && Number.isFinite(lr))) throw new MoepressError(`--lr must be a positive number, got ${lr}`);
  const modelLr = train === 'ce' ? null : o.modelLr ?? DEFAULT_LR[train];
  if (modelLr !== null && !(modelLr > 0 && Number.isFinite(modelLr))) throw new MoepressError(`--model-lr must be a positive number, got ${modelLr}`);
  if (!existsSync(o.text) || !statSync(o.text).isFile()) throw new MoepressError('text file not found', { file: o.text });
  checkSource(moeDir);

  if (resolve(o.out) === resolve(moeDir)) throw new MoepressError('--out must differ from the model directory', { file: resolve(o.out) });
  const paths = outputPaths(o);
  const { out, partial, stateDir } = paths;

  const src = loadModel(moeDir, { onProgress: o.onProgress });
  const cfg = src.config;
  const configFile = join(moeDir, 'config.json');
  const moe = cfg.moe;
  if (!moe) throw new MoepressError(`model_type '${cfg.modelType}' has no routed experts; compressed experts replace some of an MoE's chosen experts`, { file: configFile });
  const why = unsupported(cfg);
  if (why) throw new MoepressError(`cannot fine-tune ${cfg.family}: ${why}`, { file: configFile });
  const K = moe.routing.topK;
  if (m >= K) throw new MoepressError(`--compressed-experts ${m} leaves no full expert: the model routes each token to K = ${K} experts, so m must be below ${K}`, { file: configFile });
  if (seqLen > cfg.maxPositions) throw new MoepressError(`--seq ${seqLen} exceeds max_position_embeddings ${cfg.maxPositions}`, { file: configFile });

  const tokenizer = loadTokenizer(moeDir);
  const tokens = await loadTokens(o.text, (s) => tokenizer.encode(s));
  const sampler = new WindowSampler(tokens, seqLen, seed, o.text);
  // one loop rate (the model tensors'); the vectors' own rate through their scale (finetune-model.ts)
  const loopLr = modelLr ?? lr;
  const ce = compressedExpertsModel(cfg, src.weights, { m, train, vectorScale: lr / loopLr });
  const { model, params } = ce;

  mkdirSync(partial, { recursive: true });
  // the teacher: the loaded model as it came, with its own top-K routing (inference engine, no tape)
  const teacher = lossKind === 'distill' ? new Transformer(cfg, src.weights, src.banks) : null;
  const lossFn = async (tape: Tape, b: Batch): Promise<Var> => {
    if (!teacher) return (await model.loss(tape, b)).loss;
    const { logits } = await model.forward(tape, b.inputs, b.B, b.S);
    return distillKL(tape, logits, await teacher.logits(b.inputs, b.B, b.S));
  };
  const runKey = JSON.stringify({ model: resolve(moeDir), text: resolve(o.text), m, train, loss: lossKind, lr, modelLr, steps: o.steps, batch, seqLen, accumulate, seed, warmup: o.warmup ?? null });
  const r = await trainLoop(params, sampler, lossFn, {
    steps: o.steps,
    batch,
    accumulate,
    lr: loopLr,
    warmup: o.warmup,
    checkpointEvery: o.checkpointEvery ?? 50,
    checkpointDir: stateDir,
    resume: o.resume,
    runKey,
    onProgress: o.onProgress,
  });

  // Model files: copied when no model tensor changed, rebuilt under hub names otherwise.
  const files = train === 'ce' ? copyModelFiles(src, partial) : writeModelFiles(src, model.toWeights(), partial);
  src.checkpoint.close();
  const active = activeExpertParams(cfg, K, m);
  writeCompressedExperts(partial, cfg, ce.layers(), {
    m,
    K,
    train,
    loss: lossKind,
    lr,
    modelLr,
    steps: o.steps,
    batch,
    seqLen,
    accumulate,
    seed,
    source: resolve(moeDir),
    text: resolve(o.text),
    initialLoss: r.losses[0],
    finalLoss: r.finalLoss,
    activeExpertParams: active,
    moepressVersion: packageVersion(),
  });
  publishOutput(paths);
  return {
    out,
    m,
    K,
    train,
    loss: lossKind,
    lr,
    modelLr,
    steps: o.steps,
    tokensPerStep: batch * seqLen * accumulate,
    initialLoss: r.losses[0],
    finalLoss: r.finalLoss,
    seconds: r.seconds,
    tokensPerSecond: r.tokensPerSecond,
    resumedFrom: r.resumedFrom,
    activeExpertParams: active,
    files: [...files, 'moepress-ce.safetensors', 'moepress-ce.json'],
  };
}

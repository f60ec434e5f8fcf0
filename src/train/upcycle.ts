/**
 * moepress upcycle: DeRS upcycling (METHODS.md Family 1). A dense model becomes a Mixtral whose
 * experts are W_shared + F(Δ_e) (upcycle-model.ts), checked to compute the dense model's function
 * at step 0, trained end to end (embeddings, attention, norms, W_shared, deltas, routers) with the
 * shared training loop, and written as a moepress compressed checkpoint (upcycle-write.ts) that
 * eval, generate, inspect and restore run.
 *
 * Output goes to `${out}.partial/` (training checkpoints in its `train-state/`), renamed into
 * place when complete; `resume` continues an interrupted run from its last checkpoint.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Manifest } from '../compress/format.js';
import { MoepressError } from '../io/errors.js';
import type { ModelConfig } from '../models/canonical.js';
import type { ProgressFn } from '../progress.js';
import { loadModel, openModel, type LoadedModel } from '../runtime/load-model.js';
import { loadTokenizer, type TextTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { loadTokens, WindowSampler } from './data.js';
import { trainLoop } from './loop.js';
import { outputPaths, publishOutput } from './output-dir.js';
import { Tape } from './tape.js';
import { mixtralConfigFor, notUpcyclable } from './upcycle-config.js';
import { addedParamsFormula, sparseCount, UpcycledModel, type DeltaForm, type UpcycleSpec } from './upcycle-model.js';
import { writeUpcycled, type StoreDType } from './upcycle-write.js';

/**
 * Defaults, chosen on the dense fixture (4 experts, top-2, rank 4, 150 steps of 8 × 256 tokens):
 * the dense model is already converged, so a gentle peak learning rate (warm-up 10 steps, cosine
 * to lr/10) lets the new routers and deltas learn without knocking it off its optimum. Measured
 * perplexity on the first 64 test windows, dense 13.126: lr 1e-4 gives 13.096 (bf16 stored;
 * 13.098 kept in f32, so bf16 rounding costs nothing measurable).
 */
export const UPCYCLE_DEFAULTS = {
  lr: 1e-4,
  batch: 8,
  seqLen: 256,
  accumulate: 1,
  seed: 0,
  checkpointEvery: 50,
  auxCoef: 0.01,
};

export interface UpcycleOptions {
  out: string;
  /** E: experts per layer. */
  experts: number;
  /** K: experts per token. */
  topK: number;
  delta: 'lowrank' | 'sparse';
  /** r of the low-rank delta A_e B_e. */
  rank?: number;
  /** d = 1 − p: fraction of each delta matrix's entries that train (sparse form). */
  density?: number;
  /** Training text (plain or .gz). */
  text: string;
  steps: number;
  lr?: number;
  /** Warm-up steps (default: the loop's, min(10, steps/10)). */
  warmup?: number;
  /** Windows per micro-batch. */
  batch?: number;
  seqLen?: number;
  accumulate?: number;
  seed?: number;
  /** Save a training checkpoint every N steps (0: never). */
  checkpointEvery?: number;
  resume?: boolean;
  overwrite?: boolean;
  /** Coefficient of transformers' load-balancing loss added to the cross-entropy. */
  auxCoef?: number;
  /** dtype of the stored weights; default: the dense checkpoint's. */
  dtype?: StoreDType;
  /** Tokenizer of the text; default: the dense model's tokenizer.json. */
  tokenizer?: TextTokenizer;
  /** The text's tokens, when the caller has them already (`text` then only names their source). */
  tokens?: Int32Array;
  onProgress?: ProgressFn;
}

export interface UpcycleResult {
  out: string;
  steps: number;
  /** Mean training loss (ce + auxCoef·aux) over the last 10% of steps. */
  finalLoss: number;
  /** Mean cross-entropy alone over the last 10% of the steps this process ran. */
  finalCe: number;
  losses: number[];
  seconds: number;
  tokensPerSecond: number;
  resumedFrom: number;
  /** Parameters the MoE adds over the dense model, counted from its tensors. */
  addedParams: number;
  /** The same by the formula (upcycle-model.ts addedParamsFormula), and the formula written out. */
  addedParamsFormula: number;
  formula: string;
  /** What plain upcycling (E full copies of the FFN) would add. */
  fullUpcycleParams: number;
  denseParams: number;
  /** Relative error of the step-0 MoE's logits against the dense model's. */
  step0RelError: number;
  dtype: StoreDType;
  manifest: Manifest;
  /** The trained model (for callers that continue with it). */
  model: UpcycledModel;
}

function positiveInt(name: string, v: number | undefined, min = 1): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new MoepressError(`${name} must be an integer >= ${min}, got ${v}`);
}

/** The delta form the options ask for; errors name the offending option. */
function deltaForm(o: UpcycleOptions): DeltaForm {
  if (o.delta === 'lowrank') {
    if (o.density !== undefined) throw new MoepressError('--density applies to --delta sparse; the low-rank form takes --rank');
    if (o.rank === undefined) throw new MoepressError('--delta lowrank needs --rank r (the rank of each expert delta A_e B_e)');
    if (!(Number.isInteger(o.rank) && o.rank > 0)) throw new MoepressError(`--rank must be a positive integer, got ${o.rank}`);
    return { kind: 'lowrank', rank: o.rank };
  }
  if (o.delta === 'sparse') {
    if (o.rank !== undefined) throw new MoepressError('--rank applies to --delta lowrank; the sparse form takes --density');
    if (o.density === undefined) throw new MoepressError('--delta sparse needs --density d in (0, 1] (the fraction of each delta matrix that trains)');
    if (!(o.density > 0 && o.density <= 1)) throw new MoepressError(`--density must be in (0, 1], got ${o.density}`);
    return { kind: 'sparse', density: o.density };
  }
  throw new MoepressError(`--delta must be lowrank or sparse, got '${String(o.delta)}'`);
}

function checkOptions(o: UpcycleOptions): void {
  positiveInt('--experts', o.experts, 2);
  if (!Number.isInteger(o.topK) || o.topK < 1 || o.topK > o.experts) throw new MoepressError(`--top-k must be an integer in [1, ${o.experts}] (--experts), got ${o.topK}`);
  checkTrainingOptions(o);
}

/** The options an upcycling run shares with its dense control (upcycle-control.ts). */
export type TrainingOptions = Omit<UpcycleOptions, 'experts' | 'topK' | 'delta' | 'rank' | 'density' | 'dtype'>;

export function checkTrainingOptions(o: TrainingOptions): void {
  positiveInt('--steps', o.steps);
  positiveInt('--batch', o.batch);
  positiveInt('--seq', o.seqLen);
  positiveInt('--accumulate', o.accumulate);
  positiveInt('--checkpoint-every', o.checkpointEvery, 0);
  positiveInt('--warmup', o.warmup, 0);
  if (o.warmup !== undefined && o.warmup >= o.steps) throw new MoepressError(`--warmup ${o.warmup} must be below --steps ${o.steps}`);
  if (o.seed !== undefined && !(Number.isInteger(o.seed) && o.seed >= 0)) throw new MoepressError(`--seed must be a non-negative integer, got ${o.seed}`);
  if (o.lr !== undefined && !(o.lr > 0 && Number.isFinite(o.lr))) throw new MoepressError(`--lr must be a positive number, got ${o.lr}`);
  if (o.auxCoef !== undefined && !(o.auxCoef >= 0 && Number.isFinite(o.auxCoef))) throw new MoepressError(`--aux-coef must be >= 0, got ${o.auxCoef}`);
  if (!o.tokens && (!existsSync(o.text) || !statSync(o.text).isFile())) throw new MoepressError('text file not found', { file: o.text });
}

/** Checks the shapes the delta form needs against the dense model. */
function checkDelta(form: DeltaForm, cfg: ModelConfig, dir: string): void {
  const I = cfg.denseIntermediate;
  const H = cfg.hidden;
  if (form.kind === 'lowrank' && form.rank >= Math.min(I, H)) {
    throw new MoepressError(`--rank ${form.rank} must be below min(I, H) = ${Math.min(I, H)}: a full-rank delta is not a low-rank one`, { file: dir });
  }
  if (form.kind === 'sparse' && sparseCount(form.density, I, H) === 0) {
    throw new MoepressError(`--density ${form.density} keeps no entry of a [${I}, ${H}] matrix`, { file: dir });
  }
}

/** The most common dtype of the dense checkpoint's tensors (what the upcycled model is stored in). */
function checkpointDType(m: LoadedModel): StoreDType {
  const count = new Map<string, number>();
  for (const n of m.checkpoint.names()) {
    const d = m.checkpoint.info(n).dtype;
    count.set(d, (count.get(d) ?? 0) + 1);
  }
  const top = [...count.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  return top === 'F32' || top === 'F16' ? top : 'BF16';
}

/** Relative error (Frobenius) of the MoE's logits against the dense model's on `ids` [1, S]. */
export async function step0Error(u: UpcycledModel, dense: LoadedModel, ids: Int32Array): Promise<number> {
  const S = ids.length;
  const ref = await new Transformer(dense.config, dense.weights).logits(ids, 1, S);
  const { logits } = await u.model.forward(new Tape({ grad: false }), ids, 1, S);
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (logits.data[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** float32 forward of one MoE vs the dense engine: GEMM order differs, nothing else may. */
const STEP0_TOLERANCE = 1e-5;

/** The dense model, checked: a family upcycle reads, and shapes the delta form fits (when one is given). */
export function openDense(denseDir: string, form: DeltaForm | null, seqLen: number): LoadedModel {
  const file = join(denseDir, 'config.json');
  // refuse an MoE or an unsupported family from its config, before reading any weights
  const src = openModel(denseDir);
  src.checkpoint.close();
  const why = notUpcyclable(src.config);
  if (why) throw new MoepressError(`cannot upcycle: ${why}`, { file });
  if (form) checkDelta(form, src.config, denseDir);
  if (seqLen > src.config.maxPositions) throw new MoepressError(`--seq ${seqLen} exceeds max_position_embeddings ${src.config.maxPositions}`, { file });
  const dense = loadModel(denseDir);
  dense.checkpoint.close();
  return dense;
}

/** The training text's tokens, checked against the vocabulary. */
export async function readTokens(o: Pick<UpcycleOptions, 'tokens' | 'tokenizer' | 'text' | 'onProgress'>, denseDir: string, V: number): Promise<Int32Array> {
  if (o.tokens) return o.tokens;
  const tokenizer = o.tokenizer ?? loadTokenizer(denseDir);
  o.onProgress?.({ task: 'tokenize', done: 0, total: 1, unit: 'files', detail: o.text });
  const tokens = await loadTokens(o.text, (t) => tokenizer.encode(t));
  for (const id of tokens) if (id >= V) throw new MoepressError(`the tokenizer produced id ${id}, but the model's vocabulary has ${V} entries`, { file: o.text });
  o.onProgress?.({ task: 'tokenize', done: 1, total: 1, unit: 'files', detail: `${tokens.length} tokens` });
  return tokens;
}

/** The run's training settings with UPCYCLE_DEFAULTS filled in (shared by upcycle and its dense control). */
export function trainingSettings(o: Omit<TrainingOptions, 'auxCoef'>): { lr: number; batch: number; seqLen: number; accumulate: number; seed: number; checkpointEvery: number } {
  return {
    lr: o.lr ?? UPCYCLE_DEFAULTS.lr,
    batch: o.batch ?? UPCYCLE_DEFAULTS.batch,
    seqLen: o.seqLen ?? UPCYCLE_DEFAULTS.seqLen,
    accumulate: o.accumulate ?? UPCYCLE_DEFAULTS.accumulate,
    seed: o.seed ?? UPCYCLE_DEFAULTS.seed,
    checkpointEvery: o.checkpointEvery ?? UPCYCLE_DEFAULTS.checkpointEvery,
  };
}

/** Mean over the last 10% of optimizer steps of per-micro-batch values grouped `accumulate` at a time. */
export function tailMean(values: number[], accumulate: number): number {
  const perStep: number[] = [];
  for (let i = 0; i + accumulate <= values.length; i += accumulate) perStep.push(values.slice(i, i + accumulate).reduce((a, b) => a + b, 0) / accumulate);
  const tail = perStep.slice(-Math.max(1, Math.floor(perStep.length / 10)));
  return tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : NaN;
}

export async function upcycle(denseDir: string, o: UpcycleOptions): Promise<UpcycleResult> {
  const form = deltaForm(o);
  checkOptions(o);
  const opt = { ...trainingSettings(o), auxCoef: o.auxCoef ?? UPCYCLE_DEFAULTS.auxCoef };
  const dense = openDense(denseDir, form, opt.seqLen);
  const { json: configJson, config } = mixtralConfigFor(dense.rawConfig, dense.config, { experts: o.experts, topK: o.topK, auxCoef: opt.auxCoef }, denseDir);
  const dtype = o.dtype ?? checkpointDType(dense);
  const paths = outputPaths(o);
  const { out, partial, stateDir } = paths;
  const tokens = await readTokens(o, denseDir, dense.config.vocabSize);
  const sampler = new WindowSampler(tokens, opt.seqLen, opt.seed, o.text);

  const spec: UpcycleSpec = { experts: o.experts, topK: o.topK, delta: form, seed: opt.seed };
  const u = new UpcycledModel(dense.config, config, dense.weights, spec);
  const step0RelError = await step0Error(u, dense, tokens.subarray(0, Math.min(64, opt.seqLen, tokens.length)));
  if (!(step0RelError < STEP0_TOLERANCE)) throw new Error(`upcycle: the step-0 MoE differs from the dense model (relative error ${step0RelError.toExponential(2)}); this is a bug`);
  const formula = addedParamsFormula(dense.config, spec);
  const addedParams = u.addedParams();
  if (addedParams !== formula.value) throw new Error(`upcycle: ${addedParams} parameters added, the formula says ${formula.value}; this is a bug`);

  const runKey = JSON.stringify({
    dense: resolve(denseDir), text: resolve(o.text), experts: o.experts, topK: o.topK, delta: form, steps: o.steps,
    lr: opt.lr, warmup: o.warmup ?? null, batch: opt.batch, seqLen: opt.seqLen, accumulate: opt.accumulate, seed: opt.seed, auxCoef: opt.auxCoef,
  });
  const ce: number[] = []; // per micro-batch of this process (the loop's losses include auxCoef·aux)
  mkdirSync(partial, { recursive: true }); // from here on an interruption leaves a run to --resume
  const r = await trainLoop(u.model.parameters(), sampler, async (tape, batch) => {
    const l = await u.model.loss(tape, batch, { auxCoef: opt.auxCoef });
    ce.push(l.ce.item());
    return l.loss;
  }, {
    steps: o.steps, batch: opt.batch, accumulate: opt.accumulate, lr: opt.lr, warmup: o.warmup,
    checkpointEvery: opt.checkpointEvery, checkpointDir: stateDir, resume: o.resume, runKey, onProgress: o.onProgress,
  });

  o.onProgress?.({ task: 'write', done: 0, total: 1, unit: 'checkpoints', detail: out });
  const options = {
    dense: resolve(denseDir), text: resolve(o.text), experts: o.experts, topK: o.topK, delta: form.kind,
    ...(form.kind === 'lowrank' ? { rank: form.rank } : { density: form.density }),
    steps: o.steps, lr: opt.lr, warmup: o.warmup ?? null, batch: opt.batch, seqLen: opt.seqLen, accumulate: opt.accumulate,
    auxCoef: opt.auxCoef, dtype, addedParams, addedParamsFormula: formula.text, finalLoss: r.finalLoss,
  };
  const manifest = writeUpcycled(u, partial, { configJson, denseDir, dtype, seed: opt.seed, options });
  publishOutput(paths);
  o.onProgress?.({ task: 'write', done: 1, total: 1, unit: 'checkpoints', detail: out });

  return {
    out,
    steps: r.steps,
    finalLoss: r.finalLoss,
    finalCe: tailMean(ce, opt.accumulate),
    losses: r.losses,
    seconds: r.seconds,
    tokensPerSecond: r.tokensPerSecond,
    resumedFrom: r.resumedFrom,
    addedParams,
    addedParamsFormula: formula.value,
    formula: formula.text,
    fullUpcycleParams: formula.full,
    denseParams: u.denseParams,
    step0RelError,
    dtype,
    manifest,
    model: u,
  };
}

/**
 * Perplexity with one layer in memory at a time (STYLE rule 10, llm-compressor's sequential
 * onloading): the hidden states of every evaluated window, x: [W·S, H] float32, stay resident;
 * the weights go through them layer by layer:
 *
 *   embed (read, used, dropped) -> for each layer: its attention / norm / router / shared weights
 *   (read, run over every batch of windows, dropped), its routed experts read one at a time by
 *   position (streamed-bank.ts, expert-outer over the batches), or for a moepress compressed layer
 *   its stored parts (experts-LLLLL.safetensors) -> final norm + lm_head (read, scored, dropped).
 *
 * The arithmetic is the in-memory engine's (transformer.ts, moe-block.ts) on the same batches of
 * windows, in an order that adds every token's terms identically, so the result equals
 * perplexity() over a loaded model (test/stream-eval.test.ts).
 */
import { isCompressedDir, readManifest } from '../compress/format.js';
import { expertBuffers, isExpertWeight, openExpertSource } from '../compress/experts-io.js';
import type { ExpertWeights } from '../compress/barycenter.js';
import type { CanonicalEntry } from '../models/canonical.js';
import { ropeTables, type RopeTables } from '../tensor/rope.js';
import { hasCompressedExperts, readCompressedExperts, withCompressedExperts, type CompressedExpertsLayer } from './compressed-experts.js';
import { expertActivation, type ExpertBank } from './experts.js';
import { compressedBank, compressedLayers, loadEntry, modelEntries, openModel, type ModelSource } from './load-model.js';
import { addExpertOutput, addShared, expertTokens, gatherRows, planMoe, type MoePlan } from './moe-block.js';
import { perplexityResult, planWindows, scoreWindows, windowTokens, type PerplexityOptions, type PerplexityResult } from './perplexity.js';
import { StreamedExpertBank } from './streamed-bank.js';
import { attentionResidual, embedTokens, ffnResidual, headLogits, normRows, type RunOptions } from './transformer.js';
import { Weights } from './weights.js';
import type { LayerRecord } from '../compress/parts.js';

export interface StreamedPerplexityResult extends PerplexityResult {
  /** Most routed-expert bytes resident at once (one layer's bank: one expert, or a compressed layer). */
  expertBytes: number;
  /** Routed experts read from the checkpoint (each once per layer; compressed layers not counted). */
  expertReads: number;
}

/** One expert's float32 matrices, allocated at the first MoE layer and reused by every later one (no garbage per layer). */
interface SharedBuffers {
  expert?: ExpertWeights;
}

/** Windows w0 .. w0+B−1 of the evaluation, and their rows of x. */
export interface Batch {
  w0: number;
  B: number;
}

export function loadWeights(src: ModelSource, entries: CanonicalEntry[]): Weights {
  const w = new Weights(new Map());
  for (const e of entries) w.set(e.name, loadEntry(src, e));
  return w;
}

/** Layer l's routed experts: read one at a time (hub layer), or prepared from its compressed parts; null for a dense-FFN layer. */
function layerBank(src: ModelSource, l: number, w: Weights, rec: LayerRecord | undefined, ce: CompressedExpertsLayer | null | undefined, shared: SharedBuffers): { bank: ExpertBank; streamed: StreamedExpertBank | null } | null {
  const cfg = src.config;
  if (cfg.layers[l].ffn !== 'moe' || !cfg.moe) return null;
  const p = `layers.${l}.moe.experts`;
  let streamed: StreamedExpertBank | null = null;
  if (!rec) {
    const source = openExpertSource(src, l);
    shared.expert ??= expertBuffers(source);
    streamed = new StreamedExpertBank(source, { gate: w.opt(`${p}.gate_bias`), up: w.opt(`${p}.up_bias`), down: w.opt(`${p}.down_bias`) }, expertActivation(cfg.moe), shared.expert);
  }
  const bank = streamed ?? compressedBank(src, rec!);
  return { bank: ce ? withCompressedExperts(bank, ce) : bank, streamed };
}

/**
 * x [W·S, H] += the MoE half of layer l for every batch, expert-outer: route every batch, then
 * run each expert on its tokens of every batch, then the shared expert; per token the terms are
 * added in moeBlock's order.
 */
export async function moeResidualAll(src: ModelSource, w: Weights, l: number, x: Float32Array, batches: Batch[], S: number, bank: ExpertBank, opts: RunOptions): Promise<void> {
  const cfg = src.config;
  const H = cfg.hidden;
  const rows = (b: Batch) => x.subarray(b.w0 * S * H, (b.w0 + b.B) * S * H);
  const hs: Float32Array[] = [];
  const plans: MoePlan[] = [];
  for (const b of batches) {
    const h = normRows(cfg, w, `layers.${l}.ffn_norm`, rows(b), b.B * S);
    hs.push(h);
    plans.push(await planMoe(cfg, w, l, h, b.B * S, bank.compressedExperts, opts.topK, opts.observe));
  }
  const outs = batches.map((b) => new Float32Array(b.B * S * H));
  for (let e = 0; e < cfg.moe!.experts; e++) {
    for (let i = 0; i < batches.length; i++) {
      const sel = expertTokens(cfg, plans[i], e);
      if (!sel) continue;
      const y = await bank.run(e, gatherRows(hs[i], sel.tokens, H), sel.tokens.length, sel.scaling);
      addExpertOutput(outs[i], y, sel.tokens, sel.gates, H);
    }
  }
  for (let i = 0; i < batches.length; i++) {
    await addShared(cfg, w, l, hs[i], batches[i].B * S, outs[i]);
    const xb = rows(batches[i]);
    const f = outs[i];
    for (let j = 0; j < xb.length; j++) xb[j] += f[j];
  }
}

/** One layer over every batch: attention, then the FFN half; the layer's weights are dropped on return. */
async function runLayer(src: ModelSource, l: number, entries: CanonicalEntry[], x: Float32Array, batches: Batch[], S: number, rope: RopeTables, rec: LayerRecord | undefined, ce: CompressedExpertsLayer | null | undefined, shared: SharedBuffers, opts: RunOptions): Promise<{ expertBytes: number; reads: number }> {
  const cfg = src.config;
  const H = cfg.hidden;
  const w = loadWeights(src, entries);
  const rows = (b: Batch) => x.subarray(b.w0 * S * H, (b.w0 + b.B) * S * H);
  for (const b of batches) await attentionResidual(cfg, w, l, rows(b), b.B, S, rope, null);
  const lb = layerBank(src, l, w, rec, ce, shared);
  if (!lb) {
    for (const b of batches) await ffnResidual(cfg, w, l, rows(b), b.B * S, null, opts);
    return { expertBytes: 0, reads: 0 };
  }
  try {
    await moeResidualAll(src, w, l, x, batches, S, lb.bank, opts);
  } finally {
    lb.streamed?.close();
  }
  return { expertBytes: lb.bank.residentBytes, reads: lb.streamed?.reads ?? 0 };
}

/**
 * Perplexity of the model directory `dir` (hub checkpoint or moepress compressed directory) over
 * `ids`, with the windows and batches of perplexity(), one layer of weights in memory at a time.
 */
export async function streamedPerplexity(dir: string, ids: ArrayLike<number>, opts: PerplexityOptions = {}): Promise<StreamedPerplexityResult> {
  const src = openModel(dir);
  try {
    return await evaluate(src, ids, opts);
  } finally {
    src.checkpoint.close();
  }
}

async function evaluate(src: ModelSource, ids: ArrayLike<number>, opts: PerplexityOptions): Promise<StreamedPerplexityResult> {
  const dir = src.dir;
  const cfg = src.config;
  const H = cfg.hidden;
  const compressed = compressedLayers(isCompressedDir(dir) ? readManifest(dir) : null);
  const ce = hasCompressedExperts(dir) ? readCompressedExperts(dir, cfg) : null;
  const { S, W, batch, each } = planWindows(ids, opts);
  const batches: Batch[] = [];
  for (let w0 = 0; w0 < W; w0 += batch) batches.push({ w0, B: Math.min(batch, W - w0) });
  // Routed experts of hub layers are read by ExpertSource, one at a time; everything else per layer.
  const entries = modelEntries(src, compressed).filter((e) => !isExpertWeight(e.name));
  const global = entries.filter((e) => e.layer === null);
  const steps = cfg.numLayers + 2;
  const progress = (done: number, detail: string) => opts.onProgress?.({ task: 'eval', done, total: steps, unit: 'layers', detail });
  const start = performance.now();

  const x = new Float32Array(W * S * H); // [W·S, H], the residual stream of every window
  {
    const embed = loadWeights(src, global.filter((e) => e.name === 'embed')).get('embed').data;
    for (const b of batches) x.set(embedTokens(cfg, embed, windowTokens(ids, b.w0, b.B, S)), b.w0 * S * H);
  }
  progress(1, 'embed');

  const rope = ropeTables(cfg.rope, cfg.maxPositions);
  let expertBytes = 0;
  let expertReads = 0;
  const shared: SharedBuffers = {};
  for (let l = 0; l < cfg.numLayers; l++) {
    const r = await runLayer(src, l, entries.filter((e) => e.layer === l), x, batches, S, rope, compressed.get(l), ce?.layers[l], shared, opts);
    expertBytes = Math.max(expertBytes, r.expertBytes);
    expertReads += r.reads;
    progress(l + 2, `layer ${l}`);
  }

  // Final norm and head; a tied head reads the embedding again.
  const tied = !global.some((e) => e.name === 'lm_head');
  const head = loadWeights(src, global.filter((e) => e.name !== 'embed' || tied));
  let nllSum = 0;
  let scored = 0;
  for (const b of batches) {
    const T = b.B * S;
    const hidden = normRows(cfg, head, 'norm', x.subarray(b.w0 * S * H, (b.w0 + b.B) * S * H), T);
    const logits = await headLogits(cfg, head, hidden, T);
    const r = scoreWindows(logits, cfg.vocabSize, windowTokens(ids, b.w0, b.B, S), b.B, S, each?.subarray(b.w0 * (S - 1)));
    nllSum += r.nll;
    scored += r.scored;
  }
  progress(steps, 'head');
  return { ...perplexityResult(nllSum, scored, W, S, start, each), expertBytes, expertReads };
}

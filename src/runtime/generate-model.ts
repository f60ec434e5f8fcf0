/**
 * The model generate() runs on, in memory or with its routed experts offloaded: the memory
 * estimate and the mode chosen from it (offload-estimate.ts) are emitted before anything is
 * loaded, so a caller can show them first (the CLI prints them to stderr).
 */
import type { ProgressFn } from '../progress.js';
import type { ExpertCache } from './expert-cache.js';
import { loadModel } from './load-model.js';
import { availableMemory, chooseGenerateMode, estimateGenerate, type GenerateEstimate, type GeneratePlan } from './offload-estimate.js';
import { loadOffloaded } from './offload-model.js';
import { Transformer } from './transformer.js';

export interface GenerateModel {
  engine: Transformer;
  /** The expert cache when offloaded, null in memory. */
  cache: ExpertCache | null;
  close(): void;
}

/** The engine in the mode a plan chose: loadModel, or loadOffloaded with the plan's cache. */
export function openGenerateModel(dir: string, plan: Pick<GeneratePlan, 'mode' | 'cacheBytes'>, onProgress?: ProgressFn): GenerateModel {
  if (plan.mode === 'offloaded') {
    if (plan.cacheBytes === null) throw new Error('openGenerateModel: an offloaded plan needs cacheBytes');
    const m = loadOffloaded(dir, { cacheBytes: plan.cacheBytes, onProgress });
    return { engine: new Transformer(m.config, m.weights, m.banks), cache: m.cache, close: m.close };
  }
  const m = loadModel(dir, { onProgress });
  return { engine: new Transformer(m.config, m.weights, m.banks), cache: null, close: () => m.checkpoint.close() };
}

export interface OpenForGenerateOptions {
  promptTokens: number;
  maxTokens: number;
  /** Offload into a cache of this many bytes; absent: in memory when the model fits, else offloaded. */
  expertCacheBytes?: number;
  /** Memory the run may take (default availableMemory()). */
  availableBytes?: number;
  /** Called with the estimate and the plan before the weights are loaded. */
  onPlan?: (estimate: GenerateEstimate, plan: GeneratePlan) => void;
  onProgress?: ProgressFn;
}

export function openForGenerate(dir: string, opts: OpenForGenerateOptions): GenerateModel & { estimate: GenerateEstimate; plan: GeneratePlan } {
  const estimate = estimateGenerate(dir, { promptTokens: opts.promptTokens, maxTokens: opts.maxTokens });
  const plan = chooseGenerateMode(estimate, { availableBytes: opts.availableBytes ?? availableMemory(), expertCacheBytes: opts.expertCacheBytes });
  opts.onPlan?.(estimate, plan);
  return { ...openGenerateModel(dir, plan, opts.onProgress), estimate, plan };
}

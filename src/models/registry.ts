/**
 * model_type -> architecture family, and the one entry point loaders use to read config.json.
 *
 * Loader recipe (hub -> canonical):
 *   const cfg = parseModelConfig(json, configPath, (n) => index.has(n));   // sets cfg.expertLayout
 *   const arch = architectureFor(cfg.modelType, configPath);
 *   for (const e of arch.canonicalEntries(cfg, (n) => index.has(n))) put(e.name, e.load(readHub));
 * Writer (canonical -> hub): arch.hubEntries(cfg, (n) => canonical.has(n)) with the same cfg, so the
 * checkpoint comes back in the layout it was read in (per-expert, fused v5 or GPT-OSS).
 */
import { MoepressError } from '../io/errors.js';
import type { Architecture, ModelConfig } from './canonical.js';
import { deepseek } from './deepseek.js';
import { dense } from './dense.js';
import { gptOss } from './gpt-oss.js';
import { detectExpertLayout } from './hub-layout.js';
import { mixtral } from './mixtral.js';
import { olmoe } from './olmoe.js';
import { phimoe } from './phimoe.js';
import { qwen2Moe } from './qwen2-moe.js';
import { qwen3Moe } from './qwen3-moe.js';

export { detectExpertLayout } from './hub-layout.js';
export { hubCoverage, type Coverage } from './mapping.js';

export const ARCHITECTURES: readonly Architecture[] = [mixtral, olmoe, qwen2Moe, qwen3Moe, deepseek, phimoe, gptOss, dense];

/** Every model_type moepress reads, sorted. */
export function supportedModelTypes(): string[] {
  return ARCHITECTURES.flatMap((a) => a.modelTypes).sort();
}

/** The architecture for config.json's model_type; file is the config path, for the error. */
export function architectureFor(modelType: string, file: string): Architecture {
  const arch = ARCHITECTURES.find((a) => a.modelTypes.includes(modelType));
  if (!arch) {
    throw new MoepressError(`unsupported model_type '${modelType}'; supported: ${supportedModelTypes().join(', ')}`, { file });
  }
  return arch;
}

/**
 * Parses config.json into the canonical ModelConfig with the family's defaults. Given has() over the
 * checkpoint's tensor names, also records the expert layout the checkpoint uses (cfg.expertLayout).
 */
export function parseModelConfig(json: unknown, file: string, has?: (hubName: string) => boolean): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new MoepressError('expected a JSON object at the top level', { file });
  }
  const obj = json as Record<string, unknown>;
  const mt = obj.model_type;
  if (typeof mt !== 'string') {
    throw new MoepressError(`field 'model_type' ${mt === undefined ? 'is missing' : `is ${JSON.stringify(mt)}`}, expected a string such as 'mixtral'`, { file });
  }
  const arch = architectureFor(mt, file);
  // Pre-quantized checkpoints (FP8 DeepSeek-V3, MXFP4 GPT-OSS, GPTQ/AWQ/bitsandbytes) store packed
  // integers and scales instead of the weights the mappings expect.
  const q = obj.quantization_config;
  if (q !== undefined && q !== null) {
    const method = typeof q === 'object' && typeof (q as Record<string, unknown>).quant_method === 'string' ? (q as Record<string, unknown>).quant_method : 'unknown';
    throw new MoepressError(`checkpoint is quantized (quantization_config.quant_method '${method}'); moepress reads bf16/f16/f32 weights, so dequantize it first`, { file });
  }
  const cfg = arch.parseConfig(obj, file);
  return has ? { ...cfg, expertLayout: detectExpertLayout(cfg, has) } : cfg;
}

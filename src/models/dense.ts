/**
 * Dense decoders (model_type 'llama', 'mistral', 'qwen2'): the base models MoEs are upcycled from
 * (DeRS `--base-from`), checked against transformers configuration_{llama,mistral,qwen2}.py.
 * No MoE: every layer is a SwiGLU MLP of intermediate_size (canonical layers.l.mlp.*).
 *
 *   llama   : q/k/v/o biases iff attention_bias; mlp_bias (MLP biases) is not supported; no window.
 *   mistral : no biases; sliding_window (default 4096, null = none) on every layer.
 *   qwen2   : q/k/v biases always (o none); window only with use_sliding_window, on the layers
 *             layer_types marks sliding (default: layers >= max_window_layers).
 */
import type { Architecture, AttentionConfig, ModelConfig } from './canonical.js';
import { baseConfig, checkModelType, readBase, readRope, requireSilu, standardAttention, windowsFromLayerTypes, type BaseDefaults } from './config-common.js';
import { ConfigReader } from './config-reader.js';
import { layoutMapping, QWEN_NAMES } from './hub-layout.js';

/** transformers defaults per dense model_type. */
export const DENSE_DEFAULTS = {
  llama: { ropeTheta: 10000, normEps: 1e-6, maxPositions: 2048, kvHeads: null, bos: 1, eos: 2 } satisfies BaseDefaults,
  mistral: { ropeTheta: 10000, normEps: 1e-6, maxPositions: 4096 * 32, kvHeads: 8, bos: 1, eos: 2 } satisfies BaseDefaults,
  qwen2: { ropeTheta: 10000, normEps: 1e-6, maxPositions: 32768, kvHeads: 32, bos: null, eos: null } satisfies BaseDefaults,
  mistralSlidingWindow: 4096,
  qwen2SlidingWindow: 4096,
  qwen2MaxWindowLayers: 28,
};

const TYPES = ['llama', 'mistral', 'qwen2'] as const;

export function parseDenseConfig(json: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(json, file);
  const modelType = checkModelType(r, TYPES) as (typeof TYPES)[number];
  requireSilu(r);
  const b = readBase(r, DENSE_DEFAULTS[modelType]);
  const L = b.numLayers;
  let windows: (number | null)[];
  let attention: AttentionConfig;
  if (modelType === 'llama') {
    if (r.bool('mlp_bias', false)) r.fail('mlp_bias', 'false (MLP biases are not supported)');
    const bias = r.bool('attention_bias', false);
    attention = standardAttention(b, { qkvBias: bias, oBias: bias });
    windows = Array.from({ length: L }, () => null);
  } else if (modelType === 'mistral') {
    attention = standardAttention(b, { qkvBias: false, oBias: false });
    const w = r.intOrNull('sliding_window', DENSE_DEFAULTS.mistralSlidingWindow);
    windows = Array.from({ length: L }, () => w);
  } else {
    attention = standardAttention(b, { qkvBias: true, oBias: false });
    const w = r.bool('use_sliding_window', false) ? r.intOrNull('sliding_window', DENSE_DEFAULTS.qwen2SlidingWindow) : null;
    const maxWindow = r.int('max_window_layers', DENSE_DEFAULTS.qwen2MaxWindowLayers, 0);
    const types = r.strList('layer_types') ?? Array.from({ length: L }, (_, i) => (w !== null && i >= maxWindow ? 'sliding_attention' : 'full_attention'));
    windows = windowsFromLayerTypes(r, types, L, w);
  }
  return {
    ...baseConfig(modelType, 'dense', b),
    norm: 'rms',
    attention,
    rope: readRope(r, { defaultTheta: DENSE_DEFAULTS[modelType].ropeTheta, headDim: b.headDim, style: 'half', maxPositions: b.maxPositions }),
    layers: windows.map((w) => ({ ffn: 'dense' as const, slidingWindow: w })),
    moe: null,
    denseIntermediate: r.int('intermediate_size'),
  };
}

export const dense: Architecture = {
  family: 'dense',
  modelTypes: TYPES,
  parseConfig: parseDenseConfig,
  ...layoutMapping(QWEN_NAMES),
};

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoepressError } from '../src/io/errors.js';
import type { ModelConfig } from '../src/models/canonical.js';
import { architectureFor, hubCoverage, parseModelConfig, supportedModelTypes } from '../src/models/registry.js';

const FIXTURES = path.resolve(process.cwd(), '../shared/fixtures');

function fixture(name: string): { cfg: ModelConfig; names: string[]; file: string } {
  const file = path.join(FIXTURES, name, 'config.json');
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  const index = JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'model.safetensors.index.json'), 'utf8'));
  const names = Object.keys(index.weight_map);
  const set = new Set(names);
  return { cfg: parseModelConfig(json, file, (n) => set.has(n)), names, file };
}

/** canonicalEntries over the index names read every hub tensor, each exactly once. */
function assertCoversExactlyOnce(cfg: ModelConfig, names: string[]): void {
  const set = new Set(names);
  const entries = architectureFor(cfg.modelType, 'config.json').canonicalEntries(cfg, (n) => set.has(n));
  assert.deepEqual(hubCoverage(entries, names), { missing: [], unused: [], shared: [] });
  const read = entries.flatMap((e) => e.hub);
  assert.equal(read.length, names.length);
}

test('mixtral fixture: config fields and name coverage', () => {
  const { cfg, names } = fixture('mixtral');
  assert.equal(cfg.family, 'mixtral');
  assert.equal(cfg.moe?.experts, 8);
  assert.equal(cfg.moe?.routing.topK, 2);
  assert.equal(cfg.moe?.intermediate, 512);
  assert.equal(cfg.moe?.routing.normTopK, true);
  assert.equal(cfg.moe?.routing.kind, 'softmax-topk');
  assert.equal(cfg.attention.kvHeads, 2);
  assert.equal(cfg.attention.headDim, 64);
  assert.equal(cfg.attention.scale, 1 / 8);
  assert.equal(cfg.rope.theta, 10000); // from rope_parameters (transformers v5), not the 1e6 class default
  assert.deepEqual(cfg.rope.scaling, { type: 'default' });
  assert.equal(cfg.rope.dim, 64);
  assert.equal(cfg.normEps, 1e-5);
  assert.equal(cfg.expertLayout, 'per-expert');
  assert.ok(cfg.layers.every((l) => l.ffn === 'moe' && l.slidingWindow === null));
  assert.equal(cfg.tieEmbeddings, false);
  assertCoversExactlyOnce(cfg, names);
});

test('olmoe fixture: config fields and name coverage', () => {
  const { cfg, names } = fixture('olmoe');
  assert.equal(cfg.family, 'olmoe');
  assert.equal(cfg.moe?.experts, 16);
  assert.equal(cfg.moe?.routing.topK, 4);
  assert.equal(cfg.moe?.intermediate, 192);
  assert.equal(cfg.attention.qkNorm, 'full');
  assert.equal(cfg.moe?.routing.normTopK, false);
  assert.equal(cfg.attention.kvHeads, 4);
  assert.equal(cfg.attention.clipQkv, null);
  assertCoversExactlyOnce(cfg, names);
});

test('dense (mistral) fixture: config fields and name coverage', () => {
  const { cfg, names } = fixture('dense');
  assert.equal(cfg.family, 'dense');
  assert.equal(cfg.moe, null);
  assert.equal(cfg.denseIntermediate, 512);
  assert.equal(cfg.attention.headDim, 64);
  assert.equal(cfg.attention.kvHeads, 2);
  assert.equal(cfg.normEps, 1e-6);
  assert.ok(cfg.layers.every((l) => l.ffn === 'dense' && l.slidingWindow === 4096));
  assertCoversExactlyOnce(cfg, names);
});

// ---- Config edge cases -------------------------------------------------------------------------

const tiny = { vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 4, num_attention_heads: 4 };
const parse = (json: Record<string, unknown>) => parseModelConfig(json, 'tiny/config.json');

test('rope_theta at top level, in rope_parameters, or in rope_scaling', () => {
  const mix = { ...tiny, model_type: 'mixtral', num_key_value_heads: 2 };
  assert.equal(parse({ ...mix, rope_theta: 5e5 }).rope.theta, 5e5);
  assert.equal(parse(mix).rope.theta, 1e6); // MixtralConfig default_theta
  assert.equal(parse({ ...tiny, model_type: 'olmoe' }).rope.theta, 1e4);
  assert.equal(parse({ ...mix, rope_parameters: { rope_type: 'default', rope_theta: 7e4 } }).rope.theta, 7e4);
  const lin = parse({ ...tiny, model_type: 'llama', rope_theta: 2e4, rope_scaling: { type: 'linear', factor: 4 } }).rope;
  assert.equal(lin.theta, 2e4);
  assert.deepEqual(lin.scaling, { type: 'linear', factor: 4 });
  const l3 = parse({ ...tiny, model_type: 'llama', rope_parameters: { rope_type: 'llama3', rope_theta: 5e5, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }).rope;
  assert.deepEqual(l3.scaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
  assert.equal(parse({ ...tiny, model_type: 'llama', partial_rotary_factor: 0.5 }).rope.dim, 2);
});

test('head_dim null -> hidden/heads; num_key_value_heads missing -> the class default, null -> heads', () => {
  assert.equal(parse({ ...tiny, model_type: 'mixtral', head_dim: null, num_key_value_heads: 2 }).attention.headDim, 4);
  assert.equal(parse({ ...tiny, model_type: 'olmoe' }).attention.kvHeads, 4); // OlmoeConfig default None -> heads
  assert.equal(parse({ ...tiny, model_type: 'llama' }).attention.kvHeads, 4);
  assert.equal(parse({ ...tiny, model_type: 'mixtral', num_key_value_heads: null }).attention.kvHeads, 4);
  assert.equal(parse({ ...tiny, model_type: 'gpt_oss', num_key_value_heads: 2 }).attention.headDim, 64); // GptOssConfig head_dim 64
  assert.equal(parse({ ...tiny, model_type: 'gpt_oss', num_key_value_heads: 2, head_dim: null }).attention.headDim, 4);
});

test('tie_word_embeddings and eos lists', () => {
  const cfg = parse({ ...tiny, model_type: 'qwen2', tie_word_embeddings: true, num_key_value_heads: 2, eos_token_id: [5, 7], bos_token_id: null });
  assert.equal(cfg.tieEmbeddings, true);
  assert.equal(cfg.eosTokenId, 5);
  assert.deepEqual(cfg.eosTokenIds, [5, 7]);
  assert.equal(cfg.bosTokenId, null);
  const entries = architectureFor('qwen2', 'x').canonicalEntries(cfg, () => false);
  assert.ok(!entries.some((e) => e.name === 'lm_head'));
  assert.ok(entries.some((e) => e.name === 'layers.0.attn.q.bias'));
});

test('qwen2_moe: decoder_sparse_step and mlp_only_layers make dense layers of intermediate_size', () => {
  const cfg = parse({ ...tiny, model_type: 'qwen2_moe', num_key_value_heads: 4, num_experts: 8, moe_intermediate_size: 6, shared_expert_intermediate_size: 12, decoder_sparse_step: 2, mlp_only_layers: [3] });
  assert.deepEqual(cfg.layers.map((l) => l.ffn), ['dense', 'moe', 'dense', 'dense']);
  assert.equal(cfg.denseIntermediate, 24);
  assert.deepEqual(cfg.moe?.shared, { intermediate: 12, gated: true });
  assert.equal(cfg.attention.qkvBias, true);
  assert.equal(cfg.attention.oBias, false);
  assert.equal(cfg.moe?.routing.normTopK, false);
  const sw = parse({ ...tiny, model_type: 'qwen2_moe', num_key_value_heads: 4, moe_intermediate_size: 6, shared_expert_intermediate_size: 12, use_sliding_window: true, sliding_window: 64, max_window_layers: 3 });
  assert.deepEqual(sw.layers.map((l) => l.slidingWindow), [64, null, 64, null]);
});

test('qwen3_moe: per-head q/k norm, head_dim from config, no attention bias', () => {
  const cfg = parse({ ...tiny, model_type: 'qwen3_moe', head_dim: 8, num_key_value_heads: 2, moe_intermediate_size: 6, num_experts: 8, norm_topk_prob: true });
  assert.equal(cfg.attention.qkNorm, 'head');
  assert.equal(cfg.attention.headDim, 8);
  assert.equal(cfg.attention.qkvBias, false);
  assert.equal(cfg.moe?.routing.normTopK, true);
  assert.equal(cfg.moe?.shared, null);
  assert.equal(cfg.attention.scale, 1 / Math.sqrt(8));
});

test('deepseek_v2: MLA, group-limited softmax routing, shared width, dense first layers, yarn mscale', () => {
  const cfg = parse({
    ...tiny, model_type: 'deepseek_v2', n_routed_experts: 8, n_shared_experts: 2, moe_intermediate_size: 6, num_experts_per_tok: 2,
    first_k_dense_replace: 1, q_lora_rank: null, kv_lora_rank: 8, qk_nope_head_dim: 4, qk_rope_head_dim: 2, v_head_dim: 4,
    topk_method: 'group_limited_greedy', n_group: 4, topk_group: 2, routed_scaling_factor: 16, head_dim: 2,
    rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
  });
  assert.deepEqual(cfg.layers.map((l) => l.ffn), ['dense', 'moe', 'moe', 'moe']);
  assert.deepEqual(cfg.moe?.shared, { intermediate: 12, gated: false });
  assert.equal(cfg.denseIntermediate, 24);
  const r = cfg.moe!.routing;
  assert.deepEqual([r.kind, r.nGroup, r.topKGroup, r.scale, r.normTopK, r.groupScore], ['softmax-topk', 4, 2, 16, false, 'max']);
  assert.deepEqual(cfg.attention.mla, { normEps: 1e-6, qLoraRank: null, kvLoraRank: 8, qkNopeHeadDim: 4, qkRopeHeadDim: 2, vHeadDim: 4 });
  assert.equal(cfg.attention.headDim, 6);
  assert.equal(cfg.rope.dim, 2);
  assert.equal(cfg.rope.style, 'interleaved');
  const m = 0.1 * 0.707 * Math.log(40) + 1;
  assert.ok(Math.abs(cfg.attention.scale - (m * m) / Math.sqrt(6)) < 1e-12);
  assert.equal(cfg.rope.scaling.type === 'yarn' && cfg.rope.scaling.truncate, true);
});

test('deepseek_v3: sigmoid noaux_tc routing with correction bias and defaults', () => {
  const cfg = parse({ ...tiny, model_type: 'deepseek_v3', n_routed_experts: 16, moe_intermediate_size: 6, kv_lora_rank: 8, q_lora_rank: 12, qk_nope_head_dim: 4, qk_rope_head_dim: 2, v_head_dim: 4, n_group: 4, topk_group: 2, num_experts_per_tok: 4 });
  const r = cfg.moe!.routing;
  assert.deepEqual([r.kind, r.topK, r.nGroup, r.topKGroup, r.scale, r.normTopK, r.groupScore], ['sigmoid-topk', 4, 4, 2, 2.5, true, 'top2-sum']);
  assert.deepEqual(cfg.layers.map((l) => l.ffn), ['dense', 'dense', 'dense', 'moe']); // first_k_dense_replace 3
  assert.deepEqual(cfg.moe?.shared, { intermediate: 6, gated: false });
  const names = architectureFor('deepseek_v3', 'x').canonicalEntries(cfg, () => false).map((e) => e.name);
  assert.ok(names.includes('layers.3.moe.router.correction_bias'));
  assert.throws(() => parse({ ...tiny, model_type: 'deepseek_v3', moe_intermediate_size: 6, n_routed_experts: 16, n_group: 4, topk_group: 2, scoring_func: 'softmax' }), /scoring_func/);
});

test('phimoe: LayerNorm, sparsemixer with jitter, biases, longrope', () => {
  const cfg = parse({
    ...tiny, model_type: 'phimoe', num_key_value_heads: 2, attention_bias: true, lm_head_bias: true, max_position_embeddings: 131072,
    rope_scaling: { type: 'longrope', short_factor: [1, 1], long_factor: [2, 3], short_mscale: 1.1, long_mscale: 1.2, original_max_position_embeddings: 4096 },
  });
  assert.equal(cfg.norm, 'layer');
  assert.deepEqual([cfg.moe?.routing.kind, cfg.moe?.routing.topK, cfg.moe?.routing.jitterEps, cfg.moe?.experts], ['sparsemixer', 2, 0.01, 16]);
  assert.equal(cfg.lmHeadBias, true);
  assert.deepEqual(cfg.rope.scaling, { type: 'longrope', shortFactor: [1, 1], longFactor: [2, 3], originalMaxPositions: 4096, shortMscale: 1.1, longMscale: 1.2 });
  assert.throws(() => parse({ ...tiny, model_type: 'phimoe', num_key_value_heads: 2, num_experts_per_tok: 3 }), /num_experts_per_tok/);
});

test('gpt_oss: alternating sliding layers, topk-softmax, sinks, default yarn', () => {
  const cfg = parse({ ...tiny, model_type: 'gpt_oss', num_key_value_heads: 2, head_dim: 4, num_local_experts: 8 });
  assert.deepEqual(cfg.layers.map((l) => l.slidingWindow), [128, null, 128, null]);
  assert.deepEqual([cfg.moe?.routing.kind, cfg.moe?.activation, cfg.moe?.expertBias, cfg.moe?.routerBias], ['topk-softmax', 'swiglu-oai', true, true]);
  assert.deepEqual(cfg.moe?.oaiSwiglu, { alpha: 1.702, limit: 7 });
  assert.equal(cfg.attention.sinks, true);
  assert.equal(cfg.rope.theta, 150000);
  assert.deepEqual(cfg.rope.scaling, { type: 'yarn', factor: 32, originalMaxPositions: 4096, betaFast: 32, betaSlow: 1, mscale: 0, mscaleAllDim: 0, truncate: false });
  const types = parse({ ...tiny, model_type: 'gpt_oss', num_key_value_heads: 2, head_dim: 4, layer_types: ['full_attention', 'full_attention', 'sliding_attention', 'full_attention'] });
  assert.deepEqual(types.layers.map((l) => l.slidingWindow), [null, null, 128, null]);
});

// ---- Errors -------------------------------------------------------------------------------------

test('unknown model_type names the config file, the value and the supported list', () => {
  for (const f of [() => architectureFor('grok', 'ckpt/config.json'), () => parseModelConfig({ model_type: 'grok' }, 'ckpt/config.json')]) {
    assert.throws(f, (e: unknown) => e instanceof MoepressError && e.file === 'ckpt/config.json' && /'grok'/.test(e.message) && supportedModelTypes().every((t) => e.message.includes(t)));
  }
  assert.throws(() => parseModelConfig({ hidden_size: 4 }, 'ckpt/config.json'), /ckpt\/config\.json: field 'model_type' is missing/);
  assert.throws(() => parseModelConfig({ ...tiny, model_type: 'deepseek_v3', quantization_config: { quant_method: 'fp8' } }, 'ckpt/config.json'), /quantized.*'fp8'.*dequantize/);
});

test('a missing or mistyped required field names the file, the field and what was expected', () => {
  const { hidden_size: _h, ...noHidden } = tiny;
  assert.throws(() => parse({ ...noHidden, model_type: 'olmoe' }), (e: unknown) => e instanceof MoepressError && e.message === "tiny/config.json: field 'hidden_size' is missing, expected an integer >= 1");
  assert.throws(() => parse({ ...tiny, model_type: 'qwen3_moe', num_key_value_heads: 2 }), /field 'moe_intermediate_size' is missing/);
  assert.throws(() => parse({ ...tiny, model_type: 'olmoe', num_experts: '8' }), /field 'num_experts' is "8", expected an integer >= 1/);
  assert.throws(() => parse({ ...tiny, model_type: 'olmoe', norm_topk_prob: 'yes' }), /field 'norm_topk_prob' is "yes", expected true or false/);
  assert.throws(() => parse({ ...tiny, model_type: 'llama', num_key_value_heads: 3 }), /num_key_value_heads.*divisor/);
  assert.throws(() => parse({ ...tiny, model_type: 'llama', rope_scaling: { type: 'dynamic', factor: 2 } }), /field 'rope_scaling.type' is "dynamic"/);
  assert.throws(() => parse({ ...tiny, model_type: 'llama', rope_scaling: { type: 'linear' } }), /field 'rope_scaling.factor' is missing/);
  assert.throws(() => parse({ ...tiny, model_type: 'mixtral', num_key_value_heads: 2, num_experts_per_tok: 9 }), /num_experts_per_tok.*at most the number of experts/);
  // Mixtral's class default num_key_value_heads is 8 (transformers), which 4 heads cannot use.
  assert.throws(() => parse({ ...tiny, model_type: 'mixtral' }), /field 'num_key_value_heads' is missing, expected a divisor of num_attention_heads \(4\); when missing, transformers uses this model type's default 8/);
  assert.throws(() => parse({ ...tiny, model_type: 'llama', hidden_act: 'gelu' }), /hidden_act/);
});

test('fixture safetensors headers: every hub tensor has the shape the mapping expects', () => {
  for (const name of ['mixtral', 'olmoe', 'dense']) {
    const dir = path.join(FIXTURES, name);
    const headers = new Map<string, { dtype: string; shape: number[] }>();
    for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
      // safetensors: u64 little-endian header length, then the JSON header (tensor bytes not needed).
      const fd = fs.openSync(path.join(dir, f), 'r');
      const len = Buffer.alloc(8);
      fs.readSync(fd, len, 0, 8, 0);
      const head = Buffer.alloc(Number(len.readBigUInt64LE()));
      fs.readSync(fd, head, 0, head.length, 8);
      fs.closeSync(fd);
      for (const [k, v] of Object.entries(JSON.parse(head.toString('utf8')))) if (k !== '__metadata__') headers.set(k, v as { dtype: string; shape: number[] });
    }
    const { cfg } = fixture(name);
    const entries = architectureFor(cfg.modelType, 'config.json').canonicalEntries(cfg, (n) => headers.has(n));
    for (const e of entries) {
      const t = e.load((h) => {
        const x = headers.get(h)!;
        return { dtype: 'BF16', shape: x.shape, data: new Uint8Array(x.shape.reduce((a, b) => a * b, 1) * 2) };
      });
      assert.deepEqual(t.shape, e.shape, `${name}: ${e.name}`);
    }
    assert.equal(entries.flatMap((e) => e.hub).length, headers.size);
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from './helpers/random.js';
import { DTYPE_BYTES, numel, type DType, type RawTensor } from '../src/io/dtype.js';
import { MoepressError } from '../src/io/errors.js';
import type { Architecture, ModelConfig } from '../src/models/canonical.js';
import { unstack } from '../src/models/layout.js';
import { architectureFor, hubCoverage, parseModelConfig } from '../src/models/registry.js';

// ---- Tiny checkpoints, named the way each family's Hugging Face checkpoints name their tensors ----

type Spec = [name: string, shape: number[], dtype?: DType];

function checkpoint(specs: Spec[], dtype: DType): Map<string, RawTensor> {
  const m = new Map<string, RawTensor>();
  specs.forEach(([name, shape, dt], i) => {
    assert.ok(!m.has(name), `test bug: duplicate ${name}`);
    const d = dt ?? dtype;
    m.set(name, { dtype: d, shape, data: randomBytes(numel(shape) * DTYPE_BYTES[d], (i + 1) * 2654435761) });
  });
  return m;
}

const L = (l: number) => `model.layers.${l}`;

function top(V: number, H: number, o: { lmHead?: boolean; layerNorm?: boolean; lmHeadBias?: boolean } = {}): Spec[] {
  const s: Spec[] = [['model.embed_tokens.weight', [V, H]], ['model.norm.weight', [H]]];
  if (o.layerNorm) s.push(['model.norm.bias', [H]]);
  if (o.lmHead ?? true) s.push(['lm_head.weight', [V, H]]);
  if (o.lmHeadBias) s.push(['lm_head.bias', [V]]);
  return s;
}

function norms(l: number, H: number, layerNorm = false): Spec[] {
  const s: Spec[] = [[`${L(l)}.input_layernorm.weight`, [H]], [`${L(l)}.post_attention_layernorm.weight`, [H]]];
  if (layerNorm) s.push([`${L(l)}.input_layernorm.bias`, [H]], [`${L(l)}.post_attention_layernorm.bias`, [H]]);
  return s;
}

interface AttnOpts { H: number; NH: number; NKV: number; D: number; qkvBias?: boolean; oBias?: boolean; qkNorm?: 'full' | 'head'; sinks?: boolean }
function attn(l: number, a: AttnOpts): Spec[] {
  const p = `${L(l)}.self_attn`;
  const s: Spec[] = [
    [`${p}.q_proj.weight`, [a.NH * a.D, a.H]],
    [`${p}.k_proj.weight`, [a.NKV * a.D, a.H]],
    [`${p}.v_proj.weight`, [a.NKV * a.D, a.H]],
    [`${p}.o_proj.weight`, [a.H, a.NH * a.D]],
  ];
  if (a.qkvBias) s.push([`${p}.q_proj.bias`, [a.NH * a.D]], [`${p}.k_proj.bias`, [a.NKV * a.D]], [`${p}.v_proj.bias`, [a.NKV * a.D]]);
  if (a.oBias) s.push([`${p}.o_proj.bias`, [a.H]]);
  if (a.qkNorm === 'full') s.push([`${p}.q_norm.weight`, [a.NH * a.D]], [`${p}.k_norm.weight`, [a.NKV * a.D]]);
  if (a.qkNorm === 'head') s.push([`${p}.q_norm.weight`, [a.D]], [`${p}.k_norm.weight`, [a.D]]);
  if (a.sinks) s.push([`${p}.sinks`, [a.NH]]);
  return s;
}

function mixtralExperts(l: number, E: number, I: number, H: number): Spec[] {
  const s: Spec[] = [[`${L(l)}.block_sparse_moe.gate.weight`, [E, H]]];
  for (let e = 0; e < E; e++) {
    const p = `${L(l)}.block_sparse_moe.experts.${e}`;
    s.push([`${p}.w1.weight`, [I, H]], [`${p}.w2.weight`, [H, I]], [`${p}.w3.weight`, [I, H]]);
  }
  return s;
}

function qwenExperts(l: number, E: number, I: number, H: number): Spec[] {
  const s: Spec[] = [[`${L(l)}.mlp.gate.weight`, [E, H]]];
  for (let e = 0; e < E; e++) {
    const p = `${L(l)}.mlp.experts.${e}`;
    s.push([`${p}.gate_proj.weight`, [I, H]], [`${p}.up_proj.weight`, [I, H]], [`${p}.down_proj.weight`, [H, I]]);
  }
  return s;
}

/** transformers-v5 fused experts. */
function fusedExperts(l: number, E: number, I: number, H: number, router = 'mlp.gate'): Spec[] {
  return [
    [`${L(l)}.${router}.weight`, [E, H]],
    [`${L(l)}.mlp.experts.gate_up_proj`, [E, 2 * I, H]],
    [`${L(l)}.mlp.experts.down_proj`, [E, H, I]],
  ];
}

function mlp(l: number, F: number, H: number, module = 'mlp'): Spec[] {
  const p = `${L(l)}.${module}`;
  return [[`${p}.gate_proj.weight`, [F, H]], [`${p}.up_proj.weight`, [F, H]], [`${p}.down_proj.weight`, [H, F]]];
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

// ---- Families: a tiny config.json and the matching hub tensors ---------------------------------

interface Case {
  name: string;
  json: Record<string, unknown>;
  specs: Spec[];
}

const H = 16;
const V = 40;

function mixtralCase(fused = false): Case {
  const [E, I] = [4, 12];
  return {
    name: fused ? 'mixtral (fused v5)' : 'mixtral',
    json: { model_type: 'mixtral', vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, num_local_experts: E, num_experts_per_tok: 2, sliding_window: null, rope_theta: 1e6 },
    specs: [...top(V, H), ...range(2).flatMap((l) => [...norms(l, H), ...attn(l, { H, NH: 4, NKV: 2, D: 4 }), ...(fused ? fusedExperts(l, E, I, H) : mixtralExperts(l, E, I, H))])],
  };
}

function olmoeCase(): Case {
  const [E, I] = [4, 8];
  return {
    name: 'olmoe',
    json: { model_type: 'olmoe', vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, num_experts: E, num_experts_per_tok: 2, norm_topk_prob: false },
    specs: [...top(V, H), ...range(2).flatMap((l) => [...norms(l, H), ...attn(l, { H, NH: 4, NKV: 2, D: 4, qkNorm: 'full' }), ...qwenExperts(l, E, I, H)])],
  };
}

function qwen2MoeCase(): Case {
  const [E, I, IS, F] = [4, 6, 20, 24];
  const layer = (l: number): Spec[] =>
    l === 1
      ? mlp(l, F, H)
      : [...qwenExperts(l, E, I, H), ...mlp(l, IS, H, 'mlp.shared_expert'), [`${L(l)}.mlp.shared_expert_gate.weight`, [1, H]]];
  return {
    name: 'qwen2_moe',
    json: { model_type: 'qwen2_moe', vocab_size: V, hidden_size: H, intermediate_size: F, moe_intermediate_size: I, shared_expert_intermediate_size: IS, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 4, num_experts: E, num_experts_per_tok: 2, mlp_only_layers: [1], rope_theta: 1e6 },
    specs: [...top(V, H), ...range(3).flatMap((l) => [...norms(l, H), ...attn(l, { H, NH: 4, NKV: 4, D: 4, qkvBias: true }), ...layer(l)])],
  };
}

function qwen3MoeCase(fused = false): Case {
  const [E, I, F] = [4, 6, 20];
  // decoder_sparse_step 2: layers 1 and 3 sparse; head_dim 8 != hidden/heads; tied, no lm_head.
  const layer = (l: number): Spec[] => (l % 2 === 1 ? (fused ? fusedExperts(l, E, I, H) : qwenExperts(l, E, I, H)) : mlp(l, F, H));
  return {
    name: fused ? 'qwen3_moe (fused v5)' : 'qwen3_moe',
    json: { model_type: 'qwen3_moe', vocab_size: V, hidden_size: H, intermediate_size: F, moe_intermediate_size: I, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, num_experts: E, num_experts_per_tok: 2, decoder_sparse_step: 2, norm_topk_prob: true, tie_word_embeddings: true, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } },
    specs: [...top(V, H, { lmHead: false }), ...range(4).flatMap((l) => [...norms(l, H), ...attn(l, { H, NH: 4, NKV: 2, D: 8, qkNorm: 'head' }), ...layer(l)])],
  };
}

function mla(l: number, o: { QR: number | null; KR: number; nope: number; rope: number; v: number; NH: number; bias?: boolean }): Spec[] {
  const p = `${L(l)}.self_attn`;
  const qk = o.nope + o.rope;
  const s: Spec[] = [];
  if (o.QR === null) s.push([`${p}.q_proj.weight`, [o.NH * qk, H]]);
  else {
    s.push([`${p}.q_a_proj.weight`, [o.QR, H]], [`${p}.q_a_layernorm.weight`, [o.QR]], [`${p}.q_b_proj.weight`, [o.NH * qk, o.QR]]);
    if (o.bias) s.push([`${p}.q_a_proj.bias`, [o.QR]]);
  }
  s.push([`${p}.kv_a_proj_with_mqa.weight`, [o.KR + o.rope, H]], [`${p}.kv_a_layernorm.weight`, [o.KR]]);
  s.push([`${p}.kv_b_proj.weight`, [o.NH * (o.nope + o.v), o.KR]], [`${p}.o_proj.weight`, [H, o.NH * o.v]]);
  if (o.bias) s.push([`${p}.kv_a_proj_with_mqa.bias`, [o.KR + o.rope]], [`${p}.o_proj.bias`, [H]]);
  return s;
}

function deepseekCase(v3: boolean): Case {
  const [E, I, F, NS] = [4, 6, 20, 2];
  const m = { QR: v3 ? 12 : null, KR: 8, nope: 4, rope: 2, v: 4, NH: 4, bias: v3 };
  const layer = (l: number): Spec[] => {
    if (l === 0) return mlp(l, F, H);
    const s = [...qwenExperts(l, E, I, H), ...mlp(l, I * NS, H, 'mlp.shared_experts')];
    // The V3 correction bias is stored in float32 whatever the checkpoint dtype.
    if (v3) s.push([`${L(l)}.mlp.gate.e_score_correction_bias`, [E], 'F32']);
    return s;
  };
  const json: Record<string, unknown> = {
    model_type: v3 ? 'deepseek_v3' : 'deepseek_v2', vocab_size: V, hidden_size: H, intermediate_size: F, moe_intermediate_size: I,
    num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 4, n_routed_experts: E, n_shared_experts: NS, num_experts_per_tok: 2,
    first_k_dense_replace: 1, q_lora_rank: m.QR, kv_lora_rank: m.KR, qk_nope_head_dim: m.nope, qk_rope_head_dim: m.rope, v_head_dim: m.v,
    n_group: 2, topk_group: 1, topk_method: v3 ? 'noaux_tc' : 'group_limited_greedy', attention_bias: v3,
    rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
    rope_theta: 10000, max_position_embeddings: 163840,
  };
  return { name: json.model_type as string, json, specs: [...top(V, H), ...range(3).flatMap((l) => [...norms(l, H), ...mla(l, m), ...layer(l)])] };
}

function phimoeCase(): Case {
  const [E, I] = [4, 8];
  const half = 2; // head_dim 4 -> longrope factor lists of length 2
  return {
    name: 'phimoe',
    json: {
      model_type: 'phimoe', vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
      num_local_experts: E, num_experts_per_tok: 2, attention_bias: true, lm_head_bias: true, router_jitter_noise: 0.01, max_position_embeddings: 131072,
      rope_scaling: { type: 'longrope', short_factor: Array(half).fill(1.1), long_factor: Array(half).fill(2.5), short_mscale: 1.2, long_mscale: 1.2, original_max_position_embeddings: 4096 },
    },
    specs: [...top(V, H, { layerNorm: true, lmHeadBias: true }), ...range(2).flatMap((l) => [...norms(l, H, true), ...attn(l, { H, NH: 4, NKV: 2, D: 4, qkvBias: true, oBias: true }), ...mixtralExperts(l, E, I, H)])],
  };
}

function gptOssCase(): Case {
  const [E, I] = [4, 6];
  const experts = (l: number): Spec[] => [
    [`${L(l)}.mlp.router.weight`, [E, H]],
    [`${L(l)}.mlp.router.bias`, [E]],
    [`${L(l)}.mlp.experts.gate_up_proj`, [E, H, 2 * I]],
    [`${L(l)}.mlp.experts.gate_up_proj_bias`, [E, 2 * I]],
    [`${L(l)}.mlp.experts.down_proj`, [E, I, H]],
    [`${L(l)}.mlp.experts.down_proj_bias`, [E, H]],
  ];
  return {
    name: 'gpt_oss',
    json: { model_type: 'gpt_oss', vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, num_local_experts: E, num_experts_per_tok: 2, sliding_window: 8 },
    specs: [...top(V, H), ...range(2).flatMap((l) => [...norms(l, H), ...attn(l, { H, NH: 4, NKV: 2, D: 8, qkvBias: true, oBias: true, sinks: true }), ...experts(l)])],
  };
}

function denseCase(modelType: 'llama' | 'mistral' | 'qwen2', tied = false): Case {
  const F = 24;
  return {
    name: `${modelType}${tied ? ' (tied)' : ''}`,
    json: { model_type: modelType, vocab_size: V, hidden_size: H, intermediate_size: F, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: tied },
    specs: [...top(V, H, { lmHead: !tied }), ...range(2).flatMap((l) => [...norms(l, H), ...attn(l, { H, NH: 4, NKV: 2, D: 4, qkvBias: modelType === 'qwen2' }), ...mlp(l, F, H)])],
  };
}

const CASES: Case[] = [
  mixtralCase(), mixtralCase(true), olmoeCase(), qwen2MoeCase(), qwen3MoeCase(), qwen3MoeCase(true), deepseekCase(false), deepseekCase(true),
  phimoeCase(), gptOssCase(), denseCase('llama', true), denseCase('mistral'), denseCase('qwen2'),
];

// ---- The round trip ----------------------------------------------------------------------------

function load(arch: Architecture, cfg: ModelConfig, hub: Map<string, RawTensor>): Map<string, RawTensor> {
  const entries = arch.canonicalEntries(cfg, (n) => hub.has(n));
  const cov = hubCoverage(entries, hub.keys());
  assert.deepEqual(cov.missing, [], 'entries read tensors the checkpoint lacks');
  assert.deepEqual(cov.unused, [], 'checkpoint tensors no entry reads');
  const canon = new Map<string, RawTensor>();
  for (const e of entries) {
    assert.ok(!canon.has(e.name), `duplicate canonical ${e.name}`);
    const t = e.load((n) => {
      const x = hub.get(n);
      if (!x) throw new Error(`no tensor ${n}`);
      return x;
    });
    assert.deepEqual(t.shape, e.shape, e.name);
    canon.set(e.name, t);
  }
  return canon;
}

function roundTrip(c: Case, dtype: DType): { cfg: ModelConfig; hub: Map<string, RawTensor>; canon: Map<string, RawTensor> } {
  const hub = checkpoint(c.specs, dtype);
  const cfg = parseModelConfig(c.json, `${c.name}/config.json`, (n) => hub.has(n));
  const arch = architectureFor(cfg.modelType, 'config.json');
  const canon = load(arch, cfg, hub);
  const rebuilt = new Map(arch.hubEntries(cfg, (n) => canon.has(n)).map((e) => [e.name, e.build((n) => canon.get(n)!)]));
  assert.deepEqual([...rebuilt.keys()].sort(), [...hub.keys()].sort(), `${c.name}: hub name sets differ`);
  for (const [name, t] of hub) {
    const r = rebuilt.get(name)!;
    assert.equal(r.dtype, t.dtype, name);
    assert.deepEqual(r.shape, t.shape, name);
    assert.ok(Buffer.from(r.data).equals(Buffer.from(t.data)), `${c.name} ${dtype}: ${name} not byte-identical`);
  }
  return { cfg, hub, canon };
}

for (const c of CASES) {
  test(`round trip hub -> canonical -> hub is byte-identical: ${c.name}`, () => {
    for (const dtype of ['BF16', 'F32', 'F16'] as DType[]) {
      const { cfg, canon } = roundTrip(c, dtype);
      if (cfg.moe) {
        const { experts: E, intermediate: I } = cfg.moe;
        cfg.layers.forEach((spec, l) => {
          if (spec.ffn !== 'moe') return;
          const p = `layers.${l}.moe.experts`;
          assert.deepEqual(canon.get(`${p}.gate`)!.shape, [E, I, H]);
          assert.deepEqual(canon.get(`${p}.up`)!.shape, [E, I, H]);
          assert.deepEqual(canon.get(`${p}.down`)!.shape, [E, H, I]);
        });
      }
    }
  });
}

// ---- The canonical tensors hold the right experts, not just an invertible shuffle -------------

function elem(t: RawTensor, idx: number[]): string {
  let flat = 0;
  for (let d = 0; d < t.shape.length; d++) flat = flat * t.shape[d] + idx[d];
  const s = DTYPE_BYTES[t.dtype];
  return Buffer.from(t.data.subarray(flat * s, flat * s + s)).toString('hex');
}

test('per-expert checkpoints: canonical expert e is w1/w3/w2 (gate_proj/up_proj/down_proj) of expert e', () => {
  const { hub, canon } = roundTrip(mixtralCase(), 'BF16');
  for (let e = 0; e < 4; e++) {
    const p = `model.layers.1.block_sparse_moe.experts.${e}`;
    assert.deepEqual(unstack(canon.get('layers.1.moe.experts.gate')!, e), hub.get(`${p}.w1.weight`));
    assert.deepEqual(unstack(canon.get('layers.1.moe.experts.up')!, e), hub.get(`${p}.w3.weight`));
    assert.deepEqual(unstack(canon.get('layers.1.moe.experts.down')!, e), hub.get(`${p}.w2.weight`));
  }
  assert.deepEqual(canon.get('layers.0.moe.router.weight'), hub.get('model.layers.0.block_sparse_moe.gate.weight'));
});

test('fused v5 checkpoints: gate is rows [0, I) of gate_up_proj[e], up rows [I, 2I)', () => {
  const { hub, canon } = roundTrip(qwen3MoeCase(true), 'F32');
  const gu = hub.get('model.layers.1.mlp.experts.gate_up_proj')!;
  const [E, I] = [4, 6];
  for (let e = 0; e < E; e++) {
    for (let i = 0; i < I; i++) {
      for (let h = 0; h < H; h += 5) {
        assert.equal(elem(canon.get('layers.1.moe.experts.gate')!, [e, i, h]), elem(gu, [e, i, h]));
        assert.equal(elem(canon.get('layers.1.moe.experts.up')!, [e, i, h]), elem(gu, [e, I + i, h]));
      }
    }
  }
  assert.deepEqual(canon.get('layers.1.moe.experts.down'), hub.get('model.layers.1.mlp.experts.down_proj'));
});

test('GPT-OSS: gate/up de-interleaved from the last dim of [E,H,2I] and transposed; down transposed', () => {
  const { hub, canon } = roundTrip(gptOssCase(), 'BF16');
  const gu = hub.get('model.layers.0.mlp.experts.gate_up_proj')!;
  const gub = hub.get('model.layers.0.mlp.experts.gate_up_proj_bias')!;
  const down = hub.get('model.layers.0.mlp.experts.down_proj')!;
  const c = (n: string) => canon.get(`layers.0.moe.experts.${n}`)!;
  for (let e = 0; e < 4; e++) {
    for (let i = 0; i < 6; i++) {
      assert.equal(elem(c('gate_bias'), [e, i]), elem(gub, [e, 2 * i]));
      assert.equal(elem(c('up_bias'), [e, i]), elem(gub, [e, 2 * i + 1]));
      for (let h = 0; h < H; h++) {
        assert.equal(elem(c('gate'), [e, i, h]), elem(gu, [e, h, 2 * i]));
        assert.equal(elem(c('up'), [e, i, h]), elem(gu, [e, h, 2 * i + 1]));
        assert.equal(elem(c('down'), [e, h, i]), elem(down, [e, i, h]));
      }
    }
  }
  assert.deepEqual(canon.get('layers.0.moe.experts.down_bias'), hub.get('model.layers.0.mlp.experts.down_proj_bias'));
  assert.deepEqual(canon.get('layers.0.attn.sinks'), hub.get('model.layers.0.self_attn.sinks'));
  assert.deepEqual(canon.get('layers.1.moe.router.bias'), hub.get('model.layers.1.mlp.router.bias'));
});

test('expert layout is recorded in the config and drives canonical -> hub', () => {
  assert.equal(roundTrip(mixtralCase(true), 'BF16').cfg.expertLayout, 'fused');
  assert.equal(roundTrip(mixtralCase(), 'BF16').cfg.expertLayout, 'per-expert');
  assert.equal(roundTrip(gptOssCase(), 'BF16').cfg.expertLayout, 'gpt-oss');
  // Fused Mixtral keeps the v5 router name.
  const { hub } = roundTrip(mixtralCase(true), 'BF16');
  assert.ok(hub.has('model.layers.0.mlp.gate.weight'));
});

test('tied embeddings: no lm_head canonical tensor, unless the checkpoint stores lm_head.weight anyway', () => {
  const tied = roundTrip(denseCase('llama', true), 'BF16');
  assert.equal(tied.canon.has('lm_head'), false);
  const c = denseCase('llama', true);
  c.specs.push(['lm_head.weight', [V, H]]);
  assert.equal(roundTrip(c, 'BF16').canon.has('lm_head'), true);
});

// ---- Errors -------------------------------------------------------------------------------------

function loadAll(c: Case, mutate: (hub: Map<string, RawTensor>) => void): void {
  const hub = checkpoint(c.specs, 'BF16');
  const cfg = parseModelConfig(c.json, 'config.json', (n) => hub.has(n));
  mutate(hub);
  const arch = architectureFor(cfg.modelType, 'config.json');
  for (const e of arch.canonicalEntries(cfg, (n) => hub.has(n))) {
    e.load((n) => {
      const t = hub.get(n);
      if (!t) throw new MoepressError('tensor not found in any shard', { file: 'model.safetensors.index.json', tensor: n });
      return t;
    });
  }
}

test('a tensor missing from a layer is a MoepressError naming the tensor and the layer', () => {
  const missing = 'model.layers.1.block_sparse_moe.experts.2.w3.weight';
  assert.throws(
    () => loadAll(mixtralCase(), (hub) => hub.delete(missing)),
    (e: unknown) => e instanceof MoepressError && e.tensor === missing && /layer 1/.test(e.message) && e.message.includes(missing) && /layers\.1\.moe\.experts\.up/.test(e.message),
  );
  assert.throws(() => loadAll(olmoeCase(), (hub) => hub.delete('model.layers.0.self_attn.k_norm.weight')), /layer 0: hub tensor needed for 'layers\.0\.attn\.k_norm\.weight'/);
  assert.throws(() => loadAll(denseCase('mistral'), (hub) => hub.delete('lm_head.weight')), (e: unknown) => e instanceof MoepressError && e.tensor === 'lm_head.weight' && /model:/.test(e.message));
});

test('a hub tensor with the wrong shape, or experts with mixed dtypes, is a MoepressError', () => {
  const name = 'model.layers.0.mlp.experts.1.down_proj.weight';
  assert.throws(
    () => loadAll(olmoeCase(), (hub) => hub.set(name, { dtype: 'BF16', shape: [8, 16], data: new Uint8Array(256) })),
    (e: unknown) => e instanceof MoepressError && e.tensor === name && /shape \[8,16\], expected \[16,8\]/.test(e.message),
  );
  assert.throws(
    () => loadAll(olmoeCase(), (hub) => hub.set(name, { dtype: 'F16', shape: [16, 8], data: new Uint8Array(256) })),
    (e: unknown) => e instanceof MoepressError && /layer 0: cannot build 'layers\.0\.moe\.experts\.down'.*F16/.test(e.message),
  );
});

test('MXFP4-quantized GPT-OSS experts are refused with a MoepressError', () => {
  const c = gptOssCase();
  c.specs.push(['model.layers.0.mlp.experts.gate_up_proj_blocks', [4, 12, 1, 16], 'U8']);
  const hub = checkpoint(c.specs, 'BF16');
  assert.throws(() => parseModelConfig(c.json, 'config.json', (n) => hub.has(n)), (e: unknown) => e instanceof MoepressError && /MXFP4/.test(e.message));
});

test('hubCoverage reports unknown checkpoint tensors and missing ones', () => {
  const c = mixtralCase();
  const hub = checkpoint(c.specs, 'BF16');
  const cfg = parseModelConfig(c.json, 'config.json');
  const entries = architectureFor('mixtral', 'config.json').canonicalEntries(cfg, (n) => hub.has(n));
  const names = [...hub.keys()].filter((n) => n !== 'model.norm.weight');
  names.push('model.layers.2.mlp.gate.weight');
  assert.deepEqual(hubCoverage(entries, names), { missing: ['model.norm.weight'], unused: ['model.layers.2.mlp.gate.weight'], shared: [] });
});

/** Hub-style config.json for a tiny model of every family (field names as transformers writes them). */
const common = {
  vocab_size: 64,
  hidden_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 128,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
};

export const TINY_CONFIGS: Record<string, Record<string, unknown>> = {
  mixtral: { ...common, model_type: 'mixtral', intermediate_size: 16, num_local_experts: 4, num_experts_per_tok: 2, rope_parameters: { rope_theta: 10000, rope_type: 'default' } },
  olmoe: { ...common, model_type: 'olmoe', intermediate_size: 16, num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: false, rope_theta: 10000, num_key_value_heads: 4 },
  qwen2_moe: {
    ...common, model_type: 'qwen2_moe', intermediate_size: 40, moe_intermediate_size: 16, shared_expert_intermediate_size: 24,
    num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: false, decoder_sparse_step: 1, mlp_only_layers: [1], rope_theta: 10000,
  },
  qwen3_moe: {
    ...common, model_type: 'qwen3_moe', head_dim: 8, intermediate_size: 40, moe_intermediate_size: 16, num_experts: 4,
    num_experts_per_tok: 2, norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [], rope_theta: 10000, tie_word_embeddings: true,
  },
  deepseek_v3: {
    ...common, model_type: 'deepseek_v3', num_key_value_heads: 4, intermediate_size: 40, moe_intermediate_size: 16, n_routed_experts: 4,
    n_shared_experts: 1, num_experts_per_tok: 2, first_k_dense_replace: 1, q_lora_rank: 16, kv_lora_rank: 8, qk_nope_head_dim: 8,
    qk_rope_head_dim: 4, v_head_dim: 8, n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, norm_topk_prob: true,
    rope_theta: 10000, rope_scaling: null,
  },
  deepseek_v2: {
    ...common, model_type: 'deepseek_v2', num_key_value_heads: 4, intermediate_size: 40, moe_intermediate_size: 16, n_routed_experts: 4,
    n_shared_experts: 2, num_experts_per_tok: 2, first_k_dense_replace: 0, q_lora_rank: null, kv_lora_rank: 8, qk_nope_head_dim: 8,
    qk_rope_head_dim: 4, v_head_dim: 8, topk_method: 'greedy', routed_scaling_factor: 1.0, rope_theta: 10000,
  },
  phimoe: {
    ...common, model_type: 'phimoe', intermediate_size: 16, num_local_experts: 4, num_experts_per_tok: 2, router_jitter_noise: 0.01,
    attention_bias: true, lm_head_bias: true, rope_theta: 10000, sliding_window: null,
  },
  gpt_oss: {
    ...common, model_type: 'gpt_oss', head_dim: 8, intermediate_size: 16, num_local_experts: 4, num_experts_per_tok: 2, sliding_window: 4,
    layer_types: ['sliding_attention', 'full_attention'], rope_theta: 10000, rope_scaling: { rope_type: 'yarn', factor: 4, beta_fast: 32, beta_slow: 1, truncate: false, original_max_position_embeddings: 32 },
  },
  mistral: { ...common, model_type: 'mistral', intermediate_size: 40, rope_theta: 10000, sliding_window: 6, head_dim: 8 },
  llama: { ...common, model_type: 'llama', intermediate_size: 40, rope_theta: 10000 },
  qwen2: { ...common, model_type: 'qwen2', intermediate_size: 40, rope_theta: 10000, tie_word_embeddings: true },
};

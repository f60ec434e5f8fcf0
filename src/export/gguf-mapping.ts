/**
 * Canonical model -> llama.cpp architectures: "llama" (convert_hf_to_gguf.py LlamaModel, which also
 * converts Mistral and Mixtral) and "olmoe" (OlmoeModel): metadata keys, tensor names and, for
 * llama, the Q/K row permutation.
 *
 * RoPE: transformers rotates the halves [x_0..x_{D/2-1}] and [x_{D/2}..x_{D-1}] of each head
 * (rotate_half); llama.cpp's llama architecture rotates adjacent pairs (x_{2i}, x_{2i+1}). The
 * converter therefore permutes the rows of q (per query head) and k (per key/value head) so that
 * row h*D + 2i + j takes row h*D + j*D/2 + i (LlamaModel.permute). Attention scores are unchanged
 * because q and k are permuted alike; v and o are not touched.
 *
 * Names (per layer `blk.{l}.`): token_embd, output_norm, output (absent when tied),
 * attn_norm, attn_q/k/v/output (+ .bias), ffn_norm, ffn_gate/up/down (dense FFN),
 * ffn_gate_inp (router, kept F32 like the converter), ffn_gate_exps/ffn_up_exps [E,I,H],
 * ffn_down_exps [E,H,I] (experts stacked; ggml ne is the reverse).
 *
 * olmoe: the same names plus attn_q_norm [NH*D] / attn_k_norm [NKV*D] (RMSNorm over the whole
 * projection, before the head split); llama.cpp runs it with NEOX RoPE, which is rotate_half, so
 * q and k are not permuted; it does not renormalise the top-k weights (norm_topk_prob false).
 */
import { MoepressError } from '../io/errors.js';
import type { ModelConfig } from '../models/canonical.js';
import { FILE_TYPE, kv, type GgufFloatType, type GgufKV, type GgufTensorType } from './gguf-format.js';

/** One GGUF tensor built from one canonical tensor. */
export interface GgufTensorPlan {
  name: string;
  canonical: string;
  type: GgufTensorType;
  /** Row-major shape, the canonical tensor's. */
  shape: number[];
  /** Applied to the canonical values before writing (the Q/K permutation); absent: unchanged. */
  transform?: (x: Float32Array) => Float32Array;
}

/**
 * Rows of x: [nHead*D, C] reordered from rotate_half to adjacent-pair RoPE order (see above).
 * C = 1 for a bias.
 */
export function permuteQK(x: Float32Array, nHead: number, C: number): Float32Array {
  const rows = x.length / C;
  const D = rows / nHead;
  if (!Number.isInteger(D) || D % 2 !== 0) throw new Error(`permuteQK: ${rows} rows do not split into ${nHead} heads of even size`);
  const half = D / 2;
  const out = new Float32Array(x.length);
  for (let h = 0; h < nHead; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const dst = h * D + 2 * i + j;
        const src = h * D + j * half + i;
        out.set(x.subarray(src * C, (src + 1) * C), dst * C);
      }
    }
  }
  return out;
}

/** The inverse of permuteQK (tests, and reading an exported file back). */
export function unpermuteQK(x: Float32Array, nHead: number, C: number): Float32Array {
  const rows = x.length / C;
  const D = rows / nHead;
  const half = D / 2;
  const out = new Float32Array(x.length);
  for (let h = 0; h < nHead; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) out.set(x.subarray((h * D + 2 * i + j) * C, (h * D + 2 * i + j + 1) * C), (h * D + j * half + i) * C);
    }
  }
  return out;
}

export type GgufArch = 'llama' | 'olmoe';

/** The llama.cpp architecture for this config, or why there is none. */
function ggufArch(cfg: ModelConfig): GgufArch | { why: string } {
  const a = cfg.attention;
  const m = cfg.moe;
  const arch: GgufArch | null = cfg.family === 'olmoe' ? 'olmoe' : (cfg.family === 'dense' && cfg.modelType !== 'qwen2') || cfg.family === 'mixtral' ? 'llama' : null;
  if (!arch) {
    if (cfg.modelType === 'qwen2') return { why: "model_type 'qwen2' maps to llama.cpp's qwen2 architecture, which is not written here" };
    return { why: `family '${cfg.family}' has no GGUF mapping here (supported: llama/mistral dense models, mixtral, olmoe)` };
  }
  if (cfg.norm !== 'rms') return { why: 'LayerNorm models are not supported' };
  if (a.mla || a.sinks || a.clipQkv) return { why: 'attention has MLA, sinks or clip_qkv, which llama.cpp\'s llama/olmoe graphs lack' };
  if (a.qkNorm !== (arch === 'olmoe' ? 'full' : 'none')) return { why: `q/k norm '${a.qkNorm}' does not match llama.cpp's ${arch} architecture` };
  if (arch === 'olmoe' && (a.qkvBias || a.oBias || a.kvHeads !== a.heads)) return { why: 'olmoe export needs no attention biases and as many key/value heads as query heads' };
  if (Math.abs(a.scale - 1 / Math.sqrt(a.headDim)) > 1e-6 / Math.sqrt(a.headDim)) return { why: `attention scale ${a.scale} is not 1/sqrt(head_dim)` };
  if (cfg.rope.style !== 'half' || cfg.rope.dim !== a.headDim) return { why: 'RoPE must be rotate_half over the whole head' };
  if (cfg.rope.scaling.type !== 'default' && cfg.rope.scaling.type !== 'linear') return { why: `rope scaling '${cfg.rope.scaling.type}' is not written here` };
  if (cfg.lmHeadBias) return { why: 'lm_head bias is not supported' };
  // llama.cpp renormalises the top-k weights for llama (Mixtral) and not for olmoe.
  if (m && (m.shared || m.expertBias || m.routerBias || m.activation !== 'swiglu' || m.routing.kind !== 'softmax-topk' || m.routing.normTopK !== (arch === 'llama') || m.routing.scale !== 1 || m.routing.nGroup > 1)) {
    return { why: `the MoE block must be ${arch === 'llama' ? 'Mixtral' : 'OLMoE'}-style (softmax, top-k, ${arch === 'llama' ? '' : 'not '}renormalised, no shared experts or biases)` };
  }
  if (cfg.layers.some((l) => l.ffn !== (m ? 'moe' : 'dense'))) return { why: 'mixed dense and MoE layers are not supported' };
  return arch;
}

/**
 * llama.cpp has no sliding window for the llama architecture; a window shorter than the model's
 * context would make its long-context outputs differ, so the context length written is capped at
 * the window.
 */
function contextLength(cfg: ModelConfig): number {
  const windows = cfg.layers.map((l) => l.slidingWindow).filter((w): w is number => w !== null);
  return Math.min(cfg.maxPositions, ...windows);
}

export function ggufPlan(cfg: ModelConfig, name: string, dtype: GgufFloatType, has: (canonical: string) => boolean, file: string): { arch: GgufArch; kvs: GgufKV[]; tensors: GgufTensorPlan[] } {
  const arch = ggufArch(cfg);
  if (typeof arch !== 'string') throw new MoepressError(`cannot export to GGUF: ${arch.why}`, { file });
  const a = cfg.attention;
  const H = cfg.hidden;
  const m = cfg.moe;
  const kvs: GgufKV[] = [
    kv.str('general.architecture', arch),
    kv.str('general.type', 'model'),
    kv.str('general.name', name),
    kv.u32(`${arch}.vocab_size`, cfg.vocabSize),
    kv.u32(`${arch}.context_length`, contextLength(cfg)),
    kv.u32(`${arch}.embedding_length`, H),
    kv.u32(`${arch}.block_count`, cfg.numLayers),
    kv.u32(`${arch}.feed_forward_length`, m ? m.intermediate : cfg.denseIntermediate),
    kv.u32(`${arch}.attention.head_count`, a.heads),
    kv.u32(`${arch}.attention.head_count_kv`, a.kvHeads),
    kv.f32(`${arch}.rope.freq_base`, cfg.rope.theta),
    kv.f32(`${arch}.attention.layer_norm_rms_epsilon`, cfg.normEps),
    kv.u32(`${arch}.attention.key_length`, a.headDim),
    kv.u32(`${arch}.attention.value_length`, a.headDim),
    kv.u32(`${arch}.rope.dimension_count`, cfg.rope.dim),
  ];
  if (cfg.rope.scaling.type === 'linear') {
    kvs.push(kv.str(`${arch}.rope.scaling.type`, 'linear'), kv.f32(`${arch}.rope.scaling.factor`, cfg.rope.scaling.factor));
  }
  if (m) kvs.push(kv.u32(`${arch}.expert_count`, m.experts), kv.u32(`${arch}.expert_used_count`, m.routing.topK), kv.u32(`${arch}.expert_feed_forward_length`, m.intermediate));
  kvs.push(kv.u32('general.file_type', FILE_TYPE[dtype]), kv.u32('general.quantization_version', 2));

  const tensors: GgufTensorPlan[] = [];
  // Vectors and the router stay F32 (convert_hf_to_gguf.py keeps 1-D tensors and ffn_gate_inp in F32).
  const add = (gguf: string, canonical: string, shape: number[], opts: { f32?: boolean; transform?: (x: Float32Array) => Float32Array } = {}) => {
    tensors.push({ name: gguf, canonical, type: opts.f32 || shape.length === 1 ? 'F32' : dtype, shape, transform: opts.transform });
  };
  const V = cfg.vocabSize;
  const D = a.headDim;
  add('token_embd.weight', 'embed', [V, H]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `layers.${l}.`;
    const b = `blk.${l}.`;
    add(b + 'attn_norm.weight', p + 'attn_norm.weight', [H]);
    // llama's adjacent-pair RoPE needs the permutation; olmoe's NEOX RoPE is rotate_half already.
    const perm = (n: number, C: number) => (arch === 'llama' ? { transform: (x: Float32Array) => permuteQK(x, n, C) } : {});
    add(b + 'attn_q.weight', p + 'attn.q.weight', [a.heads * D, H], perm(a.heads, H));
    add(b + 'attn_k.weight', p + 'attn.k.weight', [a.kvHeads * D, H], perm(a.kvHeads, H));
    add(b + 'attn_v.weight', p + 'attn.v.weight', [a.kvHeads * D, H]);
    add(b + 'attn_output.weight', p + 'attn.o.weight', [H, a.heads * D]);
    if (a.qkvBias) {
      add(b + 'attn_q.bias', p + 'attn.q.bias', [a.heads * D], perm(a.heads, 1));
      add(b + 'attn_k.bias', p + 'attn.k.bias', [a.kvHeads * D], perm(a.kvHeads, 1));
      add(b + 'attn_v.bias', p + 'attn.v.bias', [a.kvHeads * D]);
    }
    if (a.oBias) add(b + 'attn_output.bias', p + 'attn.o.bias', [H]);
    if (a.qkNorm === 'full') {
      add(b + 'attn_q_norm.weight', p + 'attn.q_norm.weight', [a.heads * D]);
      add(b + 'attn_k_norm.weight', p + 'attn.k_norm.weight', [a.kvHeads * D]);
    }
    add(b + 'ffn_norm.weight', p + 'ffn_norm.weight', [H]);
    if (m) {
      const { experts: E, intermediate: I } = m;
      add(b + 'ffn_gate_inp.weight', p + 'moe.router.weight', [E, H], { f32: true });
      add(b + 'ffn_gate_exps.weight', p + 'moe.experts.gate', [E, I, H]);
      add(b + 'ffn_up_exps.weight', p + 'moe.experts.up', [E, I, H]);
      add(b + 'ffn_down_exps.weight', p + 'moe.experts.down', [E, H, I]);
    } else {
      const F = cfg.denseIntermediate;
      add(b + 'ffn_gate.weight', p + 'mlp.gate', [F, H]);
      add(b + 'ffn_up.weight', p + 'mlp.up', [F, H]);
      add(b + 'ffn_down.weight', p + 'mlp.down', [H, F]);
    }
  }
  add('output_norm.weight', 'norm.weight', [H]);
  // Tied embeddings: no output tensor; llama.cpp then uses token_embd for the LM head.
  if (!cfg.tieEmbeddings && has('lm_head')) add('output.weight', 'lm_head', [V, H]);
  return { arch, kvs, tensors };
}

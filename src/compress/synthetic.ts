/**
 * Synthetic real-size MoE checkpoints for benchmarks: a Mixtral-layout hub directory (config.json,
 * bf16 safetensors shards, index) with real attention and expert shapes but a tiny vocabulary, so
 * the experts are nearly all of the bytes. Tensors are generated and written one at a time by a
 * streaming writer (never the whole model in memory), from a seed, so a run is reproducible.
 *
 * Expert kinds:
 *   random    every expert independent (the hard case for alignment: nothing to find)
 *   upcycled  every expert = one dense FFN + independent noise (the delta family's case)
 *   permuted  every expert = one dense FFN with its neurons shuffled + noise (ResMoE's case)
 * Weights are approximately normal (a sum of three uniforms), scale 1/√fan-in; noise is relative.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { INDEX_FILE } from '../io/checkpoint.js';
import { SafetensorsWriter, type TensorSpec } from '../io/safetensors-writer.js';
import { fromFloat32 } from '../tensor/convert.js';

export type SyntheticExperts = 'random' | 'upcycled' | 'permuted';

export interface SyntheticOptions {
  layers?: number;
  /** Routed experts E, intermediate I, hidden H. Defaults: Mixtral-8x7B's 8, 14336, 4096. */
  E?: number;
  I?: number;
  H?: number;
  vocab?: number;
  /** Attention heads and KV heads; defaults H/128 and min(8, heads). */
  heads?: number;
  kvHeads?: number;
  seed?: number;
  experts?: SyntheticExperts;
  /** Expert noise relative to the weights' scale (upcycled, permuted). Default 0.1. */
  noise?: number;
  /** Largest shard in bytes (a single tensor may exceed it). Default 2 GiB. */
  shardBytes?: number;
}

export interface SyntheticCheckpoint {
  dir: string;
  config: Record<string, unknown>;
  files: string[];
  /** Bytes of all tensors, and of the routed experts alone. */
  totalBytes: number;
  expertBytes: number;
}

/** One tensor to write: its spec and a filler that writes its float32 values chunk by chunk. */
interface Planned extends TensorSpec {
  fill: (out: Float32Array, start: number) => void;
}

/** Values per generated chunk (1M floats = 4 MB scratch). */
const CHUNK = 1 << 20;

/** A fast seeded generator of approximately normal values (xorshift32, sum of three uniforms). */
class Noise {
  private s: number;
  constructor(seed: number) {
    this.s = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) >>> 0) || 1;
  }
  /** Uniform in [0, 1). */
  uniform(): number {
    let s = this.s;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.s = s >>> 0;
    return this.s / 4294967296;
  }
  /** Mean 0, variance 1. */
  next(): number {
    return (this.uniform() + this.uniform() + this.uniform() - 1.5) * 2;
  }
  /** out[0..n) = scale · next(). */
  fill(out: Float32Array, n: number, scale: number): void {
    for (let i = 0; i < n; i++) out[i] = scale * this.next();
  }
}

function tensorSeed(seed: number, k: number): number {
  return (Math.imul(seed + 0x632be5ab, 0x9e3779b1) ^ Math.imul(k + 1, 0x85ebca6b)) >>> 0;
}

/** Shuffled 0..I-1 for expert e (Fisher–Yates from the seed). */
function neuronPerm(seed: number, e: number, I: number): Int32Array {
  const p = Int32Array.from({ length: I }, (_, i) => i);
  const r = new Noise(tensorSeed(seed, 0x7000_0000 + e));
  for (let i = I - 1; i > 0; i--) {
    const j = Math.floor(r.uniform() * (i + 1));
    const t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}

/** Hub config.json of a Mixtral-architecture model with these sizes. */
export function syntheticConfig(o: Required<Pick<SyntheticOptions, 'layers' | 'E' | 'I' | 'H' | 'vocab' | 'heads' | 'kvHeads'>>): Record<string, unknown> {
  return {
    architectures: ['MixtralForCausalLM'],
    model_type: 'mixtral',
    vocab_size: o.vocab,
    hidden_size: o.H,
    intermediate_size: o.I,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    head_dim: o.H / o.heads,
    hidden_act: 'silu',
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-5,
    rope_theta: 1e6,
    sliding_window: null,
    num_local_experts: o.E,
    num_experts_per_tok: 2,
    router_aux_loss_coef: 0.02,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'bfloat16',
  };
}

/** The tensors of the model in write order, each with its generator. */
function plan(o: Required<SyntheticOptions>): Planned[] {
  const { E, I, H, vocab: V, heads, kvHeads, seed } = o;
  const D = H / heads;
  let k = 0;
  const gaussian = (name: string, shape: number[], scale: number): Planned => {
    const r = new Noise(tensorSeed(seed, k++));
    return { name, dtype: 'BF16', shape, fill: (out) => r.fill(out, out.length, scale) };
  };
  const ones = (name: string, n: number): Planned => ({ name, dtype: 'BF16', shape: [n], fill: (out) => out.fill(1) });
  const out: Planned[] = [gaussian('model.embed_tokens.weight', [V, H], 1)];
  for (let l = 0; l < o.layers; l++) {
    const P = `model.layers.${l}`;
    out.push(ones(`${P}.input_layernorm.weight`, H), ones(`${P}.post_attention_layernorm.weight`, H));
    out.push(gaussian(`${P}.self_attn.q_proj.weight`, [heads * D, H], 1 / Math.sqrt(H)));
    out.push(gaussian(`${P}.self_attn.k_proj.weight`, [kvHeads * D, H], 1 / Math.sqrt(H)));
    out.push(gaussian(`${P}.self_attn.v_proj.weight`, [kvHeads * D, H], 1 / Math.sqrt(H)));
    out.push(gaussian(`${P}.self_attn.o_proj.weight`, [H, heads * D], 1 / Math.sqrt(heads * D)));
    out.push(gaussian(`${P}.block_sparse_moe.gate.weight`, [E, H], 1 / Math.sqrt(H)));
    // Mixtral names: w1 gate [I, H], w3 up [I, H], w2 down [H, I]; written matrix by matrix so a
    // shared dense FFN (upcycled, permuted) is generated once per matrix kind.
    for (const [w, shape] of [['w1', [I, H]], ['w3', [I, H]], ['w2', [H, I]]] as const) {
      const scale = 1 / Math.sqrt(shape[1]);
      const dense: DenseBase = { seed: tensorSeed(seed, k++), data: null };
      for (let e = 0; e < E; e++) out.push(expertTensor(o, `${P}.block_sparse_moe.experts.${e}.${w}.weight`, [...shape], w === 'w2', e, scale, dense, tensorSeed(seed, k++)));
    }
  }
  out.push(ones('model.norm.weight', H), gaussian('lm_head.weight', [V, H], 1 / Math.sqrt(H)));
  return out;
}

/** The dense matrix every expert of one kind derives from: generated on first use, dropped after the last expert. */
interface DenseBase {
  seed: number;
  data: Float32Array | null;
}

/**
 * Expert e's matrix. random: fresh noise. upcycled / permuted: the shared dense matrix plus
 * relative noise; permuted moves neuron perm[j] to slot j (rows of gate/up, columns of down).
 */
function expertTensor(o: Required<SyntheticOptions>, name: string, shape: number[], down: boolean, e: number, scale: number, dense: DenseBase, ownSeed: number): Planned {
  const own = new Noise(ownSeed);
  if (o.experts === 'random') return { name, dtype: 'BF16', shape, fill: (out) => own.fill(out, out.length, scale) };
  const [rows, cols] = shape;
  const perm = o.experts === 'permuted' ? neuronPerm(o.seed, e, o.I) : null;
  return {
    name, dtype: 'BF16', shape,
    fill: (out, start) => {
      if (dense.data === null) {
        dense.data = new Float32Array(rows * cols);
        new Noise(dense.seed).fill(dense.data, dense.data.length, scale);
      }
      const base = dense.data;
      for (let i = 0; i < out.length; i++) {
        const flat = start + i;
        let src = flat;
        if (perm) {
          const r = Math.floor(flat / cols);
          const c = flat - r * cols;
          src = down ? r * cols + perm[c] : perm[r] * cols + c;
        }
        out[i] = base[src] + o.noise * scale * own.next();
      }
      if (e === o.E - 1 && start + out.length === rows * cols) dense.data = null;
    },
  };
}

function withDefaults(opts: SyntheticOptions): Required<SyntheticOptions> {
  const H = opts.H ?? 4096;
  const heads = opts.heads ?? Math.max(1, Math.floor(H / 128));
  if (H % heads !== 0) throw new Error(`writeSyntheticMoe: hidden ${H} is not a multiple of ${heads} heads`);
  return {
    layers: opts.layers ?? 1, E: opts.E ?? 8, I: opts.I ?? 14336, H, vocab: opts.vocab ?? 256, heads,
    kvHeads: opts.kvHeads ?? Math.min(8, heads), seed: opts.seed ?? 0, experts: opts.experts ?? 'random',
    noise: opts.noise ?? 0.1, shardBytes: opts.shardBytes ?? 2 * 1024 ** 3,
  };
}

const byteLength = (t: TensorSpec) => t.shape.reduce((a, b) => a * b, 2);

/**
 * Writes the checkpoint into `dir` (created if needed): tensors are packed into shards of at most
 * shardBytes in write order, each shard streamed tensor by tensor (one tensor's bf16 bytes plus a
 * 4 MB float32 scratch in memory; upcycled/permuted also hold one dense matrix in float32).
 */
export function writeSyntheticMoe(dir: string, opts: SyntheticOptions = {}): SyntheticCheckpoint {
  const o = withDefaults(opts);
  mkdirSync(dir, { recursive: true });
  const tensors = plan(o);
  const shards: Planned[][] = [[]];
  let size = 0;
  for (const t of tensors) {
    const n = byteLength(t);
    if (shards[shards.length - 1].length > 0 && size + n > o.shardBytes) { shards.push([]); size = 0; }
    shards[shards.length - 1].push(t);
    size += n;
  }
  const N = shards.length;
  const files = shards.map((_, i) => (N === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(N).padStart(5, '0')}.safetensors`));
  const scratch = new Float32Array(CHUNK);
  shards.forEach((list, i) => {
    const tmp = join(dir, `${files[i]}.tmp`);
    const w = new SafetensorsWriter(tmp, list, { format: 'pt' });
    try {
      for (const t of list) {
        const n = byteLength(t) / 2;
        const bytes = new Uint8Array(2 * n);
        for (let s = 0; s < n; s += CHUNK) {
          const part = scratch.subarray(0, Math.min(CHUNK, n - s));
          t.fill(part, s);
          bytes.set(fromFloat32(part, 'BF16'), 2 * s);
        }
        w.write(t.name, bytes);
      }
      w.close();
    } catch (e) {
      w.abort();
      throw e;
    }
    renameSync(tmp, join(dir, files[i]));
  });
  const totalBytes = tensors.reduce((s, t) => s + byteLength(t), 0);
  const expertBytes = tensors.filter((t) => t.name.includes('.experts.')).reduce((s, t) => s + byteLength(t), 0);
  if (N > 1) {
    const weightMap: Record<string, string> = {};
    shards.forEach((list, i) => list.forEach((t) => (weightMap[t.name] = files[i])));
    const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)));
    writeFileSync(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: sorted }, null, 2) + '\n');
  }
  const config = syntheticConfig(o);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  return { dir, config, files, totalBytes, expertBytes };
}

/**
 * Batch-1 decoding through one ORT call per token (decode-graph.ts). The TS engine
 * (Transformer.hidden + logitsFromHidden) is its twin and the fallback: prompts are prefilled by
 * it, and models the graph does not cover (decodeGraphUnsupported) decode with it throughout.
 * Both share the KVCache layout [cap, NKV, D], so the graph reads past keys as views, no copies.
 */
import type { InferenceSession } from 'onnxruntime-node';
import { loadOrt, sessionOptions } from '../tensor/ort.js';
import { attentionDims } from './attention-block.js';
import { buildDecodeGraph, decodeGraphUnsupported, MAX_GRAPH_BYTES, ropeFactors, type DecodeGraphOptions, type ExpertFormat } from './decode-graph.js';
import type { KVCache } from './kv-cache.js';
import type { Transformer } from './transformer.js';

export class FastDecoder {
  private constructor(
    private readonly model: Transformer,
    private readonly session: InferenceSession,
    /** Per layer: its sliding window, or Infinity. */
    private readonly windows: number[],
    /** Weight bytes one step reads (see DecodeGraph). */
    readonly bytesPerToken: number,
    /** Per layer: float or int4 routed experts (null: dense FFN). */
    readonly expertFormats: ExpertFormat[],
    /** Whether quantized experts multiply 8-bit activations (DecodeGraphOptions). */
    readonly int8Activations: boolean,
  ) {}

  /** Why `model` cannot use the fast path (null when it can, given ORT loads). */
  static unsupported(model: Transformer): string | null {
    if (loadOrt() === null) return 'onnxruntime-node is not available';
    // The graph holds its own float32 copy of the weights (compressed experts: as stored).
    const bytes = model.weights.names().reduce((s, n) => s + model.weights.get(n).data.byteLength, 0);
    if (bytes > MAX_GRAPH_BYTES) return `${(bytes / 1e9).toFixed(1)} GB of weights exceed the ${MAX_GRAPH_BYTES / 1e9} GB a single ONNX graph holds`;
    return decodeGraphUnsupported(model.config, model.banks, model.rope);
  }

  /** Builds the graph and its session (hundreds of ms on the fixtures); null when unsupported. */
  static async create(model: Transformer, opts: DecodeGraphOptions = {}): Promise<FastDecoder | null> {
    if (FastDecoder.unsupported(model) !== null) return null;
    const ort = loadOrt()!;
    const graph = buildDecodeGraph(model.config, model.weights, model.banks, model.rope, opts);
    const session = await ort.InferenceSession.create(graph.model, sessionOptions());
    const windows = model.config.layers.map((l) => l.slidingWindow ?? Infinity);
    return new FastDecoder(model, session, windows, graph.bytesPerToken, graph.expertFormats, opts.int8Activations === true);
  }

  /** Whether a step may run with `past` tokens already cached (the graph needs at least one). */
  canStep(past: number): boolean {
    return past >= 1;
  }

  /**
   * One token at position cache.length (at least one token already cached) -> logits [V]; its
   * keys and values are appended to the cache and cache.length advances, as Transformer.hidden does.
   */
  async step(token: number, cache: KVCache): Promise<Float32Array> {
    const cfg = this.model.config;
    const H = cfg.hidden;
    const P = cache.length;
    if (!this.canStep(P)) throw new Error('fast decoder: the first token of a sequence goes through the TS engine (the graph needs a cached token)');
    if (P + 1 > cache.capacity) throw new Error(`KV cache full: ${P} + 1 tokens exceed capacity ${cache.capacity}`);
    if (!(token >= 0 && token < cfg.vocabSize)) throw new Error(`forward: token id ${token} outside the vocabulary [0, ${cfg.vocabSize})`);
    const ort = loadOrt()!;
    const d = attentionDims(cfg);
    const { cos, sin } = ropeFactors(P, d.dk, this.model.rope);
    const embed = this.model.weights.get('embed').data;
    const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {
      x: new ort.Tensor('float32', embed.subarray(token * H, (token + 1) * H), [1, H]),
      cos: new ort.Tensor('float32', cos, [1, d.dk]),
      sin: new ort.Tensor('float32', sin, [1, d.dk]),
    };
    for (let l = 0; l < cfg.numLayers; l++) {
      // A sliding window of w keys sees the new one and the last w - 1 cached ones.
      const from = Math.max(0, P - (this.windows[l] - 1));
      feeds[`past_k_${l}`] = new ort.Tensor('float32', cache.k[l].subarray(from * cache.kRow, P * cache.kRow), [P - from, cache.kRow]);
      feeds[`past_v_${l}`] = new ort.Tensor('float32', cache.v[l].subarray(from * cache.vRow, P * cache.vRow), [P - from, cache.vRow]);
    }
    const out = await this.session.run(feeds);
    for (let l = 0; l < cfg.numLayers; l++) {
      cache.write(l, out[`k_${l}`].data as Float32Array, out[`v_${l}`].data as Float32Array, 1);
    }
    cache.length += 1;
    return out.logits.data as Float32Array;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Per setting of int8Activations (index 0: exact, 1: int8). */
const decoders = [new WeakMap<Transformer, Promise<FastDecoder | null>>(), new WeakMap<Transformer, Promise<FastDecoder | null>>()];
const failures = [new WeakMap<Transformer, Error>(), new WeakMap<Transformer, Error>()];

/**
 * The model's fast decoder, built once per Transformer and setting of opts.int8Activations; null
 * when unsupported or when building the graph failed (the TS engine then decodes;
 * fastDecoderFailure says why).
 */
export function fastDecoderFor(model: Transformer, opts: DecodeGraphOptions = {}): Promise<FastDecoder | null> {
  const s = opts.int8Activations ? 1 : 0;
  let d = decoders[s].get(model);
  if (!d) {
    d = FastDecoder.create(model, { int8Activations: s === 1 }).catch((e: Error) => {
      failures[s].set(model, e);
      return null;
    });
    decoders[s].set(model, d);
  }
  return d;
}

/** Why building the model's fast decoder (for this setting) failed, if it did. */
export function fastDecoderFailure(model: Transformer, opts: DecodeGraphOptions = {}): Error | undefined {
  return failures[opts.int8Activations ? 1 : 0].get(model);
}

/** Token generation with a KV cache: greedy or temperature sampling (optionally top-p), seeded. */
import { Rng } from '../tensor/random.js';
import { fastDecoderFor } from './fast-decoder.js';
import type { RunOptions, Transformer } from './transformer.js';

export interface GenerateOptions extends RunOptions {
  maxTokens: number;
  /** 0 = greedy. */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop at this token id (not emitted). */
  stopToken?: number | null;
  /**
   * Decode through one ORT graph per token (fast-decoder.ts) when the model supports it; false
   * keeps the TS engine throughout. Routing overrides (topK, observe) always use the TS engine.
   */
  fast?: boolean;
  /**
   * The fast path's quantized experts multiply 8-bit activations (MatMulNBits accuracy_level 4,
   * as llama.cpp's Q4_0 kernels): faster on 4-bit models, close to but no longer equal to the TS
   * engine. Default false (exact float32 math). No effect on float weights or the TS engine.
   */
  int8Activations?: boolean;
}

/** Pick the next token from logits: [V]. */
export function sample(logits: Float32Array, temperature: number, topP: number, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  if (temperature <= 0) return best;
  const p = new Float64Array(logits.length);
  let s = 0;
  for (let i = 0; i < p.length; i++) s += p[i] = Math.exp((logits[i] - logits[best]) / temperature);
  const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
  // Keep the smallest prefix of most likely tokens whose mass reaches topP.
  let kept = 0;
  let mass = 0;
  while (kept < order.length && mass < topP * s) mass += p[order[kept++]];
  let r = rng.next() * mass;
  for (let i = 0; i < kept; i++) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[kept - 1];
}

/** Yields generated token ids one by one. prompt: token ids (at least one). */
export async function* generate(model: Transformer, prompt: number[], opts: GenerateOptions): AsyncGenerator<number> {
  if (prompt.length === 0) throw new Error('generate: the prompt must hold at least one token');
  const cache = model.newCache(Math.min(model.config.maxPositions, prompt.length + opts.maxTokens));
  const rng = new Rng(opts.seed ?? 0);
  const H = model.config.hidden;
  const overridden = (opts.topK !== undefined && opts.topK !== model.config.moe?.routing.topK) || opts.observe !== undefined;
  const fast = opts.fast !== false && !overridden ? await fastDecoderFor(model, { int8Activations: opts.int8Activations }) : null;
  let input = prompt;
  for (let n = 0; n < opts.maxTokens; n++) {
    let logits: Float32Array;
    if (fast && input.length === 1 && fast.canStep(cache.length)) logits = await fast.step(input[0], cache);
    else {
      // The prompt (and any step the graph cannot take) runs through the TS engine.
      const hidden = await model.hidden(input, 1, input.length, cache, opts);
      // Only the last position's logits are needed.
      logits = await model.logitsFromHidden(hidden.subarray((input.length - 1) * H), 1);
    }
    const next = sample(logits, opts.temperature ?? 0, opts.topP ?? 1, rng);
    if (opts.stopToken != null && next === opts.stopToken) return;
    yield next;
    input = [next];
  }
}

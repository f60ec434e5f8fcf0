/** moepress generate MODEL --prompt TEXT [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--top-k K] [--int8-activations] [--json] */
import { fastDecoderFor } from '../runtime/fast-decoder.js';
import { generate } from '../runtime/generate.js';
import { loadModel } from '../runtime/load-model.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { modelArg, parse, UsageError } from './args.js';
import { progressRenderer } from './progress.js';

export async function generateCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    prompt: { type: 'string' },
    'max-tokens': { type: 'string' },
    temperature: { type: 'string' },
    'top-p': { type: 'string' },
    seed: { type: 'string' },
    'top-k': { type: 'string' },
    'int8-activations': { type: 'boolean' },
    json: { type: 'boolean' },
  });
  const dir = modelArg(p, 'generate');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const model = loadModel(dir, { onProgress: progress });
  progress.end();
  const tok = loadTokenizer(dir);
  const prompt = tok.encode(p.req('prompt'));
  if (prompt.length === 0) throw new UsageError('--prompt must not be empty');
  const engine = new Transformer(model.config, model.weights, model.banks);
  // Build the one-graph decoder (when the model supports it) before the clock starts.
  const int8Activations = p.flag('int8-activations');
  await fastDecoderFor(engine, { int8Activations });
  const ids: number[] = [];
  let printed = '';
  const t0 = performance.now();
  const opts = {
    maxTokens: p.int('max-tokens') ?? 64,
    temperature: p.num('temperature') ?? 0,
    topP: p.num('top-p') ?? 1,
    seed: p.int('seed') ?? 0,
    topK: p.int('top-k'),
    stopToken: model.config.eosTokenId,
    int8Activations,
  };
  if (!json) process.stdout.write(p.req('prompt'));
  for await (const id of generate(engine, prompt, opts)) {
    ids.push(id);
    if (!json) {
      // Decode the whole continuation each time: byte-level BPE tokens may split a character.
      const text = tok.decode(ids);
      if (!text.endsWith('\uFFFD')) {
        process.stdout.write(text.slice(printed.length));
        printed = text;
      }
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  if (json) {
    process.stdout.write(JSON.stringify({ model: dir, prompt: p.req('prompt'), text: tok.decode(ids), tokens: ids, seconds, tokensPerSecond: ids.length / seconds, ...opts }) + '\n');
  } else {
    process.stdout.write(tok.decode(ids).slice(printed.length) + '\n');
    process.stderr.write(`${ids.length} tokens in ${seconds.toFixed(2)} s (${(ids.length / seconds).toFixed(1)} tokens/s)\n`);
  }
}

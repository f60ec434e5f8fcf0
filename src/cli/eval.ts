/** moepress eval MODEL --text FILE [--windows N] [--top-k K] [--batch B] [--json] */
import { readFileSync } from 'node:fs';
import { MoepressError } from '../io/errors.js';
import { loadModel } from '../runtime/load-model.js';
import { perplexity } from '../runtime/perplexity.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { modelArg, parse } from './args.js';
import { fmtBytes } from './format.js';
import { progressRenderer } from './progress.js';

export function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new MoepressError(`cannot read the text file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { file });
  }
}

export async function evalCommand(argv: string[]): Promise<void> {
  const p = parse(argv, {
    text: { type: 'string' },
    windows: { type: 'string' },
    'top-k': { type: 'string' },
    batch: { type: 'string' },
    json: { type: 'boolean' },
  });
  const dir = modelArg(p, 'eval');
  const json = p.flag('json');
  const progress = progressRenderer(json);
  const text = readText(p.req('text'));
  const model = loadModel(dir, { onProgress: progress });
  const ids = loadTokenizer(dir).encode(text);
  const engine = new Transformer(model.config, model.weights, model.banks);
  const r = await perplexity(engine, ids, { windows: p.int('windows'), topK: p.int('top-k'), batch: p.int('batch'), onProgress: progress });
  progress.end();
  const topK = p.int('top-k') ?? model.config.moe?.routing.topK ?? null;
  if (json) {
    process.stdout.write(JSON.stringify({ model: dir, text: p.req('text'), ...r, topK, expertBytes: engine.expertBytes() }) + '\n');
    return;
  }
  process.stdout.write(
    `perplexity ${r.perplexity.toFixed(3)}  (${r.windows} windows of ${r.windowSize}, ${r.tokens} tokens scored${topK !== null ? `, top-${topK}` : ''})\n` +
      `${r.seconds.toFixed(1)} s, ${r.tokensPerSecond.toFixed(0)} tokens/s, expert weights in memory ${fmtBytes(engine.expertBytes())}\n`,
  );
}

/**
 * Training data: a text file (plain or .gz) streamed through a tokenizer into one token array, and
 * seeded random windows of S+1 tokens cut into inputs [B, S] and next-token targets [B, S].
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { MoepressError } from '../io/errors.js';
import { Rng } from '../tensor/random.js';

export type TokenizeFn = (text: string) => number[];

export interface LoadTokensOptions {
  /** Characters of text tokenized at a time (the text is cut at line starts). Default 1 Mi. */
  chunkChars?: number;
}

/**
 * Where to cut text so tokenizing the pieces separately gives the whole text's tokens: after a
 * newline that is followed by a non-whitespace character. Byte-level BPE pre-tokenizers (GPT-2
 * style, the corpus tokenizer) always split there: a lone "\n" before a letter is its own
 * pre-token, while a cut inside a run of whitespace could merge differently. Searches p in
 * [from, before]; -1 when none.
 */
function lastCut(text: string, before: number, from = 1): number {
  for (let p = Math.min(before, text.length - 1); p >= Math.max(from, 1); p--) {
    if (text.charCodeAt(p - 1) === 10 && !/\s/.test(text[p])) return p;
  }
  return -1;
}

/** All tokens of `file` (`.gz`: gunzipped while streaming). Errors name the file. */
export async function loadTokens(file: string, tokenize: TokenizeFn, opts: LoadTokensOptions = {}): Promise<Int32Array> {
  if (!existsSync(file) || !statSync(file).isFile()) throw new MoepressError('text file not found', { file });
  const chunkChars = opts.chunkChars ?? 1 << 20;
  const parts: Int32Array[] = [];
  let total = 0;
  let sawText = false;
  const emit = (text: string) => {
    if (text.length === 0) return;
    if (/\S/.test(text)) sawText = true;
    const ids = tokenize(text);
    const arr = new Int32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      if (!(Number.isInteger(ids[i]) && ids[i] >= 0)) throw new MoepressError(`the tokenizer returned ${ids[i]}, not a token id`, { file });
      arr[i] = ids[i];
    }
    parts.push(arr);
    total += arr.length;
  };
  const raw = createReadStream(file);
  const stream = file.endsWith('.gz') ? raw.pipe(createGunzip()) : raw;
  raw.on('error', (e) => stream.destroy(e)); // pipe() does not forward source errors
  stream.setEncoding('utf8'); // decodes multi-byte characters split across chunks
  let buf = '';
  let searched = 0; // buf[0, searched) holds no cut: a very long line is not rescanned per chunk
  try {
    for await (const chunk of stream as AsyncIterable<string>) {
      buf += chunk;
      if (buf.length < chunkChars) continue;
      const cut = lastCut(buf, buf.length - 1, searched);
      if (cut < 0) {
        searched = buf.length - 1; // one long line so far: read on until it ends
        continue;
      }
      emit(buf.slice(0, cut));
      buf = buf.slice(cut);
      searched = 0;
    }
  } catch (e) {
    if (e instanceof MoepressError) throw e;
    throw new MoepressError(`cannot read the text (${(e as Error).message})`, { file });
  }
  emit(buf);
  if (!sawText) throw new MoepressError('the text file is empty', { file });
  if (total === 0) throw new MoepressError('the tokenizer produced no tokens', { file });
  const out = new Int32Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export interface Batch {
  B: number;
  S: number;
  /** [B·S] tokens of B windows. */
  inputs: Int32Array;
  /** [B·S] the next token after each input (the windows shifted by one). */
  targets: Int32Array;
}

/** Random windows of S+1 consecutive tokens, from a seeded generator (same seed, same batches). */
export class WindowSampler {
  private readonly rng: Rng;
  constructor(
    readonly tokens: Int32Array,
    readonly S: number,
    seed: number,
    /** Named in errors: the file the tokens came from. */
    readonly source = 'token stream',
  ) {
    if (!(Number.isInteger(S) && S >= 1)) throw new Error(`WindowSampler: window length S must be a positive integer, got ${S}`);
    if (tokens.length < S + 1) throw new MoepressError(`has ${tokens.length} tokens, fewer than the ${S + 1} one window of S=${S} needs`, { file: source });
    this.rng = new Rng(seed);
  }

  /** B windows, starts uniform over every position where S+1 tokens fit. */
  next(B: number): Batch {
    const { S, tokens } = this;
    const inputs = new Int32Array(B * S);
    const targets = new Int32Array(B * S);
    const starts = tokens.length - S; // valid starts: 0 .. N − S − 1
    for (let b = 0; b < B; b++) {
      const s0 = this.rng.int(starts);
      inputs.set(tokens.subarray(s0, s0 + S), b * S);
      targets.set(tokens.subarray(s0 + 1, s0 + S + 1), b * S);
    }
    return { B, S, inputs, targets };
  }
}

/** tokenizer.json through @huggingface/tokenizers (offline; exact match with the Rust library). */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { MoepressError } from '../io/errors.js';

export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
}

export function loadTokenizer(dir: string): TextTokenizer {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) throw new MoepressError('tokenizer.json not found; the model directory must hold the tokenizer the model was trained with', { file });
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new MoepressError(`not valid JSON (${(e as Error).message})`, { file });
  }
  const cfgFile = join(dir, 'tokenizer_config.json');
  const config = existsSync(cfgFile) ? JSON.parse(readFileSync(cfgFile, 'utf8')) : {};
  const tok = new Tokenizer(json as object, config);
  return {
    // No special tokens: the evaluation protocol scores the raw text stream.
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false }),
  };
}

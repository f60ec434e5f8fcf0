/**
 * tokenizer.json -> GGUF tokenizer metadata, as llama.cpp's convert_hf_to_gguf.py writes it for a
 * byte-level BPE tokenizer (get_vocab_base / _set_vocab_gpt2): tokenizer.ggml.model "gpt2", the
 * tokens by id (ids the tokenizer lacks, up to the model's vocab size, become "[PAD<id>]" UNUSED),
 * token types (special added tokens CONTROL, other added tokens USER_DEFINED, the rest NORMAL),
 * the merges as "left right" strings, and the special token ids from config.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MoepressError } from '../io/errors.js';
import type { ModelConfig } from '../models/canonical.js';
import { kv, type GgufKV } from './gguf-format.js';

/** gguf-py TokenType. */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
  pre_tokenizer?: { type?: string; use_regex?: boolean; add_prefix_space?: boolean; pretokenizers?: unknown[] } | null;
  added_tokens?: { id: number; content: string; special: boolean }[];
}

/**
 * llama.cpp's pre-tokenizer for this tokenizer.json. convert_hf_to_gguf.py identifies it by the
 * hash of a test string's tokens; a plain ByteLevel pre-tokenizer with the GPT-2 regex is "gpt-2"
 * (LLAMA_VOCAB_PRE_TYPE_GPT2). Anything else is refused rather than guessed.
 */
function preTokenizerName(t: TokenizerJson, file: string): string {
  const p = t.pre_tokenizer;
  if (p && p.type === 'ByteLevel' && p.use_regex !== false && !p.add_prefix_space) return 'gpt-2';
  throw new MoepressError(`pre_tokenizer ${JSON.stringify(p?.type ?? null)} is not supported for GGUF export (expected a ByteLevel pre-tokenizer with the GPT-2 regex and add_prefix_space false)`, { file });
}

export function tokenizerKvs(dir: string, cfg: ModelConfig): GgufKV[] {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) throw new MoepressError('tokenizer.json not found; GGUF export needs it for the tokenizer metadata', { file });
  const t = JSON.parse(readFileSync(file, 'utf8')) as TokenizerJson;
  if (t.model?.type !== 'BPE' || !t.model.vocab || !t.model.merges) throw new MoepressError(`model.type ${JSON.stringify(t.model?.type)} is not supported for GGUF export (expected byte-level BPE with vocab and merges)`, { file });
  const pre = preTokenizerName(t, file);
  const byId = new Map<number, string>();
  for (const [tok, id] of Object.entries(t.model.vocab)) byId.set(id, tok);
  const added = new Map<number, { content: string; special: boolean }>();
  for (const a of t.added_tokens ?? []) {
    added.set(a.id, a);
    byId.set(a.id, a.content);
  }
  const maxId = Math.max(-1, ...byId.keys());
  if (maxId >= cfg.vocabSize) throw new MoepressError(`token id ${maxId} is outside the model's vocab_size ${cfg.vocabSize}`, { file });
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < cfg.vocabSize; id++) {
    const tok = byId.get(id);
    const a = added.get(id);
    if (tok === undefined) {
      tokens.push(`[PAD${id}]`);
      types.push(TOKEN_TYPE.UNUSED);
    } else {
      tokens.push(tok);
      types.push(a ? (a.special ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED) : TOKEN_TYPE.NORMAL);
    }
  }
  const merges = t.model.merges.map((m) => (Array.isArray(m) ? `${m[0]} ${m[1]}` : m));
  const out: GgufKV[] = [
    kv.str('tokenizer.ggml.model', 'gpt2'),
    kv.str('tokenizer.ggml.pre', pre),
    kv.strs('tokenizer.ggml.tokens', tokens),
    kv.i32s('tokenizer.ggml.token_type', types),
    kv.strs('tokenizer.ggml.merges', merges),
  ];
  if (cfg.bosTokenId !== null) out.push(kv.u32('tokenizer.ggml.bos_token_id', cfg.bosTokenId));
  if (cfg.eosTokenId !== null) out.push(kv.u32('tokenizer.ggml.eos_token_id', cfg.eosTokenId));
  // moepress scores raw text without special tokens; say so, so llama.cpp does not prepend BOS.
  out.push(kv.bool('tokenizer.ggml.add_bos_token', false));
  return out;
}

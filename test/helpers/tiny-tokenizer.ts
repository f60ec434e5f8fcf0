import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A 6-token byte-level BPE tokenizer.json, enough for GGUF export's tokenizer metadata. */
export function writeTinyTokenizer(dir: string): void {
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    model: { type: 'BPE', vocab: { '<|endoftext|>': 0, a: 1, b: 2, ab: 3, 'Ġ': 4 }, merges: [['a', 'b']] },
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    added_tokens: [{ id: 0, content: '<|endoftext|>', special: true }, { id: 5, content: '<x>', special: false }],
  }));
}

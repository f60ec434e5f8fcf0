/**
 * `moepress bench` gguf section: every trained fixture exported to GGUF (F32) and run by llama.cpp
 * over the same prompt token ids as moepress; the next-token distributions must agree. A check of
 * `moepress export --gguf` for each architecture it writes (llama, mixtral as llama, olmoe), run
 * where node-llama-cpp is installed; no timing.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { exportGguf } from '../export/export-gguf.js';
import { compareLogProbs, loadNodeLlamaCpp, openLlamaCpp, type LogProbAgreement } from '../export/llama-cpp.js';
import { loadModel } from '../runtime/load-model.js';
import { loadTokenizer } from '../runtime/tokenizer.js';
import { Transformer } from '../runtime/transformer.js';
import { skipped, type BenchContext, type BenchSection, type SectionResult } from './bench-section.js';
import { readText } from './eval.js';
import { grid } from './format.js';

const KEYS = ['ggufMaxAbsLogProbDiff', 'ggufArgmaxAgreement'];
const FIXTURES = ['dense', 'mixtral', 'olmoe'];
const PROMPT_TOKENS = 64;

interface FixtureCheck extends LogProbAgreement {
  fixture: string;
  architecture: string;
}

async function run(ctx: BenchContext): Promise<SectionResult> {
  if (ctx.quick) return skipped(KEYS, 'skipped with --quick');
  const lib = await loadNodeLlamaCpp();
  if (!lib.ok) return skipped(KEYS, lib.reason);
  const textFile = resolve(ctx.shared, 'corpus', 'test.txt');
  if (!existsSync(textFile)) return skipped(KEYS, `${textFile} not found`);
  const text = readText(textFile).slice(0, 8000);
  const tmp = mkdtempSync(join(os.tmpdir(), 'moepress-gguf-'));
  const checks: FixtureCheck[] = [];
  try {
    for (const f of FIXTURES) {
      const dir = resolve(ctx.shared, 'fixtures', f);
      if (!existsSync(dir)) continue;
      ctx.onProgress({ task: 'bench', done: checks.length, total: FIXTURES.length, unit: 'fixtures', detail: `GGUF check ${f}` });
      const prompt = loadTokenizer(dir).encode(text).slice(0, PROMPT_TOKENS);
      const gguf = join(tmp, `${f}.gguf`);
      const ex = exportGguf(dir, gguf, { dtype: 'F32' });
      const m = loadModel(dir);
      const ours = await new Transformer(m.config, m.weights, m.banks).logits(prompt, 1, prompt.length);
      const llama = await openLlamaCpp(lib, gguf, { contextSize: prompt.length + 8, threads: [ctx.threads[0]] });
      try {
        checks.push({ fixture: f, architecture: ex.architecture, ...compareLogProbs(ours, await llama.promptLogProbs(prompt, m.config.vocabSize), prompt.length, m.config.vocabSize) });
      } finally {
        await llama.close();
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  if (!checks.length) return skipped(KEYS, 'no fixture found');
  const positions = checks.reduce((s, c) => s + c.positions, 0);
  return {
    summary: {
      ggufMaxAbsLogProbDiff: Math.max(...checks.map((c) => c.maxAbsLogProbDiff)),
      ggufArgmaxAgreement: checks.reduce((s, c) => s + c.argmaxAgree, 0) / positions,
    },
    detail: checks,
    text: `GGUF export checked by llama.cpp (F32 GGUF, F32 KV cache, ${PROMPT_TOKENS}-token prompt, next-token distributions at every position):\n` +
      grid(['fixture', 'GGUF arch', 'max |diff| log p', 'max |diff| p', 'argmax equal'], checks.map((c) => [c.fixture, c.architecture, c.maxAbsLogProbDiff.toExponential(2), c.maxAbsProbDiff.toExponential(2), `${c.argmaxAgree}/${c.positions}${c.missing ? ` (${c.missing} missing)` : ''}`])) + '\n',
  };
}

export const ggufSection: BenchSection = { name: 'gguf', keys: KEYS, run };

#!/usr/bin/env node
/** moepress command line: one subcommand per job; the library does the work. */
import { MoepressError } from '../io/errors.js';
import { UsageError } from './args.js';

const USAGE = `moepress — compress Mixture-of-Experts language models

usage: moepress <command> [options]

commands:
  inspect MODEL [--plan] [--json]             architecture, sizes, parameter and byte counts; on a
                                              compressed model the encoding chosen per layer and matrix
  eval MODEL --text FILE [--windows N]        perplexity (256-token windows, as transformers),
       [--top-k K] [--batch B] [--json]        streamed: one layer / one expert in memory at a time
       [--random-tokens N [--seed S]]          N windows of seeded random ids instead of a text
       [--window-size S] [--in-memory]         load the whole model first (the generate engine)
  generate MODEL --prompt TEXT                 text generation with a KV cache
       [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--json]
       [--int8-activations]                    4-bit experts multiply 8-bit activations (faster, inexact)
       [--expert-cache SIZE]                   routed experts read on demand into an LRU cache of SIZE
                                              (512MiB, 4GiB, bytes); automatic when the model won't fit
  compress MODEL --out DIR --method M --budget B  compress the routed experts to a fraction of bf16
       [--base mean|median|aligned|expert:N] [--base-from DENSE_DIR] [--layers 0,2-5]
       [--calib TEXT [--calib-windows N] [--calib-seed S]  calibration text (default 128 windows);
         [--calib-mode sequential|original]   each layer on the layers before it as compressed (default)
         [--calib-cache FILE]                   or as they were (original; only it can be cached)
         [--heal N [--heal-lr X]]]              then distill the non-expert tensors from the original
       [--allocate layer|global [--layer-weighting relative|absolute]]  (auto: bytes per layer, or one
                                              allocation across layers under the model-wide budget)
       [--seed S] [--align-iters N] [--resume] [--overwrite] [--json]
       methods: auto ders-drop ders-magnitude ders-quant resmoe-prune resmoe-svd d2-moe prune svd quant merge
  analyze MODEL [--base-from DENSE_DIR]        expert similarity and the compression family to use
       [--layers 0,2-5] [--seed S] [--align-iters N] [--json]
  restore DIR --out DENSE_DIR [--dtype bf16|f16|f32]  a plain hub-layout checkpoint again
  export MODEL --gguf OUT.gguf [--dtype f32|f16]  one GGUF file for llama.cpp (llama/mistral,
       [--overwrite] [--json]                  mixtral, olmoe); a quant q4s-g32 / q8s-g32
                                              compressed dir keeps its blocks as Q4_0 / Q8_0
  finetune MOE --out DIR --compressed-experts m   compressed experts: per token, replace the m
       --text FILE --steps N                   lowest-weighted of the top-k by trained vectors
       [--train all|ce|ce+router] [--loss distill|next-token] [--lr X] [--model-lr X]
       [--batch 8] [--seq 256] [--accumulate 1] [--seed 0] [--checkpoint-every 50]
       [--resume] [--overwrite] [--json]
  finetune COMPRESSED --out DIR --teacher ORIG  healing: the compressed model's non-expert tensors
       --text FILE --steps N                   distilled from the original (experts frozen,
       [--train all|no-embed|norms+router]     experts files unchanged)
       [--lr 3e-4] [--batch 8] [--seq 256] [--seed 0] [--resume] [--overwrite] [--json]
  upcycle DENSE --out DIR --experts E          DeRS upcycling: a dense model into an MoE
       --top-k K --delta lowrank|sparse        whose experts are W_shared + a low-rank or
       [--rank r | --density d] --text FILE    sparse delta, trained on the text
       --steps N [--lr 1e-4] [--warmup N] [--batch 8] [--seq 256] [--accumulate 1]
       [--seed 0] [--checkpoint-every 50] [--aux-coef 0.01] [--dtype bf16|f16|f32]
       [--resume] [--overwrite] [--json]
       --control: train the dense model alone with the same settings (the baseline the MoE must beat)
  bench [--json] [--quick] [--threads 1,2]     every speed figure in one run: GEMM, eval, decode vs
       [--sections gemm,engines,decode,training,gguf,scale]  llama.cpp (bench/llama-cpp package),
       [--scale-methods …] [--decode-synthetic]  training steps, GGUF checks, compressing a real-size
                                              layer; null + reason for what cannot run
  bench --scale [--methods …] [--budget B]     compress a real-size synthetic Mixtral-8x7B layer: time,
       [--experts random|upcycled|permuted]    peak RSS, GEMM / assignment / I/O split, floors,
       [--align-iters N] [--json]              extrapolation to 32 layers
  bench-quality [--fixtures mixtral,olmoe] [--methods …] [--budgets …] [--windows N] [--json]
                                              perplexity vs stored bytes for every method and budget

MODEL is a Hugging Face model directory (config.json, safetensors shards, tokenizer.json).
`;

const commands: Record<string, () => Promise<(argv: string[]) => Promise<void>>> = {
  inspect: async () => (await import('./inspect.js')).inspectCommand,
  eval: async () => (await import('./eval.js')).evalCommand,
  generate: async () => (await import('./generate.js')).generateCommand,
  compress: async () => (await import('./compress.js')).compressCommand,
  analyze: async () => (await import('./analyze.js')).analyzeCommand,
  restore: async () => (await import('./restore.js')).restoreCommand,
  export: async () => (await import('./export.js')).exportCommand,
  finetune: async () => (await import('./finetune.js')).finetuneCommand,
  upcycle: async () => (await import('./upcycle.js')).upcycleCommand,
  'bench-quality': async () => (await import('./bench-quality.js')).benchQualityCommand,
  bench: async () => (await import('./bench.js')).benchCommand,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  const load = commands[cmd];
  if (!load) {
    process.stderr.write(`moepress: unknown command '${cmd}'\n\n${USAGE}`);
    return 2;
  }
  try {
    await (await load())(rest);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`moepress ${cmd}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof MoepressError) {
      process.stderr.write(`moepress ${cmd}: error: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`moepress ${cmd}: internal error: ${process.env.MOEPRESS_DEBUG ? (e as Error).stack : (e as Error).message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});

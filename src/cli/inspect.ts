/** moepress inspect MODEL [--json] */
import { summarize, type TensorHeader } from '../models/summary.js';
import { openModel } from '../runtime/load-model.js';
import { modelArg, parse } from './args.js';
import { fmtBytes, fmtCount, table } from './format.js';

export async function inspectCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { json: { type: 'boolean' }, 'top-k': { type: 'string' } });
  const src = openModel(modelArg(p, 'inspect'));
  const headers = new Map<string, TensorHeader>();
  for (const n of src.checkpoint.names()) headers.set(n, src.checkpoint.info(n));
  const s = summarize(src.config, src.arch, headers, p.int('top-k'));
  src.checkpoint.close();
  if (p.flag('json')) {
    process.stdout.write(JSON.stringify({ model: src.dir, ...s }, null, 2) + '\n');
    return;
  }
  const rows: [string, string][] = [
    ['architecture', `${s.family} (model_type ${s.modelType})`],
    ['layers', `${s.layers} (${s.moeLayers} MoE)`],
    ['hidden size', String(s.hidden)],
    ['vocabulary', String(s.vocab)],
    ['attention', `${s.attention.heads} heads, ${s.attention.kvHeads} KV heads, head dim ${s.attention.headDim}${s.attention.mla ? ', latent (MLA)' : ''}`],
  ];
  if (s.experts) {
    rows.push(['experts', `${s.experts} routed, top-${s.topK}, intermediate ${s.expertIntermediate}${s.sharedIntermediate ? `, shared expert width ${s.sharedIntermediate}` : ''}`]);
  }
  if (s.denseIntermediate) rows.push(['dense FFN width', String(s.denseIntermediate)]);
  rows.push(
    ['parameters', fmtCount(s.params.total)],
    ['routed-expert parameters', `${fmtCount(s.params.routedExperts)} (${((100 * s.params.routedExperts) / s.params.total).toFixed(1)}%)`],
    ['active per token', fmtCount(s.params.activePerToken)],
    ['bytes', `${fmtBytes(s.bytes.total)} (${Object.entries(s.bytes.byDtype).map(([d, b]) => `${d} ${fmtBytes(b)}`).join(', ')})`],
    ['routed-expert bytes', `${fmtBytes(s.bytes.routedExperts)} (${(100 * s.bytes.routedShare).toFixed(1)}% of the checkpoint)`],
  );
  process.stdout.write(table(rows) + '\n');
}

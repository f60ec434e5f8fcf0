/** moepress inspect MODEL [--json] */
import { summarize, type ModelSummary, type TensorHeader } from '../models/summary.js';
import { hasCompressedExperts, readCompressedExpertsMeta } from '../runtime/compressed-experts.js';
import { openModel } from '../runtime/load-model.js';
import { modelArg, parse, UsageError } from './args.js';
import { fmtBytes, fmtCount, table } from './format.js';

export async function inspectCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { json: { type: 'boolean' }, 'top-k': { type: 'string' } });
  const src = openModel(modelArg(p, 'inspect'));
  const headers = new Map<string, TensorHeader>();
  for (const n of src.checkpoint.names()) headers.set(n, src.checkpoint.info(n));
  const ce = hasCompressedExperts(src.dir) ? readCompressedExpertsMeta(src.dir) : null;
  const topK = p.int('top-k');
  if (ce && topK !== undefined && topK <= ce.m) throw new UsageError(`--top-k ${topK} leaves no full expert: the model replaces ${ce.m} of each token's experts by compressed experts`);
  const s = summarize(src.config, src.arch, headers, topK, ce?.m);
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
    ...activeRows(s),
    ['bytes', `${fmtBytes(s.bytes.total)} (${Object.entries(s.bytes.byDtype).map(([d, b]) => `${d} ${fmtBytes(b)}`).join(', ')})`],
    ['routed-expert bytes', `${fmtBytes(s.bytes.routedExperts)} (${(100 * s.bytes.routedShare).toFixed(1)}% of the checkpoint)`],
  );
  process.stdout.write(table(rows) + '\n');
}

/** Active parameters per token; with compressed experts, before and after (K full vs K − m full + vectors). */
function activeRows(s: ModelSummary): [string, string][] {
  const ce = s.compressedExperts;
  if (!ce) return [['active per token', fmtCount(s.params.activePerToken)]];
  const a = ce.activeExpertParams;
  return [
    ['compressed experts', `${ce.m} of top-${s.topK} per token: ${ce.fullExperts} full experts + vectors (${fmtCount(ce.vectorParams)} stored)`],
    ['active per token', `${fmtCount(s.params.activePerToken)} (${fmtCount(ce.activePerTokenBefore)} with ${s.topK} full experts)`],
    ['active expert params', `${fmtCount(a.after)} (${fmtCount(a.before)} before, ${(100 * a.reduction).toFixed(1)}% fewer)`],
  ];
}

/** moepress inspect MODEL [--plan] [--json]: a compressed model also shows what was chosen per layer and expert matrix (--plan: per expert). */
import { modelChoices, type LayerChoices } from '../compress/auto/choices.js';
import { isCompressedDir, readManifest } from '../compress/format.js';
import { MATRICES } from '../compress/parts.js';
import { summarize, type ModelSummary, type TensorHeader } from '../models/summary.js';
import { hasCompressedExperts, readCompressedExpertsMeta } from '../runtime/compressed-experts.js';
import { openModel } from '../runtime/load-model.js';
import { modelArg, parse, UsageError } from './args.js';
import { fmtBytes, fmtCount, grid, table } from './format.js';

export async function inspectCommand(argv: string[]): Promise<void> {
  const p = parse(argv, { json: { type: 'boolean' }, 'top-k': { type: 'string' }, plan: { type: 'boolean' } });
  const src = openModel(modelArg(p, 'inspect'));
  const headers = new Map<string, TensorHeader>();
  for (const n of src.checkpoint.names()) headers.set(n, src.checkpoint.info(n));
  const ce = hasCompressedExperts(src.dir) ? readCompressedExpertsMeta(src.dir) : null;
  const topK = p.int('top-k');
  if (ce && topK !== undefined && topK <= ce.m) throw new UsageError(`--top-k ${topK} leaves no full expert: the model replaces ${ce.m} of each token's experts by compressed experts`);
  const s = summarize(src.config, src.arch, headers, topK, ce?.m);
  src.checkpoint.close();
  const manifest = isCompressedDir(src.dir) ? readManifest(src.dir) : null;
  const compression = manifest ? modelChoices(manifest) : null;
  const heal = manifest?.heal ?? null;
  if (p.flag('json')) {
    process.stdout.write(JSON.stringify({ model: src.dir, ...s, ...(compression ? { compression } : {}), ...(heal ? { heal } : {}) }, null, 2) + '\n');
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
  if (compression) process.stdout.write('\n' + compressionText(compression, p.flag('plan')) + '\n');
  if (heal) process.stdout.write(`\nhealed: non-expert tensors (${heal.train}) distilled from ${heal.teacher}, ${heal.steps} steps at lr ${heal.lr}, KL ${heal.initialLoss.toFixed(4)} -> ${heal.finalLoss.toFixed(4)}\n`);
}

/** "q3s-g128 ×6, q2a-g128 ×2": a matrix kind's labels by how many experts use them. */
function counts(c: Record<string, number>): string {
  return Object.entries(c).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ×${v}`).join(', ');
}

function compressionText(c: ReturnType<typeof modelChoices>, plan: boolean): string {
  const out = [`compressed with ${c.method} at budget ${c.budget}: ${(100 * c.storedFraction).toFixed(2)}% of the bf16 expert bytes stored`];
  const rows = c.layers.map((l) => [String(l.layer), l.method, l.storedFraction.toFixed(4), ...MATRICES.map((m) => counts(l.matrices[m]))]);
  out.push(grid(['layer', 'method', 'stored', 'gate', 'up', 'down'], rows));
  const autoLayers = c.layers.filter((l) => l.method === 'auto');
  if (autoLayers.length) out.push('', autoNotes(autoLayers));
  if (plan) {
    for (const l of c.layers) {
      out.push('', `layer ${l.layer}, per expert:`);
      out.push(grid(['expert', 'gate', 'up', 'down'], l.plan.map((r, e) => [String(e), ...r])));
    }
  }
  return out.join('\n');
}

function autoNotes(layers: LayerChoices[]): string {
  const rows = layers.map((l) => {
    const d = l.details as { proxy?: string; base?: string | null; spread?: number; bitsPerWeight?: Record<string, number>; gptqMatrices?: number; unreachedExperts?: number[] };
    const bits = d.bitsPerWeight ? MATRICES.map((m) => d.bitsPerWeight![m].toFixed(2)).join(' / ') : '';
    const unreached = d.unreachedExperts?.length ? d.unreachedExperts.join(',') : '—';
    return [String(l.layer), d.proxy ?? '', d.base ?? 'none', d.spread?.toFixed(3) ?? '', bits, String(d.gptqMatrices ?? 0), unreached];
  });
  return grid(['layer', 'auto error proxy', 'base', 'spread', 'bits/w gate/up/down', 'gptq', 'unreached experts'], rows);
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

/**
 * Before a long evaluation: the peak memory streamed eval (stream-forward.ts) should take, from
 * the checkpoint's headers and the window plan (no weights read). Returned as data; the CLI prints it.
 *
 * Memory model (bytes), with X = W·S·H·4 the residual stream of every window (float32):
 *   embed phase   X + embedding float32 (V·H·4) + its stored bytes while converting
 *   layer phase   X + (MoE layers) normed input and output of every window 2X
 *                 + the layer's non-expert weights in float32 + its largest tensor's stored bytes
 *                 + one routed expert in float32 (3·I·H·4), or a compressed layer's prepared parts
 *                   (taken as 4 × its stored bytes, an upper bound for dense / low-rank / quant parts)
 *                 + one batch's activations: attention (q, k, v, output: ~6·B·S·H·4 and scores
 *                   B·NH·S²·4) or one expert call on every token of the batch (B·S·(2H + 2I)·4)
 *   head phase    X + final norm and lm_head float32 + logits of one batch (B·S·V·4)
 * plus the runtime and garbage not yet collected (PROCESS_BYTES, GC_SLACK, as compress's estimate).
 * The in-memory engine instead holds every weight in float32 (inMemoryWeightBytes).
 */
import { isCompressedDir, readManifest } from '../compress/format.js';
import { GC_SLACK, PROCESS_BYTES } from '../compress/estimate.js';
import { isExpertWeight } from '../compress/experts-io.js';
import { DTYPE_BYTES, numel } from '../io/dtype.js';
import { attentionDims } from './attention-block.js';
import { compressedLayers, modelEntries, openModel } from './load-model.js';

export interface EvalEstimate {
  peakBytes: number;
  /** The largest phase's working set. */
  workingSet: { what: string; bytes: number }[];
  /** Float32 weights the in-memory engine (loadModel) would hold. */
  inMemoryWeightBytes: number;
}

export function estimateEval(dir: string, plan: { windows: number; windowSize: number; batch: number }): EvalEstimate {
  const src = openModel(dir);
  try {
    const cfg = src.config;
    const { hidden: H, vocabSize: V } = cfg;
    const S = plan.windowSize;
    const B = Math.min(plan.batch, plan.windows);
    const compressed = compressedLayers(isCompressedDir(dir) ? readManifest(dir) : null);
    const f32 = new Map<number | null, number>(); // layer -> float32 bytes of its non-expert weights
    const rawMax = new Map<number | null, number>(); // layer -> stored bytes of its largest tensor
    let experts = 0;
    let embed = 0;
    for (const e of modelEntries(src, compressed)) {
      const infos = e.hub.map((h) => src.checkpoint.info(h));
      const elems = infos.reduce((s, i) => s + numel(i.shape), 0);
      const stored = infos.reduce((s, i) => s + numel(i.shape) * DTYPE_BYTES[i.dtype], 0);
      if (isExpertWeight(e.name)) {
        experts += 4 * elems;
        continue;
      }
      if (e.name === 'embed') embed = 4 * elems;
      f32.set(e.layer, (f32.get(e.layer) ?? 0) + 4 * elems);
      rawMax.set(e.layer, Math.max(rawMax.get(e.layer) ?? 0, stored));
    }
    const compressedBytes = [...compressed.values()].map((r) => 4 * r.storedBytes);
    const inMemoryWeightBytes = [...f32.values()].reduce((s, b) => s + b, 0) + experts + compressedBytes.reduce((s, b) => s + b, 0);

    const X = plan.windows * S * H * 4;
    const moe = cfg.moe;
    const hasMoe = cfg.layers.some((l) => l.ffn === 'moe');
    const layerIdx = cfg.layers.map((_, l) => l);
    const layerWeights = Math.max(0, ...layerIdx.map((l) => (f32.get(l) ?? 0) + (rawMax.get(l) ?? 0)));
    const expert = moe ? Math.max(hasMoe && compressed.size < cfg.layers.filter((l) => l.ffn === 'moe').length ? 4 * 3 * moe.intermediate * H : 0, ...compressedBytes) : 0;
    const d = attentionDims(cfg);
    const attention = 4 * (6 * B * S * H + B * d.heads * S * S);
    const expertCall = moe ? 4 * B * S * (2 * H + 2 * moe.intermediate) : 0;
    const denseFfn = cfg.denseIntermediate > 0 ? 4 * B * S * (2 * H + 2 * cfg.denseIntermediate) : 0;
    const head = (f32.get(null) ?? 0) - (cfg.tieEmbeddings ? 0 : embed);
    const phases: { what: string; bytes: number }[][] = [
      [{ what: 'residual stream', bytes: X }, { what: 'embedding', bytes: embed + (rawMax.get(null) ?? 0) }],
      [
        { what: 'residual stream', bytes: X },
        { what: 'MoE input and output', bytes: hasMoe ? 2 * X : 0 },
        { what: 'largest layer', bytes: layerWeights },
        { what: compressed.size ? 'one expert or compressed layer' : 'one expert', bytes: expert },
        { what: 'batch activations', bytes: Math.max(attention, expertCall, denseFfn) },
      ],
      [{ what: 'residual stream', bytes: X }, { what: 'final norm and head', bytes: head + (rawMax.get(null) ?? 0) }, { what: 'logits', bytes: 4 * B * S * (V + H) }],
    ];
    const total = (p: { bytes: number }[]) => p.reduce((s, x) => s + x.bytes, 0);
    const workingSet = phases.reduce((a, b) => (total(b) > total(a) ? b : a)).filter((x) => x.bytes > 0);
    return { peakBytes: Math.round(PROCESS_BYTES + total(workingSet) * (1 + GC_SLACK)), workingSet, inMemoryWeightBytes };
  } finally {
    src.checkpoint.close();
  }
}

/** Router: logits -> K experts and their weights per token, for every routing kind the families use. */
import type { RoutingConfig } from '../models/canonical.js';

export interface Routes {
  K: number;
  experts: Int32Array; // [T, K]
  weights: Float32Array; // [T, K]
}

/** Indices of the k largest values of v among those with allowed[i] (ties: lower index first). */
function topk(v: Float64Array, k: number, allowed?: Uint8Array): number[] {
  const idx: number[] = [];
  for (let i = 0; i < v.length; i++) if (!allowed || allowed[i]) idx.push(i);
  idx.sort((a, b) => v[b] - v[a] || a - b);
  return idx.slice(0, k);
}

/** Group-limited selection (DeepSeek): keep the topKGroup best groups, by max or top-2 sum. */
function groupMask(score: Float64Array, nGroup: number, topKGroup: number, by: 'max' | 'top2-sum'): Uint8Array {
  const E = score.length;
  const per = E / nGroup;
  const gs = new Float64Array(nGroup);
  for (let g = 0; g < nGroup; g++) {
    const part = Array.from(score.subarray(g * per, (g + 1) * per)).sort((a, b) => b - a);
    gs[g] = by === 'max' ? part[0] : part[0] + (part.length > 1 ? part[1] : 0);
  }
  const mask = new Uint8Array(E);
  for (const g of topk(gs, topKGroup)) mask.fill(1, g * per, (g + 1) * per);
  return mask;
}

/** Phi-MoE sparsemixer at inference: each pick gets softmax over the scores within a relative margin. */
function sparsemixerPick(s: Float64Array, excluded: number, eps: number): { e: number; w: number } {
  let e = -1;
  for (let i = 0; i < s.length; i++) if (i !== excluded && (e < 0 || s[i] > s[e])) e = i;
  const thr = s[e];
  let denom = 0;
  for (let i = 0; i < s.length; i++) {
    if (i === excluded) continue;
    const factor = Math.max(Math.abs(s[i]), thr);
    if ((thr - s[i]) / factor > 2 * eps) continue; // masked to -inf
    denom += Math.exp(s[i] - thr);
  }
  return { e, w: 1 / denom };
}

/**
 * logits: [T, E] -> routes with K = topK. correctionBias: [E] (DeepSeek-V3 selection bias).
 */
export function route(logits: Float32Array, T: number, E: number, cfg: RoutingConfig, topK = cfg.topK, correctionBias: Float32Array | null = null): Routes {
  const K = topK;
  if (K < 1 || K > E) throw new Error(`route: top-k ${K} must be between 1 and ${E}`);
  const experts = new Int32Array(T * K);
  const weights = new Float32Array(T * K);
  const row = new Float64Array(E);
  const choice = new Float64Array(E);
  for (let t = 0; t < T; t++) {
    for (let e = 0; e < E; e++) row[e] = logits[t * E + e];
    let picks: number[];
    let w: number[];
    if (cfg.kind === 'topk-softmax') {
      picks = topk(row, K);
      const m = row[picks[0]];
      const ex = picks.map((e) => Math.exp(row[e] - m));
      const s = ex.reduce((a, b) => a + b, 0);
      w = ex.map((x) => x / s);
    } else if (cfg.kind === 'sparsemixer') {
      if (K !== 2) throw new Error(`route: sparsemixer routing picks exactly 2 experts, not ${K}`);
      const a = sparsemixerPick(row, -1, cfg.jitterEps);
      const b = sparsemixerPick(row, a.e, cfg.jitterEps);
      picks = [a.e, b.e];
      w = [a.w, b.w];
    } else {
      if (cfg.kind === 'softmax-topk') {
        let m = -Infinity;
        for (let e = 0; e < E; e++) m = Math.max(m, row[e]);
        let s = 0;
        for (let e = 0; e < E; e++) s += row[e] = Math.exp(row[e] - m);
        for (let e = 0; e < E; e++) row[e] /= s;
        choice.set(row);
      } else {
        for (let e = 0; e < E; e++) {
          row[e] = 1 / (1 + Math.exp(-row[e]));
          choice[e] = row[e] + (correctionBias ? correctionBias[e] : 0);
        }
      }
      const allowed = cfg.nGroup > 1 ? groupMask(choice, cfg.nGroup, cfg.topKGroup, cfg.groupScore ?? (cfg.kind === 'softmax-topk' ? 'max' : 'top2-sum')) : undefined;
      picks = topk(choice, K, allowed);
      w = picks.map((e) => row[e]);
      if (cfg.normTopK) {
        const s = w.reduce((a, b) => a + b, 0);
        w = w.map((x) => x / s);
      }
    }
    for (let j = 0; j < K; j++) {
      experts[t * K + j] = picks[j];
      weights[t * K + j] = w[j] * cfg.scale;
    }
  }
  return { K, experts, weights };
}

/**
 * Causal grouped-query attention over one sequence, with optional sliding window and sinks.
 * The kernel loops are plain TypeScript: per (head, query) it touches only the keys it may see.
 */
export interface AttentionParams {
  heads: number; // NH
  kvHeads: number; // NKV; NH is a multiple of it
  dk: number; // query/key dim per head
  dv: number; // value dim per head
  scale: number;
  /** Absolute position of query 0; queries are at qPos0 .. qPos0+Tq-1, keys at 0 .. Tk-1. */
  qPos0: number;
  /** Key j is visible to query at position p when j <= p and p - j < window. */
  window: number | null;
  /** Per-head sink logits (GPT-OSS): one extra softmax column, dropped afterwards. */
  sinks: Float32Array | null;
}

/**
 * q: [Tq, NH, dk], k: [Tk, NKV, dk], v: [Tk, NKV, dv] -> out: [Tq, NH, dv].
 * kStride/vStride: floats between consecutive key/value rows (lets a KV cache hold capacity > Tk).
 */
export function attend(q: Float32Array, k: Float32Array, v: Float32Array, Tq: number, p: AttentionParams, out: Float32Array = new Float32Array(Tq * p.heads * p.dv)): Float32Array {
  const { heads, kvHeads, dk, dv, scale, qPos0, window, sinks } = p;
  const group = heads / kvHeads;
  const kRow = kvHeads * dk;
  const vRow = kvHeads * dv;
  const maxKeys = qPos0 + Tq;
  const scores = new Float64Array(maxKeys);
  const acc = new Float64Array(dv);
  for (let t = 0; t < Tq; t++) {
    const pos = qPos0 + t;
    const j0 = window === null ? 0 : Math.max(0, pos - window + 1);
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / group);
      const qo = (t * heads + h) * dk;
      let m = sinks ? sinks[h] : -Infinity;
      for (let j = j0; j <= pos; j++) {
        const ko = j * kRow + kh * dk;
        let s = 0;
        for (let d = 0; d < dk; d++) s += q[qo + d] * k[ko + d];
        s *= scale;
        scores[j] = s;
        if (s > m) m = s;
      }
      let denom = sinks ? Math.exp(sinks[h] - m) : 0;
      acc.fill(0);
      for (let j = j0; j <= pos; j++) {
        const e = Math.exp(scores[j] - m);
        denom += e;
        const vo = j * vRow + kh * dv;
        for (let d = 0; d < dv; d++) acc[d] += e * v[vo + d];
      }
      const oo = (t * heads + h) * dv;
      for (let d = 0; d < dv; d++) out[oo + d] = acc[d] / denom;
    }
  }
  return out;
}

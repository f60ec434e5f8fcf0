/**
 * Rotary position embeddings, with the scaling variants transformers implements
 * (default, linear, llama3, yarn). Frequencies in float64; the caller's tensors are float32.
 */
import type { RopeConfig } from '../models/canonical.js';

export interface RopeTables {
  /** Rotated dims per head (even). */
  dim: number;
  invFreq: Float64Array; // [dim/2]
  /** Multiplies cos and sin (yarn's attention factor, longrope's short mscale); 1 otherwise. */
  attentionFactor: number;
  /** longrope: frequencies and factor used once the sequence outgrows originalMaxPositions. */
  long: { invFreq: Float64Array; attentionFactor: number; fromLength: number } | null;
  style: 'half' | 'interleaved';
}

function yarnMscale(scale: number, m = 1): number {
  return scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1;
}

export function ropeTables(rope: RopeConfig, maxPositions: number): RopeTables {
  const dim = rope.dim;
  const half = dim / 2;
  const base = new Float64Array(half);
  for (let i = 0; i < half; i++) base[i] = 1 / Math.pow(rope.theta, (2 * i) / dim);
  const s = rope.scaling;
  let attentionFactor = 1;
  const invFreq = new Float64Array(half);
  let long: RopeTables['long'] = null;
  if (s.type === 'longrope') {
    const longFreq = new Float64Array(half);
    for (let i = 0; i < half; i++) {
      invFreq[i] = base[i] / s.shortFactor[i];
      longFreq[i] = base[i] / s.longFactor[i];
    }
    attentionFactor = s.shortMscale;
    long = { invFreq: longFreq, attentionFactor: s.longMscale, fromLength: s.originalMaxPositions + 1 };
  } else if (s.type === 'default') invFreq.set(base);
  else if (s.type === 'linear') for (let i = 0; i < half; i++) invFreq[i] = base[i] / s.factor;
  else if (s.type === 'llama3') {
    const lowWave = s.originalMaxPositions / s.lowFreqFactor;
    const highWave = s.originalMaxPositions / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wave = (2 * Math.PI) / base[i];
      if (wave > lowWave) invFreq[i] = base[i] / s.factor;
      else if (wave < highWave) invFreq[i] = base[i];
      else {
        const smooth = (s.originalMaxPositions / wave - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        invFreq[i] = ((1 - smooth) * base[i]) / s.factor + smooth * base[i];
      }
    }
  } else if (s.type === 'yarn') {
    // yarn: blend interpolated and extrapolated frequencies over a ramp of correction dims.
    const orig = s.originalMaxPositions || maxPositions;
    const corr = (rot: number) => (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(rope.theta));
    let low = corr(s.betaFast);
    let high = corr(s.betaSlow);
    if (s.truncate) {
      low = Math.floor(low);
      high = Math.ceil(high);
    }
    low = Math.max(low, 0);
    high = Math.min(high, dim - 1);
    if (low === high) high += 0.001;
    for (let i = 0; i < half; i++) {
      const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
      const extrap = 1 - ramp;
      invFreq[i] = (base[i] / s.factor) * (1 - extrap) + base[i] * extrap;
    }
    attentionFactor = s.attentionFactor ?? (s.mscale && s.mscaleAllDim ? yarnMscale(s.factor, s.mscale) / yarnMscale(s.factor, s.mscaleAllDim) : yarnMscale(s.factor));
  }
  return { dim, invFreq, attentionFactor, long, style: rope.style };
}

/**
 * Rotate x in place. x: [T, heads, stride] with the rotated dims at [offset, offset + dim) of each
 * head; positions: [T]. 'half' pairs dim i with i + dim/2 (rotate_half). 'interleaved' pairs
 * (2i, 2i+1) and, like transformers, writes the result de-interleaved (evens then odds); q and k
 * get the same order so dot products are unchanged.
 */
export function applyRope(x: Float32Array, T: number, heads: number, stride: number, offset: number, positions: ArrayLike<number>, tab: RopeTables): void {
  const half = tab.dim / 2;
  const { cos, sin } = ropeAngles(positions, tab, T);
  const tmp = new Float64Array(tab.dim);
  for (let t = 0; t < T; t++) {
    const c = t * half;
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * stride + offset;
      if (tab.style === 'interleaved') {
        for (let i = 0; i < half; i++) {
          tmp[i] = x[o + 2 * i];
          tmp[i + half] = x[o + 2 * i + 1];
        }
      } else for (let i = 0; i < tab.dim; i++) tmp[i] = x[o + i];
      for (let i = 0; i < half; i++) {
        const x1 = tmp[i];
        const x2 = tmp[i + half];
        x[o + i] = x1 * cos[c + i] - x2 * sin[c + i];
        x[o + i + half] = x2 * cos[c + i] + x1 * sin[c + i];
      }
    }
  }
}

/**
 * cos·a and sin·a per (token, frequency), [T, dim/2] each: the float32 product p·freq first, as
 * transformers forms freqs in float32, and longrope's long factors once the sequence is longer
 * than the original context. Shared by applyRope and the differentiable rope (train/ops/rope.ts).
 */
export function ropeAngles(positions: ArrayLike<number>, tab: RopeTables, T = positions.length): { cos: Float64Array; sin: Float64Array } {
  const half = tab.dim / 2;
  let maxPos = 0;
  for (let t = 0; t < T; t++) maxPos = Math.max(maxPos, positions[t]);
  const useLong = tab.long !== null && maxPos + 1 >= tab.long.fromLength;
  const a = useLong ? tab.long!.attentionFactor : tab.attentionFactor;
  const freq = useLong ? tab.long!.invFreq : tab.invFreq;
  const cos = new Float64Array(T * half);
  const sin = new Float64Array(T * half);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const f = Math.fround(positions[t] * Math.fround(freq[i]));
      cos[t * half + i] = Math.cos(f) * a;
      sin[t * half + i] = Math.sin(f) * a;
    }
  }
  return { cos, sin };
}

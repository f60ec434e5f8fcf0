/** Normalisations, computed in float32 storage with float64 accumulation (as transformers upcasts). */

/** x: [T, N] -> [T, N]; y = x / sqrt(mean(x^2) + eps) * w. Writes into out (may alias x). */
export function rmsNorm(x: Float32Array, w: Float32Array, T: number, N: number, eps: number, out: Float32Array = new Float32Array(T * N)): Float32Array {
  if (w.length !== N) throw new Error(`rmsNorm: weight has ${w.length} values, expected ${N}`);
  for (let t = 0; t < T; t++) {
    const o = t * N;
    let ss = 0;
    for (let i = 0; i < N; i++) ss += x[o + i] * x[o + i];
    const r = 1 / Math.sqrt(ss / N + eps);
    for (let i = 0; i < N; i++) out[o + i] = x[o + i] * r * w[i];
  }
  return out;
}

/** x: [T, N] -> [T, N]; y = (x - mean) / sqrt(var + eps) * w + b (Phi-MoE). */
export function layerNorm(x: Float32Array, w: Float32Array, b: Float32Array | null, T: number, N: number, eps: number, out: Float32Array = new Float32Array(T * N)): Float32Array {
  for (let t = 0; t < T; t++) {
    const o = t * N;
    let s = 0;
    for (let i = 0; i < N; i++) s += x[o + i];
    const mean = s / N;
    let v = 0;
    for (let i = 0; i < N; i++) v += (x[o + i] - mean) ** 2;
    const r = 1 / Math.sqrt(v / N + eps);
    for (let i = 0; i < N; i++) out[o + i] = (x[o + i] - mean) * r * w[i] + (b ? b[i] : 0);
  }
  return out;
}

/** Elementwise activations and row softmax. */

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** gate, up: [n] -> out[i] = silu(gate[i]) * up[i]. out may alias gate. */
export function swiglu(gate: Float32Array, up: Float32Array, out: Float32Array = gate): Float32Array {
  for (let i = 0; i < gate.length; i++) out[i] = silu(gate[i]) * up[i];
  return out;
}

/**
 * GPT-OSS's clamped SwiGLU: gate clamped above at limit, up clamped to [-limit, limit],
 * out = (up + 1) * gate * sigmoid(alpha * gate).
 */
export function swigluOai(gate: Float32Array, up: Float32Array, out: Float32Array = gate, alpha = 1.702, limit = 7.0): Float32Array {
  for (let i = 0; i < gate.length; i++) {
    const g = Math.min(gate[i], limit);
    const u = Math.max(-limit, Math.min(up[i], limit));
    out[i] = (u + 1) * (g / (1 + Math.exp(-alpha * g)));
  }
  return out;
}

/** In-place softmax over each row of x: [rows, n]. */
export function softmaxRows(x: Float32Array, rows: number, n: number): Float32Array {
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let m = -Infinity;
    for (let i = 0; i < n; i++) if (x[o + i] > m) m = x[o + i];
    let s = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(x[o + i] - m);
      x[o + i] = e;
      s += e;
    }
    for (let i = 0; i < n; i++) x[o + i] /= s;
  }
  return x;
}

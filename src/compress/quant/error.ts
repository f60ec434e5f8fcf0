/** Error measures between a tensor x and its reconstruction y, accumulated in float64. x, y: [n]. */

function checkLengths(x: ArrayLike<number>, y: ArrayLike<number>): void {
  if (x.length !== y.length) throw new RangeError(`length mismatch: ${x.length} vs ${y.length}`);
}

/** Mean squared error, Σ (x - y)² / n (0 for empty input). */
export function mse(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkLengths(x, y);
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - y[i];
    s += d * d;
  }
  return x.length === 0 ? 0 : s / x.length;
}

/** ‖x - y‖ / ‖x‖ (Frobenius); 0 when both are zero, Infinity when only x is. */
export function relFrobenius(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkLengths(x, y);
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - y[i];
    num += d * d;
    den += x[i] * x[i];
  }
  if (den === 0) return num === 0 ? 0 : Infinity;
  return Math.sqrt(num / den);
}

/** MSE divided by the variance of x (about its mean): 1 means "no better than predicting the mean". */
export function relMse(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let mean = 0;
  for (let i = 0; i < x.length; i++) mean += x[i];
  mean /= x.length || 1;
  let v = 0;
  for (let i = 0; i < x.length; i++) v += (x[i] - mean) ** 2;
  v /= x.length || 1;
  const e = mse(x, y);
  if (v === 0) return e === 0 ? 0 : Infinity;
  return e / v;
}

/** max |x - y|. */
export function maxAbsError(x: ArrayLike<number>, y: ArrayLike<number>): number {
  checkLengths(x, y);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

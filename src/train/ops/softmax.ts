/** Row softmax and the language-model loss. Sums and exponentials in float64. */
import { accumulate, Var, type Tape } from '../tape.js';

/** x: [R, N] -> softmax over each row: [R, N]. Backward: dx = y ⊙ (dy − Σ dy ⊙ y). */
export function softmax(tape: Tape, x: Var): Var {
  tape.check('softmax', x);
  const N = x.shape[x.shape.length - 1];
  const R = x.size / N;
  const y = tape.alloc(x.size);
  for (let r = 0; r < R; r++) {
    const o = r * N;
    let m = -Infinity;
    for (let i = 0; i < N; i++) m = Math.max(m, x.data[o + i]);
    let s = 0;
    for (let i = 0; i < N; i++) s += Math.exp(x.data[o + i] - m);
    for (let i = 0; i < N; i++) y[o + i] = Math.exp(x.data[o + i] - m) / s;
  }
  const out = new Var(y, x.shape);
  return tape.record('softmax', out, [x], () => {
    const dy = out.grad!;
    const dx = tape.alloc(x.size);
    for (let r = 0; r < R; r++) {
      const o = r * N;
      let dot = 0;
      for (let i = 0; i < N; i++) dot += dy[o + i] * y[o + i];
      for (let i = 0; i < N; i++) dx[o + i] = y[o + i] * (dy[o + i] - dot);
    }
    accumulate(x, dx, true);
  });
}

/**
 * logits: [T, V], targets: [T] -> scalar mean over scored tokens of −log softmax(logits)[target].
 * mask: [T], nonzero = scored (absent: all). The softmax comes from the tape's row-softmax kernel
 * (ORT in f32: the T·V exponentials are the step's largest pointwise cost), max-shifted, so large
 * logits neither overflow nor lose the small ones; a row whose target probability underflows
 * float32 is redone exactly as m + log Σ exp(x − m) − x[target]. Since the loss is a scalar, its
 * gradient is d·(softmax − onehot)/n for the one upstream value d: the forward turns the softmax
 * array into (softmax − onehot)/n and the backward only scales it.
 */
export async function crossEntropy(tape: Tape, logits: Var, targets: ArrayLike<number>, mask?: ArrayLike<number>): Promise<Var> {
  tape.check('crossEntropy', logits);
  const V = logits.shape[logits.shape.length - 1];
  const T = logits.size / V;
  if (targets.length !== T) throw new Error(`crossEntropy: ${targets.length} targets for ${T} rows of logits`);
  if (mask && mask.length !== T) throw new Error(`crossEntropy: mask has ${mask.length} entries for ${T} rows`);
  let n = 0;
  for (let t = 0; t < T; t++) {
    if (mask && !mask[t]) continue;
    const c = targets[t];
    if (!(Number.isInteger(c) && c >= 0 && c < V)) throw new Error(`crossEntropy: target ${c} at row ${t} outside [0, ${V})`);
    n++;
  }
  if (n === 0) throw new Error('crossEntropy: no token is scored (the mask is all zero)');
  const x = logits.data;
  const p = await tape.kernels.softmaxRows(x, T, V); // becomes the gradient below
  let total = 0;
  for (let t = 0; t < T; t++) {
    const o = t * V;
    if (mask && !mask[t]) {
      p.fill(0, o, o + V);
      continue;
    }
    const c = targets[t];
    const pc = p[o + c];
    if (pc > 1e-30) total -= Math.log(pc);
    else {
      let m = -Infinity;
      for (let i = 0; i < V; i++) m = Math.max(m, x[o + i]);
      let s = 0;
      for (let i = 0; i < V; i++) s += Math.exp(x[o + i] - m);
      total += m + Math.log(s) - x[o + c];
    }
    for (let i = 0; i < V; i++) p[o + i] /= n;
    p[o + c] -= 1 / n;
  }
  const y = tape.alloc(1);
  y[0] = total / n;
  const out = new Var(y, [1]);
  return tape.record('crossEntropy', out, [logits], () => {
    const d = out.grad![0];
    // p serves this one backward only: scale it in place and hand it over
    if (d !== 1) for (let i = 0; i < p.length; i++) p[i] *= d;
    accumulate(logits, p, true);
  });
}

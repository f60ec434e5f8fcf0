/**
 * Self-distillation loss: the mean over tokens of KL(p_teacher ‖ p_student) between row softmaxes
 * of teacher and student logits (temperature 1). Used to fine-tune compressed experts toward the
 * model's own top-K outputs (finetune.ts --loss distill).
 */
import { accumulate, Var, type Tape } from '../tape.js';

/**
 * log Σ exp(x) of one row from its softmax p, without more exponentials: for the row's largest
 * probability p_j (≥ 1/N, so never underflowing), log Σ exp(x) = x_j − log p_j.
 */
function logZFrom(x: ArrayLike<number>, p: ArrayLike<number>, o: number, N: number): number {
  let j = o;
  for (let i = o + 1; i < o + N; i++) if (p[i] > p[j]) j = i;
  return x[j] - Math.log(p[j]);
}

/**
 * logits: [T, V] (student), teacher: [T, V] teacher logits (no gradient) -> scalar
 * (1/T) Σ_t Σ_i q_ti (log q_ti − log p_ti), q = softmax(teacher), p = softmax(logits).
 * Its gradient is d·(p − q)/T: the forward keeps that array and the backward scales it.
 */
export async function distillKL(tape: Tape, logits: Var, teacher: ArrayLike<number>): Promise<Var> {
  tape.check('distillKL', logits);
  const V = logits.shape[logits.shape.length - 1];
  const T = logits.size / V;
  if (teacher.length !== logits.size) throw new Error(`distillKL: teacher has ${teacher.length} logits for [${logits.shape}]`);
  const x = logits.data;
  const t = tape.alloc(teacher.length);
  t.set(teacher);
  const p = await tape.kernels.softmaxRows(x, T, V); // becomes the gradient below
  const q = await tape.kernels.softmaxRows(t, T, V);
  let total = 0;
  for (let r = 0; r < T; r++) {
    const o = r * V;
    const lzp = logZFrom(x, p, o, V);
    const lzq = logZFrom(t, q, o, V);
    let kl = 0;
    for (let i = o; i < o + V; i++) {
      // q log q − q log p, with log q = t − lzq and log p = x − lzp (exact where q is tiny: q·log q → 0)
      if (q[i] > 0) kl += q[i] * (t[i] - lzq - (x[i] - lzp));
      p[i] = (p[i] - q[i]) / T;
    }
    total += kl;
  }
  const y = tape.alloc(1);
  y[0] = total / T;
  const out = new Var(y, [1]);
  return tape.record('distillKL', out, [logits], () => {
    const d = out.grad![0];
    if (d !== 1) for (let i = 0; i < p.length; i++) p[i] *= d;
    accumulate(logits, p, true);
  });
}

/** Matrix-product ops through the tape's kernels (ORT GEMM in f32). */
import { accumulate, gradOf, Var, type Tape } from '../tape.js';

/**
 * x: [T, K], w: [N, K] (nn.Linear layout), bias: [N] -> y: [T, N] = x wᵀ + b.
 * Backward: dx = dy·w ([T,N]×[N,K], a plain matmul), dw = dyᵀ·x (Gemm transA), db = Σ_T dy.
 */
export async function linear(tape: Tape, x: Var, w: Var, bias?: Var): Promise<Var> {
  tape.check('linear', x, w, ...(bias ? [bias] : []));
  if (w.shape.length !== 2) throw new Error(`linear: weight ${w.name} must be [N, K], got [${w.shape}]`);
  const [N, K] = w.shape;
  if (x.size % K !== 0) throw new Error(`linear: x [${x.shape}] is not rows of K=${K} (weight ${w.name} [${w.shape}])`);
  if (bias && bias.size !== N) throw new Error(`linear: bias has ${bias.size} values, expected ${N}`);
  const T = x.size / K;
  const y = await tape.kernels.linear(x.data, w.data, T, N, K, bias?.data);
  const out = new Var(y, [T, N]);
  return tape.record('linear', out, bias ? [x, w, bias] : [x, w], async () => {
    const dy = out.grad!;
    if (x.needsGrad) accumulate(x, await tape.kernels.matmul(dy, w.data, T, K, N), true);
    if (w.needsGrad) accumulate(w, await tape.kernels.matmulTN(dy, x.data, T, N, K), true);
    if (bias?.needsGrad) {
      const db = gradOf(bias);
      for (let i = 0; i < dy.length; i++) db[i % N] += dy[i];
    }
  });
}

/**
 * a: [M, K], b: [K, N] -> y: [M, N] = a b.
 * Backward: da = dy·bᵀ (a linear with b as the [out=K, in=N] weight), db = aᵀ·dy (Gemm transA).
 */
export async function matmul(tape: Tape, a: Var, b: Var): Promise<Var> {
  tape.check('matmul', a, b);
  if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[1] !== b.shape[0]) {
    throw new Error(`matmul: shapes [${a.shape}] x [${b.shape}] do not chain`);
  }
  const [M, K] = a.shape;
  const N = b.shape[1];
  const y = await tape.kernels.matmul(a.data, b.data, M, N, K);
  const out = new Var(y, [M, N]);
  return tape.record('matmul', out, [a, b], async () => {
    const dy = out.grad!;
    if (a.needsGrad) accumulate(a, await tape.kernels.linear(dy, b.data, M, K, N), true);
    if (b.needsGrad) accumulate(b, await tape.kernels.matmulTN(a.data, dy, M, K, N), true);
  });
}

/**
 * Elementwise and shape ops. Shapes: a Var [R, N] may be combined with a [N] vector, which is
 * broadcast over the R rows (biases, norm weights, per-feature scales).
 */
import { accumulate, gradOf, numel, Var, type Buf, type Tape } from '../tape.js';

/** How b lines up with a: 'same' shape, or 'row' = b: [N] broadcast over a: [R, N]. */
function broadcast(op: string, a: Var, b: Var): 'same' | 'row' {
  if (a.size === b.size) return 'same';
  const N = a.shape[a.shape.length - 1];
  if (b.shape.length === 1 && b.size === N) return 'row';
  throw new Error(`${op}: shapes [${a.shape}] and [${b.shape}] do not match (b must equal a or be [${N}])`);
}

/** b: [N] <- Σ over rows of g: [R, N] (the gradient of a broadcast vector). */
function sumRows(g: Buf, N: number, out: Buf): Buf {
  for (let i = 0; i < g.length; i++) out[i % N] += g[i];
  return out;
}

/** a: [R, N], b: [R, N] or [N] -> a + b: [R, N]. */
export function add(tape: Tape, a: Var, b: Var): Var {
  tape.check('add', a, b);
  const mode = broadcast('add', a, b);
  const N = b.size;
  const y = tape.alloc(a.size);
  for (let i = 0; i < y.length; i++) y[i] = a.data[i] + b.data[mode === 'same' ? i : i % N];
  const out = new Var(y, a.shape);
  return tape.record('add', out, [a, b], () => {
    const g = out.grad!;
    // out.grad dies after this closure (Tape.backward), so a may adopt it; b must copy.
    if (mode === 'same') accumulate(b, g);
    else if (b.needsGrad) sumRows(g, N, gradOf(b));
    accumulate(a, g, true);
  });
}

/** a: [R, N], b: [R, N] or [N] -> a ⊙ b: [R, N]. */
export function mul(tape: Tape, a: Var, b: Var): Var {
  tape.check('mul', a, b);
  const mode = broadcast('mul', a, b);
  const N = b.size;
  const bi = (i: number) => (mode === 'same' ? i : i % N);
  const y = tape.alloc(a.size);
  for (let i = 0; i < y.length; i++) y[i] = a.data[i] * b.data[bi(i)];
  const out = new Var(y, a.shape);
  return tape.record('mul', out, [a, b], () => {
    const g = out.grad!;
    if (a.needsGrad) {
      const da = tape.alloc(a.size);
      for (let i = 0; i < da.length; i++) da[i] = g[i] * b.data[bi(i)];
      accumulate(a, da, true);
    }
    if (b.needsGrad) {
      const db = mode === 'same' ? tape.alloc(b.size) : gradOf(b);
      for (let i = 0; i < g.length; i++) db[bi(i)] += g[i] * a.data[i];
      if (mode === 'same') accumulate(b, db, true);
    }
  });
}

/** x -> s·x (s a constant). */
export function scale(tape: Tape, x: Var, s: number): Var {
  tape.check('scale', x);
  const y = tape.alloc(x.size);
  for (let i = 0; i < y.length; i++) y[i] = s * x.data[i];
  const out = new Var(y, x.shape);
  return tape.record('scale', out, [x], () => {
    const g = out.grad!;
    const dx = tape.alloc(x.size);
    for (let i = 0; i < dx.length; i++) dx[i] = s * g[i];
    accumulate(x, dx, true);
  });
}

/** x: any -> scalar Σ x, summed in float64. */
export function sum(tape: Tape, x: Var): Var {
  tape.check('sum', x);
  let s = 0;
  for (let i = 0; i < x.size; i++) s += x.data[i];
  const y = tape.alloc(1);
  y[0] = s;
  const out = new Var(y, [1]);
  return tape.record('sum', out, [x], () => {
    const dx = tape.alloc(x.size);
    dx.fill(out.grad![0]);
    accumulate(x, dx, true);
  });
}

/** The same values under another shape (no copy). */
export function reshape(tape: Tape, x: Var, shape: readonly number[]): Var {
  if (numel(shape) !== x.size) throw new Error(`reshape: [${x.shape}] has ${x.size} values, [${shape}] needs ${numel(shape)}`);
  const out = new Var(x.data, shape);
  return tape.record('reshape', out, [x], () => accumulate(x, out.grad!, true));
}

/**
 * x: [R, ...] -> rows [start, start + count) as a view (no copy): one expert's matrix out of a
 * stacked [E, out, in] parameter. The gradient lands in that slice of x.grad.
 */
export function rows(tape: Tape, x: Var, start: number, count: number): Var {
  const R = x.shape[0];
  if (start < 0 || count < 0 || start + count > R) throw new Error(`rows: [${start}, ${start + count}) outside [0, ${R})`);
  const per = x.size / R;
  const out = new Var(x.data.subarray(start * per, (start + count) * per), [count, ...x.shape.slice(1)], false, x.name && `${x.name}[${start}:${start + count}]`);
  return tape.record('rows', out, [x], () => {
    const g = out.grad!;
    const dst = gradOf(x).subarray(start * per, (start + count) * per);
    for (let i = 0; i < g.length; i++) dst[i] += g[i];
  });
}

/** x -> clamp(x, -c, c) (OLMoE clip_qkv); the gradient passes where x was inside the range. */
export function clamp(tape: Tape, x: Var, c: number): Var {
  tape.check('clamp', x);
  const y = tape.alloc(x.size);
  for (let i = 0; i < y.length; i++) y[i] = Math.max(-c, Math.min(c, x.data[i]));
  const out = new Var(y, x.shape);
  return tape.record('clamp', out, [x], () => {
    const g = out.grad!;
    const dx = tape.alloc(x.size);
    for (let i = 0; i < dx.length; i++) dx[i] = x.data[i] > -c && x.data[i] < c ? g[i] : 0;
    accumulate(x, dx, true);
  });
}

/**
 * g, u: [n...] -> silu(g) ⊙ u (SwiGLU's gating, tensor/activation.ts swiglu).
 * d/dg silu(g) = σ(g) (1 + g (1 − σ(g))). σ(g) comes from the tape's sigmoid kernel (ORT in f32)
 * and is kept for the backward (one array of g's size), which then needs no exponentials.
 */
export async function swiglu(tape: Tape, g: Var, u: Var): Promise<Var> {
  tape.check('swiglu', g, u);
  if (g.size !== u.size) throw new Error(`swiglu: gate [${g.shape}] and up [${u.shape}] differ`);
  const sig = await tape.kernels.sigmoid(g.data);
  const y = tape.alloc(g.size);
  for (let i = 0; i < y.length; i++) y[i] = g.data[i] * sig[i] * u.data[i];
  const out = new Var(y, g.shape);
  return tape.record('swiglu', out, [g, u], () => {
    const dy = out.grad!;
    const dg = g.needsGrad ? tape.alloc(g.size) : null;
    const du = u.needsGrad ? tape.alloc(u.size) : null;
    for (let i = 0; i < dy.length; i++) {
      const x = g.data[i];
      const s = sig[i];
      if (du) du[i] = dy[i] * x * s;
      if (dg) dg[i] = dy[i] * u.data[i] * s * (1 + x * (1 - s));
    }
    if (dg) accumulate(g, dg, true);
    if (du) accumulate(u, du, true);
  });
}

/**
 * x: [R, N], w: [N] -> y: [R, N] = x / sqrt(mean(x²) + eps) ⊙ w, per row (tensor/norm.ts rmsNorm:
 * float64 sums, float32 storage). With x̂ = x·r and g = dy ⊙ w, dx = r (g − x̂ · mean(g ⊙ x̂)),
 * dw = Σ_rows dy ⊙ x̂. Keeps r per row ([R] floats) for the backward.
 */
export function rmsNorm(tape: Tape, x: Var, w: Var, eps: number): Var {
  tape.check('rmsNorm', x, w);
  const N = w.size;
  if (x.size % N !== 0) throw new Error(`rmsNorm: x [${x.shape}] is not rows of the weight's ${N}`);
  const R = x.size / N;
  const xd = x.data;
  const wd = w.data;
  const r = new Float64Array(R);
  const y = tape.alloc(x.size);
  for (let t = 0; t < R; t++) {
    const o = t * N;
    let ss = 0;
    for (let i = 0; i < N; i++) ss += xd[o + i] * xd[o + i];
    const rt = (r[t] = 1 / Math.sqrt(ss / N + eps));
    for (let i = 0; i < N; i++) y[o + i] = xd[o + i] * rt * wd[i];
  }
  const out = new Var(y, x.shape);
  return tape.record('rmsNorm', out, [x, w], () => {
    const dy = out.grad!;
    if (w.needsGrad) {
      const dw = gradOf(w);
      for (let t = 0; t < R; t++) {
        const o = t * N;
        const rt = r[t];
        for (let i = 0; i < N; i++) dw[i] += dy[o + i] * xd[o + i] * rt;
      }
    }
    if (!x.needsGrad) return;
    const dx = tape.alloc(x.size);
    for (let t = 0; t < R; t++) {
      const o = t * N;
      const rt = r[t];
      let dot = 0;
      for (let i = 0; i < N; i++) dot += dy[o + i] * wd[i] * xd[o + i];
      const c = (dot * rt * rt) / N;
      for (let i = 0; i < N; i++) dx[o + i] = rt * (dy[o + i] * wd[i] - xd[o + i] * c);
    }
    accumulate(x, dx, true);
  });
}

/**
 * ids: [T] token ids, table: [V, H] -> [T, H]. The gradient scatter-adds each row of dy into the
 * table row of its id, so repeated ids sum their contributions.
 */
export function embedding(tape: Tape, ids: ArrayLike<number>, table: Var): Var {
  tape.check('embedding', table);
  const [V, H] = table.shape;
  const T = ids.length;
  const y = tape.alloc(T * H);
  for (let t = 0; t < T; t++) {
    const id = ids[t];
    if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`embedding: token id ${id} outside the vocabulary [0, ${V})`);
    y.set(table.data.subarray(id * H, (id + 1) * H), t * H);
  }
  const out = new Var(y, [T, H]);
  return tape.record('embedding', out, [table], () => {
    const dy = out.grad!;
    const dt = gradOf(table);
    for (let t = 0; t < T; t++) {
      const o = ids[t] * H;
      for (let i = 0; i < H; i++) dt[o + i] += dy[t * H + i];
    }
  });
}

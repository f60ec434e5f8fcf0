/**
 * Finite-difference gradient checks in float64 (STYLE rule 12: numbers are checked, not trusted).
 *
 * The function under test runs on an 'f64' tape, so both the analytic gradient (backward) and the
 * numerical one (central differences, step h) are float64: with h = 1e-5 the truncation error is
 * O(h²) ≈ 1e-10 relative and the rounding error ≈ 1e-16 / h ≈ 1e-11, so a correct backward
 * agrees to ~1e-9 and a wrong one does not come near 1e-6.
 */
import { Tape, type Var } from './tape.js';

export interface GradCheckResult {
  /** Per input: ‖numerical − analytic‖ / ‖numerical‖ over the checked coordinates. */
  errors: { name: string; relErr: number; norm: number; checked: number }[];
  maxRelErr: number;
}

export interface GradCheckOptions {
  h?: number;
  /** Check at most this many coordinates per input (spread evenly); default all. */
  maxPerInput?: number;
}

/**
 * f builds a scalar from `inputs` (f64 Vars with requiresGrad) on the tape it is given. The
 * inputs must not be all zero (a zero gradient would match anything) and f must be smooth at them
 * (no top-k choice or clamp edge within h of flipping).
 */
export async function gradCheck(f: (tape: Tape) => Promise<Var> | Var, inputs: Var[], opts: GradCheckOptions = {}): Promise<GradCheckResult> {
  const h = opts.h ?? 1e-5;
  for (const v of inputs) {
    if (v.dtype !== 'f64') throw new Error(`gradCheck: input ${v.name} must be float64`);
    if (!v.requiresGrad) throw new Error(`gradCheck: input ${v.name} must require a gradient`);
    if (v.data.every((x) => x === 0)) throw new Error(`gradCheck: input ${v.name} is all zeros; the check would prove nothing`);
    v.grad = null;
  }
  const tape = new Tape({ dtype: 'f64' });
  await tape.backward(await f(tape));
  const evalAt = async () => (await f(new Tape({ dtype: 'f64', grad: false }))).item();
  const errors: GradCheckResult['errors'] = [];
  for (const [n, v] of inputs.entries()) {
    const analytic = v.grad ?? new Float64Array(v.size);
    const stride = Math.max(1, Math.floor(v.size / (opts.maxPerInput ?? v.size)));
    let num2 = 0;
    let diff2 = 0;
    let checked = 0;
    for (let i = 0; i < v.size; i += stride) {
      const x0 = v.data[i];
      v.data[i] = x0 + h;
      const fp = await evalAt();
      v.data[i] = x0 - h;
      const fm = await evalAt();
      v.data[i] = x0;
      const g = (fp - fm) / (2 * h);
      num2 += g * g;
      diff2 += (g - analytic[i]) ** 2;
      checked++;
    }
    if (num2 === 0) throw new Error(`gradCheck: the numerical gradient of ${v.name || `input ${n}`} is zero; choose inputs where the function depends on it`);
    errors.push({ name: v.name || `input ${n}`, relErr: Math.sqrt(diff2 / num2), norm: Math.sqrt(num2), checked });
  }
  return { errors, maxRelErr: Math.max(...errors.map((e) => e.relErr)) };
}

/** Shared pieces of the float64 gradient checks (train-ops, train-moe, upcycle tests). */
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { constant, mul, param, sum, type Tape, type Var } from '../../src/train/autodiff.js';
import { gradCheck } from '../../src/train/gradcheck.js';

/** A float64 parameter of the given shape, seeded normal values times s. */
export function p64(shape: number[], seed: number, s = 1, name = 'p'): Var {
  const r = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return param(Float64Array.from({ length: n }, () => r.normal() * s), shape, name);
}

/** Σ y ⊙ r for a fixed random r: a scalar whose gradient reaches every output element. */
export function project(tape: Tape, y: Var, seed = 99): Var {
  const r = new Rng(seed);
  return sum(tape, mul(tape, y, constant(Float64Array.from({ length: y.size }, () => r.normal()), y.shape)));
}

/** Every input's analytic gradient within tol (relative) of central finite differences. */
export async function check(what: string, f: (t: Tape) => Promise<Var> | Var, inputs: Var[], tol = 1e-6): Promise<void> {
  const r = await gradCheck(f, inputs);
  for (const e of r.errors) assert.ok(e.relErr < tol, `${what}: d/d${e.name} relative error ${e.relErr.toExponential(2)} (|g| ${e.norm.toExponential(2)})`);
}

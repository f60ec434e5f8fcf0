/**
 * Values at fixed positions of a matrix, differentiable in the values: the sparse delta of DeRS
 * upcycling (METHODS.md Family 1, `SM`), W_e = W_shared + S_e with S_e nonzero only at a fixed,
 * seeded set of positions whose values train.
 *
 * The positions are data, not parameters: they never move, so no gradient flows into them.
 */
import { accumulate, Var, type Tape } from '../tape.js';

function checkPositions(op: string, n: number, pos: Int32Array, values: Var): void {
  if (values.size !== pos.length) throw new Error(`${op}: ${values.size} values for ${pos.length} positions`);
  for (let k = 0; k < pos.length; k++) {
    if (!(pos[k] >= 0 && pos[k] < n)) throw new Error(`${op}: position ${pos[k]} outside [0, ${n})`);
  }
}

/**
 * base: [out, in] (any shape), values: [nnz], pos: [nnz] flat positions into base -> base with
 * values[k] added at pos[k] (repeated positions add up). Backward: dbase = dy,
 * dvalues[k] = dy[pos[k]] (a gather).
 */
export function addAtPositions(tape: Tape, base: Var, values: Var, pos: Int32Array): Var {
  tape.check('addAtPositions', base, values);
  checkPositions('addAtPositions', base.size, pos, values);
  const y = tape.alloc(base.size);
  y.set(base.data);
  for (let k = 0; k < pos.length; k++) y[pos[k]] += values.data[k];
  const out = new Var(y, base.shape);
  return tape.record('addAtPositions', out, [base, values], () => {
    const g = out.grad!;
    if (values.needsGrad) {
      const dv = tape.alloc(values.size);
      for (let k = 0; k < pos.length; k++) dv[k] = g[pos[k]];
      accumulate(values, dv, true);
    }
    // out.grad dies after this closure (Tape.backward), so base may adopt it.
    accumulate(base, g, true);
  });
}

/**
 * x: [..] (any shape), pos: [nnz] -> [nnz] = x at the positions (the inverse view of
 * addAtPositions). Backward scatter-adds into those positions of dx.
 */
export function gatherAtPositions(tape: Tape, x: Var, pos: Int32Array): Var {
  tape.check('gatherAtPositions', x);
  for (let k = 0; k < pos.length; k++) {
    if (!(pos[k] >= 0 && pos[k] < x.size)) throw new Error(`gatherAtPositions: position ${pos[k]} outside [0, ${x.size})`);
  }
  const y = tape.alloc(pos.length);
  for (let k = 0; k < pos.length; k++) y[k] = x.data[pos[k]];
  const out = new Var(y, [pos.length]);
  return tape.record('gatherAtPositions', out, [x], () => {
    const g = out.grad!;
    const dx = tape.alloc(x.size);
    for (let k = 0; k < pos.length; k++) dx[pos[k]] += g[k];
    accumulate(x, dx, true);
  });
}

/** Relative-error comparison (STYLE rule 12: never exact equality of floats, never on zeros). */
import assert from 'node:assert/strict';

export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, `length ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  assert.ok(den > 0, 'reference is all zeros: the test would prove nothing');
  return Math.sqrt(num / den);
}

export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what = 'values'): void {
  const e = relErr(a, b);
  assert.ok(e < tol, `${what}: relative error ${e.toExponential(3)} >= ${tol}`);
}

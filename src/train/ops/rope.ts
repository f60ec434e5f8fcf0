/** Rotary position embedding as a differentiable op, mirroring tensor/rope.ts applyRope. */
import { ropeAngles, type RopeTables } from '../../tensor/rope.js';
import { accumulate, Var, type Buf, type Tape } from '../tape.js';

/**
 * Rotate (sign = +1) or rotate back (sign = −1, the transpose: rotation by −θ) the rotated dims of
 * every head of src into dst. 'interleaved' reads pairs (2i, 2i+1) and writes halves, as applyRope;
 * its transpose reads halves and writes pairs. Dims outside [offset, offset + dim) are copied.
 */
function rotate(src: Buf, dst: Buf, T: number, heads: number, D: number, offset: number, tab: RopeTables, cs: { cos: Float64Array; sin: Float64Array }, sign: 1 | -1): void {
  const half = tab.dim / 2;
  const inter = tab.style === 'interleaved';
  dst.set(src);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * D + offset;
      for (let i = 0; i < half; i++) {
        const c = cs.cos[t * half + i];
        const s = sign * cs.sin[t * half + i];
        // forward: inputs come from pairs when interleaved; backward: outputs go to pairs
        const i1 = inter && sign === 1 ? o + 2 * i : o + i;
        const i2 = inter && sign === 1 ? o + 2 * i + 1 : o + i + half;
        const o1 = inter && sign === -1 ? o + 2 * i : o + i;
        const o2 = inter && sign === -1 ? o + 2 * i + 1 : o + i + half;
        const x1 = src[i1];
        const x2 = src[i2];
        dst[o1] = x1 * c - x2 * s;
        dst[o2] = x2 * c + x1 * s;
      }
    }
  }
}

/**
 * x: [T, heads, D] -> [T, heads, D] with dims [offset, offset + tab.dim) of each head rotated by
 * position (positions: [T]). Backward rotates dy by −θ (the rotation's transpose; the attention
 * factor scales both ways).
 */
export function rope(tape: Tape, x: Var, positions: ArrayLike<number>, tab: RopeTables, offset = 0): Var {
  tape.check('rope', x);
  if (x.shape.length !== 3) throw new Error(`rope: x must be [T, heads, D], got [${x.shape}]`);
  const [T, heads, D] = x.shape;
  if (positions.length !== T) throw new Error(`rope: ${positions.length} positions for ${T} tokens`);
  if (offset + tab.dim > D) throw new Error(`rope: rotated dims [${offset}, ${offset + tab.dim}) exceed head dim ${D}`);
  const cs = ropeAngles(positions, tab);
  const y = tape.alloc(x.size);
  rotate(x.data, y, T, heads, D, offset, tab, cs, 1);
  const out = new Var(y, x.shape);
  return tape.record('rope', out, [x], () => {
    const dx = tape.alloc(x.size);
    rotate(out.grad!, dx, T, heads, D, offset, tab, cs, -1);
    accumulate(x, dx, true);
  });
}

/**
 * Byte allocation for `auto`: each item (one expert matrix) has options (bytes, estimated error),
 * exactly one is chosen per item, and the total error is minimised with total bytes <= cap (a
 * multiple-choice knapsack). Solved the Lagrangian way: every item starts at its cheapest option
 * and climbs its lower convex hull of (bytes, error), steepest error decrease per byte first across
 * all items, as long as the step fits; then leftover bytes buy any single upgrade (hull or not)
 * that fits and lowers the error most, and pair exchanges (one item down its hull, another up)
 * close the gap the greedy leaves at the cap. The greedy alone is optimal whenever the cap lands
 * on a hull vertex sum (the Lagrangian optimum for that multiplier); `allocateExact` (brute
 * force, tiny problems) is the twin the tests compare against.
 */
import { MoepressError } from '../../io/errors.js';

export interface AllocOption {
  bytes: number;
  error: number;
}

export interface Allocation {
  /** Index into each item's options. */
  choice: number[];
  bytes: number;
  error: number;
}

/** Indices of the lower convex hull of an item's options, by increasing bytes (dominated options dropped). */
export function lowerHull(options: AllocOption[]): number[] {
  const order = options.map((_, i) => i).sort((a, b) => options[a].bytes - options[b].bytes || options[a].error - options[b].error);
  // Pareto front: strictly decreasing error with increasing bytes
  const front: number[] = [];
  for (const i of order) {
    if (front.length && options[front[front.length - 1]].bytes === options[i].bytes) continue;
    if (front.length && options[i].error >= options[front[front.length - 1]].error) continue;
    front.push(i);
  }
  // convexity: slopes (error drop per byte) must decrease along the hull
  const hull: number[] = [];
  for (const i of front) {
    while (hull.length >= 2) {
      const a = options[hull[hull.length - 2]];
      const b = options[hull[hull.length - 1]];
      const c = options[i];
      // b lies on or above the segment a–c: drop it
      if ((b.error - a.error) * (c.bytes - a.bytes) >= (c.error - a.error) * (b.bytes - a.bytes)) hull.pop();
      else break;
    }
    hull.push(i);
  }
  return hull;
}

function total(items: AllocOption[][], choice: number[]): Allocation {
  let bytes = 0;
  let error = 0;
  choice.forEach((c, i) => {
    bytes += items[i][c].bytes;
    error += items[i][c].error;
  });
  return { choice, bytes, error };
}

function cheapest(options: AllocOption[]): number {
  let best = 0;
  for (let i = 1; i < options.length; i++) {
    const a = options[i];
    const b = options[best];
    if (a.bytes < b.bytes || (a.bytes === b.bytes && a.error < b.error)) best = i;
  }
  return best;
}

function checkItems(items: AllocOption[][], cap: number): void {
  let min = 0;
  items.forEach((o, i) => {
    if (o.length === 0) throw new MoepressError(`allocation: item ${i} has no options`);
    min += o[cheapest(o)].bytes;
  });
  if (min > cap) throw new MoepressError(`allocation: the cheapest options need ${min} bytes, more than the ${cap} allowed`);
}

/** Greedy Lagrangian allocation (see the file comment). items[i]: options of item i; cap: bytes. */
export function allocate(items: AllocOption[][], cap: number): Allocation {
  checkItems(items, cap);
  const hulls = items.map(lowerHull);
  const pos = hulls.map(() => 0); // position on each hull (hull[0] is the cheapest option)
  let bytes = items.reduce((s, o, i) => s + o[hulls[i][0]].bytes, 0);
  // Steps in order of slope; a binary heap keyed by the next step's error drop per byte.
  const heap: { item: number; slope: number }[] = [];
  const slope = (i: number) => {
    const h = hulls[i];
    const a = items[i][h[pos[i]]];
    const b = items[i][h[pos[i] + 1]];
    return (a.error - b.error) / (b.bytes - a.bytes);
  };
  const push = (i: number) => {
    if (pos[i] + 1 >= hulls[i].length) return;
    heap.push({ item: i, slope: slope(i) });
    let k = heap.length - 1;
    while (k > 0) {
      const p = (k - 1) >> 1;
      if (heap[p].slope >= heap[k].slope) break;
      [heap[p], heap[k]] = [heap[k], heap[p]];
      k = p;
    }
  };
  const pop = () => {
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      let k = 0;
      for (;;) {
        const l = 2 * k + 1;
        const r = l + 1;
        let m = k;
        if (l < heap.length && heap[l].slope > heap[m].slope) m = l;
        if (r < heap.length && heap[r].slope > heap[m].slope) m = r;
        if (m === k) break;
        [heap[m], heap[k]] = [heap[k], heap[m]];
        k = m;
      }
    }
    return top;
  };
  items.forEach((_, i) => push(i));
  while (heap.length) {
    const { item } = pop();
    const h = hulls[item];
    const step = items[item][h[pos[item] + 1]].bytes - items[item][h[pos[item]]].bytes;
    if (bytes + step > cap) continue; // this item stays; cheaper steps of others may still fit
    bytes += step;
    pos[item]++;
    push(item);
  }
  const choice = hulls.map((h, i) => h[pos[i]]);
  // Leftover bytes: the best single upgrade among all options that still fits, repeatedly.
  for (;;) {
    let best: { item: number; option: number; gain: number } | null = null;
    items.forEach((opts, i) => {
      const cur = opts[choice[i]];
      opts.forEach((o, j) => {
        const gain = cur.error - o.error;
        if (gain > 0 && bytes - cur.bytes + o.bytes <= cap && (!best || gain > best.gain)) best = { item: i, option: j, gain };
      });
    });
    if (!best) break;
    const b = best as { item: number; option: number; gain: number };
    bytes += items[b.item][b.option].bytes - items[b.item][choice[b.item]].bytes;
    choice[b.item] = b.option;
  }
  exchange(items, hulls, choice, cap, bytes);
  return total(items, choice);
}

/**
 * Pair exchanges the greedy cannot make: item i steps down its hull, freeing bytes that buy a
 * larger upgrade of item j (any option), when the total error drops. Repeats until none helps
 * (bounded by the number of items). Fixes the greedy's one-step gap at the cap, e.g. a cheap
 * steep step taken first that leaves too few bytes for a bigger, better one.
 */
function exchange(items: AllocOption[][], hulls: number[][], choice: number[], cap: number, bytes: number): void {
  for (let round = 0; round < items.length; round++) {
    let best: { i: number; down: number; j: number; up: number; gain: number } | null = null;
    for (let i = 0; i < items.length; i++) {
      const ci = items[i][choice[i]];
      for (const d of hulls[i]) {
        const o = items[i][d];
        if (o.bytes >= ci.bytes) continue;
        const freed = cap - bytes + ci.bytes - o.bytes;
        const loss = o.error - ci.error;
        for (let j = 0; j < items.length; j++) {
          if (j === i) continue;
          const cj = items[j][choice[j]];
          items[j].forEach((u, k) => {
            const gain = cj.error - u.error - loss;
            if (gain > 1e-12 * Math.max(1, Math.abs(cj.error)) && u.bytes - cj.bytes <= freed && (!best || gain > best.gain)) best = { i, down: d, j, up: k, gain };
          });
        }
      }
    }
    if (!best) return;
    const b = best as { i: number; down: number; j: number; up: number };
    bytes += items[b.i][b.down].bytes - items[b.i][choice[b.i]].bytes + items[b.j][b.up].bytes - items[b.j][choice[b.j]].bytes;
    choice[b.i] = b.down;
    choice[b.j] = b.up;
  }
}

/** Exhaustive search (the naive twin of `allocate`): the true optimum, for small problems only. */
export function allocateExact(items: AllocOption[][], cap: number): Allocation {
  checkItems(items, cap);
  let count = 1;
  for (const o of items) count *= o.length;
  if (count > 1e6) throw new Error(`allocateExact: ${count} combinations, too many`);
  let best: Allocation | null = null;
  const choice = items.map(() => 0);
  for (let k = 0; k < count; k++) {
    let r = k;
    for (let i = 0; i < items.length; i++) {
      choice[i] = r % items[i].length;
      r = Math.floor(r / items[i].length);
    }
    const t = total(items, [...choice]);
    if (t.bytes <= cap && (!best || t.error < best.error)) best = t;
  }
  return best!;
}

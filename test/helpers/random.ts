/** A seeded uniform [0, 1) generator as a plain function, over the library's Rng (mulberry32). */
import { Rng } from '../../src/tensor/random.js';

export function uniformFn(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

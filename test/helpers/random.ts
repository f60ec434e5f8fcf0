/** A seeded uniform [0, 1) generator as a plain function, over the library's Rng (mulberry32). */
import { Rng } from '../../src/tensor/random.js';

export function uniformFn(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** n deterministic bytes (xorshift32 from seed), so byte-exact layout tests reproduce. */
export function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

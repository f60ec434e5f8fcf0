/**
 * Measures a codec on given data: reconstruction error and throughput. Returns numbers only (the
 * CLI renders them). Used for the tables in the docs and to compare RTN with MSE-fitted scales.
 */
import type { BlockCodec } from './codec.js';
import { relMse } from './error.js';
import { Rng } from '../../tensor/random.js';

export interface CodecMeasurement {
  id: string;
  bitsPerWeight: number;
  /** MSE / variance of the data. */
  relMse: number;
  /** Million values per second. */
  quantizeMvals: number;
  dequantizeMvals: number;
}

export function measureCodec(codec: BlockCodec, x: Float32Array, repeats = 1): CodecMeasurement {
  let packed = codec.quantize(x); // warm-up, and the result we measure
  let t0 = performance.now();
  for (let r = 0; r < repeats; r++) packed = codec.quantize(x);
  const tq = (performance.now() - t0) / repeats;
  const out = new Float32Array(x.length);
  codec.dequantize(packed, x.length, out);
  t0 = performance.now();
  for (let r = 0; r < repeats; r++) codec.dequantize(packed, x.length, out);
  const td = (performance.now() - t0) / repeats;
  return {
    id: codec.id,
    bitsPerWeight: (8 * packed.length) / x.length,
    relMse: relMse(x, out),
    quantizeMvals: x.length / tq / 1e3,
    dequantizeMvals: x.length / td / 1e3,
  };
}

/** n standard Gaussian values. */
export function gaussianData(n: number, seed: number): Float32Array {
  return new Rng(seed).normals(n);
}

/** n Laplacian values with unit variance (inverse CDF), heavier-tailed like real weight deltas. */
export function laplacianData(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = rng.next() - 0.5;
    out[i] = -Math.sign(u) * Math.log(1 - 2 * Math.abs(u)) / Math.SQRT2;
  }
  return out;
}

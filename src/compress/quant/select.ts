/**
 * Picks the codec for a byte budget. Budgets are fractions of the same weights' bf16 bytes (16 bits
 * per weight), so a codec costs 8 * bytesPerBlock / blockSize bits per weight, or
 * bytesPerBlock / (2 * blockSize) of budget: q4s-g64 = 34 / 128 = 0.2656, q3s-g32 = 14 / 64 = 0.2188.
 */
import { MoepressError } from '../../io/errors.js';
import type { ScaleDtype } from './block.js';
import { type BlockCodec, makeCodec, storedBytes } from './codec.js';

export interface ChooseCodecOptions {
  /** Budget already spent elsewhere, as a fraction of bf16 bytes (a shared base over E experts: 1/E). */
  overhead?: number;
  /** Codec family for k >= 2 (default symmetric); 1 bit is always the sign codec. */
  kind?: 'symmetric' | 'asymmetric';
  /** Round-to-nearest scales (the `quant` baseline) instead of MSE-fitted ones; q1s has no such variant. */
  rtn?: boolean;
  scaleDtype?: ScaleDtype;
  /** Bits to consider (default 8 down to 1). */
  bits?: readonly number[];
  /** Group sizes to consider (default 32, 64, 128, 256). */
  groupSizes?: readonly number[];
  /** Values in the tensor, so the padding of a short last block is counted; default: whole blocks. */
  n?: number;
}

const DEFAULT_BITS = [8, 7, 6, 5, 4, 3, 2, 1];
const DEFAULT_GROUPS = [32, 64, 128, 256];

/** Stored bytes as a fraction of bf16 bytes, for n values (or per whole block when n is not given). */
export function budgetOf(codec: BlockCodec, n?: number): number {
  if (n === undefined) return codec.bytesPerBlock / (2 * codec.blockSize);
  return n === 0 ? 0 : storedBytes(codec, n) / (2 * n);
}

/** Every codec the options allow, in order of preference: more bits first, then smaller groups. */
export function candidateCodecs(opts: ChooseCodecOptions = {}): BlockCodec[] {
  const bits = [...(opts.bits ?? DEFAULT_BITS)].sort((a, b) => b - a);
  const groups = [...(opts.groupSizes ?? DEFAULT_GROUPS)].sort((a, b) => a - b);
  const out: BlockCodec[] = [];
  for (const k of bits) {
    for (const g of groups) {
      const kind = k === 1 ? 'sign' : opts.kind ?? 'symmetric';
      out.push(makeCodec({ kind, bits: k, blockSize: g, rtn: k === 1 ? false : opts.rtn, scaleDtype: opts.scaleDtype }));
    }
  }
  return out;
}

/**
 * The best codec whose stored bytes fit `budget - overhead` (fractions of bf16 bytes): the most bits,
 * then the smallest group that fits. Throws, naming the budget and the cheapest codec's cost, when
 * nothing fits.
 */
export function chooseCodec(budget: number, opts: ChooseCodecOptions = {}): BlockCodec {
  const overhead = opts.overhead ?? 0;
  if (!(budget > 0 && budget < Infinity)) throw new MoepressError(`budget must be a positive fraction of bf16 bytes, got ${budget}`);
  if (!(overhead >= 0 && overhead < Infinity)) throw new MoepressError(`overhead must be >= 0, got ${overhead}`);
  const available = budget - overhead;
  const candidates = candidateCodecs(opts);
  if (candidates.length === 0) throw new MoepressError('chooseCodec: no candidate bits or group sizes');
  // A relative slack so that e.g. budget 0.28125 admits q4s-g32 at exactly 4.5 bits despite float rounding.
  const slack = 1e-12 * Math.max(1, budget);
  for (const c of candidates) if (budgetOf(c, opts.n) <= available + slack) return c;
  const cheapest = cheapestCodec(candidates, opts.n);
  const cost = budgetOf(cheapest, opts.n);
  const spent = overhead > 0 ? `, after ${fmt(overhead)} spent elsewhere (${fmt(16 * overhead)} bits/weight)` : '';
  throw new MoepressError(`budget ${fmt(budget)} of bf16 leaves ${fmt(16 * available)} bits/weight for quantized values${
    spent}; the smallest codec, ${cheapest.id}, needs ${fmt(16 * cost)} bits/weight = ${fmt(cost)} of bf16`);
}

function cheapestCodec(candidates: BlockCodec[], n?: number): BlockCodec {
  let cheapest = candidates[0];
  for (const c of candidates) if (budgetOf(c, n) < budgetOf(cheapest, n)) cheapest = c;
  return cheapest;
}

/** The smallest budget (fraction of bf16 bytes, overhead excluded) that any allowed codec fits. */
export function minimumBudget(opts: ChooseCodecOptions = {}): number {
  const candidates = candidateCodecs(opts);
  if (candidates.length === 0) throw new MoepressError('minimumBudget: no candidate bits or group sizes');
  return budgetOf(cheapestCodec(candidates, opts.n), opts.n);
}

/**
 * The scale dtype for quantizing x with k-bit blocks of G values: 'bf16' when some block's scale
 * (estimated as max|x| / 2^(k-1)) would overflow float16, or when most blocks' scales fall below
 * 2^-16, where float16 subnormals are spaced more coarsely (2^-24) than bfloat16's 8 significant
 * bits; else 'f16' (3 more bits of scale precision). Measured on Gaussian data, q8s-g64: with
 * σ = 1e-3 f16 gives relative error 0.0055 vs 0.0056 for bf16; σ = 1e-5: 0.0066 vs 0.0056;
 * σ = 1e-8: f16 scales underflow (0.99) while bf16 still gives 0.0056.
 */
export function chooseScaleDtype(x: Float32Array, bits: number, blockSize: number): ScaleDtype {
  const levels = 2 ** Math.max(0, bits - 1);
  let small = 0;
  let blocks = 0;
  for (let b = 0; b < x.length; b += blockSize) {
    let amax = 0;
    for (let i = b; i < Math.min(x.length, b + blockSize); i++) amax = Math.max(amax, Math.abs(x[i]));
    if (amax === 0) continue; // stores scale 0 either way
    const s = amax / levels;
    if (s > 65504) return 'bf16';
    if (s < 2 ** -16) small++;
    blocks++;
  }
  return small > blocks / 2 ? 'bf16' : 'f16';
}

function fmt(v: number): string {
  return Number(v.toPrecision(4)).toString();
}

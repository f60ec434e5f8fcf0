/**
 * The encodings `auto` chooses from for one expert matrix, each with its exact stored bytes and
 * estimated error (weighting.ts):
 *   direct  W ≈ Q(W) with a block codec: symmetric MSE-fitted k = 2..8 bits, asymmetric k = 2..4,
 *           1-bit sign, groups of 32/64/128, and 256 up to 3 bits (codec.ts)
 *   delta   W ≈ base + Q(W − base) with the same codecs, or W ≈ base alone (nothing stored),
 *           when the layer stores a shared base (the bf16 mean of its experts, costed separately)
 * Codecs quantize deterministically, so the encoding pass re-quantizes the chosen codec instead of
 * keeping every candidate's bytes.
 */
import { makeCodec, storedBytes, type BlockCodec } from '../quant/codec.js';
import { chooseScaleDtype } from '../quant/select.js';
import type { ScaleDtype } from '../quant/block.js';
import { codecImportance, weightedError, type MatrixWeighting } from './weighting.js';

export interface Candidate {
  /** Codec id, or null for "the base alone". */
  codec: string | null;
  delta: boolean;
  bytes: number;
  error: number;
}

export interface CodecFamily {
  symmetricBits: readonly number[];
  asymmetricBits: readonly number[];
  sign: boolean;
  groups: readonly number[];
  /** Larger groups tried only up to `wideMaxBits` bits, where a 2-byte scale per group is a large share of the bytes. */
  wideGroups: readonly number[];
  wideMaxBits: number;
}

export const DEFAULT_FAMILY: CodecFamily = { symmetricBits: [2, 3, 4, 5, 6, 8], asymmetricBits: [2, 3, 4], sign: true, groups: [32, 64, 128], wideGroups: [256], wideMaxBits: 3 };

/** The candidate codecs for a tensor, with the scale dtype its magnitudes need. */
export function familyCodecs(f: CodecFamily, scaleDtype: ScaleDtype): BlockCodec[] {
  const out: BlockCodec[] = [];
  for (const g of [...f.groups, ...f.wideGroups]) {
    const max = f.groups.includes(g) ? 8 : f.wideMaxBits;
    for (const k of f.symmetricBits) if (k <= max) out.push(makeCodec({ kind: 'symmetric', bits: k, blockSize: g, scaleDtype }));
    for (const k of f.asymmetricBits) if (k <= max) out.push(makeCodec({ kind: 'asymmetric', bits: k, blockSize: g, scaleDtype }));
    if (f.sign) out.push(makeCodec({ kind: 'sign', bits: 1, blockSize: g, scaleDtype }));
  }
  return out;
}

/** The cheapest codec of a family, as a fraction of bf16 bytes (for the method's budget check). */
export function cheapestFraction(f: CodecFamily, n: number): number {
  return Math.min(...familyCodecs(f, 'f16').map((c) => storedBytes(c, n) / (2 * n)));
}

/** Scale dtype for a tensor about to be quantized (bf16 when f16 scales would under/overflow). */
export function scaleDtypeFor(x: Float32Array): ScaleDtype {
  return chooseScaleDtype(x, 2, 32);
}

/**
 * Every codec of the family on x (W, or W − base for deltas), scored against the original W.
 * w, x: [out·in]; base: [out·in] (bf16-rounded) when x is a delta.
 */
export function measureCandidates(w: Float32Array, x: Float32Array, base: Float32Array | null, out: number, inp: number, wt: MatrixWeighting, family: CodecFamily): Candidate[] {
  const n = out * inp;
  const imp = codecImportance(wt, out, inp);
  const r = new Float32Array(n);
  const res: Candidate[] = [];
  const delta = base !== null;
  const pen = compounding(weightedError(wt, w, new Float32Array(n), out, inp));
  if (delta) res.push({ codec: null, delta, bytes: 0, error: weightedError(wt, w, base, out, inp) });
  for (const c of familyCodecs(family, scaleDtypeFor(x))) {
    c.dequantize(c.quantize(x, imp), n, r);
    if (delta) for (let i = 0; i < n; i++) r[i] += base[i];
    res.push({ codec: c.id, delta, bytes: storedBytes(c, n), error: pen(weightedError(wt, w, r, out, inp)) });
  }
  return res;
}

/**
 * err · (1 + COMPOUNDING · err / err₀), err₀ the error of storing nothing (the matrix's weighted
 * energy). The proxy is a first-order (linear) estimate; a matrix whose relative error is large
 * (1-bit codes: about 0.35) hurts more than it says, as its error feeds every later layer's
 * inputs. Measured on the mixtral fixture at budget 0.125 with calibration (64 test windows):
 * perplexity 16.03 at 0, 15.85 at 4, 15.37 at 16 (see the report for the value kept).
 */
export const COMPOUNDING = 16;

function compounding(zero: number): (err: number) => number {
  return zero > 0 ? (err) => err * (1 + (COMPOUNDING * err) / zero) : (err) => err;
}

/** The label of a chosen candidate in manifests and `inspect`: codec id, "base+codec" or "base". */
export function candidateLabel(c: Pick<Candidate, 'codec' | 'delta'>): string {
  if (!c.delta) return c.codec!;
  return c.codec ? `base+${c.codec}` : 'base';
}

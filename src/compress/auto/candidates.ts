/**
 * The encodings `auto` chooses from for one expert matrix, each with its exact stored bytes and
 * estimated error (weighting.ts):
 *   direct  W ≈ Q(W) with a block codec: symmetric MSE-fitted k = 2..8 bits, asymmetric k = 2..4,
 *           1-bit sign, groups of 32/64/128 (codec.ts)
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
}

export const DEFAULT_FAMILY: CodecFamily = { symmetricBits: [2, 3, 4, 5, 6, 8], asymmetricBits: [2, 3, 4], sign: true, groups: [32, 64, 128] };

/** The candidate codecs for a tensor, with the scale dtype its magnitudes need. */
export function familyCodecs(f: CodecFamily, scaleDtype: ScaleDtype): BlockCodec[] {
  const out: BlockCodec[] = [];
  for (const g of f.groups) {
    for (const k of f.symmetricBits) out.push(makeCodec({ kind: 'symmetric', bits: k, blockSize: g, scaleDtype }));
    for (const k of f.asymmetricBits) out.push(makeCodec({ kind: 'asymmetric', bits: k, blockSize: g, scaleDtype }));
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
  if (delta) res.push({ codec: null, delta, bytes: 0, error: weightedError(wt, w, base, out, inp) });
  for (const c of familyCodecs(family, scaleDtypeFor(x))) {
    c.dequantize(c.quantize(x, imp), n, r);
    if (delta) for (let i = 0; i < n; i++) r[i] += base[i];
    res.push({ codec: c.id, delta, bytes: storedBytes(c, n), error: weightedError(wt, w, r, out, inp) });
  }
  return res;
}

/** The label of a chosen candidate in manifests and `inspect`: codec id, "base+codec" or "base". */
export function candidateLabel(c: Pick<Candidate, 'codec' | 'delta'>): string {
  if (!c.delta) return c.codec!;
  return c.codec ? `base+${c.codec}` : 'base';
}

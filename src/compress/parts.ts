/**
 * How a compressed expert matrix is stored: a sum of parts, each referring to stored tensors by name.
 *   W = Σ parts,  each part one of
 *     dense   : a stored [out, in] tensor (a shared base or barycenter; bf16)
 *     sparse  : values at positions given by a bitmask, an index list, or a seeded Bernoulli mask
 *               regenerated from its seed (nothing stored for positions)
 *     quant   : a block-quantized [out, in] matrix (codec id + packed blocks)
 *     lowrank : left [out, r] · right [r, in]; `transposed` means W = (left · right)ᵀ, which lets the
 *               down projection share the left factor of gate/up (ResMoE's [I, 3H] residual SVD)
 * A matrix of an expert is [out, in] in nn.Linear layout: gate/up [I, H], down [H, I].
 */
export type SparseIndex =
  | { kind: 'bitmask'; ref: string } // U8 [ceil(out*in/8)], bit k of byte j = element 8j+k
  | { kind: 'indices'; ref: string } // I32 [nnz], ascending flat positions
  | { kind: 'seeded'; seed: number; keep: number }; // Bernoulli(keep) mask from Rng(seed), row-major order

export type MatrixPart =
  | { kind: 'dense'; ref: string }
  | { kind: 'sparse'; values: string; index: SparseIndex }
  | { kind: 'quant'; codec: string; ref: string }
  | { kind: 'lowrank'; left: string; right: string; rank: number; transposed: boolean };

/** One expert: its three matrices as sums of parts. */
export interface ExpertParts {
  gate: MatrixPart[];
  up: MatrixPart[];
  down: MatrixPart[];
}

/** One compressed MoE layer, as the manifest records it. */
export interface LayerRecord {
  layer: number;
  method: string;
  /** Per-expert parts; experts run in stored order (a permutation of neurons leaves the function unchanged). */
  experts: ExpertParts[];
  /** perms[e][j] = original neuron index at stored slot j (ResMoE, merge); restore un-permutes. */
  perms: string[] | null;
  /** Bytes of every stored tensor this layer's experts use (shared ones counted once). */
  storedBytes: number;
  /** bf16 bytes of the same experts uncompressed: E · 3 · I · H · 2. */
  referenceBytes: number;
  /** Method choices for this layer (rank, density, codec, base kind, alignment iterations, errors...). */
  choices: Record<string, unknown>;
}

export const MATRICES = ['gate', 'up', 'down'] as const;
export type MatrixName = (typeof MATRICES)[number];

/** [out, in] of one expert matrix. */
export function matrixShape(m: MatrixName, I: number, H: number): [number, number] {
  return m === 'down' ? [H, I] : [I, H];
}

/** Block quantizers for expert weights: codecs, bit packing, codec choice for a budget, error measures. */
export { type BlockCodec, type CodecKind, type CodecSpec, bitsPerWeight, codecById, makeCodec, storedBytes } from './codec.js';
export type { ScaleDtype } from './block.js';
export { SymmetricCodec } from './symmetric.js';
export { AsymmetricCodec } from './asymmetric.js';
export { SignCodec } from './sign.js';
export { packBits, packBitsNaive, packedBytes, unpackBits, unpackBitsNaive } from './pack.js';
export { type ChooseCodecOptions, budgetOf, candidateCodecs, chooseCodec, chooseScaleDtype, minimumBudget } from './select.js';
export { maxAbsError, mse, relFrobenius, relMse } from './error.js';
export { type CodecMeasurement, gaussianData, laplacianData, measureCodec } from './bench.js';

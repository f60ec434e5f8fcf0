/**
 * The training engine's public surface: Var/Tape (tape.ts) and every differentiable op.
 * Ops are functions (tape, ...vars) => Var, async where they run a GEMM.
 */
export { accumulate, allocBuf, constant, dtypeOf, gradOf, numel, param, Tape, Var, type Buf, type DType, type OpProfile, type TapeOptions } from './tape.js';
export { add, clamp, embedding, mul, reshape, rmsNorm, rows, scale, sum, swiglu } from './ops/elementwise.js';
export { linear, matmul } from './ops/linear.js';
export { rope } from './ops/rope.js';
export { causalAttention, type AttentionOptions } from './ops/attention.js';
export { crossEntropy, softmax } from './ops/softmax.js';
export { distillKL } from './ops/distill.js';
export { gatherCols, loadBalancingLoss, normalizeRows, softmaxTopK, topKIndices, type Routing, type TopKOptions } from './ops/routing.js';
export {
  dispatch, expertSlice, gatherRows, moeLayer, stackedExperts, swigluExpert, swigluExpertFrom, swigluFfn,
  type ExpertFn, type FfnModulators, type Router, type SwigluWeights,
} from './ops/moe.js';
export { gemmStats, resetGemmStats, type GemmStats, type Kernels } from './kernels.js';

/**
 * The plain SwiGLU feed-forward y = down · (silu(gate · x) ⊙ (up · x)) as one ORT session call:
 *
 *   swigluFfn (one ORT graph: Gemm, Gemm, Sigmoid, Mul, Mul, Gemm)  <->  swigluFfnNaive
 *
 * Dimension letters: n tokens, H hidden (model) size, F intermediate size. Weights use the
 * nn.Linear layout (gate/up: [F, H], down: [H, F]) so an expert sliced out of the canonical
 * stacked [E, F, H] tensors is a subarray, handed to ORT without a copy.
 *
 * Why one graph: the three-call path (linear, JS silu loop, linear, linear) pays three ORT call
 * overheads and runs silu through Math.exp element by element; in one graph the [n, F]
 * intermediates never leave ORT and silu is a vectorised Sigmoid (fused by ORT's optimiser).
 *
 * Only plain SwiGLU: GPT-OSS's clamped variant (swigluOai) stays on the three-call path.
 */
import { swiglu } from './activation.js';
import { LINEAR_SMALL_MNK, backendName, linear } from './gemm.js';
import { DataType, buildModel, type NodeSpec } from './onnx-proto.js';
import { cachedSession, runF32 } from './ort.js';

/** Optional biases: gate/up [F], down [H]. */
export interface FfnBiases {
  gate?: Float32Array;
  up?: Float32Array;
  down?: Float32Array;
}

function checkArgs(fn: string, x: Float32Array, gate: Float32Array, up: Float32Array, down: Float32Array, n: number, H: number, F: number, b?: FfnBiases): void {
  for (const [name, v] of [['n', n], ['H', H], ['F', F]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${fn}: ${name} must be a non-negative integer, got ${v}`);
  }
  const want = [
    ['x', `[n=${n}, H=${H}]`, x, n * H],
    ['gate', `[F=${F}, H=${H}]`, gate, F * H],
    ['up', `[F=${F}, H=${H}]`, up, F * H],
    ['down', `[H=${H}, F=${F}]`, down, H * F],
    ['gate bias', `[F=${F}]`, b?.gate, F],
    ['up bias', `[F=${F}]`, b?.up, F],
    ['down bias', `[H=${H}]`, b?.down, H],
  ] as const;
  for (const [name, shape, arr, len] of want) {
    if (arr !== undefined && arr.length !== len) throw new Error(`${fn}: ${name} ${shape} needs ${len} values, got ${arr.length}`);
  }
}

function hasBiases(b?: FfnBiases): boolean {
  return b !== undefined && (b.gate !== undefined || b.up !== undefined || b.down !== undefined);
}

// ---------------------------------------------------------------------------------------------
// Naive twin: the float64 reference.

/** x: [n, H], gate/up: [F, H], down: [H, F] -> y: [n, H]. Float64 throughout, rounded once at the end. */
export function swigluFfnNaive(x: Float32Array, gate: Float32Array, up: Float32Array, down: Float32Array, n: number, H: number, F: number, biases?: FfnBiases): Float32Array {
  checkArgs('swigluFfnNaive', x, gate, up, down, n, H, F, biases);
  const y = new Float32Array(n * H);
  const a = new Float64Array(F); // one token's activations, never rounded to float32
  for (let t = 0; t < n; t++) {
    const xo = t * H;
    for (let f = 0; f < F; f++) {
      let g = biases?.gate?.[f] ?? 0;
      let u = biases?.up?.[f] ?? 0;
      for (let h = 0; h < H; h++) {
        g += gate[f * H + h] * x[xo + h];
        u += up[f * H + h] * x[xo + h];
      }
      a[f] = (g / (1 + Math.exp(-g))) * u;
    }
    for (let h = 0; h < H; h++) {
      let acc = biases?.down?.[h] ?? 0;
      for (let f = 0; f < F; f++) acc += down[h * F + f] * a[f];
      y[xo + h] = acc;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// The small-problem path: the existing TS kernels (blocked GEMM, JS silu).

async function swigluFfnSplit(x: Float32Array, gate: Float32Array, up: Float32Array, down: Float32Array, n: number, H: number, F: number, b?: FfnBiases): Promise<Float32Array> {
  const g = await linear(x, gate, n, F, H, b?.gate);
  const u = await linear(x, up, n, F, H, b?.up);
  swiglu(g, u, g);
  return linear(g, down, n, H, F, b?.down);
}

// ---------------------------------------------------------------------------------------------
// The ORT graph

const FLOAT = DataType.FLOAT;

/**
 * x [n, H], gate [F, H], up [F, H], down [H, F] (+ gate_b [F], up_b [F], down_b [H]) -> y [n, H].
 * Weights are inputs, not initializers, so one session serves every expert and layer. Gemm's
 * transB reads them in their stored [out, in] layout. silu(g) is written g · Sigmoid(g), the
 * pattern ORT's optimiser recognises.
 */
function ffnModel(withBias: boolean): Uint8Array {
  const gemm = (name: string, a: string, w: string, bias: string, out: string): NodeSpec => ({
    opType: 'Gemm',
    name,
    inputs: withBias ? [a, w, bias] : [a, w],
    outputs: [out],
    attributes: [{ name: 'transB', type: 'int', value: 1 }],
  });
  const biasInputs = withBias
    ? [
        { name: 'gate_b', elemType: FLOAT, dims: ['F'] },
        { name: 'up_b', elemType: FLOAT, dims: ['F'] },
        { name: 'down_b', elemType: FLOAT, dims: ['H'] },
      ]
    : [];
  return buildModel({
    inputs: [
      { name: 'x', elemType: FLOAT, dims: ['n', 'H'] },
      { name: 'gate', elemType: FLOAT, dims: ['F', 'H'] },
      { name: 'up', elemType: FLOAT, dims: ['F', 'H'] },
      { name: 'down', elemType: FLOAT, dims: ['H', 'F'] },
      ...biasInputs,
    ],
    outputs: [{ name: 'y', elemType: FLOAT, dims: ['n', 'H'] }],
    nodes: [
      gemm('gate_proj', 'x', 'gate', 'gate_b', 'g'),
      gemm('up_proj', 'x', 'up', 'up_b', 'u'),
      { opType: 'Sigmoid', inputs: ['g'], outputs: ['sig'] },
      { opType: 'Mul', inputs: ['g', 'sig'], outputs: ['silu'] },
      { opType: 'Mul', inputs: ['silu', 'u'], outputs: ['a'] },
      gemm('down_proj', 'a', 'down', 'down_b', 'y'),
    ],
    graphName: withBias ? 'swiglu_ffn_bias' : 'swiglu_ffn',
  });
}

/** x: [n, H] -> y: [n, H] through ORT at any size (benchmarks, tests). */
export async function swigluFfnOrt(x: Float32Array, gate: Float32Array, up: Float32Array, down: Float32Array, n: number, H: number, F: number, biases?: FfnBiases): Promise<Float32Array> {
  checkArgs('swigluFfnOrt', x, gate, up, down, n, H, F, biases);
  // ORT rejects zero-sized dims.
  if (n * H === 0) return new Float32Array(n * H);
  if (F === 0) return swigluFfnNaive(x, gate, up, down, n, H, F, biases);
  const withBias = hasBiases(biases);
  const session = await cachedSession(withBias ? 'ffn/swiglu/bias' : 'ffn/swiglu', () => ffnModel(withBias));
  const feeds: Record<string, { data: Float32Array; dims: number[] }> = {
    x: { data: x, dims: [n, H] },
    gate: { data: gate, dims: [F, H] },
    up: { data: up, dims: [F, H] },
    down: { data: down, dims: [H, F] },
  };
  if (withBias) {
    // One graph with all three biases; a missing one is fed as zeros (a few hundred floats).
    feeds.gate_b = { data: biases?.gate ?? new Float32Array(F), dims: [F] };
    feeds.up_b = { data: biases?.up ?? new Float32Array(F), dims: [F] };
    feeds.down_b = { data: biases?.down ?? new Float32Array(H), dims: [H] };
  }
  return (await runF32(session, feeds)).y.data;
}

/**
 * x: [n, H], gate/up: [F, H], down: [H, F], biases gate/up [F], down [H] -> y: [n, H]
 * = down · (silu(gate · x + gate_b) ⊙ (up · x + up_b)) + down_b.
 * Problems whose three GEMMs together stay under LINEAR_SMALL_MNK multiply-adds (where every
 * one of them would run in TS anyway) and the ORT-less backend use the TS kernels.
 */
export async function swigluFfn(x: Float32Array, gate: Float32Array, up: Float32Array, down: Float32Array, n: number, H: number, F: number, biases?: FfnBiases): Promise<Float32Array> {
  if (backendName() === 'ts' || 3 * n * F * H < LINEAR_SMALL_MNK) {
    checkArgs('swigluFfn', x, gate, up, down, n, H, F, biases);
    return swigluFfnSplit(x, gate, up, down, n, H, F, biases);
  }
  return swigluFfnOrt(x, gate, up, down, n, H, F, biases);
}

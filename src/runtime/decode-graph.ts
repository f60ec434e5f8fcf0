/**
 * One ONNX graph for a whole batch-1 decode step (every layer, routing included), so a generated
 * token costs one ORT call instead of dozens: on small models the per-call overhead (35–100 µs),
 * not the arithmetic, bounds decode speed.
 *
 *   decode-graph.ts + fast-decoder.ts (one ORT call per token)  <->  Transformer.hidden (twin)
 *
 * Inputs (P = tokens already in the KV cache the layer attends to, P >= 1; for a sliding window w
 * only the last w - 1, so the graph itself needs no mask):
 *   x [1, H]               the new token's embedding row
 *   cos, sin [1, D]        RoPE factors of its position, laid out so rope(v) = v ⊙ cos + (v·R) ⊙ sin
 *   past_k_l [P, NKV·D]    layer l's cached keys (a view of KVCache.k[l], no copy)
 *   past_v_l [P, NKV·Dv]   layer l's cached values
 * Outputs:
 *   logits [1, V]; k_l [1, NKV·D], v_l [1, NKV·Dv] (the new token's key/value rows, written to
 *   the cache by the caller)
 *
 * Dense weights are initializers in their stored [out, in] layout (Gemm transB, prepacked by ORT);
 * gate and up are concatenated into one Gemm, as are q, k and v. Each routed expert is an If
 * branch over its own constant weights, taken only when the router picks it (routedExperts), so a
 * step reads the K chosen experts' bytes: float32, or 4-bit blocks for quantized checkpoints.
 *
 * Dimension letters: H hidden, V vocab, NH / NKV heads, D / Dv head dims, G = NH / NKV,
 * E experts, K experts per token, I expert width, F dense FFN width.
 */
import type { ModelConfig, RoutingConfig } from '../models/canonical.js';
import { DataType, buildModel, floatTensor, type NodeSpec, type SubgraphSpec, type TensorSpec, type ValueInfo } from '../tensor/onnx-proto.js';
import type { RopeTables } from '../tensor/rope.js';
import { attentionDims } from './attention-block.js';
import { expertStacks, formatOf, type ExpertFormat, type ExpertStacks, type QuantStacks } from './decode-experts.js';
import { CompressedExpertBank } from './compressed-bank.js';
import { DenseExpertBank, type ExpertBank } from './experts.js';
import type { Weights } from './weights.js';

const FLOAT = DataType.FLOAT;
const INT64 = DataType.INT64;

/** Initializer bytes above which the graph is not built (protobuf's 2 GiB message limit). */
export const MAX_GRAPH_BYTES = 1.8e9;

/**
 * Why this model cannot run through the decode graph, or null when it can. Unsupported configs
 * keep the TS engine (the twin), which handles every family.
 */
export function decodeGraphUnsupported(cfg: ModelConfig, banks: readonly (ExpertBank | null)[], rope: RopeTables): string | null {
  const a = cfg.attention;
  if (a.mla) return 'multi-head latent attention';
  if (a.sinks) return 'attention sinks';
  if (rope.long) return 'longrope scaling';
  if (rope.dim > a.headDim) return 'rotary dim above the head dim';
  const moe = cfg.moe;
  if (moe) {
    if (moe.activation !== 'swiglu') return `expert activation ${moe.activation}`;
    const r = moe.routing;
    if (r.kind !== 'topk-softmax' && r.kind !== 'softmax-topk') return `routing ${r.kind}`;
    if (r.nGroup > 1) return 'group-limited routing';
  }
  for (const b of banks) {
    if (b === null) continue;
    if (b.compressedExperts) return 'compressed experts (moepress-ce)';
    if (b.offloaded) return 'routed experts offloaded to the expert cache';
    if (!(b instanceof DenseExpertBank) && !(b instanceof CompressedExpertBank)) return 'an expert bank of unknown kind';
  }
  return null;
}

/** Collects nodes and initializers under unique names. */
class GraphBuilder {
  constructor(
    /** MatMulNBits' accuracy_level: 0 float32 math, 4 int8 activations (DecodeGraphOptions). */
    readonly accuracyLevel: 0 | 4,
  ) {}
  readonly nodes: NodeSpec[] = [];
  readonly inits: TensorSpec[] = [];
  bytes = 0;
  /** Initializer bytes one step reads (routed-expert stacks count K/E of theirs). */
  bytesRead = 0;
  private n = 0;
  private consts = new Map<string, string>();

  fresh(stem: string): string {
    return `${stem}_${this.n++}`;
  }
  op(opType: string, inputs: string[], attrs: NodeSpec['attributes'] = [], outputs = 1, domain?: string): string[] {
    const outs = Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({ opType, inputs, outputs: outs, attributes: attrs, domain });
    return outs;
  }
  op1(opType: string, inputs: string[], attrs: NodeSpec['attributes'] = []): string {
    return this.op(opType, inputs, attrs)[0];
  }
  f32(stem: string, dims: number[], data: Float32Array, readFraction = 1): string {
    const name = this.fresh(stem);
    this.inits.push(floatTensor(name, dims, data));
    this.count(data, readFraction);
    return name;
  }
  u8(stem: string, dims: number[], data: Uint8Array, readFraction = 1): string {
    const name = this.fresh(stem);
    this.inits.push({ name, elemType: DataType.UINT8, dims, data });
    this.count(data, readFraction);
    return name;
  }
  count(data: ArrayBufferView, readFraction: number): void {
    this.bytes += data.byteLength;
    this.bytesRead += data.byteLength * readFraction;
  }
  /** An int64 constant (shapes, axes, K), shared by value. */
  i64(values: number[]): string {
    const key = values.join(',');
    let name = this.consts.get(key);
    if (!name) {
      name = this.fresh('i64');
      this.inits.push({ name, elemType: INT64, dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) });
      this.consts.set(key, name);
    }
    return name;
  }
  scalar(v: number): string {
    return this.f32('c', [], Float32Array.of(v));
  }
  reshape(x: string, dims: number[]): string {
    return this.op1('Reshape', [x, this.i64(dims)]);
  }
}

/** x: [1, in] -> [1, out] = x Wᵀ + b; W rows of several stored [out_i, in] matrices concatenated. */
function gemm(g: GraphBuilder, x: string, stem: string, ws: Float32Array[], inp: number, biases?: (Float32Array | null)[]): string {
  const out = ws.reduce((s, w) => s + w.length / inp, 0);
  const W = ws.length === 1 ? ws[0] : concat(ws);
  const inputs = [x, g.f32(stem, [out, inp], W)];
  if (biases && biases.some((b) => b)) {
    const b = concat(ws.map((w, i) => biases[i] ?? new Float32Array(w.length / inp)));
    inputs.push(g.f32(`${stem}_b`, [out], b));
  }
  return g.op1('Gemm', inputs, [{ name: 'transB', type: 'int', value: 1 }]);
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function split(g: GraphBuilder, x: string, sizes: number[], axis: number): string[] {
  return g.op('Split', [x, g.i64(sizes)], [{ name: 'axis', type: 'int', value: axis }], sizes.length);
}

/** x: [..., N] -> normalised over the last axis (RMSNorm, or LayerNorm with bias). */
function norm(g: GraphBuilder, cfg: ModelConfig, x: string, w: Float32Array, b: Float32Array | null, eps: number, kind: 'rms' | 'layer' = cfg.norm): string {
  const N = w.length;
  const scale = g.f32('norm', [N], w);
  const attrs: NodeSpec['attributes'] = [
    { name: 'axis', type: 'int', value: -1 },
    { name: 'epsilon', type: 'float', value: eps },
  ];
  if (kind === 'layer') return g.op1('LayerNormalization', [x, scale, g.f32('norm_b', [N], b ?? new Float32Array(N))], attrs);
  return g.op1('SimplifiedLayerNormalization', [x, scale], attrs);
}

/** [1, heads·D] -> RoPE'd [1, heads·D]: v ⊙ cos + (v·R) ⊙ sin per head (v de-interleaved first). */
function rope(g: GraphBuilder, x: string, heads: number, D: number, rot: { R: string; P: string | null }): string {
  let v = g.reshape(x, [heads, D]);
  if (rot.P) v = g.op1('MatMul', [v, rot.P]);
  const vr = g.op1('MatMul', [v, rot.R]);
  const a = g.op1('Mul', [v, 'cos']);
  const b = g.op1('Mul', [vr, 'sin']);
  return g.reshape(g.op1('Add', [a, b]), [1, heads * D]);
}

/** The rotate-half matrix R [D, D] and, for interleaved RoPE, the de-interleaving permutation P. */
function ropeMatrices(D: number, tab: RopeTables): { R: Float32Array; P: Float32Array | null } {
  const half = tab.dim / 2;
  const R = new Float32Array(D * D);
  // (v·R)[i] = -v[i + half] for i < half, v[i - half] for half <= i < dim, 0 beyond (unrotated dims)
  for (let i = 0; i < half; i++) {
    R[(i + half) * D + i] = -1;
    R[i * D + i + half] = 1;
  }
  if (tab.style !== 'interleaved') return { R, P: null };
  const P = new Float32Array(D * D);
  for (let i = 0; i < half; i++) {
    P[2 * i * D + i] = 1; // out[i] = v[2i]
    P[(2 * i + 1) * D + i + half] = 1; // out[i + half] = v[2i + 1]
  }
  for (let i = tab.dim; i < D; i++) P[i * D + i] = 1;
  return { R, P };
}

/**
 * cos/sin inputs [1, D] for position pos, matching applyRope: the float32 product p·f, then
 * cos/sin in float64 times the attention factor; unrotated dims get cos 1, sin 0.
 */
export function ropeFactors(pos: number, D: number, tab: RopeTables): { cos: Float32Array; sin: Float32Array } {
  const half = tab.dim / 2;
  const cos = new Float32Array(D).fill(1);
  const sin = new Float32Array(D);
  for (let i = 0; i < half; i++) {
    const f = Math.fround(pos * Math.fround(tab.invFreq[i]));
    cos[i] = cos[i + half] = Math.cos(f) * tab.attentionFactor;
    sin[i] = sin[i + half] = Math.sin(f) * tab.attentionFactor;
  }
  return { cos, sin };
}

function swigluNodes(g: GraphBuilder, gu: string, F: number, axis: number): string {
  const [gt, up] = split(g, gu, [F, F], axis);
  const silu = g.op1('Mul', [gt, g.op1('Sigmoid', [gt])]);
  return g.op1('Mul', [silu, up]);
}

/** h: [1, H] -> [1, H], a dense SwiGLU FFN stored under prefix (mlp or moe.shared). */
function denseFfn(g: GraphBuilder, w: Weights, prefix: string, h: string, H: number): string {
  const gate = w.get(`${prefix}.gate`);
  const F = gate.shape[0];
  const gu = gemm(g, h, 'gate_up', [gate.data, w.get(`${prefix}.up`).data], H);
  return gemm(g, swigluNodes(g, gu, F, 1), 'down', [w.get(`${prefix}.down`).data], F);
}

/** Optional expert biases, stacked: gate/up [E, I], down [E, H]. */
interface ExpertBiases {
  gate: Float32Array | null;
  up: Float32Array | null;
  down: Float32Array | null;
}

/** One expert's fc1 (h -> `${p}_gu` [1, 2I], gate then up) and fc2 (`${p}_a` -> `${p}_d` [1, H]) nodes. */
interface Branch {
  initializers: TensorSpec[];
  fc1: NodeSpec[];
  fc2: NodeSpec[];
}

/** fc1 -> `${p}_gu` (+ the shared base's `baseGu` for DeRS), fc2 -> `${p}_d` (the delta's share only, for DeRS). */
function quantBranch(g: GraphBuilder, st: QuantStacks, e: number, p: string, h: string, baseGu: string | null, H: number, I: number, share: number): Branch {
  const { bits, blockSize: B } = st;
  const row1 = (H * bits) / 8;
  const row2 = (I * bits) / 8;
  const c1 = st.fc1.subarray(e * 2 * I * row1, (e + 1) * 2 * I * row1);
  const s1 = st.fc1Scales.subarray(e * 2 * I * (H / B), (e + 1) * 2 * I * (H / B));
  const c2 = st.fc2.subarray(e * H * row2, (e + 1) * H * row2);
  const s2 = st.fc2Scales.subarray(e * H * (I / B), (e + 1) * H * (I / B));
  for (const d of [c1, s1, c2, s2]) g.count(d, share);
  const nbits = (x: string, b: string, sc: string, y: string, k: number, n: number): NodeSpec => ({
    opType: 'MatMulNBits', domain: 'com.microsoft', inputs: [x, b, sc], outputs: [y],
    attributes: [
      { name: 'K', type: 'int', value: k }, { name: 'N', type: 'int', value: n }, { name: 'bits', type: 'int', value: bits },
      // accuracy_level 0: float32 arithmetic on the dequantized weights, so the graph equals the TS
      // engine; 4: activations rounded to 8 bits per block, integer dot products (DecodeGraphOptions)
      { name: 'block_size', type: 'int', value: B }, { name: 'accuracy_level', type: 'int', value: g.accuracyLevel },
    ],
  });
  const fc1 = baseGu
    ? [nbits(h, `${p}_b1`, `${p}_s1`, `${p}_dgu`, H, 2 * I), { opType: 'Add', inputs: [`${p}_dgu`, baseGu], outputs: [`${p}_gu`] }]
    : [nbits(h, `${p}_b1`, `${p}_s1`, `${p}_gu`, H, 2 * I)];
  return {
    initializers: [
      { name: `${p}_b1`, elemType: DataType.UINT8, dims: [2 * I, H / B, (B * bits) / 8], data: c1 },
      floatTensor(`${p}_s1`, [2 * I * (H / B)], s1),
      { name: `${p}_b2`, elemType: DataType.UINT8, dims: [H, I / B, (B * bits) / 8], data: c2 },
      floatTensor(`${p}_s2`, [H * (I / B)], s2),
    ],
    fc1,
    fc2: [nbits(`${p}_a`, `${p}_b2`, `${p}_s2`, `${p}_d`, I, H)],
  };
}

function floatBranch(g: GraphBuilder, st: Extract<ExpertStacks, { kind: 'float' }>, b: ExpertBiases, e: number, p: string, h: string, H: number, I: number, share: number): Branch {
  const rows = (x: Float32Array, n: number, len: number) => x.subarray(e * n * len, (e + 1) * n * len);
  const w1 = concat([rows(st.gate, I, H), rows(st.up, I, H)]);
  const w2 = rows(st.down, H, I);
  const initializers = [floatTensor(`${p}_w1`, [2 * I, H], w1), floatTensor(`${p}_w2`, [H, I], w2)];
  const fc1In = [h, `${p}_w1`];
  const fc2In = [`${p}_a`, `${p}_w2`];
  if (b.gate || b.up) {
    initializers.push(floatTensor(`${p}_b1`, [2 * I], concat([b.gate ? rows(b.gate, I, 1) : new Float32Array(I), b.up ? rows(b.up, I, 1) : new Float32Array(I)])));
    fc1In.push(`${p}_b1`);
  }
  if (b.down) {
    initializers.push(floatTensor(`${p}_b2`, [H], rows(b.down, H, 1)));
    fc2In.push(`${p}_b2`);
  }
  for (const t of initializers) g.count(t.data, share);
  const transB: NodeSpec['attributes'] = [{ name: 'transB', type: 'int', value: 1 }];
  return {
    initializers,
    fc1: [{ opType: 'Gemm', inputs: fc1In, outputs: [`${p}_gu`], attributes: transB }],
    fc2: [{ opType: 'Gemm', inputs: fc2In, outputs: [`${p}_d`], attributes: transB }],
  };
}

/**
 * The routed experts: routing weights scattered to a dense [1, E] row, then per expert an If whose
 * then-branch runs that expert on its own constant initializers (float Gemm, or int4 MatMulNBits;
 * constants are prepacked by ORT, and only the chosen experts' bytes are read) and whose
 * else-branch is zeros; the E branch outputs are summed. Measured against ORT's fused contrib ops
 * on the mixtral fixture (2 cores, shared): the CPU QMoE kernel took ~5 ms a layer, the float MoE
 * op about 2.5x this graph's per-token time; this also needs no workaround for the MoE op, which
 * in onnxruntime-node 1.30 may run in place on its input and return wrong outputs.
 */
function routedExperts(g: GraphBuilder, r: RoutingConfig, logits: string, h: string, st: ExpertStacks, biases: ExpertBiases, E: number, H: number, I: number, K: number): string {
  const topk = (x: string) => g.op('TopK', [x, g.i64([K])], [{ name: 'axis', type: 'int', value: -1 }], 2);
  const softmax = (x: string) => g.op1('Softmax', [x], [{ name: 'axis', type: 'int', value: -1 }]);
  let weights: string;
  let idx: string;
  if (r.kind === 'topk-softmax') {
    const [vals, i] = topk(logits);
    weights = softmax(vals);
    idx = i;
  } else {
    const [vals, i] = topk(softmax(logits));
    weights = r.normTopK ? g.op1('Div', [vals, g.op1('ReduceSum', [vals, g.i64([-1])])]) : vals;
    idx = i;
  }
  const full = g.op1('ScatterElements', [g.f32('zeros_e', [1, E], new Float32Array(E)), idx, weights], [{ name: 'axis', type: 'int', value: 1 }]);
  const perExpert = g.op('Split', [full], [{ name: 'axis', type: 'int', value: 1 }], E);
  const zeroH = g.f32('zeros_h', [1, H], new Float32Array(H));
  const zero = g.scalar(0);
  const share = K / E; // of the expert stacks one token reads
  // DeRS: the shared base's gate/up product once per token; its down product once, on Σ w_e a_e.
  const base = st.kind === 'quant' ? st.base : null;
  const baseGu = base ? gemm(g, h, 'base_gu', [base.gu], H) : null;
  const zeroI = base ? g.f32('zeros_i', [1, I], new Float32Array(I)) : '';
  const ys: string[] = [];
  const was: string[] = [];
  for (let e = 0; e < E; e++) {
    const p = g.fresh('expert');
    const branch = st.kind === 'quant' ? quantBranch(g, st, e, p, h, baseGu, H, I, share) : floatBranch(g, st, biases, e, p, h, H, I, share);
    const then: SubgraphSpec = {
      name: `${p}_then`,
      outputs: [{ name: `${p}_y`, elemType: FLOAT, dims: [1, H] }, ...(base ? [{ name: `${p}_wa`, elemType: FLOAT, dims: [1, I] }] : [])],
      initializers: branch.initializers,
      nodes: [
        ...branch.fc1,
        { opType: 'Split', inputs: [`${p}_gu`, g.i64([I, I])], outputs: [`${p}_g`, `${p}_u`], attributes: [{ name: 'axis', type: 'int', value: 1 }] },
        { opType: 'Sigmoid', inputs: [`${p}_g`], outputs: [`${p}_sg`] },
        { opType: 'Mul', inputs: [`${p}_g`, `${p}_sg`], outputs: [`${p}_silu`] },
        { opType: 'Mul', inputs: [`${p}_silu`, `${p}_u`], outputs: [`${p}_a`] },
        ...branch.fc2,
        { opType: 'Mul', inputs: [`${p}_d`, perExpert[e]], outputs: [`${p}_y`] },
        ...(base ? [{ opType: 'Mul', inputs: [`${p}_a`, perExpert[e]], outputs: [`${p}_wa`] }] : []),
      ],
    };
    const otherwise: SubgraphSpec = {
      name: `${p}_else`,
      outputs: [{ name: `${p}_z`, elemType: FLOAT, dims: [1, H] }, ...(base ? [{ name: `${p}_zi`, elemType: FLOAT, dims: [1, I] }] : [])],
      nodes: [{ opType: 'Identity', inputs: [zeroH], outputs: [`${p}_z`] }, ...(base ? [{ opType: 'Identity', inputs: [zeroI], outputs: [`${p}_zi`] }] : [])],
    };
    const cond = g.op1('Greater', [perExpert[e], zero]);
    const outs = g.op('If', [cond], [{ name: 'then_branch', type: 'graph', value: then }, { name: 'else_branch', type: 'graph', value: otherwise }], base ? 2 : 1);
    ys.push(outs[0]);
    if (base) was.push(outs[1]);
  }
  const y = g.op1('Sum', ys);
  return base ? g.op1('Add', [y, gemm(g, g.op1('Sum', was), 'base_down', [base.down], I)]) : y;
}

/** h: [1, H] -> [1, H]: router logits, the routed experts (routedExperts), the shared expert. */
function moeNodes(g: GraphBuilder, cfg: ModelConfig, w: Weights, l: number, h: string, bank: ExpertBank): { out: string; format: ExpertFormat } {
  const moe = cfg.moe!;
  const { experts: E, intermediate: I } = moe;
  const H = cfg.hidden;
  const K = moe.routing.topK;
  const p = `layers.${l}.moe`;
  const logits = gemm(g, h, 'router', [w.get(`${p}.router.weight`).data], H, [w.opt(`${p}.router.bias`)]);
  const st = expertStacks(cfg, w, bank, l);
  const biases = { gate: w.opt(`${p}.experts.gate_bias`), up: w.opt(`${p}.experts.up_bias`), down: w.opt(`${p}.experts.down_bias`) };
  let out = routedExperts(g, moe.routing, logits, h, st, biases, E, H, I, K);
  if (moe.routing.scale !== 1) out = g.op1('Mul', [out, g.scalar(moe.routing.scale)]);
  if (moe.shared) {
    let s = denseFfn(g, w, `${p}.shared`, h, H);
    if (moe.shared.gated) s = g.op1('Mul', [s, g.op1('Sigmoid', [gemm(g, h, 'shared_gate', [w.get(`${p}.shared_gate.weight`).data], H)])]);
    out = g.op1('Add', [out, s]);
  }
  return { out, format: formatOf(st) };
}

export type { ExpertFormat } from './decode-experts.js';

export interface DecodeGraphOptions {
  /**
   * Quantized experts (MatMulNBits) multiply 8-bit activations: ORT rounds each block of the
   * input row to int8 with a float scale (accuracy_level 4), as llama.cpp's Q4_0 kernels do. Faster,
   * no longer equal to the TS engine (close: see test/fast-decode.test.ts). Float weights are
   * unaffected. Default false: float32 math, the graph equals the TS engine.
   */
  int8Activations?: boolean;
}

export interface DecodeGraph {
  model: Uint8Array;
  /** Weight bytes one step reads from the graph's initializers, plus the embedding row. */
  bytesPerToken: number;
  /** Per layer: how its routed experts are stored (null: dense FFN). */
  expertFormats: ExpertFormat[];
}

/** The decode-step model (see the header). Throws when decodeGraphUnsupported says why not. */
export function buildDecodeGraph(cfg: ModelConfig, w: Weights, banks: readonly (ExpertBank | null)[], tab: RopeTables, opts: DecodeGraphOptions = {}): DecodeGraph {
  const why = decodeGraphUnsupported(cfg, banks, tab);
  if (why) throw new Error(`decode graph: unsupported model (${why})`);
  const g = new GraphBuilder(opts.int8Activations ? 4 : 0);
  const H = cfg.hidden;
  const d = attentionDims(cfg);
  const at = cfg.attention;
  const G = d.heads / d.kvHeads;
  const kRow = d.kvHeads * d.dk;
  const vRow = d.kvHeads * d.dv;
  const mats = ropeMatrices(d.dk, tab);
  const rot = { R: g.f32('rope_r', [d.dk, d.dk], mats.R), P: mats.P ? g.f32('rope_p', [d.dk, d.dk], mats.P) : null };
  const inputs: ValueInfo[] = [
    { name: 'x', elemType: FLOAT, dims: [1, H] },
    { name: 'cos', elemType: FLOAT, dims: [1, d.dk] },
    { name: 'sin', elemType: FLOAT, dims: [1, d.dk] },
  ];
  const outputs: ValueInfo[] = [{ name: 'logits', elemType: FLOAT, dims: [1, cfg.vocabSize] }];
  const normW = (name: string) => w.get(`${name}.weight`).data;
  const expertFormats: ExpertFormat[] = [];
  let x = 'x';
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `layers.${l}.attn`;
    // Each layer's own past length: a sliding-window layer is fed only the keys it may see.
    inputs.push({ name: `past_k_${l}`, elemType: FLOAT, dims: [`P${l}`, kRow] }, { name: `past_v_${l}`, elemType: FLOAT, dims: [`P${l}`, vRow] });
    outputs.push({ name: `k_${l}`, elemType: FLOAT, dims: [1, kRow] }, { name: `v_${l}`, elemType: FLOAT, dims: [1, vRow] });
    const h = norm(g, cfg, x, normW(`layers.${l}.attn_norm`), w.opt(`layers.${l}.attn_norm.bias`), cfg.normEps);
    const qkv = gemm(g, h, 'qkv', [w.get(`${p}.q.weight`).data, w.get(`${p}.k.weight`).data, w.get(`${p}.v.weight`).data], H, [w.opt(`${p}.q.bias`), w.opt(`${p}.k.bias`), w.opt(`${p}.v.bias`)]);
    let [q, k, v] = split(g, qkv, [d.heads * d.dk, kRow, vRow], 1);
    const qn = w.opt(`${p}.q_norm.weight`);
    const kn = w.opt(`${p}.k_norm.weight`);
    if (at.qkNorm === 'full' && qn && kn) {
      q = norm(g, cfg, q, qn, null, cfg.normEps, 'rms');
      k = norm(g, cfg, k, kn, null, cfg.normEps, 'rms');
    } else if (at.qkNorm === 'head' && qn && kn) {
      q = g.reshape(norm(g, cfg, g.reshape(q, [d.heads, d.dk]), qn, null, cfg.normEps, 'rms'), [1, d.heads * d.dk]);
      k = g.reshape(norm(g, cfg, g.reshape(k, [d.kvHeads, d.dk]), kn, null, cfg.normEps, 'rms'), [1, kRow]);
    }
    if (at.clipQkv != null) {
      const lo = g.scalar(-at.clipQkv);
      const hi = g.scalar(at.clipQkv);
      [q, k, v] = [q, k, v].map((t) => g.op1('Clip', [t, lo, hi]));
    }
    q = rope(g, q, d.heads, d.dk, rot);
    g.nodes.push({ opType: 'Identity', inputs: [rope(g, k, d.kvHeads, d.dk, rot)], outputs: [`k_${l}`] });
    g.nodes.push({ opType: 'Identity', inputs: [v], outputs: [`v_${l}`] });
    // Keys [P+1, NKV, D] -> [NKV, D, P+1]; values -> [NKV, P+1, Dv]; queries grouped [NKV, G, D].
    const kAll = g.op1('Transpose', [g.reshape(g.op1('Concat', [`past_k_${l}`, `k_${l}`], [{ name: 'axis', type: 'int', value: 0 }]), [-1, d.kvHeads, d.dk])], [{ name: 'perm', type: 'ints', value: [1, 2, 0] }]);
    const vAll = g.op1('Transpose', [g.reshape(g.op1('Concat', [`past_v_${l}`, `v_${l}`], [{ name: 'axis', type: 'int', value: 0 }]), [-1, d.kvHeads, d.dv])], [{ name: 'perm', type: 'ints', value: [1, 0, 2] }]);
    const s = g.op1('Mul', [g.op1('MatMul', [g.reshape(q, [d.kvHeads, G, d.dk]), kAll]), g.scalar(at.scale)]);
    const probs = g.op1('Softmax', [s], [{ name: 'axis', type: 'int', value: -1 }]);
    const o = g.reshape(g.op1('MatMul', [probs, vAll]), [1, d.heads * d.dv]);
    x = g.op1('Add', [x, gemm(g, o, 'o', [w.get(`${p}.o.weight`).data], d.heads * d.dv, [w.opt(`${p}.o.bias`)])]);
    const h2 = norm(g, cfg, x, normW(`layers.${l}.ffn_norm`), w.opt(`layers.${l}.ffn_norm.bias`), cfg.normEps);
    let f: string;
    const bank = banks[l];
    if (cfg.layers[l].ffn === 'moe' && bank) {
      const m = moeNodes(g, cfg, w, l, h2, bank);
      f = m.out;
      expertFormats.push(m.format);
    } else {
      f = denseFfn(g, w, `layers.${l}.mlp`, h2, H);
      expertFormats.push(null);
    }
    x = g.op1('Add', [x, f]);
  }
  const hf = norm(g, cfg, x, normW('norm'), w.opt('norm.bias'), cfg.normEps);
  const head = w.has('lm_head') ? w.get('lm_head').data : w.get('embed').data;
  const lg = gemm(g, hf, 'lm_head', [head], H, [w.opt('lm_head_bias')]);
  g.nodes.push({ opType: 'Identity', inputs: [lg], outputs: ['logits'] });
  if (g.bytes > MAX_GRAPH_BYTES) throw new Error(`decode graph: ${g.bytes} bytes of weights exceed the ${MAX_GRAPH_BYTES}-byte graph limit`);
  const model = buildModel({ inputs, outputs, nodes: g.nodes, initializers: g.inits, graphName: 'moepress_decode_step' });
  return { model, bytesPerToken: g.bytesRead + 4 * H, expertFormats };
}

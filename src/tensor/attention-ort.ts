/**
 * Causal grouped-query attention for B independent sequences at once, as one ORT graph:
 *
 *   attendBatchOrt (ORT MatMul / Softmax / MatMul)  <->  attendBatchNaive (`attend` per sequence)
 *
 * Dimension letters: B sequences, S tokens each (all starting at position 0), NH query heads,
 * NKV key/value heads, G = NH / NKV queries per KV head, dk query/key dim, dv value dim.
 *
 * Scope: prefill/eval only. Attention sinks (GPT-OSS) and KV-cache decoding (queries that do not
 * start at position 0) are not handled here; callers keep using `attend` for those.
 *
 * Why the graph groups queries by KV head: q is transposed to [B, NKV, G, S, dk] and viewed as
 * [B, NKV, G*S, dk], so one batched MatMul per (sequence, KV head) covers all G query heads that
 * share it, and K/V are never repeated per query head. The scores of masked (future) keys are
 * computed and discarded; at these sizes a dense MLAS GEMM is still far faster than the plain-TS
 * loops that skip them.
 */
import { attend, type AttentionParams } from './attention.js';
import { backendName } from './gemm.js';
import { DataType, buildModel, type NodeSpec, type TensorSpec } from './onnx-proto.js';
import { cachedSession, runF32 } from './ort.js';

/** `attend`'s parameters without the ones this kernel does not support (qPos0 is 0, no sinks). */
export type BatchAttentionParams = Pick<AttentionParams, 'heads' | 'kvHeads' | 'dk' | 'dv' | 'scale' | 'window'>;

/**
 * Below this many multiply-adds (B * NH * S * S * (dk + dv)) the per-sequence TS loops beat an
 * ORT call (a one-token or few-token batch costs less than the call's fixed ~20-100 us).
 */
export const ATTEND_SMALL_MACS = 32768;

function checkArgs(fn: string, q: Float32Array, k: Float32Array, v: Float32Array, B: number, S: number, p: BatchAttentionParams): void {
  for (const [name, x] of [['B', B], ['S', S], ['heads', p.heads], ['kvHeads', p.kvHeads], ['dk', p.dk], ['dv', p.dv]] as const) {
    if (!Number.isInteger(x) || x < 0) throw new Error(`${fn}: ${name} must be a non-negative integer, got ${x}`);
  }
  if (p.kvHeads === 0 || p.heads % p.kvHeads !== 0) throw new Error(`${fn}: heads ${p.heads} is not a multiple of kvHeads ${p.kvHeads}`);
  if (p.window !== null && !(Number.isInteger(p.window) && p.window > 0)) throw new Error(`${fn}: window must be a positive integer or null, got ${p.window}`);
  const want = [['q', `[B=${B}, S=${S}, NH=${p.heads}, dk=${p.dk}]`, q, B * S * p.heads * p.dk], ['k', `[B=${B}, S=${S}, NKV=${p.kvHeads}, dk=${p.dk}]`, k, B * S * p.kvHeads * p.dk], ['v', `[B=${B}, S=${S}, NKV=${p.kvHeads}, dv=${p.dv}]`, v, B * S * p.kvHeads * p.dv]] as const;
  for (const [name, shape, arr, n] of want) {
    if (arr.length !== n) throw new Error(`${fn}: ${name} ${shape} needs ${n} values, got ${arr.length}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Naive twin: the plain-TS kernel, one sequence at a time. Also the ORT-less fallback.

/** q: [B, S, NH, dk], k: [B, S, NKV, dk], v: [B, S, NKV, dv] -> out: [B, S, NH, dv]. */
export function attendBatchNaive(q: Float32Array, k: Float32Array, v: Float32Array, B: number, S: number, p: BatchAttentionParams): Float32Array {
  checkArgs('attendBatchNaive', q, k, v, B, S, p);
  const qRow = p.heads * p.dk, kRow = p.kvHeads * p.dk, vRow = p.kvHeads * p.dv, oRow = p.heads * p.dv;
  const out = new Float32Array(B * S * oRow);
  const single: AttentionParams = { ...p, qPos0: 0, sinks: null };
  for (let b = 0; b < B; b++) {
    const ob = out.subarray(b * S * oRow, (b + 1) * S * oRow);
    attend(q.subarray(b * S * qRow), k.subarray(b * S * kRow), v.subarray(b * S * vRow), S, single, ob);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The additive mask: 0 where key j is visible to query s, a large negative number elsewhere.

/**
 * -1e30 rather than -Infinity: added to a finite score it still rounds to -1e30, exp() of it
 * underflows to exactly 0, and no vectorised exp or max can turn it into NaN. Every row keeps its
 * diagonal, so no row is fully masked.
 */
const MASKED = -1e30;
const masks = new Map<string, Float32Array>();
const MAX_CACHED_MASKS = 8;

/** -> [G*S, S]: row g*S + s is query s of the g-th head in a KV group (the same for every g). */
export function attentionMask(S: number, G: number, window: number | null): Float32Array {
  const key = `${S}/${G}/${window}`;
  let m = masks.get(key);
  if (m !== undefined) return m;
  const one = new Float32Array(S * S);
  for (let s = 0; s < S; s++) {
    for (let j = 0; j < S; j++) {
      const visible = j <= s && (window === null || s - j < window);
      one[s * S + j] = visible ? 0 : MASKED;
    }
  }
  m = new Float32Array(G * S * S);
  for (let g = 0; g < G; g++) m.set(one, g * S * S);
  // Eval uses one or two window lengths; a bound keeps odd callers from growing it without end.
  if (masks.size >= MAX_CACHED_MASKS) masks.delete(masks.keys().next().value!);
  masks.set(key, m);
  return m;
}

// ---------------------------------------------------------------------------------------------
// The ORT graph

const F = DataType.FLOAT;

function int64s(name: string, values: readonly number[]): TensorSpec {
  return { name, elemType: DataType.INT64, dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) };
}

/**
 * Inputs q [B, S, NH, dk], k [B, S, NKV, dk], v [B, S, NKV, dv], mask [G*S, S] -> out [B, S, NH, dv].
 * Reshape's 0 copies the input's dim and -1 infers one, which is how B and S stay symbolic.
 */
function attentionModel(NH: number, NKV: number, dk: number, dv: number, scale: number): Uint8Array {
  const G = NH / NKV;
  const nodes: NodeSpec[] = [
    // q: [B, S, NKV, G, dk] -> [B, NKV, G, S, dk] -> [B, NKV, G*S, dk]
    { opType: 'Reshape', inputs: ['q', 'q_split'], outputs: ['q5'] },
    { opType: 'Transpose', inputs: ['q5'], outputs: ['q5t'], attributes: [{ name: 'perm', type: 'ints', value: [0, 2, 3, 1, 4] }] },
    { opType: 'Reshape', inputs: ['q5t', 'q_merge'], outputs: ['qg'] },
    // kᵀ: [B, NKV, dk, S]; v: [B, NKV, S, dv]
    { opType: 'Transpose', inputs: ['k'], outputs: ['kt'], attributes: [{ name: 'perm', type: 'ints', value: [0, 2, 3, 1] }] },
    { opType: 'Transpose', inputs: ['v'], outputs: ['vt'], attributes: [{ name: 'perm', type: 'ints', value: [0, 2, 1, 3] }] },
    // scores: [B, NKV, G*S, S]; the constant scale lets ORT fold the Mul into the MatMul (alpha)
    { opType: 'MatMul', inputs: ['qg', 'kt'], outputs: ['raw'] },
    { opType: 'Mul', inputs: ['raw', 'scale'], outputs: ['scaled'] },
    { opType: 'Add', inputs: ['scaled', 'mask'], outputs: ['masked'] },
    { opType: 'Softmax', inputs: ['masked'], outputs: ['probs'], attributes: [{ name: 'axis', type: 'int', value: -1 }] },
    // [B, NKV, G*S, dv] -> [B, NKV, G, S, dv] -> [B, S, NKV, G, dv] -> [B, S, NH, dv]
    { opType: 'MatMul', inputs: ['probs', 'vt'], outputs: ['og'] },
    { opType: 'Reshape', inputs: ['og', 'o_split'], outputs: ['o5'] },
    { opType: 'Transpose', inputs: ['o5'], outputs: ['o5t'], attributes: [{ name: 'perm', type: 'ints', value: [0, 3, 1, 2, 4] }] },
    { opType: 'Reshape', inputs: ['o5t', 'o_merge'], outputs: ['out'] },
  ];
  return buildModel({
    inputs: [
      { name: 'q', elemType: F, dims: ['B', 'S', NH, dk] },
      { name: 'k', elemType: F, dims: ['B', 'S', NKV, dk] },
      { name: 'v', elemType: F, dims: ['B', 'S', NKV, dv] },
      { name: 'mask', elemType: F, dims: ['GS', 'S'] },
    ],
    outputs: [{ name: 'out', elemType: F, dims: ['B', 'S', NH, dv] }],
    nodes,
    initializers: [
      int64s('q_split', [0, 0, NKV, G, dk]),
      int64s('q_merge', [0, 0, -1, dk]),
      int64s('o_split', [0, 0, G, -1, dv]),
      int64s('o_merge', [0, 0, NH, dv]),
      { name: 'scale', elemType: F, dims: [], data: new Float32Array([scale]) },
    ],
    graphName: 'attention_gqa',
  });
}

/** q: [B, S, NH, dk], k: [B, S, NKV, dk], v: [B, S, NKV, dv] -> [B, S, NH, dv] through ORT at any size. */
export async function attendBatchOrt(q: Float32Array, k: Float32Array, v: Float32Array, B: number, S: number, p: BatchAttentionParams): Promise<Float32Array> {
  checkArgs('attendBatchOrt', q, k, v, B, S, p);
  const { heads: NH, kvHeads: NKV, dk, dv, scale } = p;
  // ORT rejects zero-sized dims; an empty batch has an empty answer.
  if (B * S * NH * dv === 0) return new Float32Array(B * S * NH * dv);
  const G = NH / NKV;
  // The scale is baked into the graph (a constant, so it can fuse): it is part of the key.
  const session = await cachedSession(`attention/gqa/${NH}/${NKV}/${dk}/${dv}/${scale}`, () => attentionModel(NH, NKV, dk, dv, scale));
  const feeds = {
    q: { data: q, dims: [B, S, NH, dk] },
    k: { data: k, dims: [B, S, NKV, dk] },
    v: { data: v, dims: [B, S, NKV, dv] },
    mask: { data: attentionMask(S, G, p.window), dims: [G * S, S] },
  };
  return (await runF32(session, feeds)).out.data;
}

/**
 * q: [B, S, NH, dk], k: [B, S, NKV, dk], v: [B, S, NKV, dv] -> out: [B, S, NH, dv].
 * B causal sequences of S tokens from position 0, optional sliding window; no sinks, no cache.
 */
export async function attendBatch(q: Float32Array, k: Float32Array, v: Float32Array, B: number, S: number, p: BatchAttentionParams): Promise<Float32Array> {
  if (backendName() === 'ts' || B * p.heads * S * S * (p.dk + p.dv) < ATTEND_SMALL_MACS) return attendBatchNaive(q, k, v, B, S, p);
  return attendBatchOrt(q, k, v, B, S, p);
}

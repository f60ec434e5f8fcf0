/**
 * Routed experts prepared for the decode graph (decode-graph.ts): the stored format of a layer's
 * experts decides how the graph holds them (float32 stacks, or 4/8-bit MatMulNBits blocks with an
 * optional DeRS base), repacked once at build time from the banks' decoded parts.
 */
import { densifyMatrix } from '../compress/apply.js';
import { MATRICES, matrixShape, type MatrixName } from '../compress/parts.js';
import { decodeScale, readU16 } from '../compress/quant/block.js';
import { codecById } from '../compress/quant/codec.js';
import { packBits, unpackBits } from '../compress/quant/pack.js';
import type { ModelConfig } from '../models/canonical.js';
import { CompressedExpertBank } from './compressed-bank.js';
import type { ExpertBank } from './experts.js';
import type { Weights } from './weights.js';

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((t, p) => t + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * A layer's routed experts as the graph stores them: float32 (dense experts, and compressed formats
 * densified once at build time), or 4/8-bit blocks for MatMulNBits when every matrix is one
 * symmetric block-quantized part of 2-8 bits (the quant baseline), optionally on top of one dense
 * base shared by the layer's experts (DeRS with quantized deltas). Blocks are repacked, not requantized: our
 * symmetric blocks store code q + 2^(k-1) low bits first, MatMulNBits' layout with its default
 * zero point, once the f16 scale is split out.
 *
 * Sparse parts (resmoe-prune, ders-magnitude) are densified: reading only the nonzeros lost on a
 * fixture-sized [1024, 256] matrix at densities 0.05–0.25 (2 shared cores, onnxruntime-node 1.30):
 * Gather + Mul + ScatterElements(reduction add) took 5–38x the dense Gemm's 35–90 µs, a padded
 * per-row (ELL) Gather + Mul + ReduceSum 7–14x, and ORT turns sparse initializers into dense
 * ones at load (SparseToDenseMatMul takes only a sparse graph input, which onnxruntime-node cannot feed).
 */
export interface QuantStacks {
  kind: 'quant';
  bits: number;
  blockSize: number;
  fc1: Uint8Array; // [E, 2I, H·bits/8]: gate rows, then up rows
  fc1Scales: Float32Array; // [E, 2I, H/B]
  fc2: Uint8Array; // [E, H, I·bits/8]
  fc2Scales: Float32Array; // [E, H, I/B]
  /** DeRS: the shared base (gate rows then up [2I, H]; down [H, I]); the quant parts are deltas. */
  base: { gu: Float32Array; down: Float32Array } | null;
}
export type ExpertStacks = { kind: 'float'; gate: Float32Array; up: Float32Array; down: Float32Array } | QuantStacks;

/** How each MoE layer's experts are stored in the graph: 'float', 'q4', 'base+q2', ...; null for dense-FFN layers. */
export type ExpertFormat = string | null;

export function formatOf(st: ExpertStacks): string {
  return st.kind === 'float' ? 'float' : `${st.base ? 'base+' : ''}q${st.bits}`;
}

/** The common bits / block size / shared base of a bank whose matrices MatMulNBits can run, or null. */
function quantLayout(bank: CompressedExpertBank, I: number, H: number): { bits: number; blockSize: number; base: boolean } | null {
  let layout: { bits: number; blockSize: number; base: boolean } | null = null;
  for (let e = 0; e < bank.count; e++) {
    for (const m of MATRICES) {
      const parts = bank.parts(e, m);
      const q = parts[parts.length - 1];
      if (q.kind !== 'quant' || parts.length > 2) return null;
      const base = parts.length === 2;
      const first = bank.parts(0, m)[0];
      // the base must be one tensor shared by every expert (prepareParts hands out the same array)
      if (base && !(parts[0].kind === 'dense' && first.kind === 'dense' && parts[0].w === first.w)) return null;
      const c = codecById(q.codec);
      const inp = matrixShape(m, I, H)[1];
      if (c.kind !== 'symmetric' || c.bits === 1 || c.blockSize < 16 || (c.blockSize & (c.blockSize - 1)) !== 0 || inp % c.blockSize !== 0) return null;
      const bits = graphBits(c.bits);
      if (layout && (layout.bits !== bits || layout.blockSize !== c.blockSize || layout.base !== base)) return null;
      layout = { bits, blockSize: c.blockSize, base };
    }
  }
  return layout;
}

/** The graph's bit width for stored k-bit codes: 2 and 3 bits widen to 4 (MLAS's fast 4-bit kernel; 2-bit ran ~4x slower here). */
function graphBits(k: number): number {
  return k <= 4 ? 4 : 8;
}

/**
 * One expert matrix's symmetric k-bit blocks [out, in] -> codes at `bits` per value and scales,
 * rows written at rowOf(r) of codes [*, in·bits/8] / scales [*, in/B]. Same width: the code bytes
 * are copied. Widening (k < bits): each code q + 2^(k-1) becomes q + 2^(bits-1), so the values
 * (and scales) are unchanged.
 */
function repackBlocks(packed: Uint8Array, codecId: string, out: number, inp: number, bits: number, codes: Uint8Array, scales: Float32Array, rowOf: (r: number) => number): void {
  const c = codecById(codecId);
  const B = c.blockSize;
  const nb = inp / B;
  const blockCodes = (B * bits) / 8;
  const wide = new Uint8Array(B);
  const shift = (1 << (bits - 1)) - (1 << (c.bits - 1));
  for (let r = 0; r < out; r++) {
    const dr = rowOf(r);
    for (let j = 0; j < nb; j++) {
      const o = (r * nb + j) * c.bytesPerBlock;
      scales[dr * nb + j] = decodeScale(readU16(packed, o), c.scaleDtype);
      const at = dr * nb * blockCodes + j * blockCodes;
      if (c.bits === bits) {
        codes.set(packed.subarray(o + 2, o + 2 + blockCodes), at);
        continue;
      }
      unpackBits(packed, o + 2, c.bits, B, wide);
      for (let i = 0; i < B; i++) wide[i] += shift;
      packBits(wide, bits, codes, at);
    }
  }
}

export function expertStacks(cfg: ModelConfig, w: Weights, bank: ExpertBank, l: number): ExpertStacks {
  const moe = cfg.moe!;
  const { experts: E, intermediate: I } = moe;
  const H = cfg.hidden;
  const p = `layers.${l}.moe.experts`;
  if (!(bank instanceof CompressedExpertBank)) return { kind: 'float', gate: w.get(`${p}.gate`).data, up: w.get(`${p}.up`).data, down: w.get(`${p}.down`).data };
  const layout = quantLayout(bank, I, H);
  if (layout !== null) {
    const { bits, blockSize: B } = layout;
    const fc1 = new Uint8Array((E * 2 * I * H * bits) / 8);
    const fc1Scales = new Float32Array(E * 2 * I * (H / B));
    const fc2 = new Uint8Array((E * H * I * bits) / 8);
    const fc2Scales = new Float32Array(E * H * (I / B));
    for (let e = 0; e < E; e++) {
      const q = (m: MatrixName) => {
        const parts = bank.parts(e, m);
        const part = parts[parts.length - 1];
        if (part.kind !== 'quant') throw new Error('decode graph: quantized experts must end in a quant part');
        return part;
      };
      repackBlocks(q('gate').packed, q('gate').codec, I, H, bits, fc1, fc1Scales, (r) => e * 2 * I + r);
      repackBlocks(q('up').packed, q('up').codec, I, H, bits, fc1, fc1Scales, (r) => e * 2 * I + I + r);
      repackBlocks(q('down').packed, q('down').codec, H, I, bits, fc2, fc2Scales, (r) => e * H + r);
    }
    const dense = (m: MatrixName) => {
      const part = bank.parts(0, m)[0];
      if (part.kind !== 'dense') throw new Error('decode graph: the shared base must be a dense part');
      return part.w;
    };
    const base = layout.base ? { gu: concat([dense('gate'), dense('up')]), down: dense('down') } : null;
    return { kind: 'quant', bits, blockSize: B, fc1, fc1Scales, fc2, fc2Scales, base };
  }
  const gate = new Float32Array(E * I * H);
  const up = new Float32Array(E * I * H);
  const down = new Float32Array(E * H * I);
  for (let e = 0; e < E; e++) {
    densifyMatrix([...bank.parts(e, 'gate')], I, H, gate.subarray(e * I * H, (e + 1) * I * H));
    densifyMatrix([...bank.parts(e, 'up')], I, H, up.subarray(e * I * H, (e + 1) * I * H));
    densifyMatrix([...bank.parts(e, 'down')], H, I, down.subarray(e * H * I, (e + 1) * H * I));
  }
  return { kind: 'float', gate, up, down };
}

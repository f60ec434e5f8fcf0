/**
 * What a compressed model chose for each layer and expert matrix, read back from its manifest:
 * the label of every matrix is the sum of its parts (e.g. 'q3s-g128', 'base+q2a-g64', 'sparse',
 * 'lowrank r12'), so it works for every method, and `auto`'s own records (proxy, base, estimated
 * errors) are passed along. `moepress inspect` renders it.
 */
import type { Manifest } from '../format.js';
import { MATRICES, type LayerRecord, type MatrixName, type MatrixPart } from '../parts.js';
import { bitsPerWeight, codecById } from '../quant/codec.js';

export interface LayerChoices {
  layer: number;
  method: string;
  /** Stored bytes / bf16 bytes of this layer's experts. */
  storedFraction: number;
  /** Per matrix kind: label -> number of experts using it. */
  matrices: Record<MatrixName, Record<string, number>>;
  /** Per matrix kind: mean stored bits per weight of its quantized parts (null when none is quantized). */
  quantBits: Record<MatrixName, number | null>;
  /** plan[e] = [gate, up, down] labels of expert e. */
  plan: string[][];
  /** The method's recorded choices (proxy, base, estimated errors, codec...), without the plan. */
  details: Record<string, unknown>;
}

export function partLabel(p: MatrixPart): string {
  if (p.kind === 'dense') return 'base';
  if (p.kind === 'quant') return p.codec;
  if (p.kind === 'lowrank') return `lowrank r${p.rank}`;
  return p.index.kind === 'seeded' ? 'sparse(seeded)' : 'sparse';
}

export function matrixLabel(parts: MatrixPart[]): string {
  return parts.length === 0 ? 'zero' : parts.map(partLabel).join('+');
}

export function layerChoices(r: LayerRecord): LayerChoices {
  const matrices = { gate: {}, up: {}, down: {} } as Record<MatrixName, Record<string, number>>;
  const quantBits = { gate: null, up: null, down: null } as Record<MatrixName, number | null>;
  const plan = r.experts.map((ex) => MATRICES.map((m) => matrixLabel(ex[m])));
  for (const m of MATRICES) {
    let bits = 0;
    let count = 0;
    r.experts.forEach((ex, e) => {
      const label = plan[e][MATRICES.indexOf(m)];
      matrices[m][label] = (matrices[m][label] ?? 0) + 1;
      for (const p of ex[m]) {
        if (p.kind !== 'quant') continue;
        bits += bitsPerWeight(codecById(p.codec));
        count++;
      }
    });
    quantBits[m] = count ? bits / count : null;
  }
  const { plan: _plan, ...details } = r.choices;
  void _plan;
  return { layer: r.layer, method: r.method, storedFraction: r.referenceBytes ? r.storedBytes / r.referenceBytes : 0, matrices, quantBits, plan, details };
}

export function modelChoices(m: Manifest): { method: string; budget: number; storedFraction: number; layers: LayerChoices[] } {
  return { method: m.method, budget: m.budget, storedFraction: m.bytes.fraction, layers: m.layers.map(layerChoices) };
}

/**
 * Expert banks over a compressed layer: each expert runs part by part on the stored bytes (shared
 * base GEMM + sparse / quantized / low-rank terms); no layer is ever densified as a whole.
 */
import type { RawTensor } from '../io/dtype.js';
import { applyParts, preparedBytes, prepareParts, type PreparedPart } from '../compress/apply.js';
import { MATRICES, matrixShape, type LayerRecord, type MatrixName } from '../compress/parts.js';
import { toFloat32 } from '../tensor/convert.js';
import { swiglu, swigluOai } from '../tensor/activation.js';
import { scaleInPlace, scaleRows, type Activation, type ExpertBank, type ExpertScaling } from './experts.js';

export class CompressedExpertBank implements ExpertBank {
  readonly count: number;
  readonly residentBytes: number;
  private readonly experts: Record<MatrixName, PreparedPart[]>[];

  constructor(rec: LayerRecord, private readonly I: number, private readonly H: number, get: (name: string) => RawTensor, private readonly act: Activation) {
    const shared = new Map<string, Float32Array>();
    const f32 = (n: string) => {
      if (!shared.has(n)) shared.set(n, toFloat32(get(n), n));
      return shared.get(n)!;
    };
    this.count = rec.experts.length;
    this.experts = rec.experts.map((e) => {
      const out = {} as Record<MatrixName, PreparedPart[]>;
      for (const m of MATRICES) {
        const [o, i] = matrixShape(m, I, H);
        out[m] = prepareParts(e[m], o, i, get, f32);
      }
      return out;
    });
    const seen = new Set<Float32Array>();
    this.residentBytes = this.experts.reduce((s, e) => s + MATRICES.reduce((t, m) => t + preparedBytes(e[m], seen), 0), 0);
  }

  /** Expert e's matrix m as decoded parts (read-only: the decode graph repacks them). */
  parts(e: number, m: MatrixName): readonly PreparedPart[] {
    return this.experts[e][m];
  }

  /** x: [n, H] -> [n, H]; scaling (compressed experts) multiplies the gate / up inputs and the intermediate. */
  run(e: number, x: Float32Array, n: number, scaling?: ExpertScaling): Promise<Float32Array> {
    return runExpertParts(this.experts[e], x, n, this.I, this.H, this.act, scaling);
  }
}

/** One expert's prepared parts, x: [n, H] -> [n, H] (shared with the expert cache's compressed bank). */
export async function runExpertParts(p: Record<MatrixName, PreparedPart[]>, x: Float32Array, n: number, I: number, H: number, act: Activation, scaling?: ExpertScaling): Promise<Float32Array> {
  const g = await applyParts(p.gate, scaling ? scaleRows(x, scaling.c0) : x, n, I, H);
  const u = await applyParts(p.up, scaling ? scaleRows(x, scaling.c2) : x, n, I, H);
  if (act.kind === 'swiglu') swiglu(g, u, g);
  else swigluOai(g, u, g, act.alpha, act.limit);
  return applyParts(p.down, scaling ? scaleInPlace(g, scaling.c1) : g, n, H, I);
}

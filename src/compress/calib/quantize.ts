/**
 * Calibration-aware quantization of one expert matrix, as the `quant` and `ders-quant` methods use it.
 *
 *   new CalibratedQuantizer(calib: LayerCalib | null, I, H)
 *   await .quantize(w, m, e, codec) -> packed bytes in codec's layout (quant/codec.ts), so nothing changes
 *     for the runtime. With calibration and blocks that tile rows: GPTQ (calib/gptq.ts) against the
 *     expert's own Hessian proxy (xtx for gate/up, ata for down; for a delta W − base the output
 *     error (Δ − Δ̂) x has the same Hessian), its block headers then refit on that error
 *     (calib/refit.ts). Otherwise plain codec quantization.
 *   .choices() -> what the layer record stores under choices.calib.
 *
 * Uncalibrated experts (the calibration routed no token to them, or fewer tokens than the matrix
 * has inputs, so that its Hessian is singular: calib/hessian.ts): the data-free treatment, plain
 * codec quantization, which is exactly GPTQ with an identity Hessian (tested in calib-gptq.test.ts).
 * They are listed in choices.calib.uncalibrated.
 */
import type { BlockCodec } from '../quant/codec.js';
import { matrixShape, type MatrixName } from '../parts.js';
import { gptqApplies, gptqQuantize } from './gptq.js';
import { refitHeaders } from './refit.js';
import { diagonalImportance, hessianDiagonal, hessianFor } from './hessian.js';
import type { LayerCalib } from './types.js';

export const GPTQ_DAMP = 0.01;

/**
 * Group sizes the calibrated `quant` considers: the default menu plus 16, so that a budget of
 * exactly 3 (or 2, or 4) bits per weight is spent (q2s-g16 = 3.0 bits) instead of falling to the
 * next whole-block codec (q2s-g32 = 2.5 bits). Measured on the mixtral fixture at budget 0.1875,
 * GPTQ: q2s-g16 perplexity 15.22 vs q2s-g32 15.76 (64 test windows).
 */
export const GPTQ_GROUPS: readonly number[] = [16, 32, 64, 128, 256];

export class CalibratedQuantizer {
  private gptq = 0;
  private plain = 0;
  private readonly uncalibrated = new Set<number>();

  constructor(private readonly calib: LayerCalib | null, private readonly I: number, private readonly H: number) {}

  async quantize(w: Float32Array, m: MatrixName, e: number, codec: BlockCodec): Promise<Uint8Array> {
    const [out, inp] = matrixShape(m, this.I, this.H);
    const ec = this.calib?.experts[e];
    const diag = ec && gptqApplies(codec, inp) ? hessianDiagonal(ec, m, inp) : null;
    if (diag) {
      // GPTQ with a diagonal H feeds nothing forward: the codec with importances diag, then the refit
      this.gptq++;
      return (await refitHeaders(codec.quantize(w, diagonalImportance(diag, out)), codec, w, out, inp, diag)).packed;
    }
    const hess = ec ? hessianFor(ec, m, inp) : null;
    if (ec && !hess) this.uncalibrated.add(e);
    if (!hess || !gptqApplies(codec, inp)) {
      this.plain++;
      return codec.quantize(w);
    }
    this.gptq++;
    // GPTQ's codes, then its block headers refit on the same output error (refit.ts)
    const g = await gptqQuantize(w, out, inp, hess, codec, { damp: GPTQ_DAMP });
    return (await refitHeaders(g.packed, codec, w, out, inp, hess)).packed;
  }

  /** null without calibration (data-free run). */
  choices(): Record<string, unknown> | null {
    if (!this.calib) return null;
    return { mode: 'gptq', refit: 'headers', damp: GPTQ_DAMP, gptqMatrices: this.gptq, plainMatrices: this.plain, uncalibrated: [...this.uncalibrated].sort((a, b) => a - b) };
  }
}

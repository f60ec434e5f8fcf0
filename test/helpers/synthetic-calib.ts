/**
 * A layer of experts with a synthetic calibration (issue 5 tests): correlated inputs of unequal
 * scales, or identity Hessians, and the output error a compressed layer makes on them.
 */
import { hessianFor } from '../../src/compress/calib/hessian.js';
import type { ExpertCalib, LayerCalib } from '../../src/compress/calib/types.js';
import type { LayerExperts, LayerStore } from '../../src/compress/method.js';
import { MATRICES, matrixShape, type LayerRecord } from '../../src/compress/parts.js';
import { rebuildExperts } from '../../src/compress/restore.js';
import { toFloat32 } from '../../src/tensor/convert.js';
import { Rng } from '../../src/tensor/random.js';

/** Σ v vᵀ over T vectors v = A z, z with decaying scales and input j scaled by 1 + 3·(j mod 5): [n, n]. */
function correlatedGram(n: number, T: number, rng: Rng): Float64Array {
  const A = rng.normals(n * n);
  const G = new Float64Array(n * n);
  const v = new Float64Array(n);
  for (let t = 0; t < T; t++) {
    const z = rng.normals(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += A[i * n + k] * z[k] * Math.exp((-3 * k) / n);
      v[i] = s * (1 + 3 * (i % 5));
    }
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) G[i * n + j] += v[i] * v[j];
  }
  return G;
}

function scaledIdentity(n: number, c: number): Float64Array {
  const G = new Float64Array(n * n);
  for (let i = 0; i < n; i++) G[i * n + i] = c;
  return G;
}

export interface SyntheticOptions {
  /** Every expert's Hessians a scaled identity, equal tokens and weights (the data-free case). */
  identity?: boolean;
  /** Experts the calibration never reached (tokens 0). */
  unreached?: number[];
  /** Tokens per reached expert (default 2·max(I, H), enough for every matrix). */
  tokens?: number;
}

/** Experts W_e = B + noise_e (gate/up [E, I, H], down [E, H, I]) and their calibration. */
export function calibratedLayer(E: number, I: number, H: number, seed: number, opts: SyntheticOptions = {}): { x: LayerExperts; calib: LayerCalib } {
  const rng = new Rng(seed);
  const n = I * H;
  const around = () => {
    const base = rng.normals(n, 0.2);
    const all = new Float32Array(E * n);
    for (let e = 0; e < E; e++) for (let i = 0; i < n; i++) all[e * n + i] = base[i] + 0.1 * rng.normal();
    return all;
  };
  const x: LayerExperts = { layer: 0, E, I, H, gate: around(), up: around(), down: around() };
  const T = opts.tokens ?? 2 * Math.max(I, H);
  const experts: ExpertCalib[] = Array.from({ length: E }, (_, e) => {
    const tokens = opts.unreached?.includes(e) ? 0 : T;
    if (tokens === 0) return { tokens, weightSq: 0, xtx: new Float64Array(H * H), ata: new Float64Array(I * I), ataDiag: new Float64Array(I) };
    const xtx = opts.identity ? scaledIdentity(H, 5 * T) : correlatedGram(H, tokens, rng);
    const ata = opts.identity ? scaledIdentity(I, 3 * T) : correlatedGram(I, tokens, rng);
    const ataDiag = Float64Array.from({ length: I }, (_, i) => ata[i * I + i]);
    return { tokens, weightSq: opts.identity ? 0.25 * T : tokens * (0.1 + 0.2 * rng.next()), xtx, ata, ataDiag };
  });
  return { x, calib: { layer: 0, E, I, H, tokens: (E * T) / 2, experts } };
}

/** The layer as stored, rebuilt in original neuron order: [E, out, in] per matrix. */
export function rebuilt(rec: LayerRecord, store: LayerStore, I: number, H: number): Record<'gate' | 'up' | 'down', Float32Array> {
  const get = (name: string) => store.get(name);
  return { gate: toFloat32(rebuildExperts(rec, 'gate', I, H, get)), up: toFloat32(rebuildExperts(rec, 'up', I, H, get)), down: toFloat32(rebuildExperts(rec, 'down', I, H, get)) };
}

/**
 * Σ over experts and matrices of tr(ΔW H ΔWᵀ), each matrix's output error on its own calibration
 * inputs (gate/up: Σ x xᵀ, down: Σ a aᵀ), in float64. Unreached experts count nothing.
 */
export function outputError(x: LayerExperts, got: Record<'gate' | 'up' | 'down', Float32Array>, calib: LayerCalib): number {
  let total = 0;
  const n = x.I * x.H;
  for (let e = 0; e < x.E; e++) {
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, x.I, x.H);
      const Hm = hessianFor(calib.experts[e], m);
      if (!Hm) continue;
      const d = new Float64Array(inp);
      for (let r = 0; r < out; r++) {
        for (let j = 0; j < inp; j++) d[j] = x[m][e * n + r * inp + j] - got[m][e * n + r * inp + j];
        for (let j = 0; j < inp; j++) for (let k = 0; k < inp; k++) total += d[j] * Hm[j * inp + k] * d[k];
      }
    }
  }
  return total;
}

/** The same error with only the Hessians' diagonals (what Wanda-style selection minimises). */
export function diagonalError(x: LayerExperts, got: Record<'gate' | 'up' | 'down', Float32Array>, calib: LayerCalib): number {
  let total = 0;
  const n = x.I * x.H;
  for (let e = 0; e < x.E; e++) {
    const c = calib.experts[e];
    if (c.tokens === 0) continue;
    for (const m of MATRICES) {
      const [out, inp] = matrixShape(m, x.I, x.H);
      for (let r = 0; r < out; r++) {
        for (let j = 0; j < inp; j++) {
          const d = x[m][e * n + r * inp + j] - got[m][e * n + r * inp + j];
          total += d * d * (m === 'down' ? c.ataDiag[j] : c.xtx[j * inp + j]);
        }
      }
    }
  }
  return total;
}

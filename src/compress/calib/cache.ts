/**
 * A calibration as one safetensors file, so a user can collect once and compress many times.
 *
 *   saveCalibration(file, calib, key?)  writes it (float32 sums; `key` is any string the caller
 *     uses to recognise the run, e.g. model dir + options, kept in the metadata)
 *   loadCalibration(file) -> { calib, key }
 *
 * Tensors: layers.{l}.experts.{e}.xtx F32 [H, H], .ata F32 [I, I] (only when kept), .ata_diag F32 [I].
 * Metadata 'moepress' = 'calibration', 'calibration' = JSON of everything else (source, windows,
 * window size, seed, per layer E/I/H/tokens, per expert tokens and weightSq).
 * Float32 storage is enough: the sums feed dampened Hessians (1% of their mean diagonal).
 */
import { MoepressError } from '../../io/errors.js';
import { SafetensorsFile } from '../../io/safetensors.js';
import { writeSafetensors } from '../../io/safetensors-writer.js';
import type { RawTensor } from '../../io/dtype.js';
import { fromFloat32, toFloat32 } from '../../tensor/convert.js';
import type { Calibration, LayerCalib } from './types.js';

interface Meta {
  source: string;
  windows: number;
  windowSize: number;
  seed: number;
  key: string;
  layers: { layer: number; E: number; I: number; H: number; tokens: number; experts: { tokens: number; weightSq: number; ata: boolean }[] }[];
}

function f32(a: Float64Array, shape: number[]): RawTensor {
  return { dtype: 'F32', shape, data: fromFloat32(Float32Array.from(a), 'F32') };
}

export function saveCalibration(file: string, calib: Calibration, key = ''): void {
  const tensors: [string, RawTensor][] = [];
  const meta: Meta = { source: calib.source, windows: calib.windows, windowSize: calib.windowSize, seed: calib.seed, key, layers: [] };
  for (const lc of [...calib.layers.values()].sort((a, b) => a.layer - b.layer)) {
    meta.layers.push({ layer: lc.layer, E: lc.E, I: lc.I, H: lc.H, tokens: lc.tokens,
      experts: lc.experts.map((e) => ({ tokens: e.tokens, weightSq: e.weightSq, ata: e.ata !== null })) });
    lc.experts.forEach((e, i) => {
      const p = `layers.${lc.layer}.experts.${i}`;
      tensors.push([`${p}.xtx`, f32(e.xtx, [lc.H, lc.H])]);
      if (e.ata) tensors.push([`${p}.ata`, f32(e.ata, [lc.I, lc.I])]);
      tensors.push([`${p}.ata_diag`, f32(e.ataDiag, [lc.I])]);
    });
  }
  writeSafetensors(file, tensors, { moepress: 'calibration', calibration: JSON.stringify(meta) });
}

export function loadCalibration(file: string): { calib: Calibration; key: string } {
  const f = SafetensorsFile.open(file);
  try {
    if (f.metadata?.moepress !== 'calibration' || !f.metadata.calibration) throw new MoepressError(`not a moepress calibration file (metadata 'moepress' is not 'calibration')`, { file });
    const meta = JSON.parse(f.metadata.calibration) as Meta;
    const read = (name: string, n: number): Float64Array => {
      if (!f.tensors.has(name)) throw new MoepressError('tensor missing from the calibration file', { file, tensor: name });
      const t = f.read(name);
      if (t.dtype !== 'F32' || t.data.byteLength !== 4 * n) throw new MoepressError(`expected F32 with ${n} values, got ${t.dtype} [${t.shape}]`, { file, tensor: name });
      return Float64Array.from(toFloat32(t, name));
    };
    const layers = new Map<number, LayerCalib>();
    for (const l of meta.layers) {
      layers.set(l.layer, {
        layer: l.layer, E: l.E, I: l.I, H: l.H, tokens: l.tokens,
        experts: l.experts.map((e, i) => {
          const p = `layers.${l.layer}.experts.${i}`;
          return { tokens: e.tokens, weightSq: e.weightSq, xtx: read(`${p}.xtx`, l.H * l.H), ata: e.ata ? read(`${p}.ata`, l.I * l.I) : null, ataDiag: read(`${p}.ata_diag`, l.I) };
        }),
      });
    }
    return { calib: { source: meta.source, windows: meta.windows, windowSize: meta.windowSize, seed: meta.seed, layers }, key: meta.key };
  } finally {
    f.close();
  }
}

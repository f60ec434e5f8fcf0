/**
 * Where a compression run spends its time, for `moepress bench --scale`: the alignment's GEMMs and
 * assignment solver, reading experts (positional reads and decoding), writing stored tensors, and
 * per layer. Filled in by compress() when a request carries one; plain data.
 */
export interface CompressProfile {
  /** Waiting for alignment GEMMs (the part not overlapped with the scans), and their FLOPs. */
  gemmMs: number;
  gemmFlops: number;
  /** Assignment solver (dense or sparse LAPJV). */
  assignMs: number;
  /** Exact costs on candidate edges (fast alignment). */
  refineMs: number;
  /** The whole barycenter computation (alignments, mean updates, expert loads). */
  alignMs: number;
  /** Expert reads: bytes, milliseconds in positional reads, milliseconds decoding bf16 -> f32. */
  bytesRead: number;
  readMs: number;
  decodeMs: number;
  /** Stored tensors written (spill + final files), and the milliseconds writing them. */
  bytesWritten: number;
  writeMs: number;
  /** Wall milliseconds per compressed layer. */
  layerMs: number[];
}

export function newProfile(): CompressProfile {
  return { gemmMs: 0, gemmFlops: 0, assignMs: 0, refineMs: 0, alignMs: 0, bytesRead: 0, readMs: 0, decodeMs: 0, bytesWritten: 0, writeMs: 0, layerMs: [] };
}

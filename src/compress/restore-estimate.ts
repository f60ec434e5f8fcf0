/**
 * Before a long restore: its peak memory and time, from the manifest and the checkpoint's
 * headers (no weights read). Returned as data; the CLI prints it.
 *
 * Memory (restore.ts): the current layer's rebuilt expert stacks in the output dtype (up to the
 * three matrix kinds, E·I·H each), one float32 matrix rebuilt and its un-permuted copy, the output
 * shard being assembled (writeCheckpoint holds up to one shard's tensors), plus PROCESS_BYTES and
 * GC_SLACK as compress's estimate. Time: the compressed bytes read once, the dense bytes written
 * once, at the disk rates, plus REBUILD_NS_PER_WEIGHT of JavaScript per rebuilt expert weight.
 */
import { openModel } from '../runtime/load-model.js';
import { DEFAULT_RATES, GC_SLACK, PROCESS_BYTES, type EstimateRates } from './estimate.js';
import { readManifest } from './format.js';

/** Rebuilding one expert weight from its parts (decode, add, un-permute, convert), nanoseconds; measured on the 2-core dev machine. */
export const REBUILD_NS_PER_WEIGHT = 12;

export interface RestoreEstimate {
  peakBytes: number;
  workingSet: { what: string; bytes: number }[];
  seconds: number;
  /** Bytes of the restored checkpoint and of the compressed one read. */
  outputBytes: number;
  inputBytes: number;
}

/** dtype: the restored experts' (default: as restore, the source checkpoint's float dtype, else BF16). */
export function estimateRestore(dir: string, dtype?: 'BF16' | 'F16' | 'F32', rates: EstimateRates = DEFAULT_RATES): RestoreEstimate {
  const manifest = readManifest(dir);
  dtype ??= ['BF16', 'F16', 'F32'].includes(manifest.source.dtype) ? (manifest.source.dtype as 'BF16') : 'BF16';
  const src = openModel(dir);
  try {
    const ck = src.checkpoint;
    const moe = src.config.moe!;
    const E = moe.experts;
    const n = moe.intermediate * src.config.hidden;
    const size = dtype === 'F32' ? 4 : 2;
    let inputBytes = 0;
    let restBytes = 0;
    for (const name of ck.names()) {
      const info = ck.info(name);
      inputBytes += info.byteLength;
      // every tensor but the compressed experts' parts is copied byte for byte
      if (!name.startsWith('moepress.')) restBytes += info.byteLength;
    }
    const layers = manifest.layers.length;
    const expertBytes = layers * 3 * E * n * size;
    const outputBytes = restBytes + expertBytes;
    const shard = Math.min(manifest.source.shardBytes || outputBytes, outputBytes);
    const workingSet = [
      { what: "one layer's rebuilt experts", bytes: 3 * E * n * size },
      { what: 'one matrix rebuilt (float32) and un-permuted', bytes: 2 * 4 * n },
      { what: 'the output shard being assembled', bytes: shard },
    ];
    const total = workingSet.reduce((s, w) => s + w.bytes, 0);
    const seconds = inputBytes / (rates.readMBps * 1e6) + outputBytes / (rates.writeMBps * 1e6) + (layers * 3 * E * n * REBUILD_NS_PER_WEIGHT) / 1e9;
    return { peakBytes: Math.round(PROCESS_BYTES + total * (1 + GC_SLACK)), workingSet, seconds, outputBytes, inputBytes };
  } finally {
    src.checkpoint.close();
  }
}

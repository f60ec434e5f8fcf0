/**
 * This machine's rates for estimates and floors: GEMM GFLOP/s at the alignment's shapes, and the
 * disk's sequential write (with fsync) and read rates. Reads bypass the page cache through
 * `dd iflag=direct` where available (Node cannot align buffers for O_DIRECT); otherwise the read
 * rate is the buffered one and marked as such. Returns numbers, never prints.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { benchGemm } from '../tensor/gemm-bench.js';
import { DEFAULT_SKETCH_DIM, EXACT_MAX_N } from './align/align.js';
import { COST_BLOCK_ROWS } from './align/cloud.js';

export interface GemmRate {
  /** [M, N, K] measured: one row block of the alignment's cost or sketch-score GEMM. */
  shape: [number, number, number];
  gflops: number;
}

/** GFLOP/s of the GEMM the alignment runs for experts of [I, 3H] (fast mode above EXACT_MAX_N). */
export async function measureAlignGemm(I: number, H: number, seconds = 0.5): Promise<GemmRate> {
  const K = I > EXACT_MAX_N ? Math.min(DEFAULT_SKETCH_DIM, 3 * H) : 3 * H;
  const shape: [number, number, number] = [Math.min(COST_BLOCK_ROWS, I), I, K];
  const rows = await benchGemm({ sizes: [shape], seconds, backends: ['ort'] });
  const row = rows[0] ?? (await benchGemm({ sizes: [shape], seconds, backends: ['ts-blocked'] }))[0];
  return { shape, gflops: row.gflops };
}

export interface DiskRate {
  writeMBps: number;
  readMBps: number;
  /** 'direct': read past the page cache (dd iflag=direct); 'cached': buffered, an upper bound. */
  readKind: 'direct' | 'cached';
  bytes: number;
}

/** Writes `bytes` to a scratch file in `dir` (fsync), reads them back, removes the file. */
export function measureDisk(dir: string, bytes = 256 * 2 ** 20): DiskRate {
  const scratch = mkdtempSync(join(dir, '.moepress-disk-'));
  const file = join(scratch, 'probe.bin');
  const chunk = new Uint8Array(16 * 2 ** 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24; // not all zeros: no sparse-file shortcuts
  try {
    let t = performance.now();
    const fd = openSync(file, 'w');
    let written = 0;
    while (written < bytes) written += writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - written));
    fsyncSync(fd);
    closeSync(fd);
    const writeMBps = bytes / 1e6 / ((performance.now() - t) / 1000);
    const dd = spawnSync('dd', [`if=${file}`, 'of=/dev/null', 'bs=4M', 'iflag=direct'], { encoding: 'utf8' });
    const m = /([0-9.]+) s, /.exec(dd.stderr ?? '');
    if (dd.status === 0 && m && Number(m[1]) > 0) return { writeMBps, readMBps: bytes / 1e6 / Number(m[1]), readKind: 'direct', bytes };
    t = performance.now();
    const rfd = openSync(file, 'r');
    let pos = 0;
    while (pos < bytes) pos += readSync(rfd, chunk, 0, chunk.length, pos);
    closeSync(rfd);
    return { writeMBps, readMBps: bytes / 1e6 / ((performance.now() - t) / 1000), readKind: 'cached', bytes };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

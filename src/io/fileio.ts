/**
 * Positional file reads and writes for big files. Node's fs calls take at most 2^31 - 1 bytes
 * each, so everything goes through these loops in chunks; positions are plain JS numbers, exact
 * up to 2^53 bytes, so files over 2 GiB need nothing special.
 */
import * as fs from 'node:fs';
import { MoepressError } from './errors.js';

/** Bytes per fs call: well under Node's 2 GiB per-call limit, large enough to stream at disk speed. */
export const IO_CHUNK_BYTES = 1 << 30;

/**
 * Fills `dest` with bytes from `fd` starting at absolute `position`. A short read means the file
 * shrank since it was opened (or lied about its size): that is reported, not zero-filled.
 */
export function readFullyAt(
  fd: number, dest: Uint8Array, position: number, where: { file: string; tensor?: string },
): void {
  let done = 0;
  while (done < dest.byteLength) {
    const len = Math.min(IO_CHUNK_BYTES, dest.byteLength - done);
    const n = fs.readSync(fd, dest, done, len, position + done);
    if (n === 0) {
      throw new MoepressError(
        `unexpected end of file at byte ${position + done}: expected ${dest.byteLength} bytes ` +
        `from byte ${position} (file truncated or modified while open?)`, where);
    }
    done += n;
  }
}

/** Writes all of `src` to `fd` at absolute `position`, looping over partial writes. */
export function writeFullyAt(fd: number, src: Uint8Array, position: number): void {
  let done = 0;
  while (done < src.byteLength) {
    const len = Math.min(IO_CHUNK_BYTES, src.byteLength - done);
    done += fs.writeSync(fd, src, done, len, position + done);
  }
}

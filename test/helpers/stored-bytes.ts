/** Bytes of the compressed-expert tensors (moepress.*) in a compressed directory, counted from the file headers. */
import { Checkpoint } from '../../src/io/checkpoint.js';

export function storedOnDisk(dir: string): number {
  const ck = Checkpoint.open(dir);
  try {
    return ck.names().filter((n) => n.startsWith('moepress.')).reduce((s, n) => s + ck.info(n).byteLength, 0);
  } finally {
    ck.close();
  }
}

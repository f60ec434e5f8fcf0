/** Storage dtypes we read and write, with their safetensors names and element sizes. */
export type DType = 'BF16' | 'F16' | 'F32' | 'I8' | 'U8' | 'I16' | 'U16' | 'I32' | 'U32' | 'I64' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  BF16: 2, F16: 2, F32: 4, I8: 1, U8: 1, I16: 2, U16: 2, I32: 4, U32: 4, I64: 8, BOOL: 1,
};

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/**
 * A tensor as stored: dtype, shape and little-endian bytes. Architecture mappings move these
 * around byte-for-byte (stacking experts, splitting fused tensors), so a hub -> canonical -> hub
 * round trip is byte-identical whatever the dtype.
 */
export interface RawTensor {
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

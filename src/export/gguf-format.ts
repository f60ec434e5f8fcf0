/**
 * GGUF v3 constants shared by the writer and the reader (ggml docs/gguf.md, gguf-py constants.py).
 *
 * File layout: magic "GGUF" | u32 version | u64 tensor count | u64 KV count | KVs | tensor infos |
 * zero padding to `alignment` | tensor data, each tensor at an offset (relative to the data
 * section) that is a multiple of `alignment`. Strings are u64 byte length + UTF-8, no terminator.
 * A tensor info stores its dims innermost first (ggml `ne`): a row-major [rows, cols] matrix is
 * written as ne = [cols, rows].
 */

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (GGUFValueType). */
export const VALUE_TYPE = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;

export type GgufScalarType = Exclude<keyof typeof VALUE_TYPE, 'array'>;
export type GgufScalar = number | bigint | boolean | string;

/** One typed metadata entry: a scalar, or an array of one scalar type. */
export type GgufKV =
  | { key: string; type: GgufScalarType; value: GgufScalar }
  | { key: string; type: 'array'; itemType: GgufScalarType; value: GgufScalar[] };

/**
 * Tensor element types we write and read (GGMLQuantizationType). Q4_0 and Q8_0 are block types of
 * 32 values along the innermost dimension (ggml block_q4_0 / block_q8_0):
 *   Q4_0  18 bytes: f16 d, then 16 bytes qs; value j = ((qs[j] & 15) - 8) * d for j < 16 and
 *         ((qs[j - 16] >> 4) - 8) * d for j >= 16 (element j and j + 16 share byte j)
 *   Q8_0  34 bytes: f16 d, then 32 int8 qs; value j = qs[j] * d
 */
export const TENSOR_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 } as const;
export type GgufTensorType = keyof typeof TENSOR_TYPE;
/** Values per block and bytes per block (1 value per "block" for the float types). */
export const TENSOR_BLOCK: Record<GgufTensorType, { values: number; bytes: number }> = {
  F32: { values: 1, bytes: 4 },
  F16: { values: 1, bytes: 2 },
  Q4_0: { values: 32, bytes: 18 },
  Q8_0: { values: 32, bytes: 34 },
};
/** Float types: written from float32 values. Block types are written as packed bytes. */
export type GgufFloatType = 'F32' | 'F16';

/** One tensor: shape row-major (outermost first, as in safetensors), stored reversed as ne. */
export interface GgufTensorSpec {
  name: string;
  type: GgufTensorType;
  shape: number[];
}

/** general.file_type (LlamaFileType): ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7. */
export const FILE_TYPE: Record<GgufTensorType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

/** Bytes of a tensor of this type and row-major shape; null when the innermost dimension is not whole blocks. */
export function typeByteLength(type: GgufTensorType, shape: readonly number[]): number | null {
  const b = TENSOR_BLOCK[type];
  const inner = shape[shape.length - 1];
  if (inner % b.values !== 0) return null;
  return shape.reduce((a, d) => a * d, 1) / b.values * b.bytes;
}

export const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** Typed KV constructors, so call sites read like gguf-py's add_* calls. */
export const kv = {
  u32: (key: string, value: number): GgufKV => ({ key, type: 'uint32', value }),
  i32: (key: string, value: number): GgufKV => ({ key, type: 'int32', value }),
  f32: (key: string, value: number): GgufKV => ({ key, type: 'float32', value }),
  bool: (key: string, value: boolean): GgufKV => ({ key, type: 'bool', value }),
  str: (key: string, value: string): GgufKV => ({ key, type: 'string', value }),
  strs: (key: string, value: string[]): GgufKV => ({ key, type: 'array', itemType: 'string', value }),
  i32s: (key: string, value: number[]): GgufKV => ({ key, type: 'array', itemType: 'int32', value }),
};

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

/** Tensor element types we write and read (GGMLQuantizationType). */
export const TENSOR_TYPE = { F32: 0, F16: 1 } as const;
export type GgufTensorType = keyof typeof TENSOR_TYPE;
export const TENSOR_TYPE_BYTES: Record<GgufTensorType, number> = { F32: 4, F16: 2 };

/** One tensor: shape row-major (outermost first, as in safetensors), stored reversed as ne. */
export interface GgufTensorSpec {
  name: string;
  type: GgufTensorType;
  shape: number[];
}

/** general.file_type (LlamaFileType): ALL_F32 = 0, MOSTLY_F16 = 1. */
export const FILE_TYPE: Record<GgufTensorType, number> = { F32: 0, F16: 1 };

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

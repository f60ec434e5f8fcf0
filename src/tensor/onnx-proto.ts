/**
 * A minimal protobuf encoder for ONNX ModelProto, so kernels can build their own small graphs
 * (Gemm, MatMul, later fused MoE ops) without an npm protobuf dependency.
 *
 * Field numbers follow onnx/onnx.proto (proto2). Only the encoder exists: we never read models
 * back, ORT is the consumer, and the test that counts is "ORT accepts and runs what we wrote".
 *
 * Wire types used: 0 varint (ints, enums), 2 length-delimited (strings, bytes, sub-messages,
 * packed floats), 5 fixed32 (single floats).
 */

/** TensorProto.DataType values (onnx.proto). */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

/** A growable little-endian byte buffer with the protobuf primitives. */
export class ProtoWriter {
  private buf = new Uint8Array(256);
  private len = 0;

  private reserve(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + extra) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  /**
   * Base-128 varint of an int64. Negative values are written as 64-bit two's complement
   * (10 bytes), which is what protobuf does for int32/int64 fields such as axis = -1.
   */
  varint(value: number): this {
    if (!Number.isInteger(value)) throw new Error(`onnx-proto: varint needs an integer, got ${value}`);
    this.reserve(10);
    if (value >= 0 && value <= Number.MAX_SAFE_INTEGER) {
      // Division rather than >>> so values above 2^32 (int64 dims, byte offsets) stay exact.
      let v = value;
      while (v >= 0x80) {
        this.buf[this.len++] = (v % 0x80) | 0x80;
        v = Math.floor(v / 0x80);
      }
      this.buf[this.len++] = v;
      return this;
    }
    if (value < 0 && value >= Number.MIN_SAFE_INTEGER) {
      let v = BigInt.asUintN(64, BigInt(value));
      while (v >= 0x80n) {
        this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
        v >>= 7n;
      }
      this.buf[this.len++] = Number(v);
      return this;
    }
    throw new Error(`onnx-proto: varint ${value} is outside the safe integer range`);
  }

  /** Field key: (field number << 3) | wire type. */
  tag(field: number, wire: number): this {
    return this.varint(field * 8 + wire);
  }

  bytes(data: Uint8Array): this {
    this.reserve(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
    return this;
  }

  fixed32Float(value: number): this {
    this.reserve(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, value, true);
    this.len += 4;
    return this;
  }

  // Field helpers: tag + payload.
  intField(field: number, value: number): this {
    return this.tag(field, WIRE_VARINT).varint(value);
  }
  floatField(field: number, value: number): this {
    return this.tag(field, WIRE_FIXED32).fixed32Float(value);
  }
  bytesField(field: number, data: Uint8Array): this {
    return this.tag(field, WIRE_LEN).varint(data.length).bytes(data);
  }
  stringField(field: number, s: string): this {
    return this.bytesField(field, utf8.encode(s));
  }
  messageField(field: number, sub: ProtoWriter): this {
    return this.bytesField(field, sub.finish());
  }
  /** Packed repeated float (one length-delimited run of fixed32 values). */
  packedFloatsField(field: number, values: readonly number[]): this {
    const w = new ProtoWriter();
    for (const v of values) w.fixed32Float(v);
    return this.messageField(field, w);
  }

  /** A view of the bytes written so far (valid until the next write). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

const utf8 = new TextEncoder();

/** Varint bytes of one value; exposed so tests can check hand-computed encodings. */
export function encodeVarint(value: number): Uint8Array {
  return new ProtoWriter().varint(value).finish().slice();
}

// ---------------------------------------------------------------------------------------------
// Model description types

/** A dimension: a fixed size or a symbolic name (dim_param) bound at run time. */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  elemType: DataTypeCode;
  dims: readonly Dim[];
}

/** A constant tensor; `data` holds the little-endian element bytes (raw_data). */
export interface TensorSpec {
  name: string;
  elemType: DataTypeCode;
  dims: readonly number[];
  data: ArrayBufferView;
}

export type Attribute =
  | { name: string; type: 'int'; value: number }
  | { name: string; type: 'float'; value: number }
  | { name: string; type: 'ints'; value: readonly number[] }
  | { name: string; type: 'floats'; value: readonly number[] }
  | { name: string; type: 'string'; value: string }
  | { name: string; type: 'tensor'; value: TensorSpec }
  /** A subgraph (If's then/else branches): it may read values of the enclosing graph by name. */
  | { name: string; type: 'graph'; value: SubgraphSpec };

export interface SubgraphSpec {
  nodes: readonly NodeSpec[];
  outputs: readonly ValueInfo[];
  initializers?: readonly TensorSpec[];
  name: string;
}

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  /** "" (default) is the standard ONNX domain; "com.microsoft" for ORT contrib ops. */
  domain?: string;
  name?: string;
  attributes?: readonly Attribute[];
}

export interface OpsetImport {
  domain: string;
  version: number;
}

export interface ModelSpec {
  inputs: readonly ValueInfo[];
  outputs: readonly ValueInfo[];
  nodes: readonly NodeSpec[];
  initializers?: readonly TensorSpec[];
  graphName?: string;
  /** Defaults to IR 8, the first IR version that opset 17 requires. */
  irVersion?: number;
  opsets?: readonly OpsetImport[];
}

export const DEFAULT_OPSETS: readonly OpsetImport[] = [
  { domain: '', version: 17 },
  { domain: 'com.microsoft', version: 1 },
];

// AttributeProto.AttributeType values.
const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, graph: 5, floats: 6, ints: 7 } as const;

// ---------------------------------------------------------------------------------------------
// Message encoders (field numbers from onnx.proto in comments)

function encodeTensor(t: TensorSpec): ProtoWriter {
  const w = new ProtoWriter();
  for (const d of t.dims) w.intField(1, d); // dims = 1 (repeated int64, unpacked is valid)
  w.intField(2, t.elemType); // data_type = 2
  w.stringField(8, t.name); // name = 8
  w.bytesField(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)); // raw_data = 9
  return w;
}

function encodeAttribute(a: Attribute): ProtoWriter {
  const w = new ProtoWriter();
  w.stringField(1, a.name); // name = 1
  w.intField(20, ATTR_TYPE[a.type]); // type = 20
  switch (a.type) {
    case 'float':
      w.floatField(2, a.value); // f = 2
      break;
    case 'int':
      w.intField(3, a.value); // i = 3
      break;
    case 'string':
      w.stringField(4, a.value); // s = 4
      break;
    case 'tensor':
      w.messageField(5, encodeTensor(a.value)); // t = 5
      break;
    case 'graph':
      w.messageField(6, encodeGraph({ inputs: [], outputs: a.value.outputs, nodes: a.value.nodes, initializers: a.value.initializers, graphName: a.value.name })); // g = 6
      break;
    case 'floats':
      w.packedFloatsField(7, a.value); // floats = 7
      break;
    case 'ints':
      for (const v of a.value) w.intField(8, v); // ints = 8
      break;
  }
  return w;
}

function encodeNode(n: NodeSpec): ProtoWriter {
  const w = new ProtoWriter();
  for (const s of n.inputs) w.stringField(1, s); // input = 1
  for (const s of n.outputs) w.stringField(2, s); // output = 2
  if (n.name !== undefined) w.stringField(3, n.name); // name = 3
  w.stringField(4, n.opType); // op_type = 4
  for (const a of n.attributes ?? []) w.messageField(5, encodeAttribute(a)); // attribute = 5
  if (n.domain) w.stringField(7, n.domain); // domain = 7
  return w;
}

function encodeValueInfo(v: ValueInfo): ProtoWriter {
  const shape = new ProtoWriter(); // TensorShapeProto
  for (const d of v.dims) {
    const dim = new ProtoWriter(); // TensorShapeProto.Dimension
    if (typeof d === 'number') dim.intField(1, d); // dim_value = 1
    else dim.stringField(2, d); // dim_param = 2
    shape.messageField(1, dim); // dim = 1
  }
  const tensorType = new ProtoWriter(); // TypeProto.Tensor
  tensorType.intField(1, v.elemType); // elem_type = 1
  tensorType.messageField(2, shape); // shape = 2
  const type = new ProtoWriter(); // TypeProto
  type.messageField(1, tensorType); // tensor_type = 1
  const w = new ProtoWriter();
  w.stringField(1, v.name); // name = 1
  w.messageField(2, type); // type = 2
  return w;
}

function encodeGraph(spec: ModelSpec): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of spec.nodes) w.messageField(1, encodeNode(n)); // node = 1
  w.stringField(2, spec.graphName ?? 'moepress'); // name = 2
  for (const t of spec.initializers ?? []) w.messageField(5, encodeTensor(t)); // initializer = 5
  for (const v of spec.inputs) w.messageField(11, encodeValueInfo(v)); // input = 11
  for (const v of spec.outputs) w.messageField(12, encodeValueInfo(v)); // output = 12
  return w;
}

/** Serialises a single-graph ONNX model: spec -> ModelProto bytes. */
export function buildModel(spec: ModelSpec): Uint8Array {
  const w = new ProtoWriter();
  w.intField(1, spec.irVersion ?? 8); // ir_version = 1
  w.stringField(2, 'moepress'); // producer_name = 2
  w.messageField(7, encodeGraph(spec)); // graph = 7
  for (const o of spec.opsets ?? DEFAULT_OPSETS) {
    const op = new ProtoWriter(); // OperatorSetIdProto
    if (o.domain) op.stringField(1, o.domain); // domain = 1
    op.intField(2, o.version); // version = 2
    w.messageField(8, op); // opset_import = 8
  }
  return w.finish().slice();
}

/** Wraps a Float32Array as a FLOAT initializer, checking its length against dims. */
export function floatTensor(name: string, dims: readonly number[], data: Float32Array): TensorSpec {
  let n = 1;
  for (const d of dims) n *= d;
  if (n !== data.length) throw new Error(`onnx-proto: initializer ${name} [${dims}] needs ${n} floats, got ${data.length}`);
  return { name, elemType: DataType.FLOAT, dims, data };
}

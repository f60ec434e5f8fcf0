/** A dense float32 tensor in row-major order. Shapes are written where tensors cross functions. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export function tensor(shape: number[], data?: Float32Array): Tensor {
  let n = 1;
  for (const d of shape) n *= d;
  if (data && data.length !== n) throw new Error(`tensor: shape [${shape}] needs ${n} values, got ${data.length}`);
  return { shape, data: data ?? new Float32Array(n) };
}

/** Canonical float32 weights of a loaded model, by canonical name (see models/canonical.ts). */
import type { Tensor } from '../tensor/tensor.js';

export class Weights {
  constructor(private readonly map: Map<string, Tensor>) {}
  has(name: string): boolean {
    return this.map.has(name);
  }
  get(name: string): Tensor {
    const t = this.map.get(name);
    if (!t) throw new Error(`weights: canonical tensor '${name}' is not loaded`);
    return t;
  }
  /** The tensor's data, or null when absent (optional biases, norms). */
  opt(name: string): Float32Array | null {
    return this.map.get(name)?.data ?? null;
  }
  names(): string[] {
    return [...this.map.keys()];
  }
  set(name: string, t: Tensor): void {
    this.map.set(name, t);
  }
  delete(name: string): void {
    this.map.delete(name);
  }
}

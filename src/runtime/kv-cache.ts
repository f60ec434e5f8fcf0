/** Key/value cache for one sequence: per layer K [cap, NKV, dk] and V [cap, NKV, dv]. */
export class KVCache {
  readonly k: Float32Array[] = [];
  readonly v: Float32Array[] = [];
  length = 0;
  constructor(
    layers: number,
    readonly capacity: number,
    readonly kRow: number, // NKV * dk
    readonly vRow: number, // NKV * dv
  ) {
    for (let l = 0; l < layers; l++) {
      this.k.push(new Float32Array(capacity * kRow));
      this.v.push(new Float32Array(capacity * vRow));
    }
  }
  /** Append T new rows for layer l at positions length .. length+T-1 (length advances once per step). */
  write(l: number, k: Float32Array, v: Float32Array, T: number): void {
    if (this.length + T > this.capacity) throw new Error(`KV cache full: ${this.length} + ${T} tokens exceed capacity ${this.capacity}`);
    this.k[l].set(k.subarray(0, T * this.kRow), this.length * this.kRow);
    this.v[l].set(v.subarray(0, T * this.vRow), this.length * this.vRow);
  }
}

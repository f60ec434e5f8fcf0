/** Edits for tiny models: experts that look upcycled (base + small noise) or are permuted copies. */
import type { ModelConfig } from '../../src/models/canonical.js';
import { Rng } from '../../src/tensor/random.js';

type W = Map<string, { shape: number[]; data: Float32Array }>;

/** Every expert of every MoE layer = expert 0 + N(0, noise²) (as if upcycled from one dense FFN). */
export function upcycledExperts(noise: number, seed = 5) {
  return (w: W, cfg: ModelConfig) => {
    const rng = new Rng(seed);
    for (const [name, t] of w) {
      if (!/\.moe\.experts\.(gate|up|down)$/.test(name)) continue;
      const n = t.data.length / cfg.moe!.experts;
      for (let e = 1; e < cfg.moe!.experts; e++) for (let i = 0; i < n; i++) t.data[e * n + i] = t.data[i] + noise * rng.normal();
    }
  };
}

/** Every expert = expert 0 with its intermediate neurons shuffled (same function, different order). */
export function permutedExperts(seed = 6) {
  return (w: W, cfg: ModelConfig) => {
    const rng = new Rng(seed);
    const { experts: E, intermediate: I } = cfg.moe!;
    const H = cfg.hidden;
    cfg.layers.forEach((spec, l) => {
      if (spec.ffn !== 'moe') return;
      const g = w.get(`layers.${l}.moe.experts.gate`)!.data;
      const u = w.get(`layers.${l}.moe.experts.up`)!.data;
      const d = w.get(`layers.${l}.moe.experts.down`)!.data;
      for (let e = 1; e < E; e++) {
        const perm = Array.from({ length: I }, (_, i) => i);
        for (let i = I - 1; i > 0; i--) {
          const j = rng.int(i + 1);
          [perm[i], perm[j]] = [perm[j], perm[i]];
        }
        for (let j = 0; j < I; j++) {
          g.set(g.subarray(perm[j] * H, (perm[j] + 1) * H), e * I * H + j * H);
          u.set(u.subarray(perm[j] * H, (perm[j] + 1) * H), e * I * H + j * H);
          for (let h = 0; h < H; h++) d[e * H * I + h * I + j] = d[h * I + perm[j]];
        }
      }
    });
  };
}

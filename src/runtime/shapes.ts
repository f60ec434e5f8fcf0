/** Shapes config.json implies for canonical tensors; used to reject checkpoints that disagree with it. */
import type { ModelConfig } from '../models/canonical.js';

export function expectedShape(cfg: ModelConfig, name: string): number[] | null {
  const { hidden: H, vocabSize: V } = cfg;
  if (name === 'embed' || name === 'lm_head') return [V, H];
  if (name === 'norm.weight') return [H];
  const m = /^layers\.(\d+)\.(.+)$/.exec(name);
  if (!m) return null;
  const rest = m[2];
  const a = cfg.attention;
  if (rest === 'attn_norm.weight' || rest === 'ffn_norm.weight') return [H];
  if (!a.mla) {
    const D = a.headDim;
    if (rest === 'attn.q.weight') return [a.heads * D, H];
    if (rest === 'attn.k.weight' || rest === 'attn.v.weight') return [a.kvHeads * D, H];
    if (rest === 'attn.o.weight') return [H, a.heads * D];
  }
  const moe = cfg.moe;
  if (moe) {
    const { experts: E, intermediate: I } = moe;
    if (rest === 'moe.router.weight') return [E, H];
    if (rest === 'moe.experts.gate' || rest === 'moe.experts.up') return [E, I, H];
    if (rest === 'moe.experts.down') return [E, H, I];
    if (moe.shared && (rest === 'moe.shared.gate' || rest === 'moe.shared.up')) return [moe.shared.intermediate, H];
    if (moe.shared && rest === 'moe.shared.down') return [H, moe.shared.intermediate];
  }
  if (cfg.denseIntermediate > 0) {
    const F = cfg.denseIntermediate;
    if (rest === 'mlp.gate' || rest === 'mlp.up') return [F, H];
    if (rest === 'mlp.down') return [H, F];
  }
  return null;
}

/** Reading one MoE layer's routed experts out of a checkpoint, and telling which hub tensors they are. */
import { MoepressError } from '../io/errors.js';
import type { CanonicalEntry } from '../models/canonical.js';
import { toFloat32 } from '../tensor/convert.js';
import { readChecked, type ModelSource } from '../runtime/load-model.js';
import type { LayerExperts } from './method.js';

/** Canonical names of routed-expert weight matrices (biases are kept as they are, not compressed). */
export function isExpertWeight(canonicalName: string): boolean {
  return /\.moe\.experts\.(gate|up|down)$/.test(canonicalName);
}

export function expertEntries(src: ModelSource, layer: number): CanonicalEntry[] {
  return src.arch.canonicalEntries(src.config, (n) => src.checkpoint.has(n)).filter((e) => e.layer === layer && isExpertWeight(e.name));
}

/** Hub tensor names holding the routed-expert weights of the given layers. */
export function expertHubNames(src: ModelSource, layers: Iterable<number>): Set<string> {
  const want = new Set(layers);
  const out = new Set<string>();
  for (const e of src.arch.canonicalEntries(src.config, (n) => src.checkpoint.has(n))) {
    if (e.layer !== null && want.has(e.layer) && isExpertWeight(e.name)) e.hub.forEach((h) => out.add(h));
  }
  return out;
}

/** One layer's experts as canonical float32 (gate/up [E,I,H], down [E,H,I]). */
export function readLayerExperts(src: ModelSource, layer: number): LayerExperts {
  const moe = src.config.moe;
  if (!moe || src.config.layers[layer]?.ffn !== 'moe') throw new MoepressError(`layer ${layer} is not a MoE layer`, { file: src.dir });
  const got: Record<string, Float32Array> = {};
  for (const e of expertEntries(src, layer)) {
    const m = e.name.slice(e.name.lastIndexOf('.') + 1);
    got[m] = toFloat32(e.load((n) => readChecked(src.checkpoint, n)), e.name);
  }
  for (const m of ['gate', 'up', 'down']) {
    if (!got[m]) throw new MoepressError(`layer ${layer}: routed expert '${m}' weights not found`, { file: src.dir });
  }
  return { layer, E: moe.experts, I: moe.intermediate, H: src.config.hidden, gate: got.gate, up: got.up, down: got.down };
}

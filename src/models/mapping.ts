/**
 * One mapping table, two directions. A family describes its checkpoint as a list of Units: each
 * says which canonical tensors are built from which hub tensors and how (identity, stacking experts,
 * splitting a fused gate_up, GPT-OSS de-interleave + transpose), with the inverse next to it.
 * canonicalEntries and hubEntries are both generated from the same list, so they cannot drift apart.
 *
 * Loads check every hub tensor's shape against the config and turn any failure (a read that throws
 * for a missing tensor, a wrong shape, mixed dtypes) into a MoepressError naming the tensor and layer.
 */
import type { RawTensor } from '../io/dtype.js';
import { MoepressError } from '../io/errors.js';
import type { CanonicalEntry, HubEntry } from './canonical.js';
import { concatRows, deinterleaveRows, interleaveRows, sameShape, sliceRows, stack, transpose2d, unstack } from './layout.js';

export interface Named {
  name: string;
  shape: number[];
}

export interface Unit {
  layer: number | null;
  canonical: Named[];
  hub: Named[];
  /** hub tensors (in `hub` order) -> canonical tensor i. */
  toCanonical(i: number, hub: RawTensor[]): RawTensor;
  /** canonical tensors (in `canonical` order) -> hub tensor j. */
  toHub(j: number, canonical: RawTensor[]): RawTensor;
}

function where(layer: number | null): string {
  return layer === null ? 'model' : `layer ${layer}`;
}

/** Reads and checks one input; `side` words the message for either direction. */
function fetch(
  side: 'hub' | 'canonical',
  get: (name: string) => RawTensor,
  want: Named,
  layer: number | null,
  forName: string,
): RawTensor {
  let t: RawTensor;
  try {
    t = get(want.name);
  } catch (e) {
    const err = e as Error & { file?: string };
    const why = e instanceof MoepressError ? bareMessage(e) : String(err?.message ?? e);
    throw new MoepressError(`${where(layer)}: ${side} tensor needed for '${forName}' could not be read: ${why}`, {
      file: err?.file,
      tensor: want.name,
    });
  }
  if (!t || !Array.isArray(t.shape) || !sameShape(t.shape, want.shape)) {
    throw new MoepressError(`${where(layer)}: ${side} tensor has shape [${t?.shape}], expected [${want.shape}] (needed for '${forName}')`, {
      tensor: want.name,
    });
  }
  return t;
}

/** A MoepressError's message without the "file: tensor 'x': " prefix we are about to repeat. */
function bareMessage(e: MoepressError): string {
  const parts: string[] = [];
  if (e.file) parts.push(e.file);
  if (e.tensor) parts.push(`tensor '${e.tensor}'`);
  const prefix = parts.length ? `${parts.join(': ')}: ` : '';
  return e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
}

/** Runs a byte move, turning layout errors (mixed dtypes, bad sizes) into MoepressError. */
function guard(layer: number | null, name: string, f: () => RawTensor): RawTensor {
  try {
    return f();
  } catch (e) {
    if (e instanceof MoepressError) throw e;
    throw new MoepressError(`${where(layer)}: cannot build '${name}': ${(e as Error).message}`, { tensor: name });
  }
}

export function canonicalSide(units: Unit[]): CanonicalEntry[] {
  return units.flatMap((u) =>
    u.canonical.map((c, i) => ({
      name: c.name,
      layer: u.layer,
      hub: u.hub.map((h) => h.name),
      shape: c.shape,
      load(read: (hubName: string) => RawTensor): RawTensor {
        const inputs = u.hub.map((h) => fetch('hub', read, h, u.layer, c.name));
        return guard(u.layer, c.name, () => u.toCanonical(i, inputs));
      },
    })),
  );
}

export function hubSide(units: Unit[]): HubEntry[] {
  return units.flatMap((u) =>
    u.hub.map((h, j) => ({
      name: h.name,
      layer: u.layer,
      canonical: u.canonical.map((c) => c.name),
      shape: h.shape,
      build(get: (canonicalName: string) => RawTensor): RawTensor {
        const inputs = u.canonical.map((c) => fetch('canonical', get, c, u.layer, h.name));
        return guard(u.layer, h.name, () => u.toHub(j, inputs));
      },
    })),
  );
}

// ---- Unit kinds -------------------------------------------------------------------------------

/** canonical = hub, same bytes. */
export function same(layer: number | null, canonical: string, hub: string, shape: number[]): Unit {
  return {
    layer,
    canonical: [{ name: canonical, shape }],
    hub: [{ name: hub, shape }],
    toCanonical: (_i, [t]) => t,
    toHub: (_j, [t]) => t,
  };
}

/** E per-expert hub tensors [...S] <-> one canonical stack [E, ...S]. */
export function stacked(layer: number, canonical: string, hubs: string[], each: number[]): Unit {
  return {
    layer,
    canonical: [{ name: canonical, shape: [hubs.length, ...each] }],
    hub: hubs.map((name) => ({ name, shape: each })),
    toCanonical: (_i, ts) => stack(ts),
    toHub: (j, [t]) => unstack(t, j),
  };
}

/**
 * transformers-v5 fused experts: gate_up_proj [E, 2I, H] (gate rows first, then up; the forward
 * does `linear(x, gate_up_proj[e]).chunk(2)`) <-> canonical gate, up [E, I, H].
 */
export function fusedGateUp(layer: number, gate: string, up: string, hub: string, E: number, I: number, H: number): Unit {
  return {
    layer,
    canonical: [
      { name: gate, shape: [E, I, H] },
      { name: up, shape: [E, I, H] },
    ],
    hub: [{ name: hub, shape: [E, 2 * I, H] }],
    toCanonical: (i, [t]) => sliceRows(t, i * I, I, 1),
    toHub: (_j, [g, u]) => concatRows([g, u], 1),
  };
}

/**
 * GPT-OSS experts: gate_up_proj [E, H, 2I] is in x out (the forward does x @ W) with gate and up
 * interleaved on the last dim (gate = [..., ::2], up = [..., 1::2]) <-> canonical gate, up [E, I, H].
 */
export function ossGateUp(layer: number, gate: string, up: string, hub: string, E: number, I: number, H: number): Unit {
  return {
    layer,
    canonical: [
      { name: gate, shape: [E, I, H] },
      { name: up, shape: [E, I, H] },
    ],
    hub: [{ name: hub, shape: [E, H, 2 * I] }],
    toCanonical: (i, [t]) => transpose2d(deinterleaveRows(t, -1)[i]),
    toHub: (_j, [g, u]) => interleaveRows(transpose2d(g), transpose2d(u), -1),
  };
}

/** GPT-OSS gate_up_proj_bias [E, 2I] (interleaved) <-> canonical gate_bias, up_bias [E, I]. */
export function ossGateUpBias(layer: number, gate: string, up: string, hub: string, E: number, I: number): Unit {
  return {
    layer,
    canonical: [
      { name: gate, shape: [E, I] },
      { name: up, shape: [E, I] },
    ],
    hub: [{ name: hub, shape: [E, 2 * I] }],
    toCanonical: (i, [t]) => deinterleaveRows(t, -1)[i],
    toHub: (_j, [g, u]) => interleaveRows(g, u, -1),
  };
}

/** hub [..., A, B] (in x out) <-> canonical [..., B, A] (out x in): GPT-OSS down_proj [E, I, H]. */
export function transposed(layer: number, canonical: string, hub: string, hubShape: number[]): Unit {
  const n = hubShape.length;
  const cShape = [...hubShape.slice(0, n - 2), hubShape[n - 1], hubShape[n - 2]];
  return {
    layer,
    canonical: [{ name: canonical, shape: cShape }],
    hub: [{ name: hub, shape: hubShape }],
    toCanonical: (_i, [t]) => transpose2d(t),
    toHub: (_j, [t]) => transpose2d(t),
  };
}

// ---- Checks for loaders and tests -------------------------------------------------------------

export interface Coverage {
  /** Hub tensors the entries read that the checkpoint does not have. */
  missing: string[];
  /** Checkpoint tensors no entry reads (e.g. DeepSeek-V3's multi-token-prediction layer). */
  unused: string[];
  /** Hub tensors read by more than one entry (expected for fused gate_up tensors, never otherwise). */
  shared: string[];
}

/** Compares what canonicalEntries will read with the checkpoint's tensor names. */
export function hubCoverage(entries: readonly CanonicalEntry[], hubNames: Iterable<string>): Coverage {
  const names = new Set(hubNames);
  const count = new Map<string, number>();
  for (const e of entries) for (const h of new Set(e.hub)) count.set(h, (count.get(h) ?? 0) + 1);
  return {
    missing: [...count.keys()].filter((h) => !names.has(h)).sort(),
    unused: [...names].filter((h) => !count.has(h)).sort(),
    shared: [...count].filter(([, n]) => n > 1).map(([h]) => h).sort(),
  };
}

/**
 * onnxruntime-node as a kernel backend: loading it (optionally), building sessions from model
 * bytes once per graph, and running them on Float32Arrays.
 *
 * Why a cache: creating a session parses and optimises the graph (milliseconds), while a run of
 * a cached session costs tens of microseconds; every kernel graph here uses symbolic dims so
 * one session serves all shapes.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import type { InferenceSession, Tensor } from 'onnxruntime-node';

type OrtModule = typeof import('onnxruntime-node');

let ortModule: OrtModule | null | undefined;
let ortLoadError: unknown;

/**
 * The onnxruntime-node module, or null when it cannot load (missing native binary, unsupported
 * platform). Loaded synchronously through require (the package is CommonJS) so that
 * backend selection can be a plain synchronous query.
 */
export function loadOrt(): OrtModule | null {
  if (ortModule !== undefined) return ortModule;
  try {
    const require = createRequire(import.meta.url);
    ortModule = require('onnxruntime-node') as OrtModule;
  } catch (e) {
    ortModule = null;
    ortLoadError = e;
  }
  return ortModule;
}

/** Why ORT failed to load, for diagnostics (undefined when it loaded or was never tried). */
export function ortLoadFailure(): unknown {
  return ortLoadError;
}

/** Intra-op threads: MOEPRESS_THREADS if set to a positive integer, else every core. */
export function ortThreads(): number {
  const env = process.env.MOEPRESS_THREADS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (Number.isInteger(n) && n > 0) return n;
    throw new Error(`MOEPRESS_THREADS must be a positive integer, got "${env}"`);
  }
  return os.availableParallelism();
}

export function sessionOptions(): InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: ortThreads(),
    // Our graphs are one or a few ops in a chain: there is nothing to run in parallel.
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    // Each cached session has its own worker thread; letting it spin after a run steals the core
    // the next session (or the JS thread) needs on small machines: measured 2x faster eval on 2 cores.
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
}

// Promises, not sessions, so two concurrent first calls with one key still build one session.
const sessions = new Map<string, Promise<InferenceSession>>();

/**
 * The session for `key`, creating it from `build()` on first use. The key must identify the
 * graph completely (op, attributes, dtypes), since shapes are symbolic.
 */
export function cachedSession(key: string, build: () => Uint8Array): Promise<InferenceSession> {
  let s = sessions.get(key);
  if (s === undefined) {
    const ort = loadOrt();
    if (ort === null) throw new Error(`onnxruntime-node is not available: ${String(ortLoadError)}`);
    s = ort.InferenceSession.create(build(), sessionOptions());
    // A failed build must not poison the key forever: drop it so a later call can retry.
    s.catch(() => sessions.delete(key));
    sessions.set(key, s);
  }
  return s;
}

/** How many sessions are cached (tests use it to check that graphs are built once). */
export function sessionCacheSize(): number {
  return sessions.size;
}

/** Releases every cached session's native memory. */
export async function clearSessionCache(): Promise<void> {
  const all = [...sessions.values()];
  sessions.clear();
  for (const s of all) {
    try {
      await (await s).release();
    } catch {
      // A session that failed to build has nothing to release.
    }
  }
}

export interface F32Value {
  data: Float32Array;
  dims: readonly number[];
}

/**
 * Runs `session` on float32 feeds and returns float32 outputs by name.
 * Inputs are wrapped, not copied: ort.Tensor keeps a view of our Float32Array (subarrays
 * included) and the binding hands ORT that memory. Outputs are the binding's fresh arrays,
 * passed on as is. `outputs` lets a caller that reuses a buffer across calls have it filled
 * instead; that only pays off for reused buffers (a new zero-filled array per call is slower
 * than letting the binding allocate).
 */
export async function runF32(
  session: InferenceSession,
  feeds: Record<string, F32Value>,
  outputs?: Record<string, F32Value>,
): Promise<Record<string, F32Value>> {
  const ort = loadOrt();
  if (ort === null) throw new Error('onnxruntime-node is not available');
  const inputTensors: Record<string, Tensor> = {};
  for (const [name, v] of Object.entries(feeds)) {
    inputTensors[name] = new ort.Tensor('float32', v.data, v.dims);
  }
  let result: InferenceSession.OnnxValueMapType;
  if (outputs !== undefined) {
    const fetches: Record<string, Tensor> = {};
    for (const [name, v] of Object.entries(outputs)) fetches[name] = new ort.Tensor('float32', v.data, v.dims);
    result = await session.run(inputTensors, fetches);
  } else {
    result = await session.run(inputTensors);
  }
  const out: Record<string, F32Value> = {};
  for (const [name, t] of Object.entries(result)) {
    if (t.type !== 'float32') throw new Error(`ort: output ${name} is ${t.type}, expected float32`);
    // For a preallocated output, hand back the caller's array, now filled.
    const given = outputs?.[name];
    out[name] = given ?? { data: t.data as Float32Array, dims: t.dims };
  }
  return out;
}

/**
 * The shape every part of `moepress bench` has: it measures one thing and returns the headline
 * keys it adds to the one JSON object (a number, or null with the reason in `unavailable`), its
 * full details, and its lines for people. bench.ts runs a list of these; adding a measurement is
 * adding a section.
 */
import type { ProgressFn } from '../progress.js';

export interface BenchContext {
  quick: boolean;
  /** ../shared: fixtures and corpus. */
  shared: string;
  /** Thread counts llama.cpp's decode is timed with; its best is the baseline (moepress uses MOEPRESS_THREADS, see tensor/ort.ts). */
  threads: number[];
  onProgress: ProgressFn;
  /** Options of `moepress bench` that only some sections read (e.g. --scale-methods). */
  options: Record<string, string | boolean | undefined>;
}

export interface SectionResult {
  /** Headline keys for the top level of the JSON object; null when not measured. */
  summary: Record<string, number | boolean | null>;
  /** Why each null headline key is null. */
  unavailable?: Record<string, string>;
  /** Everything else the section measured, under sections.<name> in the JSON object. */
  detail: unknown;
  /** Readable lines (tables), already rendered. */
  text: string;
}

export interface BenchSection {
  name: string;
  /** The headline keys it reports (null with a reason when the section is not selected). */
  keys: string[];
  run(ctx: BenchContext): Promise<SectionResult>;
}

/** A section that could not run at all: every headline key null with the same reason. */
export function skipped(keys: string[], reason: string): SectionResult {
  return {
    summary: Object.fromEntries(keys.map((k) => [k, null])),
    unavailable: Object.fromEntries(keys.map((k) => [k, reason])),
    detail: { skipped: reason },
    text: `${keys.join(', ')}: not measured (${reason})\n`,
  };
}

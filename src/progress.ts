/**
 * Typed progress events. The library never prints (STYLE rule 8): long work calls an optional
 * callback with these, and the CLI renders them as a bar on a terminal or stays quiet with --json.
 */
export interface ProgressEvent {
  /** What is running, e.g. 'load', 'eval', 'compress'. */
  task: string;
  done: number;
  total: number;
  /** What done/total count, e.g. 'windows', 'tensors', 'layers'. */
  unit: string;
  /** Extra detail for the current item, e.g. a layer name. */
  detail?: string;
}

export type ProgressFn = (e: ProgressEvent) => void;

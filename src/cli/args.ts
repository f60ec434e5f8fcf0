/** Argument parsing at the edge: node:util parseArgs with typed accessors and clear errors. */
import { parseArgs } from 'node:util';

export class UsageError extends Error {}

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
}

export interface Parsed {
  positionals: string[];
  str(name: string): string | undefined;
  req(name: string): string;
  int(name: string): number | undefined;
  num(name: string): number | undefined;
  flag(name: string): boolean;
}

export function parse(argv: string[], options: Record<string, OptionSpec>): Parsed {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true }) as { values: Record<string, string | boolean | undefined>; positionals: string[] });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const str = (n: string) => values[n] as string | undefined;
  const num = (n: string) => {
    const v = str(n);
    if (v === undefined) return undefined;
    const x = Number(v);
    if (!Number.isFinite(x)) throw new UsageError(`--${n} expects a number, got '${v}'`);
    return x;
  };
  return {
    positionals,
    str,
    req(n) {
      const v = str(n);
      if (v === undefined) throw new UsageError(`--${n} is required`);
      return v;
    },
    num,
    int(n) {
      const x = num(n);
      if (x !== undefined && !Number.isInteger(x)) throw new UsageError(`--${n} expects an integer, got '${str(n)}'`);
      return x;
    },
    flag: (n) => values[n] === true,
  };
}

/** The single positional MODEL argument most commands take. */
export function modelArg(p: Parsed, command: string): string {
  if (p.positionals.length !== 1) throw new UsageError(`usage: moepress ${command} MODEL_DIR [options]`);
  return p.positionals[0];
}

/**
 * Typed reads of config.json fields, shared by every architecture file. Each read validates the
 * value and throws MoepressError naming the config file, the field and what was expected.
 *
 * null handling follows transformers: a JSON null means "None", which for most fields means
 * "use the derived default" (head_dim, num_key_value_heads), so int/num/bool/str treat null like a
 * missing field; intOrNull keeps an explicit null (sliding_window: null disables the window).
 */
import { MoepressError } from '../io/errors.js';

export class ConfigReader {
  constructor(
    readonly json: Record<string, unknown>,
    readonly file: string,
  ) {}

  /** The field is present and not null. */
  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  fail(key: string, expected: string): never {
    const v = this.json[key];
    const got = v === undefined ? 'is missing' : `is ${JSON.stringify(v)}`;
    throw new MoepressError(`field '${key}' ${got}, expected ${expected}`, { file: this.file });
  }

  /** A required (def undefined) or defaulted integer >= min. */
  int(key: string, def?: number, min = 1): number {
    if (!this.has(key)) {
      if (def === undefined) this.fail(key, `an integer >= ${min}`);
      return def;
    }
    const v = this.json[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(key, `an integer >= ${min}`);
    return v;
  }

  /** An integer >= min, or null; missing gives def, explicit null gives null. */
  intOrNull(key: string, def: number | null, min = 1): number | null {
    if (this.json[key] === undefined) return def;
    if (this.json[key] === null) return null;
    return this.int(key, undefined, min);
  }

  /** A required or defaulted finite number. */
  num(key: string, def?: number): number {
    if (!this.has(key)) {
      if (def === undefined) this.fail(key, 'a number');
      return def;
    }
    const v = this.json[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'a number');
    return v;
  }

  bool(key: string, def: boolean): boolean {
    if (!this.has(key)) return def;
    const v = this.json[key];
    if (typeof v !== 'boolean') this.fail(key, 'true or false');
    return v;
  }

  str(key: string, def?: string): string {
    if (!this.has(key)) {
      if (def === undefined) this.fail(key, 'a string');
      return def;
    }
    const v = this.json[key];
    if (typeof v !== 'string') this.fail(key, 'a string');
    return v;
  }

  /** A string that must be one of choices. */
  choice<T extends string>(key: string, choices: readonly T[], def: T): T {
    const v = this.str(key, def);
    if (!(choices as readonly string[]).includes(v)) this.fail(key, `one of ${choices.map((c) => `'${c}'`).join(', ')}`);
    return v as T;
  }

  /** A list of integers >= min (missing or null gives def). */
  intList(key: string, def: number[], min = 0): number[] {
    if (!this.has(key)) return def;
    const v = this.json[key];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min)) {
      this.fail(key, `a list of integers >= ${min}`);
    }
    return v as number[];
  }

  /** A list of strings, or null when missing. */
  strList(key: string): string[] | null {
    if (!this.has(key)) return null;
    const v = this.json[key];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) this.fail(key, 'a list of strings');
    return v as string[];
  }

  /** A JSON object, or null when missing. */
  obj(key: string): Record<string, unknown> | null {
    if (!this.has(key)) return null;
    const v = this.json[key];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(key, 'a JSON object');
    return v as Record<string, unknown>;
  }

  /** A reader over a nested object, whose errors name the path (e.g. 'rope_parameters.factor'). */
  nested(key: string): ConfigReader | null {
    const o = this.obj(key);
    return o === null ? null : new NestedReader(o, this.file, key);
  }

  /** bos/eos ids: an integer, a list of integers (eos), or null. */
  tokenIds(key: string, def: number | null): number[] {
    if (this.json[key] === undefined) return def === null ? [] : [def];
    const v = this.json[key];
    if (v === null) return [];
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return [v];
    if (Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)) return v as number[];
    return this.fail(key, 'a token id, a list of token ids or null');
  }
}

class NestedReader extends ConfigReader {
  constructor(
    json: Record<string, unknown>,
    file: string,
    private readonly path: string,
  ) {
    super(json, file);
  }

  override fail(key: string, expected: string): never {
    const v = this.json[key];
    const got = v === undefined ? 'is missing' : `is ${JSON.stringify(v)}`;
    throw new MoepressError(`field '${this.path}.${key}' ${got}, expected ${expected}`, { file: this.file });
  }
}

/**
 * Errors raised for bad input. Every error names the file (and tensor, when one is involved)
 * and says what was expected, so a user can act on it without reading our source.
 */
export class MoepressError extends Error {
  readonly file?: string;
  readonly tensor?: string;
  /** The message without the file/tensor prefix. */
  readonly detail: string;
  constructor(message: string, where: { file?: string; tensor?: string } = {}) {
    const parts: string[] = [];
    if (where.file) parts.push(where.file);
    if (where.tensor) parts.push(`tensor '${where.tensor}'`);
    super(parts.length ? `${parts.join(': ')}: ${message}` : message);
    this.name = 'MoepressError';
    this.file = where.file;
    this.tensor = where.tensor;
    this.detail = message;
  }
}

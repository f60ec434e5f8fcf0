/** Paths to the trained fixtures in ../shared (tests run with cwd = project root). */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const SHARED = resolve(process.cwd(), '../shared');
export const fixture = (name: string) => resolve(SHARED, 'fixtures', name);
export const TEST_TEXT = resolve(SHARED, 'corpus/test.txt');
export const haveFixtures = existsSync(fixture('mixtral')) && existsSync(TEST_TEXT);

export interface Reference {
  test_perplexity: number;
  first_window_ids: number[];
  logits_first_window_pos0_3: number[][];
}

export function reference(name: string): Reference {
  return JSON.parse(readFileSync(resolve(fixture(name), 'reference.json'), 'utf8'));
}

/** Every compression method by name. */
import { MoepressError } from '../../io/errors.js';
import type { Method } from '../method.js';
import { auto } from './auto.js';
import { prune, quant, svd } from './baselines.js';
import { d2moe } from './d2moe.js';
import { dersDrop, dersMagnitude, dersQuant } from './ders.js';
import { merge, resmoePrune, resmoeSvd } from './resmoe.js';

export const METHODS: readonly Method[] = [dersDrop, dersMagnitude, dersQuant, resmoePrune, resmoeSvd, d2moe, prune, svd, quant, merge, auto];

export function methodByName(name: string): Method {
  const m = METHODS.find((x) => x.name === name);
  if (!m) throw new MoepressError(`unknown method '${name}'; available: ${METHODS.map((x) => x.name).join(', ')}`);
  return m;
}

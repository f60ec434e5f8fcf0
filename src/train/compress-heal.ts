/**
 * `moepress compress … --calib TEXT --heal N`: compress, then heal (heal.ts) the result against the
 * model it came from, on the calibration text, in one run:
 *
 *   compressAndHeal(req, { steps, lr?, train? }) -> { manifest, heal }
 *
 * The compressed model is built at `${out}.unhealed` (itself written through `.partial` by
 * compress), healed into `out` (through heal's `.partial`), then removed, so `out` only ever holds
 * the finished result. With `resume`, a finished `${out}.unhealed` is kept and healing resumes.
 */
import { existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { compress, type CompressRequest } from '../compress/compress.js';
import { MANIFEST_FILE, readManifest, type Manifest } from '../compress/format.js';
import { MoepressError } from '../io/errors.js';
import { heal, type HealResult, type HealTrainMode } from './heal.js';

export interface HealRequest {
  steps: number;
  lr?: number;
  train?: HealTrainMode;
}

export async function compressAndHeal(req: CompressRequest, h: HealRequest): Promise<{ manifest: Manifest; heal: HealResult }> {
  if (!req.calib) throw new MoepressError('--heal trains on the calibration text: give --calib TEXT');
  const out = resolve(req.out);
  const unhealed = `${out}.unhealed`;
  if (existsSync(out) && !req.overwrite) throw new MoepressError('output directory already exists; choose another --out or pass --overwrite', { file: out });
  const done = existsSync(join(unhealed, MANIFEST_FILE));
  if (done && !req.resume) throw new MoepressError('an interrupted run left this directory; pass --resume to continue it or delete it', { file: unhealed });
  if (!done) await compress({ ...req, out: unhealed, overwrite: true });
  const r = await heal(unhealed, {
    out,
    teacher: req.model,
    text: req.calib.file,
    steps: h.steps,
    lr: h.lr,
    train: h.train,
    seed: req.seed,
    resume: req.resume,
    overwrite: req.overwrite,
    onProgress: req.onProgress,
  });
  rmSync(unhealed, { recursive: true, force: true });
  return { manifest: readManifest(out), heal: r };
}

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { test } from 'node:test';

const MAIN = resolve(process.cwd(), 'dist/src/cli/main.js');

test('moepress bench --json: one object with every headline key, null only with a reason', () => {
  const r = spawnSync(process.execPath, [MAIN, 'bench', '--json', '--quick', '--sections', 'gemm'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout) as Record<string, unknown> & { unavailable: Record<string, string>; sections: Record<string, unknown> };
  const keys = ['compressPeakRssBytes', 'compressSeconds', 'compressFloorSeconds', 'decodeTokensPerSecond', 'llamaCppDecodeTokensPerSecond', 'decodeVsLlamaCpp', 'decodeVsLlamaCppFloor', 'compressedDecodeTokensPerSecond', 'llamaCppCompressedDecodeTokensPerSecond', 'compressedDecodeVsLlamaCpp', 'compressedInt8DecodeTokensPerSecond', 'compressedInt8DecodeVsLlamaCpp', 'mixtralDecodeTokensPerSecond', 'llamaCppMixtralDecodeTokensPerSecond', 'gemmGflops', 'evalTokensPerSecond', 'ggufMaxAbsLogProbDiff', 'trainTokensPerSecond', 'trainGemmShare'];
  for (const k of keys) {
    assert.ok(k in o, `missing key ${k}`);
    if (o[k] === null) assert.match(o.unavailable[k] ?? '', /not selected|--quick|not installed/, `${k} is null without a reason`);
  }
  assert.equal(typeof o.gemmGflops, 'number');
  assert.ok((o.gemmGflops as number) > 0);
  assert.equal(o.llamaCppDecodeTokensPerSecond, null);
  assert.equal(o.llamaCppCompressedDecodeTokensPerSecond, null);
  for (const [k, v] of Object.entries(o)) if (v === null) assert.ok(o.unavailable[k], `${k} is null without a reason`);
  assert.deepEqual(Object.keys(o.sections).sort(), ['decode', 'engines', 'gemm', 'gguf', 'scale', 'training']);
});

test('moepress bench: unknown sections and bad thread lists are usage errors', () => {
  const a = spawnSync(process.execPath, [MAIN, 'bench', '--sections', 'gemm,nope'], { encoding: 'utf8' });
  assert.equal(a.status, 2);
  assert.match(a.stderr, /unknown section\(s\) nope/);
  const b = spawnSync(process.execPath, [MAIN, 'bench', '--threads', '0'], { encoding: 'utf8' });
  assert.equal(b.status, 2);
  assert.match(b.stderr, /--threads expects positive integers/);
});

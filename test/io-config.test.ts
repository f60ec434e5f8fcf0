import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readConfig, readJsonFile } from '../src/io/config.js';
import { MoepressError } from '../src/io/errors.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'moepress-cfg-'));
process.on('exit', () => fs.rmSync(tmpRoot, { recursive: true, force: true }));

function expectError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof MoepressError, `expected MoepressError, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `'${e.message}' should mention '${p}'`);
    return true;
  });
}

test('readConfig reads the mixtral fixture', () => {
  const cfg = readConfig(path.resolve(process.cwd(), '../shared/fixtures/mixtral'));
  assert.equal(cfg.model_type, 'mixtral');
  assert.equal(cfg.num_local_experts, 8);
});

test('config.json missing', () => {
  const file = path.join(tmpRoot, 'config.json');
  expectError(() => readConfig(tmpRoot), file, 'file not found');
});

test('config.json invalid JSON', () => {
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'bad-'));
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, '{"hidden_size": 256,');
  expectError(() => readConfig(dir), file, 'not valid JSON');
});

test('config.json not an object', () => {
  const dir = fs.mkdtempSync(path.join(tmpRoot, 'arr-'));
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, '[1, 2]');
  expectError(() => readConfig(dir), file, 'expected a JSON object', 'an array');
  assert.deepEqual(readJsonFile(file), [1, 2]);
});

#!/usr/bin/env node
// Installs this bench package (node-llama-cpp with its prebuilt llama.cpp binaries, ~725 MB) from
// its lockfile when node_modules is missing. `npm run bench` calls it; nothing else downloads.
// --ignore-scripts: node-llama-cpp's postinstall would only check, or fall back to building
// llama.cpp from source (a download); the bench loads the prebuilt binaries with build 'never'.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
if (!existsSync(join(dir, 'node_modules', 'node-llama-cpp', 'package.json'))) {
  process.stderr.write(`installing the llama.cpp bench package into ${dir} (one time, ~725 MB)\n`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const r = spawnSync(npm, ['ci', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: dir, stdio: 'inherit' });
  // A failed install is not fatal: the bench then reports llama.cpp as null with the reason.
  if (r.status !== 0) process.stderr.write('llama.cpp bench package not installed; the bench will report it as unavailable\n');
}

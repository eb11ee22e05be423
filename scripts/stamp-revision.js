'use strict';
// Stamps the git revision into dist/revision.txt for `-v`; outside a git checkout it says so.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

let revision = 'unknown';
try {
  revision = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], {
    cwd: path.join(__dirname, '..'),
    stdio: ['ignore', 'pipe', 'ignore'],
  })
    .toString()
    .trim();
} catch {
  // not a git checkout (e.g. an npm tarball): keep 'unknown'
}
fs.mkdirSync(path.join(__dirname, '..', 'dist'), { recursive: true });
fs.writeFileSync(path.join(__dirname, '..', 'dist', 'revision.txt'), revision + '\n');

#!/usr/bin/env node
'use strict';
/**
 * Builds containerd-shim-tshim-v2.exe (scripts/windows/launcher.c) with MinGW: the real PE file
 * containerd on Windows needs on its PATH, which runs node.exe with ..\dist\main.js beside it.
 *
 * `npm pack` runs this (prepack) so that the package carries a prebuilt launcher in bin/ and a
 * Windows host compiles nothing at install time. Without a MinGW compiler the package is packed
 * without it, with a warning (Linux hosts do not need it); the Wine tests build it as well.
 *
 * Usage: node scripts/windows/build-launcher.js [--optional] [OUT]   (default bin/containerd-shim-tshim-v2.exe)
 *   --optional   no compiler is a warning and exit status 0 (prepack), not an error
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..');
/** x86_64-w64-mingw32-gcc is Debian's cross compiler; a MinGW install on Windows calls itself gcc. */
const COMPILERS = process.platform === 'win32' ? ['gcc'] : ['x86_64-w64-mingw32-gcc'];

function compiler() {
  for (const cc of COMPILERS) {
    try {
      execFileSync(cc, ['--version'], { stdio: 'ignore' });
      return cc;
    } catch {
      // try the next
    }
  }
  return undefined;
}

/** Compiles the launcher into `out` (written under a temporary name, then renamed); returns `out`. */
function buildLauncher(out = path.join(REPO, 'bin', 'containerd-shim-tshim-v2.exe')) {
  const cc = compiler();
  if (!cc) throw new Error(`no MinGW compiler (${COMPILERS.join(', ')}; Debian package gcc-mingw-w64-x86-64)`);
  const tmp = `${out}.${process.pid}.tmp`;
  execFileSync(cc, ['-O2', '-s', '-municode', '-o', tmp, path.join(__dirname, 'launcher.c')], { stdio: ['ignore', 'ignore', 'inherit'] });
  fs.renameSync(tmp, out);
  return out;
}

module.exports = { buildLauncher };

if (require.main === module) {
  const args = process.argv.slice(2);
  const optional = args.includes('--optional');
  const outArg = args.find((a) => a !== '--optional');
  const out = outArg ? path.resolve(outArg) : undefined;
  if (optional && !compiler()) {
    process.stderr.write(`build-launcher: warning: no MinGW compiler (Debian package gcc-mingw-w64-x86-64): this package has no containerd-shim-tshim-v2.exe for Windows hosts\n`);
  } else {
    try {
      process.stdout.write(`build-launcher: ${path.relative(REPO, buildLauncher(out))}\n`);
    } catch (err) {
      process.stderr.write(`build-launcher: ${err.message}\n`);
      process.exit(1);
    }
  }
}

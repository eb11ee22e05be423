/**
 * The Wine tests' side of scripts/windows/wine.js (spec §8.3): the Windows build of Node, a private
 * Wine prefix per run (set to Windows 10) with the stand-in vmcompute.dll built with mingw in its
 * system32, where LoadLibrary("vmcompute.dll") finds it exactly as it finds the real one.
 *
 * Windows processes write to files, never to a Linux pipe (Node's stdout on a Linux pipe fails
 * inside Wine). Only processes of our own prefix are ever stopped (`wineserver -k` with our
 * WINEPREFIX), never anything by name.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as wine from '../../scripts/windows/wine';
import { buildLauncher as buildLauncherExe } from '../../scripts/windows/build-launcher';

export const REPO = path.resolve(__dirname, '..', '..');
export const { NODE_WIN_VERSION, WINE, missingTools, winPath, windowsNode } = wine;
export type { WinePrefix } from '../../scripts/windows/wine';

export function buildStandInDll(outDir: string): string {
  const out = path.join(outDir, 'vmcompute.dll');
  execFileSync(wine.MINGW, ['-shared', '-O2', '-o', out, path.join(__dirname, 'fake-vmcompute.c'), '-lole32'], { stdio: ['ignore', 'ignore', 'inherit'] });
  return out;
}

/** containerd-shim-tshim-v2.exe (scripts/windows/launcher.c) into bin/, next to ../dist/main.js. */
export function buildLauncher(): string {
  return buildLauncherExe(path.join(REPO, 'bin', 'containerd-shim-tshim-v2.exe'));
}

/** A fresh prefix, set to Windows 10, with the stand-in DLL (if given) in its system32. */
export async function createPrefix(root: string, dll?: string): Promise<wine.WinePrefix> {
  const prefix = await wine.createPrefix(root);
  if (dll) fs.copyFileSync(dll, path.join(prefix.dir, 'drive_c', 'windows', 'system32', 'vmcompute.dll'));
  return prefix;
}

/**
 * Runs node.exe with a script; its stdout/stderr go to a file. Resolves with the exit code. With
 * deadlineMs, a run still going then has the prefix's processes stopped (a hung step then fails
 * the test with the client's progress, instead of at the hook timeout).
 */
export async function runWindowsNode(prefix: wine.WinePrefix, nodeExe: string, args: string[], logFile: string, extraEnv: NodeJS.ProcessEnv = {}, deadlineMs?: number): Promise<number> {
  const watchdog = deadlineMs === undefined ? undefined : setTimeout(() => prefix.stop(), deadlineMs);
  try {
    return await wine.runWine([nodeExe, ...args], { env: { ...prefix.env, ...extraEnv }, log: logFile });
  } finally {
    clearTimeout(watchdog);
  }
}

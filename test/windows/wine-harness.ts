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
import { describe } from 'vitest';
import * as wine from '../../scripts/windows/wine';
import { buildLauncher as buildLauncherExe } from '../../scripts/windows/build-launcher';
import { readResults, type ClientResults } from './wine-results';

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

/**
 * `describe` for a Wine file, or `describe.skip` with a warning when wine64 or MinGW is missing,
 * unless CI=true or TSHIM_WINE=1 demands the file run (it then fails on what is missing).
 */
export function wineDescribe(what: string): ReturnType<typeof describe.skipIf> {
  const missing = wine.missingTools();
  const skip = missing !== '' && process.env['CI'] !== 'true' && process.env['TSHIM_WINE'] !== '1';
  if (skip) console.warn(`${what} skipped: missing ${missing} (.ci/run installs them)`);
  return describe.skipIf(skip);
}

export interface ClientRun {
  /** the test's temp dir: the client works in root/work, logs to root/client.log */
  root: string;
  /** wine-client.js or wine-shim-client.js, beside this file */
  script: string;
  namespace: string;
  /** the client's own settings, besides what wine-containerd.js needs (added here) */
  config: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  deadlineMs?: number;
}

/**
 * Runs a client that plays containerd (wine-containerd.js) once with node.exe, with its config in
 * root/work/config.json: this checkout's dist/, its work dir, the namespace, and an events pipe and
 * containerd address unique to the run. Resolves with what it left in results.json.
 */
export async function runClient(prefix: wine.WinePrefix, run: ClientRun): Promise<ClientResults> {
  const work = path.join(run.root, 'work');
  fs.mkdirSync(work, { recursive: true });
  const unique = path.basename(run.root);
  const config = {
    repo: winPath(REPO),
    work: winPath(work),
    namespace: run.namespace,
    eventsPipe: `\\\\.\\pipe\\${run.namespace}-events-${unique}`,
    containerdAddress: `\\\\.\\pipe\\containerd-containerd-${unique}`,
    ...run.config,
  };
  const configFile = path.join(work, 'config.json');
  fs.writeFileSync(configFile, JSON.stringify(config));
  const log = path.join(run.root, 'client.log');
  const code = await runWindowsNode(prefix, windowsNode(), [winPath(path.join(__dirname, run.script)), winPath(configFile)], log, run.env, run.deadlineMs);
  return readResults(work, code, log);
}

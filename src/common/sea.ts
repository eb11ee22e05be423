/**
 * The single executable (SEA, `npm run package`, scripts/build-sea.js): one file holding Node, the
 * bundled code and, as SEA assets, what a normal build reads from dist/ (proto.json, the version,
 * the git revision). Outside an executable every function here answers "not embedded" and the
 * callers read their files as before.
 *
 * koffi's native module cannot be embedded (a .node must be a file for dlopen): the executable
 * loads it from KOFFI_NATIVE_NAME beside its own real path (see nativeKoffiPath; koffi.ts loads it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The native koffi module's file name, beside the executable (Linux and Windows alike). */
export const KOFFI_NATIVE_NAME = 'tshim-koffi.node';

interface SeaModule {
  isSea(): boolean;
  getAsset(key: string, encoding: string): string;
}

let sea: SeaModule | null | undefined;

function seaModule(): SeaModule | null {
  if (sea === undefined) {
    try {
      const mod = require('node:sea') as SeaModule;
      sea = mod.isSea() ? mod : null;
    } catch {
      sea = null; // a Node without node:sea (before 20.12) runs no executable of ours either
    }
  }
  return sea;
}

/** True inside the single executable. */
export function isSingleExecutable(): boolean {
  return seaModule() !== null;
}

/** A text asset the executable carries, or undefined (not an executable, or no such asset). */
export function embeddedText(name: string): string | undefined {
  const mod = seaModule();
  if (!mod) return undefined;
  try {
    return mod.getAsset(name, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Where the executable's koffi.node is: beside the executable's real path (process.execPath is
 * /proc/self/exe on Linux, so symlinks to the executable are already resolved; on Windows it is
 * the module file name of the .exe).
 */
export function nativeKoffiPath(execPath: string = process.execPath): string {
  return path.join(path.dirname(execPath), KOFFI_NATIVE_NAME);
}

/**
 * Fails `start` early, in one line containerd shows, when the executable was copied without its
 * koffi.node: otherwise the daemon would die at its first libc call, after `start` succeeded.
 */
export function checkNativeBeside(): void {
  if (!isSingleExecutable()) return;
  const file = nativeKoffiPath();
  if (!fs.existsSync(file)) {
    throw new Error(`${file} does not exist: the single executable needs koffi's native module beside it (README, Single executable)`);
  }
}

/**
 * koffi inside the executable: its native module loaded with process.dlopen from beside the
 * executable, checked against the koffi version the code was bundled with (a koffi.node of another
 * version has another ABI). Throws one line naming the file when it is missing or wrong.
 */
export function loadKoffiNative(expectedVersion: string): unknown {
  const file = nativeKoffiPath();
  if (!fs.existsSync(file)) {
    throw new Error(`${file} does not exist: the single executable needs koffi's native module beside it (README, Single executable)`);
  }
  const mod = { exports: {} as { version?: string } };
  process.dlopen(mod, file);
  if (mod.exports.version !== expectedVersion) {
    throw new Error(`${file} is koffi ${String(mod.exports.version)}, the executable was built with koffi ${expectedVersion}`);
  }
  return mod.exports;
}

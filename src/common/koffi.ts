/**
 * koffi for both backends (src/linux/libc.ts, src/windows/win32.ts and vmcompute.ts), loaded on
 * first use so that `start`, `-v` and code that never calls native functions skip it.
 *
 * The npm package's koffi, or inside the single executable its native module beside the
 * executable (src/common/sea.ts): koffi's own loader finds .node files through require, which an
 * executable does not have. koffi's JS wrapper only adds deprecated aliases (handle, callback,
 * lib.cdecl/stdcall/…), none of which tshim uses, so the native module is the whole API.
 */
import type * as Koffi from 'koffi';
import { isSingleExecutable, loadKoffiNative } from './sea';

let loaded: typeof Koffi | undefined;

export function koffi(): typeof Koffi {
  loaded ??= load();
  return loaded;
}

function load(): typeof Koffi {
  if (isSingleExecutable()) {
    // bundled into the executable (only `koffi` itself is left out): the version its native module must have
    const { version } = require('koffi/package.json') as { version: string };
    return loadKoffiNative(version) as typeof Koffi;
  }
  return require('koffi') as typeof Koffi;
}

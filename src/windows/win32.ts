/**
 * The few Win32 calls the Windows backend needs beside vmcompute.dll: CoTaskMemFree (ole32) for the
 * strings HCS allocates, and ReadFile/WriteFile/GetOverlappedResult/CancelIoEx/CloseHandle/
 * CreateEventW (kernel32) to relay the raw pipe HANDLEs HCS returns for a process's stdio (Node can
 * wrap no foreign HANDLE into a stream, spec §6.5). Every declaration is its C prototype with
 * fixed-width types; BOOL is int32_t. Both DLLs load on first use.
 *
 * Whether HCS opens these pipes for overlapped I/O is unverified (spec §10), so the mode is asked
 * (NtQueryInformationFile, FileModeInformation): a synchronous handle gets plain blocking calls on a
 * worker (Wine reports a synchronous pipe's EOF through an OVERLAPPED as forever pending, so none is
 * passed there); an overlapped one gets an OVERLAPPED with its own event, and when ReadFile returns
 * FALSE with the status still STATUS_PENDING the wait runs on a worker (GetOverlappedResult,
 * bWait=TRUE). GetLastError is never used: after a `.async` call it would read the JS thread's
 * slot, not the worker's (spec §8.3).
 */
import type * as Koffi from 'koffi';
import { koffi } from '../common/koffi';
import type { StdioHandle, StdioIo } from './hcs-api';

const PROTOTYPES = {
  // ole32
  CoTaskMemFree: 'void __stdcall CoTaskMemFree(void *pv)',
  // kernel32
  CloseHandle: 'int32_t __stdcall CloseHandle(HANDLE hObject)',
  ReadFile: 'int32_t __stdcall ReadFile(HANDLE hFile, void *lpBuffer, uint32_t nNumberOfBytesToRead, _Out_ uint32_t *lpNumberOfBytesRead, void *lpOverlapped)',
  WriteFile: 'int32_t __stdcall WriteFile(HANDLE hFile, const void *lpBuffer, uint32_t nNumberOfBytesToWrite, _Out_ uint32_t *lpNumberOfBytesWritten, void *lpOverlapped)',
  GetOverlappedResult: 'int32_t __stdcall GetOverlappedResult(HANDLE hFile, void *lpOverlapped, _Out_ uint32_t *lpNumberOfBytesTransferred, int32_t bWait)',
  CancelIoEx: 'int32_t __stdcall CancelIoEx(HANDLE hFile, void *lpOverlapped)',
  CreateEventW: 'HANDLE __stdcall CreateEventW(void *lpEventAttributes, int32_t bManualReset, int32_t bInitialState, const char16_t *lpName)',
  GetStdHandle: 'HANDLE __stdcall GetStdHandle(uint32_t nStdHandle)',
  // ntdll: FileModeInformation (16) tells a synchronous handle from an overlapped one
  NtQueryInformationFile:
    'int32_t __stdcall NtQueryInformationFile(HANDLE FileHandle, _Out_ uint8_t *IoStatusBlock, _Out_ uint32_t *FileInformation, uint32_t Length, int32_t FileInformationClass)',
} as const;

type Name = keyof typeof PROTOTYPES;
const DLL: Record<Name, string> = {
  CoTaskMemFree: 'ole32.dll',
  CloseHandle: 'kernel32.dll',
  ReadFile: 'kernel32.dll',
  WriteFile: 'kernel32.dll',
  GetOverlappedResult: 'kernel32.dll',
  CancelIoEx: 'kernel32.dll',
  CreateEventW: 'kernel32.dll',
  NtQueryInformationFile: 'ntdll.dll',
  GetStdHandle: 'kernel32.dll',
};

/** OVERLAPPED on x64: Internal (ULONG_PTR) @0, InternalHigh @8, Offset/OffsetHigh @16, hEvent @24. */
export const OVERLAPPED_SIZE = 32;
const STATUS_PENDING = 0x103;
const FILE_MODE_INFORMATION = 16;
const FILE_SYNCHRONOUS_IO = 0x10 | 0x20; // FILE_SYNCHRONOUS_IO_ALERT | _NONALERT
/** Written into OVERLAPPED.Internal before each call: still there means the call failed before any I/O. */
const NOT_STARTED = 0xffffffff;

let koffiModule: typeof Koffi | undefined;
const libs = new Map<string, Koffi.IKoffiLib>();
const fns = new Map<Name, Koffi.KoffiFunction>();

function ffi(): typeof Koffi {
  if (!koffiModule) {
    koffiModule = koffi(); // the package's, or the single executable's beside it
    // shared with vmcompute.ts, which may have declared it first
    try {
      koffiModule.pointer('HANDLE', koffiModule.opaque());
    } catch {
      // already declared
    }
  }
  return koffiModule;
}

function fn(name: Name): Koffi.KoffiFunction {
  let f = fns.get(name);
  if (f) return f;
  const koffi = ffi();
  const dll = DLL[name];
  let lib = libs.get(dll);
  if (!lib) {
    lib = koffi.load(dll);
    libs.set(dll, lib);
  }
  f = lib.func(PROTOTYPES[name]);
  fns.set(name, f);
  return f;
}

function callAsync<R>(name: Name, ...args: unknown[]): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    (fn(name).async as (...a: unknown[]) => void)(...args, (err: unknown, res: R) => (err ? reject(err) : resolve(res)));
  });
}

/** Frees memory HCS allocated for a returned string (spec §1.1: CoTaskMemFree, never `free`). */
export function coTaskMemFree(ptr: unknown): void {
  if (ptr === null || ptr === undefined) return;
  fn('CoTaskMemFree')(ptr);
}

/** STD_OUTPUT_HANDLE, (DWORD)-11 */
const STD_OUTPUT_HANDLE = 0xfffffff5;

/**
 * Closes this process's stdout HANDLE itself. Neither Node (stdio streams never close their fd) nor
 * libuv (its close skips fds 0-2 on Windows) can, and the daemon's readiness signal is that close.
 */
export function closeStdoutHandle(): void {
  const h = fn('GetStdHandle')(STD_OUTPUT_HANDLE) as unknown;
  if (h !== null && h !== undefined) fn('CloseHandle')(h);
}

/** A NUL-terminated UTF-16 string at `ptr`. */
export function decodeWide(ptr: unknown): string {
  return ffi().decode(ptr, 'char16_t', -1) as string;
}

/** One OVERLAPPED and its manual-reset event, reused by the calls of one direction of one handle. */
class Overlapped {
  readonly buffer = Buffer.alloc(OVERLAPPED_SIZE);
  private readonly event: unknown;

  constructor() {
    const koffi = ffi();
    const event: unknown = fn('CreateEventW')(null, 1, 0, null);
    if (event === null) throw new Error('CreateEventW failed');
    this.event = event;
    this.buffer.writeBigUInt64LE(koffi.address(event), 24);
  }

  reset(): void {
    this.buffer.writeBigUInt64LE(BigInt(NOT_STARTED), 0);
    this.buffer.writeBigUInt64LE(0n, 8);
    this.buffer.writeBigUInt64LE(0n, 16);
  }

  get pending(): boolean {
    return this.buffer.readBigUInt64LE(0) === BigInt(STATUS_PENDING);
  }

  close(): void {
    fn('CloseHandle')(this.event);
  }
}

/**
 * Runs one ReadFile/WriteFile; resolves with the bytes transferred, or -1 when the call failed
 * (end of stream, broken pipe, cancelled: for a relay they all mean "stop").
 */
async function transfer(name: 'ReadFile' | 'WriteFile', handle: StdioHandle, data: Buffer, ov: Overlapped | null): Promise<number> {
  if (!ov) {
    const count = [0];
    const ok = await callAsync<number>(name, handle, data, data.length, count, null);
    return ok ? count[0]! : -1;
  }
  ov.reset();
  const count = [0];
  const ok = await callAsync<number>(name, handle, data, data.length, count, ov.buffer);
  if (ok) return count[0]!;
  if (!ov.pending) return -1;
  const done = [0];
  const finished = await callAsync<number>('GetOverlappedResult', handle, ov.buffer, done, 1);
  return finished ? done[0]! : -1;
}

/** True when the handle was opened for overlapped I/O (false when the mode cannot be read). */
export function isOverlapped(handle: StdioHandle): boolean {
  const iosb = Buffer.alloc(16);
  const mode = [0];
  const status = fn('NtQueryInformationFile')(handle, iosb, mode, 4, FILE_MODE_INFORMATION) as number;
  if (status !== 0) return false;
  return (mode[0]! & FILE_SYNCHRONOUS_IO) === 0;
}

/** The Win32 implementation of stdio I/O on HCS pipe handles. */
export function win32StdioIo(): StdioIo {
  const overlapped = new Map<string, Overlapped | null>();
  const key = (handle: StdioHandle, dir: string): string => `${ffi().address(handle)}:${dir}`;
  const ovFor = (handle: StdioHandle, dir: string): Overlapped | null => {
    const k = key(handle, dir);
    if (overlapped.has(k)) return overlapped.get(k)!;
    let ov: Overlapped | null;
    ov = isOverlapped(handle) ? new Overlapped() : null;
    overlapped.set(k, ov);
    return ov;
  };
  return {
    async read(handle, size) {
      const buf = Buffer.alloc(size);
      const n = await transfer('ReadFile', handle, buf, ovFor(handle, 'r'));
      return n <= 0 ? Buffer.alloc(0) : buf.subarray(0, n);
    },
    async write(handle, data) {
      let offset = 0;
      while (offset < data.length) {
        const n = await transfer('WriteFile', handle, data.subarray(offset), ovFor(handle, 'w'));
        if (n <= 0) return false;
        offset += n;
      }
      return true;
    },
    cancel(handle) {
      fn('CancelIoEx')(handle, null);
    },
    close(handle) {
      for (const dir of ['r', 'w']) {
        const k = key(handle, dir);
        overlapped.get(k)?.close();
        overlapped.delete(k);
      }
      fn('CloseHandle')(handle);
    },
  };
}

export { PROTOTYPES as WIN32_PROTOTYPES };

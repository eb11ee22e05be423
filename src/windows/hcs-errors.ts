/**
 * HRESULTs from vmcompute.dll (0xC037xxxx), the documented HCS_E_* family (0x8037xxxx) and Win32
 * errors wrapped as 0x8007xxxx (spec §3). Both HCS families are matched everywhere: hcsshim's own
 * table mixes them. HRESULTs arrive from koffi as signed int32; every comparison goes through
 * `unsigned()` so 0xC0370103 matches the -1070137085 koffi hands us.
 */
import { Code, ShimError } from '../common/errors';

export const S_OK = 0;
export const HR = {
  OPERATION_PENDING: 0xc0370103, // vmcompute "pending" (not 0x80370117)
  SYSTEM_NOT_FOUND: [0xc037010e, 0x8037010e],
  SYSTEM_ALREADY_STOPPED: [0xc0370110, 0x80370110],
  PROCESS_ALREADY_STOPPED: [0x8037011f],
  INVALID_STATE: [0xc0370105, 0x80370105],
  UNEXPECTED_EXIT: [0xc0370106, 0x80370106],
  TERMINATED_DURING_START: [0xc0370100, 0x80370100],
  IMAGE_MISMATCH: [0xc0370101, 0x80370101],
  UNSUPPORTED: [0xc037010d, 0x8037010d, 0xc037010b, 0x8037010b],
  ACCESS_DENIED_HCS: [0x8037011b],
  SERVICE_DISCONNECT: [0x8037011e],
  OPERATION_TIMEOUT: [0x80370118],
} as const;

/** Win32 codes as they appear after unwrapping 0x8007xxxx. */
export const WIN32 = {
  ACCESS_DENIED: 5,
  INVALID_HANDLE: 6,
  INVALID_DATA: 13,
  NOT_READY: 21,
  NOT_SUPPORTED: 50,
  PROC_NOT_FOUND: 127,
  DEVICE_NOT_CONNECTED: 1167,
  NOT_FOUND: 1168,
} as const;

export function unsigned(hr: number): number {
  return hr >>> 0;
}

export function failed(hr: number): boolean {
  return (hr | 0) < 0;
}

/** The Win32 error inside a FACILITY_WIN32 HRESULT, or undefined. */
export function win32Code(hr: number): number | undefined {
  const u = unsigned(hr);
  if ((u & 0x1fff0000) === 0x00070000) return u & 0xffff;
  // a bare Win32 code (small positive number) as some layer calls return it
  if (u > 0 && u < 0x10000) return u;
  return undefined;
}

export function hex(hr: number): string {
  return `0x${unsigned(hr).toString(16).padStart(8, '0')}`;
}

function isOneOf(hr: number, codes: readonly number[]): boolean {
  const u = unsigned(hr);
  return codes.some((c) => c === u);
}

export const isPending = (hr: number): boolean => unsigned(hr) === HR.OPERATION_PENDING;
export const isNotExist = (hr: number): boolean =>
  isOneOf(hr, HR.SYSTEM_NOT_FOUND) || win32Code(hr) === WIN32.NOT_FOUND;
export const isAlreadyStopped = (hr: number): boolean =>
  isOneOf(hr, HR.SYSTEM_ALREADY_STOPPED) || isOneOf(hr, HR.PROCESS_ALREADY_STOPPED) || win32Code(hr) === WIN32.NOT_FOUND;
export const isAccessDenied = (hr: number): boolean =>
  win32Code(hr) === WIN32.ACCESS_DENIED || isOneOf(hr, HR.ACCESS_DENIED_HCS);
export const isInvalidState = (hr: number): boolean => isOneOf(hr, HR.INVALID_STATE);
export const isNotSupported = (hr: number): boolean =>
  isOneOf(hr, HR.UNSUPPORTED) || win32Code(hr) === WIN32.INVALID_DATA || win32Code(hr) === WIN32.NOT_SUPPORTED;
/** Layer activate/prepare on RS5-era loopback VHDs: retry (spec §7.3). */
export const isRetryableLayerError = (hr: number): boolean =>
  win32Code(hr) === WIN32.NOT_READY || win32Code(hr) === WIN32.DEVICE_NOT_CONNECTED;

const NAMES: ReadonlyArray<[readonly number[], string]> = [
  [[HR.OPERATION_PENDING], 'operation pending'],
  [HR.SYSTEM_NOT_FOUND, 'a compute system with the given identifier does not exist'],
  [HR.SYSTEM_ALREADY_STOPPED, 'the compute system is already stopped'],
  [HR.PROCESS_ALREADY_STOPPED, 'the process has already stopped'],
  [HR.INVALID_STATE, 'the requested virtual machine or container operation is not valid in the current state'],
  [HR.UNEXPECTED_EXIT, 'the compute system exited unexpectedly'],
  [HR.TERMINATED_DURING_START, 'the compute system was terminated while starting'],
  [HR.IMAGE_MISMATCH, 'the container operating system does not match the host operating system'],
  [HR.UNSUPPORTED, 'the request is not supported (invalid JSON or unknown message)'],
  [HR.ACCESS_DENIED_HCS, 'access is denied (the compute service requires Administrators)'],
  [HR.SERVICE_DISCONNECT, 'lost communication with the compute service'],
  [HR.OPERATION_TIMEOUT, 'the operation timed out'],
];

const WIN32_NAMES: Readonly<Record<number, string>> = {
  [WIN32.ACCESS_DENIED]: 'access is denied',
  [WIN32.INVALID_HANDLE]: 'the handle is invalid',
  [WIN32.INVALID_DATA]: 'the data is invalid',
  [WIN32.NOT_READY]: 'the device is not ready',
  [WIN32.NOT_SUPPORTED]: 'the request is not supported',
  [WIN32.PROC_NOT_FOUND]: 'the specified procedure could not be found',
  [WIN32.DEVICE_NOT_CONNECTED]: 'the device is not connected',
  [WIN32.NOT_FOUND]: 'element not found',
};

export function describeHresult(hr: number): string {
  for (const [codes, name] of NAMES) if (isOneOf(hr, codes)) return `${name} (${hex(hr)})`;
  const w = win32Code(hr);
  if (w !== undefined && WIN32_NAMES[w]) return `${WIN32_NAMES[w]} (${hex(hr)})`;
  return `HRESULT ${hex(hr)}`;
}

/** The event messages of an HCS result document (spec §3.3); never masks the HRESULT. */
export function resultEvents(result: string): string[] {
  if (!result) return [];
  try {
    const doc = JSON.parse(result) as { ErrorEvents?: Array<{ Message?: unknown }> };
    return (doc.ErrorEvents ?? []).map((e) => String(e.Message ?? '')).filter((m) => m !== '');
  } catch {
    return [];
  }
}

/** A failed HCS call: operation, object id, HRESULT and HCS's own event messages. */
export class HcsError extends Error {
  constructor(
    readonly op: string,
    readonly id: string,
    readonly hr: number,
    readonly events: readonly string[] = [],
    detail?: string,
  ) {
    super([`${op} ${id}: ${detail ?? describeHresult(hr)}`, ...events].join('\n'));
    this.name = 'HcsError';
  }
}

export function hcsError(op: string, id: string, hr: number, result = ''): HcsError {
  return new HcsError(op, id, hr, resultEvents(result));
}

/**
 * The gRPC code containerd should see, as runhcs maps them (spec §3.2): things that are gone are
 * NotFound, calls HCS cannot do are Unimplemented/FailedPrecondition, the rest Unknown.
 */
export function grpcCodeOf(hr: number): Code {
  if (isNotExist(hr) || isAlreadyStopped(hr) || win32Code(hr) === WIN32.INVALID_HANDLE) return Code.NotFound;
  if (isInvalidState(hr)) return Code.FailedPrecondition;
  if (isOneOf(hr, HR.IMAGE_MISMATCH)) return Code.FailedPrecondition;
  if (isNotSupported(hr) || win32Code(hr) === WIN32.PROC_NOT_FOUND) return Code.Unimplemented;
  if (isAccessDenied(hr)) return Code.PermissionDenied;
  if (isOneOf(hr, HR.SERVICE_DISCONNECT)) return Code.Unavailable;
  if (isOneOf(hr, HR.OPERATION_TIMEOUT)) return Code.DeadlineExceeded;
  return Code.Unknown;
}

/** Converts anything the HCS layer threw into a ShimError with the right code. */
export function toShimError(err: unknown): ShimError {
  if (err instanceof ShimError) return err;
  if (err instanceof HcsError) return new ShimError(grpcCodeOf(err.hr), err.message, { cause: err });
  if (err instanceof Error) return new ShimError(Code.Unknown, err.message, { cause: err });
  return new ShimError(Code.Unknown, String(err));
}

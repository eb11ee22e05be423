/**
 * Errors carry their gRPC status code from the moment they are created, so no layer has to guess
 * a code from a message. The transport converts with `toStatus` and nothing else.
 */

/** gRPC status codes, as ttrpc and grpc-js both put them on the wire. */
export enum Code {
  OK = 0,
  Canceled = 1,
  Unknown = 2,
  InvalidArgument = 3,
  DeadlineExceeded = 4,
  NotFound = 5,
  AlreadyExists = 6,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  FailedPrecondition = 9,
  Aborted = 10,
  OutOfRange = 11,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
  DataLoss = 15,
  Unauthenticated = 16,
}

export class ShimError extends Error {
  readonly code: Code;

  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ShimError';
    this.code = code;
  }
}

/** containerd's wording (errdefs appends the class), which users and CRI logs show verbatim. */
export const PROCESS_ALREADY_FINISHED = 'process already finished: not found';

export const notFound = (message: string): ShimError => new ShimError(Code.NotFound, message);
export const alreadyExists = (message: string): ShimError => new ShimError(Code.AlreadyExists, message);
export const failedPrecondition = (message: string): ShimError =>
  new ShimError(Code.FailedPrecondition, message);
export const invalidArgument = (message: string): ShimError =>
  new ShimError(Code.InvalidArgument, message);
export const unimplemented = (message: string): ShimError => new ShimError(Code.Unimplemented, message);
export const unknown = (message: string, cause?: unknown): ShimError =>
  new ShimError(Code.Unknown, message, { cause });
export const internal = (message: string, cause?: unknown): ShimError =>
  new ShimError(Code.Internal, message, { cause });
export const deadlineExceeded = (message: string): ShimError =>
  new ShimError(Code.DeadlineExceeded, message);
export const resourceExhausted = (message: string): ShimError =>
  new ShimError(Code.ResourceExhausted, message);
export const unavailable = (message: string): ShimError => new ShimError(Code.Unavailable, message);

export interface Status {
  code: Code;
  message: string;
}

/**
 * The one conversion from a thrown value to a wire status. Node system errors carry string codes
 * such as 'ENOENT'; those are never trusted as gRPC codes and become Unknown with their message.
 */
export function toStatus(err: unknown): Status {
  if (err instanceof ShimError) return { code: err.code, message: err.message };
  if (err instanceof Error) return { code: Code.Unknown, message: err.message };
  return { code: Code.Unknown, message: String(err) };
}

/** Wraps a cause with context while keeping its code (Unknown when it had none). */
export function wrap(err: unknown, context: string): ShimError {
  const status = toStatus(err);
  return new ShimError(status.code, `${context}: ${status.message}`, { cause: err });
}

export function errnoCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/**
 * Turns a failed OCI runtime CLI call into a ShimError whose code and text match what the Go runc
 * shim puts on the wire, because containerd, CRI and ctr branch on both.
 *
 * The error text comes from runc's JSON log (last `level=error` line written by *this* call), else
 * from the exit status plus whatever runc printed, the way go-runc formats it.
 */
import { Code, ShimError, PROCESS_ALREADY_FINISHED } from '../common/errors';

/** The runc subcommands the shim runs; used for message prefixes. */
export type RuncOp =
  | 'create'
  | 'start'
  | 'exec'
  | 'kill'
  | 'delete'
  | 'state'
  | 'ps'
  | 'pause'
  | 'resume'
  | 'update'
  | 'checkpoint'
  | 'restore'
  | 'stats'
  | 'features'
  | 'version';

/**
 * Wire texts of the kill errors. The Go shim wraps errdefs.ErrNotFound with `%w`, so the status
 * message containerd receives carries the ": not found" suffix.
 */
export { PROCESS_ALREADY_FINISHED };
export const NO_SUCH_CONTAINER = 'no such container: not found';

/** How a runc child ended, as far as the error text needs it. */
export interface RuncExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
}

/**
 * The last `"level":"error"` message among JSON log lines. Lines that are not JSON (a wrapper
 * binary may print anything) or carry no string msg are skipped.
 */
export function lastLogError(logText: string): string | undefined {
  let last: string | undefined;
  for (const line of logText.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed.startsWith('{')) continue;
    let entry: unknown;
    try {
      entry = JSON.parse(trimmed);
    } catch {
      continue;
    }
    if (typeof entry !== 'object' || entry === null) continue;
    const { level, msg } = entry as { level?: unknown; msg?: unknown };
    if (level === 'error' && typeof msg === 'string') last = msg;
  }
  return last;
}

/** go-runc's text for a non-zero exit without a logged error: `exit status N: <output>`. */
export function exitText(exit: RuncExit): string {
  const status = exit.signal !== null ? `signal: ${exit.signal}` : `exit status ${exit.code ?? -1}`;
  const output = (exit.stderr.length > 0 ? exit.stderr : exit.stdout).toString('utf8').trim();
  return output === '' ? status : `${status}: ${output}`;
}

/** The runtime's own explanation of a failed call. */
export function runtimeMessage(logText: string, exit: RuncExit): string {
  return lastLogError(logText) ?? exitText(exit);
}

/**
 * Kill errors decide whether containerd treats a kill as "already dead" (NotFound) or as a real
 * failure, so they follow the Go shim's checkKillError substring tests exactly.
 */
export function classifyKillError(message: string): ShimError {
  const lower = message.toLowerCase();
  if (
    message.includes('os: process already finished') ||
    message.includes('container not running') ||
    lower.includes('no such process') ||
    message.includes('ESRCH')
  ) {
    return new ShimError(Code.NotFound, PROCESS_ALREADY_FINISHED);
  }
  if (message.includes('does not exist') || message.includes('container not found')) {
    return new ShimError(Code.NotFound, NO_SUCH_CONTAINER);
  }
  return new ShimError(Code.Unknown, `unknown error after kill: ${message}`);
}

/** True when runc reports that it has no state for the container (already deleted). */
export function isContainerMissing(message: string): boolean {
  return message.includes('does not exist') || message.includes('container not found');
}

/**
 * Classifies the runtime's message for an operation. `delete` is never called with a "does not
 * exist" message: the driver treats that as success before getting here.
 */
export function classifyRuncError(op: RuncOp, message: string): ShimError {
  switch (op) {
    case 'kill':
      return classifyKillError(message);
    case 'delete':
      return new ShimError(Code.Unknown, `failed to delete task: ${message}`);
    case 'state':
      // Lets cleanup paths tell "runc has no such container" apart from a broken runtime.
      if (isContainerMissing(message)) {
        return new ShimError(Code.NotFound, `OCI runtime state failed: ${message}: not found`);
      }
      return new ShimError(Code.Unknown, `OCI runtime state failed: ${message}`);
    default:
      return new ShimError(Code.Unknown, `OCI runtime ${op} failed: ${message}`);
  }
}

/** For failures to even run the runtime (missing binary, bad fd): no exit status, no log. */
export function spawnFailure(op: RuncOp, binary: string, cause: unknown): ShimError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  const message = reason.includes(binary) ? reason : `${binary}: ${reason}`;
  if (op === 'kill') return new ShimError(Code.Unknown, `unknown error after kill: ${message}`, { cause });
  if (op === 'delete') return new ShimError(Code.Unknown, `failed to delete task: ${message}`, { cause });
  return new ShimError(Code.Unknown, `OCI runtime ${op} failed: ${message}`, { cause });
}

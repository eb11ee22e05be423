/**
 * The `binary://` logging driver (spec §9.1): containerd names a program that receives the
 * process's stdout on fd 3 and stderr on fd 4 and reports readiness on fd 5. The shim copies
 * nothing itself; runc's stdout/stderr are the pipes' write ends.
 */
import type { ChildProcess } from 'node:child_process';
import { fchownSync } from 'node:fs';
import { ShimError, unknown } from '../common/errors';
import { pipe2 } from './libc';
import { closeFd, socketForFd } from './io-fifo';
import { spawnTracked } from './spawn';

/** How long a logger gets to flush after SIGTERM before it is killed, as in the runc shim. */
export const LOGGER_TERM_TIMEOUT_MS = 12_000;

export interface BinaryLoggerTarget {
  /** CONTAINER_ID: the container id for an init, the exec id for an exec */
  id: string;
  namespace: string;
}

export interface BinaryLogger {
  /** write end of the stdout pipe (the logger reads fd 3) */
  readonly stdoutWrite: number;
  /** write end of the stderr pipe (the logger reads fd 4) */
  readonly stderrWrite: number;
  readonly pid: number | undefined;
  /** Closes the shim's copies of the write ends so the logger sees EOF when the process is done. */
  closeWriteEnds(): void;
  /**
   * Hands the stdout write end over to the caller (who then owns and closes it) and closes the
   * stderr one: a terminal's output is written into the logger's fd 3 by the shim itself.
   */
  takeStdoutWrite(): number;
  /** Releases the read ends, then SIGTERM, wait ≤12 s, SIGKILL. */
  terminate(): Promise<void>;
}

/** `binary:///abs/logger?k1=v1&k2=v2` → ['/abs/logger', ['k1', 'v1', 'k2', 'v2']] (first value per key). */
export function loggerCommand(uri: URL): [file: string, args: string[]] {
  const args: string[] = [];
  const seen = new Set<string>();
  for (const [key, value] of uri.searchParams) {
    if (seen.has(key)) continue;
    seen.add(key);
    args.push(key, value);
  }
  return [decodeURIComponent(uri.pathname), args];
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** Resolves on the first byte or on EOF of the readiness pipe, rejects when the logger cannot start. */
function waitReady(child: ChildProcess, readyFd: number, file: string): Promise<void> {
  const ready = socketForFd(readyFd, 'read');
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      ready.destroy();
      child.off('error', onChildError);
      if (err) reject(unknown(`failed to start binary process ${file}: ${err.message}`, err));
      else resolve();
    };
    const onChildError = (err: Error): void => done(err);
    child.once('error', onChildError);
    ready.once('data', () => done());
    ready.once('end', () => done());
    // a failing read on our own pipe end means the logger end is gone: same as EOF
    ready.once('error', () => done());
  });
}

/**
 * Starts the logger and waits until it is ready. `ioUid`/`ioGid` own the write ends so a non-root
 * container can reopen them through /proc/self/fd.
 */
export async function startBinaryLogger(
  uri: URL,
  target: BinaryLoggerTarget,
  owner: { ioUid: number; ioGid: number },
): Promise<BinaryLogger> {
  const [file, args] = loggerCommand(uri);
  const opened: number[] = [];
  let child: ChildProcess | undefined;
  try {
    const [outR, outW] = pipe2(true);
    opened.push(outR, outW);
    const [errR, errW] = pipe2(true);
    opened.push(errR, errW);
    const [readyR, readyW] = pipe2(true);
    opened.push(readyR, readyW);
    fchownSync(outW, owner.ioUid, owner.ioGid);
    fchownSync(errW, owner.ioUid, owner.ioGid);

    child = spawnTracked(file, args, {
      // only these two: the logger must not see the shim's environment
      env: { CONTAINER_ID: target.id, CONTAINER_NAMESPACE: target.namespace },
      stdio: ['ignore', 'ignore', 'ignore', outR, errR, readyW],
    });
    const logger = child;
    if (logger.pid === undefined) {
      // spawn failed (ENOENT, EACCES): node reports why on 'error' in a moment
      const err = await new Promise<Error>((resolve) => logger.once('error', resolve));
      throw unknown(`failed to start binary process ${file}: ${err.message}`, err);
    }
    // the logger holds its own copy; ours would keep the readiness pipe from ever reaching EOF
    closeFd(readyW);
    opened.splice(opened.indexOf(readyW), 1);
    opened.splice(opened.indexOf(readyR), 1);
    await waitReady(logger, readyR, file);
    // Later spawn errors cannot happen; exit is observed in terminate().
    logger.on('error', () => undefined);

    let writeEnds: number[] = [outW, errW];
    let readEnds: number[] = [outR, errR];
    const closeWriteEnds = (): void => {
      writeEnds.forEach(closeFd);
      writeEnds = [];
    };
    const takeStdoutWrite = (): number => {
      writeEnds = writeEnds.filter((fd) => fd !== outW);
      closeWriteEnds();
      return outW;
    };
    return {
      stdoutWrite: outW,
      stderrWrite: errW,
      pid: logger.pid,
      closeWriteEnds,
      takeStdoutWrite,
      async terminate() {
        closeWriteEnds();
        readEnds.forEach(closeFd);
        readEnds = [];
        if (exited(logger)) return;
        // SIGTERM first so the logger can flush what it has buffered
        logger.kill('SIGTERM');
        if (await waitExit(logger, LOGGER_TERM_TIMEOUT_MS)) return;
        logger.kill('SIGKILL');
        await waitExit(logger, LOGGER_TERM_TIMEOUT_MS);
      },
    };
  } catch (err) {
    opened.forEach(closeFd);
    if (child && !exited(child)) child.kill('SIGKILL');
    if (err instanceof ShimError) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    throw unknown(`failed to start binary process ${file}: ${reason}`, err);
  }
}

/**
 * The only way Linux daemon code starts child processes (runc, mount helpers, binary loggers).
 *
 * The shim is a child subreaper and reaps re-parented container processes itself (reaper.ts). libuv reaps
 * the children Node spawned with its own per-pid waitpid; if the reaper ever waited for one of those, libuv
 * would never see its exit and the ChildProcess would hang forever. So every child started here is recorded
 * from the moment `spawn()` returns (before any JS, and so before any SIGCHLD handler, can run) until libuv
 * has reaped it and emitted 'exit'. `isNodeChild()` is what the reaper consults.
 *
 * Never uses a shell: arguments go to execve verbatim.
 */
import type { ChildProcess, SpawnOptions, StdioOptions } from 'node:child_process';
import spawnProcess from 'cross-spawn';
import { Code, ShimError, invalidArgument, unknown } from '../common/errors';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
}

type StdioEntry = number | 'pipe' | 'ignore';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is then closed. Requires stdin 'pipe' (the default when set). */
  input?: Buffer | string;
  /** Fds handed to the child as 0/1/2, e.g. container pipe ends; 'pipe' collects into the result. */
  stdio?: [stdin: StdioEntry, stdout: StdioEntry, stderr: StdioEntry];
  /** Become fd 3, 4, 5, ... in the child. */
  extraFds?: number[];
  /** Kill the child with SIGKILL and reject with DeadlineExceeded after this long. */
  timeoutMs?: number;
}

/**
 * After the child exits, how long to wait for its stdout/stderr pipes to reach EOF. A grandchild (a
 * container started by `runc create`, a daemonising helper) may inherit the pipes and hold them open
 * for its whole life; its parent's output is already buffered in the pipe by then, so a short grace is
 * enough to collect it without tying the call to the grandchild's lifetime.
 */
const STDIO_GRACE_MS = 250;

const liveChildren = new Set<number>();

/** True while a child spawned through this module has not yet been reaped by libuv. */
export function isNodeChild(pid: number): boolean {
  return liveChildren.has(pid);
}

function spawnRecorded(file: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  const child = spawnProcess(file, args, { ...options, shell: false });
  const pid = child.pid;
  if (pid !== undefined) {
    liveChildren.add(pid);
    // 'exit' is emitted synchronously from libuv's exit callback, right after its waitpid: from then on
    // the pid may be reused by a process that is ours to reap.
    child.once('exit', () => liveChildren.delete(pid));
  }
  return child;
}

/** Starts a long-lived child (e.g. a binary logger). The caller owns it: listen for 'error' and 'exit'. */
export function spawnTracked(file: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  return spawnRecorded(file, args, options);
}

/** Runs a program to completion. Rejects (Unknown) only when it cannot be started; exit codes are data. */
export function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const [stdinOpt, stdoutOpt, stderrOpt] = options.stdio ?? [
    options.input === undefined ? 'ignore' : 'pipe',
    'pipe',
    'pipe',
  ];
  if (options.input !== undefined && stdinOpt !== 'pipe') {
    return Promise.reject(invalidArgument(`run ${file}: input given but stdin is ${String(stdinOpt)}`));
  }
  const stdio: StdioOptions = [stdinOpt, stdoutOpt, stderrOpt, ...(options.extraFds ?? [])];

  return new Promise<RunResult>((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawnRecorded(file, args, { cwd: options.cwd, env: options.env, stdio });
    } catch (err) {
      reject(unknown(`exec ${file}: ${err instanceof Error ? err.message : String(err)}`, err));
      return;
    }

    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
    // The child may exit without reading its input; EPIPE on stdin is then expected, not a failure.
    child.stdin?.on('error', () => undefined);
    if (options.input !== undefined) child.stdin?.end(options.input);

    let settled = false;
    let timedOut = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let timeout: NodeJS.Timeout | undefined;
    let grace: NodeJS.Timeout | undefined;

    const finish = (): void => {
      if (settled || !exit) return;
      settled = true;
      clearTimeout(timeout);
      clearTimeout(grace);
      child.stdout?.destroy();
      child.stderr?.destroy();
      if (timedOut) {
        reject(new ShimError(Code.DeadlineExceeded, `${file} did not finish within ${options.timeoutMs} ms`));
        return;
      }
      resolve({ ...exit, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) });
    };

    if (options.timeoutMs !== undefined) {
      timeout = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, options.timeoutMs);
    }

    child.once('error', (err) => {
      // 'error' without a prior 'exit' means the program never ran (ENOENT, EACCES, ...).
      if (settled || exit) return;
      settled = true;
      clearTimeout(timeout);
      reject(unknown(`exec ${file}: ${err.message}`, err));
    });
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      grace = setTimeout(finish, STDIO_GRACE_MS);
    });
    child.once('close', finish);
  });
}

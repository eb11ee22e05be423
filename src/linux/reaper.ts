/**
 * Exit collection for processes the shim does not spawn itself: container init and exec processes, which
 * `runc create` / `runc exec --detach` leave behind when they exit and which are then re-parented to us
 * because we are a child subreaper (spec §4, §6.3).
 *
 * Never `waitpid(-1)`: that would also reap children libuv spawned (runc itself, loggers), and libuv would
 * then never report their exit. Instead every *watched* pid is waited for individually with WNOHANG on
 * each SIGCHLD. A process that exits before anyone asked for it stays a zombie until reaped, so calling
 * `watch()` after the exit still yields the real status — that is how the early-exit race (exit before
 * the pid file has been read) is closed.
 *
 * Zombies nobody watches (e.g. processes orphaned inside a container sharing the host pid namespace) are
 * reaped too, except children Node spawned (spawn.ts). Their statuses are kept for a while, because a
 * stray sweep can run between a container process's exit and the moment its pid becomes known.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { ShimError, failedPrecondition, internal, invalidArgument } from '../common/errors';
import { setChildSubreaper, waitpidNoHang, type WaitResult } from './libc';
import { isNodeChild } from './spawn';

export type { WaitResult } from './libc';

/** containerd's status for an exit whose real status cannot be known. */
export const UNKNOWN_EXIT_STATUS = 255;
/** How often a watched pid that is not our child is checked for disappearance. */
const FOREIGN_POLL_MS = 100;
/** How long a stray exit is kept for a late `watch()`; pids are reused, so not forever. */
const STRAY_TTL_MS = 30_000;
const STRAY_LIMIT = 4096;

export interface ReaperOptions {
  /** Called for every zombie reaped without a watcher; the status is also kept for a late `watch()`. */
  onStray?: (result: WaitResult) => void;
}

interface Watch {
  readonly promise: Promise<WaitResult>;
  readonly resolve: (result: WaitResult) => void;
  readonly reject: (err: ShimError) => void;
  /** Set while the pid is not our child: its status can only be learned by polling /proc. */
  foreignTimer?: NodeJS.Timeout;
}

export class Reaper {
  private readonly watches = new Map<number, Watch>();
  private readonly strays = new Map<number, { result: WaitResult; at: number }>();
  private readonly onStray: ((result: WaitResult) => void) | undefined;
  private readonly onSigchld = (): void => this.sweep();
  private started = false;

  constructor(options: ReaperOptions = {}) {
    this.onStray = options.onStray;
  }

  get watchedCount(): number {
    return this.watches.size;
  }

  /** Becomes subreaper and starts reacting to SIGCHLD. Throws Internal when prctl fails. */
  start(): void {
    if (this.started) return;
    try {
      setChildSubreaper();
    } catch (err) {
      throw internal(`prctl(PR_SET_CHILD_SUBREAPER): ${message(err)}`, err);
    }
    // Coexists with libuv's own SIGCHLD handling, which reaps only the pids Node spawned.
    process.on('SIGCHLD', this.onSigchld);
    this.started = true;
    this.sweep();
  }

  /**
   * Stops reacting to SIGCHLD. Pending `watch()` promises stay pending (a watch made while stopped only
   * settles if the process had already exited or on the next `start()`).
   */
  stop(): void {
    if (!this.started) return;
    process.off('SIGCHLD', this.onSigchld);
    this.started = false;
    for (const watch of this.watches.values()) {
      clearInterval(watch.foreignTimer);
      watch.foreignTimer = undefined;
    }
  }

  /**
   * Resolves once with the exit of `pid`; calling it again for the same pid returns the same promise.
   *
   * When `pid` is not our child (never re-parented to us, or already reaped by someone else) its exit
   * status cannot be read: the pid is polled in /proc every 100 ms and, once gone, the promise resolves
   * with status 255 — the value containerd itself reports for unknown exits. Pid reuse within one poll
   * interval would hide that exit; a later re-parenting to us is noticed and yields the real status.
   */
  watch(pid: number): Promise<WaitResult> {
    const existing = this.watches.get(pid);
    if (existing) return existing.promise;
    if (!Number.isInteger(pid) || pid <= 0) {
      return Promise.reject(invalidArgument(`cannot watch pid ${pid}`));
    }
    if (isNodeChild(pid)) {
      // Waiting for it here would steal the exit libuv is waiting for.
      return Promise.reject(failedPrecondition(`pid ${pid} is a child spawned by Node, not a container process`));
    }
    let resolve!: (result: WaitResult) => void;
    let reject!: (err: ShimError) => void;
    const promise = new Promise<WaitResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const watch: Watch = { promise, resolve, reject };
    this.watches.set(pid, watch);
    this.poll(pid, watch);
    return promise;
  }

  /** Upgrade: the pids being watched and the exits kept for a late watch. */
  handover(): { watchedPids: number[]; strays: Array<{ pid: number; status: number; at: number }> } {
    return {
      watchedPids: [...this.watches.keys()],
      strays: [...this.strays].map(([pid, s]) => ({ pid, status: s.result.status, at: s.at })),
    };
  }

  /** Upgrade, new image: exits the old image reaped without a watcher. */
  restoreStrays(strays: Array<{ pid: number; status: number; at: number }>): void {
    for (const s of strays) this.strays.set(s.pid, { result: { pid: s.pid, status: s.status, signaled: s.status > 128 }, at: s.at });
  }

  private sweep(): void {
    for (const [pid, watch] of this.watches) this.poll(pid, watch);
    this.reapStrays();
  }

  /** One non-blocking look at a watched pid; settles its watch when the exit is known. */
  private poll(pid: number, watch: Watch): void {
    let result: WaitResult | undefined;
    try {
      result = waitpidNoHang(pid);
    } catch {
      // ECHILD: not (or no longer) our child. Any other errno is treated alike rather than failing
      // the watch: errno is read back in JavaScript, after V8 may have run, so it is not fully to be
      // trusted, and a zombie that is still ours is found again by the /proc poll this starts.
      result = this.takeStray(pid) ?? this.foreignExit(pid, watch);
    }
    if (result) this.settle(pid, watch, result);
  }

  /** For a pid that is not our child: its exit if it is already gone, otherwise start /proc polling. */
  private foreignExit(pid: number, watch: Watch): WaitResult | undefined {
    if (!processExists(pid)) return { pid, status: UNKNOWN_EXIT_STATUS, signaled: false };
    watch.foreignTimer ??= setInterval(() => this.poll(pid, watch), FOREIGN_POLL_MS);
    return undefined;
  }

  private settle(pid: number, watch: Watch, outcome: WaitResult | ShimError): void {
    if (this.watches.get(pid) !== watch) return;
    this.watches.delete(pid);
    clearInterval(watch.foreignTimer);
    if (outcome instanceof ShimError) watch.reject(outcome);
    else watch.resolve(outcome);
  }

  private takeStray(pid: number): WaitResult | undefined {
    const stray = this.strays.get(pid);
    if (!stray) return undefined;
    this.strays.delete(pid);
    return Date.now() - stray.at <= STRAY_TTL_MS ? stray.result : undefined;
  }

  private reapStrays(): void {
    for (const pid of childPids()) {
      if (this.watches.has(pid) || isNodeChild(pid)) continue;
      if (processState(pid) !== 'Z' || isUntrackedNodeChild(pid)) continue;
      let result: WaitResult | undefined;
      try {
        result = waitpidNoHang(pid);
      } catch {
        continue; // reaped in between by its other waiter; nothing left to collect
      }
      if (!result) continue;
      this.rememberStray(result);
      this.onStray?.(result);
    }
  }

  private rememberStray(result: WaitResult): void {
    const now = Date.now();
    for (const [pid, stray] of this.strays) {
      if (now - stray.at > STRAY_TTL_MS || this.strays.size >= STRAY_LIMIT) this.strays.delete(pid);
      else break; // insertion order = age order
    }
    this.strays.delete(result.pid); // re-insert so the newest exit of a reused pid sits last
    this.strays.set(result.pid, { result, at: now });
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Our direct children, from every thread: re-parenting may attach an orphan to any thread of ours. */
function childPids(): number[] {
  const pids: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync('/proc/self/task');
  } catch {
    return pids;
  }
  for (const task of tasks) {
    let list: string;
    try {
      list = readFileSync(`/proc/self/task/${task}/children`, 'utf8');
    } catch {
      continue; // thread exited meanwhile
    }
    for (const word of list.split(' ')) {
      const pid = Number.parseInt(word, 10);
      if (pid > 0) pids.push(pid);
    }
  }
  return pids;
}

/** The state letter from /proc/<pid>/stat (after the last ')', since comm may contain anything). */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

function processExists(pid: number): boolean {
  try {
    statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Belt and braces for children started with child_process directly instead of spawn.ts: Node lists its
 * active (referenced) ChildProcess handles through this undocumented but long-standing API.
 */
function isUntrackedNodeChild(pid: number): boolean {
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.();
  if (!handles) return false;
  return handles.some((h) => typeof h === 'object' && h !== null && (h as { pid?: unknown }).pid === pid);
}

/**
 * Readiness of descriptors libuv cannot watch (an eventfd is neither a pipe, a socket nor a tty to
 * it): one epoll set per daemon, waited on by a single epoll_wait parked on a libuv threadpool
 * thread, so a hundred containers' OOM eventfds cost no timer and no wake-up until one fires.
 *
 * Level-triggered: a handler must consume what made its fd readable (read the eventfd) before it
 * returns, or the next wait returns at once. The parked wait is released (a write to our own
 * eventfd) when the last fd is removed and when the process exits: libuv joins its threadpool at
 * exit, and a worker blocked in epoll_wait would hold the exit forever.
 */
import * as fs from 'node:fs';
import { logger } from '../common/log';
import { EFD_CLOEXEC, EFD_NONBLOCK, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLIN, epollCreate, epollCtl, epollWait, eventfd } from './libc';

const MAX_EVENTS = 32;
/**
 * A failed wait is nearly always EINTR (a signal, SIGCHLD mostly, taken by the worker thread) and
 * is simply repeated. Failures this many in a row within a second are a wait that cannot work: the
 * set is given up and its handlers poll instead.
 */
const MAX_FAILED_WAITS = 1000;
const FAILURE_WINDOW_MS = 1000;

export interface Watch {
  /** the fd is readable: consume it now */
  ready(): void;
  /** the set stopped working: watch the fd another way from now on */
  lost(): void;
}

export class ReadinessSet {
  private readonly handlers = new Map<number, Watch>();
  private epfd = -1;
  private wakeFd = -1;
  private waiting = false;
  private failedWaits = 0;
  private firstFailureAt = 0;
  private broken = false;

  /** false when readiness cannot be watched (the caller falls back to polling) */
  add(fd: number, handler: Watch): boolean {
    if (this.broken) return false;
    try {
      this.open();
      epollCtl(this.epfd, EPOLL_CTL_ADD, fd, EPOLLIN);
    } catch (err) {
      logger.warn('cannot watch a descriptor with epoll; polling it instead', { error: err });
      return false;
    }
    this.handlers.set(fd, handler);
    this.arm();
    return true;
  }

  /** Before the fd is closed. */
  remove(fd: number): void {
    if (!this.handlers.delete(fd)) return;
    try {
      epollCtl(this.epfd, EPOLL_CTL_DEL, fd, 0);
    } catch {
      // already closed: the kernel dropped it from the set with its last reference
    }
    if (this.handlers.size === 0) this.wake();
  }

  get watching(): number {
    return this.handlers.size;
  }

  private open(): void {
    if (this.epfd >= 0) return;
    this.epfd = epollCreate();
    this.wakeFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epollCtl(this.epfd, EPOLL_CTL_ADD, this.wakeFd, EPOLLIN);
    process.once('exit', () => this.wake());
  }

  private wake(): void {
    if (this.wakeFd < 0 || !this.waiting) return;
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(1n);
    try {
      fs.writeSync(this.wakeFd, one);
    } catch {
      // the counter is already non-zero: the waiter will return anyway
    }
  }

  private arm(): void {
    if (this.waiting || this.handlers.size === 0 || this.broken) return;
    this.waiting = true;
    epollWait(this.epfd, MAX_EVENTS).then(
      (ready) => this.dispatch(ready),
      (err: unknown) => this.dispatch(null, err),
    );
  }

  private dispatch(ready: number[] | null, err?: unknown): void {
    this.waiting = false;
    if (ready === null) {
      const now = Date.now();
      if (this.failedWaits === 0 || now - this.firstFailureAt > FAILURE_WINDOW_MS) {
        this.failedWaits = 0;
        this.firstFailureAt = now;
      }
      this.failedWaits += 1;
      if (this.failedWaits >= MAX_FAILED_WAITS || err !== undefined) {
        this.broken = true;
        logger.error('epoll_wait keeps failing; descriptors are polled instead', { error: err });
        const lost = [...this.handlers.values()];
        this.handlers.clear();
        for (const watch of lost) watch.lost();
        return;
      }
    } else {
      this.failedWaits = 0;
      for (const fd of ready) {
        if (fd === this.wakeFd) drain(fd);
        else this.handlers.get(fd)?.ready();
      }
    }
    this.arm();
  }
}

function drain(fd: number): void {
  try {
    fs.readSync(fd, Buffer.alloc(8), 0, 8, null);
  } catch {
    // EAGAIN: nothing to take
  }
}

let shared: ReadinessSet | undefined;

/** The daemon's one set. */
export function readiness(): ReadinessSet {
  shared ??= new ReadinessSet();
  return shared;
}

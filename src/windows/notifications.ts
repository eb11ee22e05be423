/**
 * HCS notifications → promises (spec §2.3, hcsshim's callback.go + waithelper.go). One sink for the
 * whole process receives (type, context, status) from the single koffi trampoline; the context is a
 * small integer key into a map, never a JS object, and is inserted before the register call because
 * the callback can fire before the register call's own completion reaches JS.
 *
 * A wait resolves with the expected notification's status (an error when negative), and loses the
 * race to SystemExited (unless that is what it waits for), to ServiceDisconnect, to the context
 * being closed, and to its timeout.
 */
import { Code, ShimError } from '../common/errors';
import type { HcsApi } from './hcs-api';
import { describeHresult, failed, HcsError } from './hcs-errors';

/** vmcompute numbering (spec §2.2); computecore's differs and is never mixed in. */
export const Notification = {
  SystemExited: 0x1,
  SystemCreateCompleted: 0x2,
  SystemStartCompleted: 0x3,
  SystemPauseCompleted: 0x4,
  SystemResumeCompleted: 0x5,
  ProcessExited: 0x00010000,
  ServiceDisconnect: 0x01000000,
} as const;

/** Notifications that report a state rather than one operation: every waiter sees them. */
const STICKY = new Set<number>([Notification.SystemExited, Notification.ProcessExited, Notification.ServiceDisconnect]);

interface Waiter {
  type: number;
  op: string;
  id: string;
  resolve(status: number): void;
  reject(err: Error): void;
}

export class NotificationContext {
  private readonly queued = new Map<number, number[]>();
  private readonly sticky = new Map<number, number>();
  private waiters: Waiter[] = [];
  private closedFlag = false;

  constructor(
    readonly key: number,
    readonly kind: 'system' | 'process',
  ) {}

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Runs on the JS thread inside the trampoline: record and settle, nothing else. */
  deliver(type: number, status: number): void {
    if (this.closedFlag) return;
    if (STICKY.has(type)) {
      if (!this.sticky.has(type)) this.sticky.set(type, status);
    } else {
      const q = this.queued.get(type) ?? [];
      q.push(status);
      this.queued.set(type, q);
    }
    this.settle();
  }

  /**
   * Waits for `type`. `op`/`id` name the operation in errors; `timeoutMs` undefined waits forever
   * (exit waiters). An exit while waiting for something else is "unexpected exit".
   */
  wait(type: number, op: string, id: string, timeoutMs?: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        type,
        op,
        id,
        resolve: (s) => {
          if (timer) clearTimeout(timer);
          resolve(s);
        },
        reject: (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(waiter);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(new ShimError(Code.DeadlineExceeded, `${op} ${id}: timed out after ${timeoutMs} ms waiting for the compute service`));
        }, timeoutMs);
        // kept ref'd on purpose: koffi's callback relay is unref'd, so a pending HCS operation
        // would not keep Node alive by itself (spec §2.4); the wait is bounded anyway
      }
      this.settle();
    });
  }

  /** Releases every waiter: the handle is closed. */
  close(): void {
    this.closedFlag = true;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(new ShimError(Code.NotFound, `${w.op} ${w.id}: handle closed`));
  }

  private settle(): void {
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      const outcome = this.outcomeFor(w.type, w.op, w.id);
      if (!outcome) {
        still.push(w);
        continue;
      }
      if ('status' in outcome) w.resolve(outcome.status);
      else w.reject(outcome.error);
    }
    this.waiters = still;
  }

  private outcomeFor(type: number, op: string, id: string): { status: number } | { error: Error } | undefined {
    const own = STICKY.has(type) ? this.sticky.get(type) : this.queued.get(type)?.[0];
    if (own !== undefined) {
      if (!STICKY.has(type)) this.queued.get(type)!.shift();
      if (failed(own) && type !== Notification.SystemExited && type !== Notification.ProcessExited) {
        return { error: new HcsError(op, id, own) };
      }
      return { status: own };
    }
    const disconnect = this.sticky.get(Notification.ServiceDisconnect);
    if (disconnect !== undefined) {
      return { error: new ShimError(Code.Unavailable, `${op} ${id}: lost communication with compute service`) };
    }
    const exited = this.sticky.get(Notification.SystemExited);
    if (exited !== undefined && this.kind === 'system') {
      const why = failed(exited) ? `: ${describeHresult(exited)}` : '';
      return { error: new ShimError(Code.FailedPrecondition, `${op} ${id}: unexpected container exit${why}`) };
    }
    return undefined;
  }
}

/** The process-wide table from context key to context, fed by the one trampoline. */
export class NotificationRouter {
  private nextKey = 1;
  private readonly contexts = new Map<number, NotificationContext>();
  /**
   * koffi's callback relay does not keep Node alive (spec §2.4): while any HCS handle is open, this
   * timer does, so a notification in flight is never lost to an exiting event loop.
   */
  private keepAlive: NodeJS.Timeout | undefined;

  constructor(api: HcsApi) {
    api.setNotificationSink((type, context, status) => this.contexts.get(context)?.deliver(type, status));
  }

  open(kind: 'system' | 'process'): NotificationContext {
    const ctx = new NotificationContext(this.nextKey++, kind);
    this.contexts.set(ctx.key, ctx);
    this.keepAlive ??= setInterval(() => undefined, 1 << 30);
    return ctx;
  }

  close(ctx: NotificationContext): void {
    this.contexts.delete(ctx.key);
    ctx.close();
    if (this.contexts.size === 0 && this.keepAlive) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  get size(): number {
    return this.contexts.size;
  }
}

/**
 * OOM notifications of a cgroup v1 memory controller: an eventfd registered through
 * cgroup.event_control against memory.oom_control. The kernel signals the eventfd when the group
 * hits OOM and once more when the group is removed.
 *
 * The eventfd is non-blocking and watched by the daemon's one epoll set (../readiness.ts): no
 * timer and no wake-up per container while nothing happens. A blocking read per container would
 * park a libuv threadpool thread each, and libuv cannot watch an eventfd as a stream. Should epoll
 * fail, the eventfd is polled every OOM_POLL_MS instead.
 *
 * The notification says "this group hit OOM", not how many processes died (several tasks hitting
 * the limit at once may each notify), and it fires before the victim is counted. So each
 * notification starts a short series of re-reads of the oom_kill counter in memory.oom_control
 * (Linux 4.13+), and every increase is reported once per kill. On kernels without the counter, and
 * for a group whose OOM killer is disabled (its tasks stall under_oom, nobody is killed), the
 * notification itself is reported, as containerd does.
 */
import * as fs from 'fs';
import * as path from 'path';
import { errnoCode, failedPrecondition, wrap } from '../../common/errors';
import { EFD_CLOEXEC, EFD_NONBLOCK, eventfd } from '../libc';
import { readiness } from '../readiness';
import { readKeyValues } from './files';
import type { OomSource } from './oom';

/** how often the kill counter is re-read after a notification (and the eventfd polled without epoll) */
export const OOM_POLL_MS = 200;
/** re-reads after a notification during which the kill counter is expected to catch up */
const RECHECK_POLLS = 10;

export class OomWatcherV1 implements OomSource {
  private readonly oomControl: string;
  private efd = -1;
  /** the fallback poll, without epoll */
  private timer: NodeJS.Timeout | undefined;
  /** the next re-read of the kill counter after a notification */
  private recheck: NodeJS.Timeout | undefined;
  /** a notification that came while a check was running */
  private queued = false;
  private watched = false;
  /** undefined when the kernel has no oom_kill counter */
  private lastKills: bigint | undefined;
  /** remaining re-reads for a notification not yet matched by a counted kill; 0 = none pending */
  private pendingPolls = 0;
  private busy: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly memoryDir: string,
    private readonly onOom: () => void,
    private readonly onError: (err: unknown) => void,
  ) {
    this.oomControl = path.join(memoryDir, 'memory.oom_control');
  }

  async start(): Promise<void> {
    let control: Map<string, string> | undefined;
    try {
      control = await readKeyValues(this.oomControl);
    } catch (err) {
      throw wrap(err, `read ${this.oomControl}`);
    }
    if (control === undefined) throw failedPrecondition(`no memory.oom_control in ${this.memoryDir}`);
    const kills = control.get('oom_kill');
    this.lastKills = kills === undefined ? undefined : BigInt(kills);
    if (this.stopped) return;
    let efd: number;
    try {
      efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    } catch (err) {
      throw wrap(err, 'eventfd');
    }
    try {
      const oomFd = fs.openSync(this.oomControl, 'r');
      try {
        // the kernel resolves both numbers in this process's fd table while handling the write
        fs.writeFileSync(path.join(this.memoryDir, 'cgroup.event_control'), `${efd} ${oomFd}`);
      } finally {
        fs.closeSync(oomFd);
      }
    } catch (err) {
      fs.closeSync(efd);
      throw wrap(err, `register OOM eventfd for ${this.memoryDir}`);
    }
    this.efd = efd;
    this.watched = readiness().add(efd, { ready: () => this.onReady(), lost: () => this.poll() });
    if (!this.watched) this.poll();
  }

  private poll(): void {
    this.watched = false;
    if (this.stopped || this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), OOM_POLL_MS);
    // the shim stays up for its server, not for this poll
    this.timer.unref();
  }

  /** epoll says the eventfd was signalled: take it now (level-triggered), check when free. */
  private onReady(): void {
    if (this.stopped || !this.consumeEventfd()) return;
    if (this.busy !== undefined) this.queued = true;
    else void this.run(true);
  }

  async drain(): Promise<void> {
    while (this.busy !== undefined) await this.busy;
    if (this.stopped) return;
    // the process is gone by now, so a kill that will ever be counted already is
    await this.run(this.consumeEventfd());
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    clearTimeout(this.recheck);
    this.recheck = undefined;
    if (this.efd >= 0 && this.watched) readiness().remove(this.efd);
    if (this.efd >= 0) fs.closeSync(this.efd);
    this.efd = -1;
  }

  private tick(): void {
    if (this.busy !== undefined || this.stopped) return;
    const signalled = this.consumeEventfd();
    if (!signalled && this.pendingPolls === 0) return;
    void this.run(signalled);
  }

  private run(signalled: boolean): Promise<void> {
    const p = this.check(signalled).finally(() => {
      if (this.busy === p) this.busy = undefined;
      this.afterCheck();
    });
    this.busy = p;
    return p;
  }

  /** With epoll there is no poll timer: what a check left to do is scheduled here. */
  private afterCheck(): void {
    if (this.stopped || !this.watched) return;
    if (this.queued) {
      this.queued = false;
      void this.run(true);
      return;
    }
    if (this.pendingPolls > 0 && this.recheck === undefined) {
      this.recheck = setTimeout(() => {
        this.recheck = undefined;
        this.tick();
      }, OOM_POLL_MS);
      this.recheck.unref();
    }
  }

  /** Reads and resets the eventfd counter; true when at least one notification arrived. */
  private consumeEventfd(): boolean {
    if (this.efd < 0) return false;
    const buf = Buffer.alloc(8);
    try {
      // non-blocking: returns at once, with EAGAIN when nothing was signalled
      return fs.readSync(this.efd, buf, 0, 8, null) === 8 && buf.readBigUInt64LE(0) > 0n;
    } catch (err) {
      if (errnoCode(err) !== 'EAGAIN') this.onError(err);
      return false;
    }
  }

  private async check(signalled: boolean): Promise<void> {
    let control: Map<string, string> | undefined;
    try {
      control = await readKeyValues(this.oomControl);
    } catch (err) {
      this.onError(err);
      return;
    }
    if (this.stopped) return;
    if (control === undefined) {
      // the group was removed, which is also what the last notification was about
      this.stop();
      return;
    }
    if (this.lastKills === undefined) {
      if (signalled) this.emit(1n);
      return;
    }
    const kills = BigInt(control.get('oom_kill') ?? '0');
    // the kernel's counter only grows; a short read must not rebase it and double-report later
    const newKills = kills > this.lastKills ? kills - this.lastKills : 0n;
    if (newKills > 0n) this.lastKills = kills;
    if (signalled) this.pendingPolls = RECHECK_POLLS;
    else if (this.pendingPolls > 0) this.pendingPolls--;
    if (newKills > 0n) {
      // the window stays open: more victims of the same OOM may still be counted
      this.emit(newKills);
    } else if (signalled && control.get('oom_kill_disable') === '1') {
      // no kill will follow: with the OOM killer disabled the tasks stall under_oom instead
      this.pendingPolls = 0;
      this.emit(1n);
    }
  }

  private emit(count: bigint): void {
    for (let i = 0n; i < count && !this.stopped; i++) {
      try {
        this.onOom();
      } catch (err) {
        this.onError(err);
      }
    }
  }
}

/**
 * OOM kills of a cgroup v2 group, seen through memory.events. The kernel raises an inotify modify
 * event on that file whenever one of its counters changes; fs.watch delivers those on the event
 * loop without holding a threadpool thread. The counter, not the notification, is the truth: each
 * notification just triggers a re-read, and every increase of oom_kill is reported once per kill.
 */
import * as fs from 'fs';
import * as path from 'path';
import { failedPrecondition, wrap } from '../../common/errors';
import { readKeyValues } from './files';
import type { OomSource } from './oom';

export class OomWatcherV2 implements OomSource {
  private readonly eventsFile: string;
  private watcher: fs.FSWatcher | undefined;
  private lastKills = 0n;
  private stopped = false;
  /** checks run one after another so two reads never race on lastKills */
  private queue: Promise<void> = Promise.resolve();
  private checkQueued = false;

  constructor(
    dir: string,
    private readonly onOom: () => void,
    private readonly onError: (err: unknown) => void,
  ) {
    this.eventsFile = path.join(dir, 'memory.events');
  }

  async start(): Promise<void> {
    let events: Map<string, string> | undefined;
    try {
      events = await readKeyValues(this.eventsFile);
    } catch (err) {
      throw wrap(err, `read ${this.eventsFile}`);
    }
    if (events === undefined) throw failedPrecondition(`no memory.events in ${path.dirname(this.eventsFile)}`);
    // kills that happened before the watch started are not reported: the owner starts watching a
    // fresh cgroup, and after a shim restart the old kills were already published
    this.lastKills = BigInt(events.get('oom_kill') ?? '0');
    if (this.stopped) return;
    try {
      // not persistent: the watch alone must not keep the shim alive
      this.watcher = fs.watch(this.eventsFile, { persistent: false }, () => this.scheduleCheck());
    } catch (err) {
      // ENOSPC here means the inotify watch limit is reached
      throw wrap(err, `watch ${this.eventsFile}`);
    }
    this.watcher.on('error', (err) => {
      // the cgroup was removed (or inotify gave up): one last read reports anything still unseen
      this.closeWatch();
      if (!this.stopped) this.onError(err);
      this.scheduleCheck();
    });
    // a kill between the baseline read and the watch being armed raises no event we could see
    this.scheduleCheck();
  }

  drain(): Promise<void> {
    return this.enqueue();
  }

  stop(): void {
    this.stopped = true;
    this.closeWatch();
  }

  private scheduleCheck(): void {
    // a burst of modify events needs only one re-read after the one in flight
    if (this.checkQueued) return;
    this.checkQueued = true;
    void this.enqueue();
  }

  private enqueue(): Promise<void> {
    const run = (): Promise<void> => {
      this.checkQueued = false;
      return this.check();
    };
    // check() reports its own failures through onError, so the chain never stays rejected
    this.queue = this.queue.then(run, run);
    return this.queue;
  }

  private async check(): Promise<void> {
    if (this.stopped) return;
    let events: Map<string, string> | undefined;
    try {
      events = await readKeyValues(this.eventsFile);
    } catch (err) {
      this.onError(err);
      return;
    }
    if (events === undefined) {
      // cgroup removed: nothing more can happen in it
      this.closeWatch();
      return;
    }
    const killsText = events.get('oom_kill');
    // kernels before 4.13 have no oom_kill line; nothing to count then
    if (killsText === undefined) return;
    const kills = BigInt(killsText);
    // the kernel's counter only grows; never rebase downwards, or a kill would be reported twice
    if (kills <= this.lastKills) return;
    const newKills = kills - this.lastKills;
    this.lastKills = kills;
    for (let i = 0n; i < newKills && !this.stopped; i++) {
      try {
        this.onOom();
      } catch (err) {
        this.onError(err);
      }
    }
  }

  private closeWatch(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }
}

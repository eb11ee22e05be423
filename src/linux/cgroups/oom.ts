/**
 * Watches a container's cgroup for OOM kills, with the mechanism its hierarchy offers (v1 eventfd,
 * v2 memory.events). The owner calls drain() after the init process exited and before publishing
 * its exit, so an OOM that killed it is reported first, as CRI expects.
 */
import { failedPrecondition } from '../../common/errors';
import { OomWatcherV1 } from './oom-v1';
import { OomWatcherV2 } from './oom-v2';
import type { CgroupRef } from './ref';

/** What the per-hierarchy watchers implement. */
export interface OomSource {
  start(): Promise<void>;
  drain(): Promise<void>;
  stop(): void;
}

export class OomWatcher {
  private readonly source: OomSource;

  /**
   * @param onOom called once per OOM kill; must not block
   * @param onError failures after start() (a read that failed for a reason other than the cgroup
   *   being gone, a throwing onOom); watching continues
   */
  constructor(ref: CgroupRef, onOom: () => void, onError: (err: unknown) => void = () => undefined) {
    if (ref.mode === 'v2') {
      if (typeof ref.paths !== 'string') throw failedPrecondition('v2 CgroupRef needs a single directory');
      this.source = new OomWatcherV2(ref.paths, onOom, onError);
    } else {
      if (typeof ref.paths === 'string') throw failedPrecondition('v1 CgroupRef needs a controller map');
      const memory = ref.paths.get('memory');
      if (memory === undefined) throw failedPrecondition('no memory cgroup to watch for OOM');
      this.source = new OomWatcherV1(memory, onOom, onError);
    }
  }

  /** Arms the watch. FailedPrecondition when the cgroup has no memory controller files. */
  start(): Promise<void> {
    return this.source.start();
  }

  /** A final check that reports any kill not yet reported; resolves once onOom calls are made. */
  drain(): Promise<void> {
    return this.source.drain();
  }

  /** Idempotent; no onOom call happens after it returns. */
  stop(): void {
    this.source.stop();
  }
}

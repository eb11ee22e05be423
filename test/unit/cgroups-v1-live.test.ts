/**
 * cgroup v1 against the real kernel: stats of a live group and OOM notifications through the
 * eventfd. Runs where cgroup v1 is mounted and we are root (this project's test host).
 */
import type { ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterEach, describe, expect, it } from 'vitest';
import { cgroupOfPid, OomWatcher, readMetrics } from '../../src/linux/cgroups';
import { readiness } from '../../src/linux/readiness';
import type { V1Metrics } from '../../src/linux/cgroups/stats-v1';
import { V1_PROTO, expectEncodes, loadMetricsType } from './fixtures/cgroups/proto-check';
import {
  type TestCgroup,
  canUseV1,
  createV1Cgroup,
  exited,
  killAndWait,
  sleep,
  spawnInCgroup,
} from './fixtures/cgroups/live';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  // processes first, then the groups they were in
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

function track(cg: TestCgroup): TestCgroup {
  cleanups.push(() => cg.remove());
  return cg;
}
function trackChild(child: ChildProcess): ChildProcess {
  cleanups.push(() => killAndWait(child));
  return child;
}

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(20);
  }
  return true;
}

/** Caps memory at `bytes`, swap included when the kernel accounts swap, so the group must OOM. */
function limitMemory(dir: string, bytes: number): void {
  fs.writeFileSync(path.join(dir, 'memory.limit_in_bytes'), String(bytes));
  const memsw = path.join(dir, 'memory.memsw.limit_in_bytes');
  if (fs.existsSync(memsw)) fs.writeFileSync(memsw, String(bytes));
}

/**
 * Doubles a string until the group's limit stops it. The pages are touched from user space: a
 * kernel-mode fault (dd reading /dev/zero into its buffer) in a group with the OOM killer disabled
 * just ends the read short instead of stalling under OOM.
 */
const HOG = `busybox awk 'BEGIN { s = "x"; while (1) s = s s }'`;

function oomKills(dir: string): number {
  const m = /oom_kill (\d+)/.exec(fs.readFileSync(path.join(dir, 'memory.oom_control'), 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

describe.runIf(canUseV1())('cgroup v1 on the live kernel', () => {
  it('reads the stats of a running process through cgroupOfPid', async () => {
    const cg = track(createV1Cgroup(['memory', 'pids', 'cpu', 'cpuacct', 'blkio']));
    const child = trackChild(await spawnInCgroup([...cg.paths.values()], 'sleep 30'));

    const ref = await cgroupOfPid(child.pid!);
    expect(ref.mode).toBe('v1');
    const paths = ref.paths as ReadonlyMap<string, string>;
    for (const [controller, dir] of cg.paths) expect(paths.get(controller)).toBe(dir);

    const { typeName, metrics } = await readMetrics(ref);
    expect(typeName).toBe('io.containerd.cgroups.v1.Metrics');
    const m = metrics as V1Metrics;
    expect(BigInt(m.pids?.current ?? '0')).toBeGreaterThanOrEqual(1n);
    expect(m.pids?.limit).toBe('0'); // pids.max is "max" in a fresh group
    const memoryUsage = m.memory?.usage;
    expect(typeof memoryUsage).toBe('object');
    expect(BigInt((memoryUsage as { usage?: string }).usage ?? '0')).toBeGreaterThan(0n);
    expect(BigInt(m.cpu?.usage.total ?? '-1')).toBeGreaterThanOrEqual(0n);
    expect(m.cpu?.usage.perCpu?.length).toBeGreaterThan(0);
    expect(m.memoryOomControl).toEqual({ oomKillDisable: '0', underOom: '0', oomKill: '0' });
    expect(m.blkio).toBeDefined();
    expectEncodes(loadMetricsType(V1_PROTO, 'io.containerd.cgroups.v1.Metrics'), metrics);
  });

  it('reports an OOM kill once, from the eventfd (watched by epoll, no poll timer) and not again on drain', async () => {
    const cg = track(createV1Cgroup(['memory']));
    const dir = cg.paths.get('memory')!;
    limitMemory(dir, 8 << 20);
    let ooms = 0;
    const errors: unknown[] = [];
    const watcher = new OomWatcher({ mode: 'v1', paths: cg.paths }, () => ooms++, (e) => errors.push(e));
    const watching = readiness().watching;
    await watcher.start();
    cleanups.push(async () => watcher.stop());
    expect(readiness().watching).toBe(watching + 1);

    // one process in the group, so exactly one kill
    const child = trackChild(await spawnInCgroup([dir], HOG));
    const exit = await exited(child);
    expect(exit.signal).toBe('SIGKILL');
    expect(oomKills(dir)).toBe(1);

    expect(await until(() => ooms > 0, 3000)).toBe(true);
    await watcher.drain();
    await sleep(600); // a few more re-reads must not report it again
    expect(ooms).toBe(1);
    expect(errors).toEqual([]);
    watcher.stop();
    expect(readiness().watching).toBe(watching);
  });

  it('drain() reports a kill that happened just before it, without waiting for a poll', async () => {
    const cg = track(createV1Cgroup(['memory']));
    const dir = cg.paths.get('memory')!;
    limitMemory(dir, 8 << 20);
    let ooms = 0;
    const watcher = new OomWatcher({ mode: 'v1', paths: cg.paths }, () => ooms++);
    await watcher.start();
    cleanups.push(async () => watcher.stop());

    const child = trackChild(await spawnInCgroup([dir], HOG));
    await exited(child);
    // the exit handler's path: drain right away, then the exit would be published
    await watcher.drain();
    expect(ooms).toBe(oomKills(dir));
    expect(ooms).toBe(1);
    watcher.stop();
    await sleep(400);
    expect(ooms).toBe(1);
  });

  it('reports every kill of a group that is killed repeatedly', async () => {
    const cg = track(createV1Cgroup(['memory']));
    const dir = cg.paths.get('memory')!;
    limitMemory(dir, 8 << 20);
    let ooms = 0;
    const watcher = new OomWatcher({ mode: 'v1', paths: cg.paths }, () => ooms++);
    await watcher.start();
    cleanups.push(async () => watcher.stop());
    for (let i = 0; i < 3; i++) {
      const child = trackChild(await spawnInCgroup([dir], HOG));
      await exited(child);
    }
    await watcher.drain();
    expect(oomKills(dir)).toBe(3);
    expect(ooms).toBe(3);
  });

  it('reports an OOM of a group whose OOM killer is disabled (tasks stall, nobody is killed)', async () => {
    const cg = track(createV1Cgroup(['memory']));
    const dir = cg.paths.get('memory')!;
    limitMemory(dir, 8 << 20);
    fs.writeFileSync(path.join(dir, 'memory.oom_control'), '1');
    let ooms = 0;
    const watcher = new OomWatcher({ mode: 'v1', paths: cg.paths }, () => ooms++);
    await watcher.start();
    cleanups.push(async () => watcher.stop());
    const child = trackChild(await spawnInCgroup([dir], HOG));
    expect(await until(() => ooms > 0, 3000)).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'memory.oom_control'), 'utf8')).toMatch(/under_oom 1/);
    await killAndWait(child);
    await watcher.drain();
    expect(ooms).toBe(1);
  });

  it('stops quietly when the group is removed (the kernel signals the eventfd then too)', async () => {
    const cg = createV1Cgroup(['memory']);
    cleanups.push(() => cg.remove());
    let ooms = 0;
    const errors: unknown[] = [];
    const watcher = new OomWatcher({ mode: 'v1', paths: cg.paths }, () => ooms++, (e) => errors.push(e));
    await watcher.start();
    cleanups.push(async () => watcher.stop());
    await cg.remove();
    await sleep(600);
    await watcher.drain();
    expect(ooms).toBe(0);
    expect(errors).toEqual([]);
  });

  it('refuses to watch a cgroup without a memory controller directory', async () => {
    expect(() => new OomWatcher({ mode: 'v1', paths: new Map([['cpu', '/sys/fs/cgroup/cpu']]) }, () => undefined)).toThrow(
      /no memory cgroup/,
    );
    const watcher = new OomWatcher(
      { mode: 'v1', paths: new Map([['memory', '/sys/fs/cgroup/memory/tshim-test-does-not-exist']]) },
      () => undefined,
    );
    await expect(watcher.start()).rejects.toMatchObject({ code: 9 /* FailedPrecondition */ });
  });
});

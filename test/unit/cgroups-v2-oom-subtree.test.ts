/**
 * cgroup v2 OOM watching (inotify on memory.events) and subtree controller delegation, against
 * fixture directories: this host has no v2 memory controller, and inotify behaves the same on a
 * regular file as on cgroupfs for the modify events the kernel raises.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Code } from '../../src/common/errors';
import { OomWatcher, enableSubtreeControllers } from '../../src/linux/cgroups';

let tmp: string;
const stops: (() => void)[] = [];

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-cgroups-v2-'));
});
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function events(oomKill: number, oom = oomKill): string {
  return `low 0\nhigh 0\nmax ${oom * 3}\noom ${oom}\noom_kill ${oomKill}\noom_group_kill 0\n`;
}

function cgroupDir(name: string, oomKill = 0): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'memory.events'), events(oomKill));
  return dir;
}

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

function watch(dir: string): { watcher: OomWatcher; count: () => number; errors: unknown[] } {
  let n = 0;
  const errors: unknown[] = [];
  const watcher = new OomWatcher({ mode: 'v2', paths: dir }, () => n++, (e) => errors.push(e));
  stops.push(() => watcher.stop());
  return { watcher, count: () => n, errors };
}

describe('OomWatcher on cgroup v2', () => {
  it('reports each oom_kill increase as it is written, once per kill', async () => {
    const dir = cgroupDir('kills');
    const { watcher, count, errors } = watch(dir);
    await watcher.start();
    fs.writeFileSync(path.join(dir, 'memory.events'), events(1));
    expect(await until(() => count() === 1, 2000)).toBe(true);
    // two kills between notifications still count as two
    fs.writeFileSync(path.join(dir, 'memory.events'), events(3));
    expect(await until(() => count() === 3, 2000)).toBe(true);
    // other counters moving (memory.max hits, oom without kill) report nothing
    fs.writeFileSync(path.join(dir, 'memory.events'), events(3, 9));
    await watcher.drain();
    await new Promise((r) => setTimeout(r, 100));
    expect(count()).toBe(3);
    expect(errors).toEqual([]);
  });

  it('ignores kills that happened before start()', async () => {
    const dir = cgroupDir('before', 2);
    const { watcher, count } = watch(dir);
    await watcher.start();
    await watcher.drain();
    expect(count()).toBe(0);
    fs.writeFileSync(path.join(dir, 'memory.events'), events(3));
    await watcher.drain();
    expect(count()).toBe(1);
  });

  it('does not re-report kills after a read that saw no counter', async () => {
    const dir = cgroupDir('short-read', 2);
    const { watcher, count } = watch(dir);
    await watcher.start();
    fs.writeFileSync(path.join(dir, 'memory.events'), '');
    await watcher.drain();
    fs.writeFileSync(path.join(dir, 'memory.events'), events(2));
    await watcher.drain();
    expect(count()).toBe(0);
    fs.writeFileSync(path.join(dir, 'memory.events'), events(1));
    await watcher.drain();
    expect(count()).toBe(0);
  });

  it('drain() sees a kill whose notification has not been delivered yet', async () => {
    const dir = cgroupDir('drain');
    const { watcher, count } = watch(dir);
    await watcher.start();
    fs.writeFileSync(path.join(dir, 'memory.events'), events(1));
    // no event-loop turn in between for the inotify callback
    await watcher.drain();
    expect(count()).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(count()).toBe(1);
  });

  it('reports nothing after stop()', async () => {
    const dir = cgroupDir('stopped');
    const { watcher, count } = watch(dir);
    await watcher.start();
    watcher.stop();
    fs.writeFileSync(path.join(dir, 'memory.events'), events(1));
    await new Promise((r) => setTimeout(r, 100));
    await watcher.drain();
    expect(count()).toBe(0);
  });

  it('goes quiet when the cgroup disappears', async () => {
    const dir = cgroupDir('removed');
    const { watcher, count, errors } = watch(dir);
    await watcher.start();
    fs.rmSync(dir, { recursive: true });
    await new Promise((r) => setTimeout(r, 100));
    await watcher.drain();
    expect(count()).toBe(0);
    expect(errors).toEqual([]);
  });

  it('fails start() with FailedPrecondition when there is no memory.events', async () => {
    const dir = path.join(tmp, 'nomem');
    fs.mkdirSync(dir);
    const { watcher } = watch(dir);
    await expect(watcher.start()).rejects.toMatchObject({ code: Code.FailedPrecondition });
  });

  it('keeps watching when the callback throws, reporting the error', async () => {
    const dir = cgroupDir('throws');
    const errors: unknown[] = [];
    let calls = 0;
    const watcher = new OomWatcher(
      { mode: 'v2', paths: dir },
      () => {
        calls++;
        throw new Error('callback failed');
      },
      (e) => errors.push(e),
    );
    stops.push(() => watcher.stop());
    await watcher.start();
    fs.writeFileSync(path.join(dir, 'memory.events'), events(2));
    await watcher.drain();
    expect(calls).toBe(2);
    expect(errors.map((e) => (e as Error).message)).toEqual(['callback failed', 'callback failed']);
  });
});

describe('enableSubtreeControllers', () => {
  function tree(name: string): { root: string; leaf: string } {
    const root = path.join(tmp, name);
    const leaf = path.join(root, 'kubepods', 'pod1', 'c1');
    fs.mkdirSync(leaf, { recursive: true });
    fs.writeFileSync(path.join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids\n');
    for (const d of [root, path.join(root, 'kubepods'), path.join(root, 'kubepods', 'pod1'), leaf]) {
      fs.writeFileSync(path.join(d, 'cgroup.subtree_control'), '');
    }
    return { root, leaf };
  }
  const read = (dir: string): string => fs.readFileSync(path.join(dir, 'cgroup.subtree_control'), 'utf8');

  it('writes the root controllers into every ancestor, not the cgroup itself', async () => {
    const { root, leaf } = tree('subtree');
    const logs: string[] = [];
    await enableSubtreeControllers({ mode: 'v2', paths: leaf }, { root, log: (m) => logs.push(m) });
    const all = '+cpuset +cpu +io +memory +hugetlb +pids';
    expect(read(root)).toBe(all);
    expect(read(path.join(root, 'kubepods'))).toBe(all);
    expect(read(path.join(root, 'kubepods', 'pod1'))).toBe(all);
    expect(read(leaf)).toBe('');
    expect(logs).toEqual([]);
  });

  it('logs a failing ancestor and carries on with the rest', async () => {
    const { root, leaf } = tree('subtree-fail');
    fs.rmSync(path.join(root, 'kubepods', 'cgroup.subtree_control'));
    const logs: string[] = [];
    await enableSubtreeControllers({ mode: 'v2', paths: leaf }, { root, log: (m) => logs.push(m) });
    expect(logs).toHaveLength(1);
    expect(logs[0]).toContain(path.join(root, 'kubepods', 'cgroup.subtree_control'));
    // not created: cgroupfs files are never created by writing
    expect(fs.existsSync(path.join(root, 'kubepods', 'cgroup.subtree_control'))).toBe(false);
    expect(read(path.join(root, 'kubepods', 'pod1'))).toContain('+memory');
  });

  it('does nothing for v1 or for a cgroup outside the root', async () => {
    const { root } = tree('subtree-noop');
    await enableSubtreeControllers({ mode: 'v1', paths: new Map([['memory', path.join(root, 'kubepods')]]) }, { root });
    await enableSubtreeControllers({ mode: 'v2', paths: path.join(tmp, 'elsewhere') }, { root });
    expect(read(root)).toBe('');
  });
});

/**
 * The `namespace` grouping policy (src/common/group.ts) through real containerd: one daemon serves
 * every container of the namespace, ends with the last one, and hands none of them to a daemon that
 * is ending (starts back to back and at once, which is where a `start` meets a daemon whose last
 * container was just deleted). Sharing a daemon must not couple containers: a runtime call that
 * hangs for one container, a consumer that stops reading another's output and a rootfs mount that
 * waits on its filesystem do not delay the others.
 *
 * Containerd gets TSHIM_SHIM_GROUP=namespace in its environment, as an operator would set it for a
 * whole node; the runtime option ShimGroup does the same per runtime (unit-tested in group.test.ts).
 */
import { execFileSync } from 'node:child_process';
import { constants as fsc, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findLeftovers, removeContainer, shimProcesses, startContainerd, uniqueId, waitForTaskStatus, type Containerd,
} from './harness';
import { importBusyboxImage } from './image';
import { ContainerdApiError, createTask } from './fixtures/containerd-api';
import { runtimeWrapper, scratchDir, until } from './fixtures/suite';
import { mountStuckFuse, threadsWaitingOnFuse } from '../fixtures/stuck-fuse';

const RUNTIME = 'io.containerd.tshim.v2';

const exists = (p: string): Promise<boolean> => fs.access(p).then(() => true, () => false);

describe('ShimGroup = namespace: one daemon per containerd namespace', () => {
  let cd: Containerd;
  let image: string;
  const bundle = (id: string): string => path.join(cd.dir, 'state', 'io.containerd.runtime.v2.task', cd.namespace, id);
  const addressOf = (id: string): Promise<string> => fs.readFile(path.join(bundle(id), 'address'), 'utf8');
  const socketOf = async (id: string): Promise<string> => (await addressOf(id)).replace(/^unix:\/\//, '');

  beforeAll(async () => {
    cd = await startContainerd({ env: { TSHIM_SHIM_GROUP: 'namespace' } });
    image = await importBusyboxImage(cd);
  });
  afterAll(async () => {
    const problems = await cd.stop();
    if (problems.length > 0) throw new Error(`teardown:\n${problems.join('\n')}`);
  });

  it('serves every container of the namespace from one daemon, which ends with the last of them', async () => {
    const a = uniqueId('ns-a');
    const b = uniqueId('ns-b');
    try {
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, a, 'sleep', '1000']);
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, b, 'sleep', '1000']);
      await waitForTaskStatus(cd, b, 'RUNNING');
      expect(await addressOf(b)).toBe(await addressOf(a));
      const daemons = await shimProcesses(cd);
      expect(daemons).toHaveLength(1);
      const daemon = daemons[0]!;

      await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', a]);
      await waitForTaskStatus(cd, a, 'STOPPED');
      await removeContainer(cd, a);
      // containerd sent Shutdown after a's delete: b keeps its daemon
      expect(await cd.ctr(['tasks', 'exec', '--exec-id', 'e1', b, 'echo', 'still-here'])).toMatchObject({ code: 0, stdout: 'still-here\n' });
      expect((await shimProcesses(cd)).map((p) => p.pid)).toEqual([daemon.pid]);

      const socket = await socketOf(b);
      await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', b]);
      await waitForTaskStatus(cd, b, 'STOPPED');
      await removeContainer(cd, b);
      await until('the namespace daemon to end', async () => ((await shimProcesses(cd)).length === 0 ? true : undefined));
      expect(await exists(socket)).toBe(false);
    } finally {
      await removeContainer(cd, a);
      await removeContainer(cd, b);
    }
  });

  it('hands no container to a daemon that is ending: runs back to back and at once all succeed', async () => {
    for (let i = 0; i < 6; i++) {
      const id = uniqueId(`ns-seq${i}`);
      expect(await cd.ctr(['run', '--rm', '--runtime', RUNTIME, image, id, 'echo', `seq-${i}`])).toMatchObject({ code: 0, stdout: `seq-${i}\n` });
    }
    const ids = Array.from({ length: 6 }, (_, i) => uniqueId(`ns-par${i}`));
    const results = await Promise.all(ids.map((id, i) => cd.ctr(['run', '--rm', '--runtime', RUNTIME, image, id, 'echo', `par-${i}`], { allowFail: true })));
    expect(results.map((r) => [r.code, r.stdout, r.stderr])).toEqual(ids.map((_, i) => [0, `par-${i}\n`, '']));
    expect(await findLeftovers(cd, 'ns-')).toEqual([]);
  });

  it("runs the runtime in each container's own bundle, also after the container the daemon started for is gone", async () => {
    const first = uniqueId('ns-first');
    const later = uniqueId('ns-later');
    const dir = await scratchDir(cd, later);
    const calls = path.join(dir, 'calls');
    // the working directory of each runtime call, and whether it still exists
    const config = await runtimeWrapper(dir, 'runc-where', `echo "$(pwd -P) $(test -d . && echo ok || echo gone)" >> ${calls}`);
    try {
      // the daemon starts for `first` and has its bundle as working directory; then that goes
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, first, 'sleep', '1000']);
      const keep = uniqueId('ns-keep');
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, keep, 'sleep', '1000']);
      await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', first]);
      await waitForTaskStatus(cd, first, 'STOPPED');
      await removeContainer(cd, first);
      expect(await cd.ctr(['run', '--rm', '--runtime', RUNTIME, '--runtime-config-path', config, image, later, 'echo', 'ran'])).toMatchObject({ code: 0, stdout: 'ran\n' });
      const lines = (await fs.readFile(calls, 'utf8')).trim().split('\n');
      expect(lines.length).toBeGreaterThan(0);
      for (const line of lines) expect(line).toBe(`${await fs.realpath(bundle(later)).catch(() => bundle(later))} ok`);
      await removeContainer(cd, keep);
    } finally {
      await removeContainer(cd, first);
      await removeContainer(cd, later);
    }
    expect(await findLeftovers(cd, 'ns-')).toEqual([]);
  });

  it('a hung runtime call for one container and a stopped reader of another do not delay a third in the same daemon', async () => {
    const slow = uniqueId('ns-slow');
    const spew = uniqueId('ns-spew');
    const fast = uniqueId('ns-fast');
    const dir = await scratchDir(cd, slow);
    const gate = path.join(dir, 'gate');
    const entered = path.join(dir, 'entered');
    const config = await runtimeWrapper(
      dir,
      'runc-held',
      `for a in "$@"; do\n  if [ "$a" = create ]; then : > ${entered}; read line < ${gate}; break; fi\ndone`,
    );
    await fs.rm(gate, { force: true });
    execFileSync('mkfifo', [gate]);
    const spewing = cd.ctrBackground(['run', '--rm', '--runtime', RUNTIME, image, spew, 'sh', '-c', 'echo spewing; yes']);
    const held = cd.ctrBackground(['run', '-d', '--runtime', RUNTIME, '--runtime-config-path', config, image, slow, 'sleep', '1000']);
    let released = false;
    try {
      await spewing.waitForOutput('spewing');
      process.kill(spewing.pid, 'SIGSTOP'); // the spewing container's output now backs up in the daemon
      await until('runc create of the slow container to hang', async () => ((await exists(entered)) ? true : undefined)).catch((err: Error) => {
        throw new Error(`${err.message}; ctr: ${held.stderr()}`);
      });
      expect(await addressOf(slow)).toBe(await addressOf(spew));

      expect(await cd.ctr(['run', '--rm', '--runtime', RUNTIME, image, fast, 'echo', 'not-delayed'])).toMatchObject({ code: 0, stdout: 'not-delayed\n' });
      expect(await cd.ctr(['tasks', 'exec', '--exec-id', 'x1', spew, 'echo', 'exec-ok'])).toMatchObject({ code: 0, stdout: 'exec-ok\n' });

      const writer = await fs.open(gate, fsc.O_WRONLY);
      await writer.write('go\n');
      await writer.close();
      released = true;
      expect((await held.exited).code).toBe(0);
      await waitForTaskStatus(cd, slow, 'RUNNING');
    } finally {
      if (!released) {
        // let the hung `runc create` go, whatever failed above
        const writer = await fs.open(gate, fsc.O_RDWR | fsc.O_NONBLOCK).catch(() => undefined);
        await writer?.write('go\n').catch(() => undefined);
        await writer?.close();
      }
      await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', spew], { allowFail: true });
      try {
        process.kill(spewing.pid, 'SIGCONT');
      } catch {
        // already gone
      }
      await spewing.exited.catch(() => undefined);
      await held.exited.catch(() => undefined);
      for (const id of [slow, spew, fast]) await removeContainer(cd, id);
    }
    expect(await findLeftovers(cd, 'ns-')).toEqual([]);
  });

  it('rootfs mounts that wait on their filesystem for some containers delay no other container of the daemon', async () => {
    const keep = uniqueId('ns-keep');
    // More waiting mounts than libuv's default threadpool has threads (4): each holds one.
    const stuck = [1, 2, 3, 4].map((n) => uniqueId(`ns-mount${n}`));
    const fast = uniqueId('ns-fast');
    // A FUSE filesystem that never answers: a bind mount of a directory in it waits in the
    // kernel until the test aborts the connection.
    const fuse = await mountStuckFuse(path.join(await scratchDir(cd, keep), 'fuse'));
    try {
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, keep, 'sleep', '1000']);
      const creating: Promise<unknown>[] = [];
      for (const id of stuck) {
        await cd.ctr(['containers', 'create', '--runtime', RUNTIME, image, id, 'sleep', '1000']);
        // one directory each: lookups of one name would queue behind the first in the kernel
        const rootfs = [{ type: 'bind', source: path.join(fuse.path, id), options: ['rbind', 'ro'] }];
        creating.push(
          createTask(cd, id, {}, { rootfs, timeoutMs: 60_000 }).then(
            () => new Error('Create succeeded on a filesystem that never answered'),
            (err: unknown) => err,
          ),
        );
      }
      const daemon = await until('the daemon', async () => (await shimProcesses(cd, keep))[0]);
      await until('every rootfs mount to wait on FUSE', async () => (threadsWaitingOnFuse(daemon.pid) >= stuck.length ? true : undefined));
      for (const id of stuck) expect(await addressOf(id)).toBe(await addressOf(keep));

      expect(await cd.ctr(['tasks', 'exec', '--exec-id', 'x1', keep, 'echo', 'exec-ok'])).toMatchObject({ code: 0, stdout: 'exec-ok\n' });
      expect(await cd.ctr(['run', '--rm', '--runtime', RUNTIME, image, fast, 'echo', 'not-delayed'])).toMatchObject({ code: 0, stdout: 'not-delayed\n' });
      expect(threadsWaitingOnFuse(daemon.pid)).toBe(stuck.length);

      await fuse.abort();
      for (const [i, err] of (await Promise.all(creating)).entries()) {
        expect(err).toBeInstanceOf(ContainerdApiError);
        expect((err as ContainerdApiError).details).toContain(`mount bind ${fuse.path}/${stuck[i]} on `);
        expect((err as ContainerdApiError).details).toContain('ENOTCONN: Transport endpoint is not connected');
      }
      await waitForTaskStatus(cd, keep, 'RUNNING');
    } finally {
      await fuse.cleanup();
      for (const id of [keep, ...stuck, fast]) await removeContainer(cd, id);
    }
    expect(await findLeftovers(cd, 'ns-')).toEqual([]);
  });
});

/**
 * The shim daemon as a process, per runtime: one daemon serving a group of containers (the
 * `io.containerd.runc.v2.group` annotation) and outliving each of them but the last, and a
 * daemon surviving a restart of containerd, which reconnects through `<bundle>/address`.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { access, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CONTAINERD_BIN, findLeftovers, removeContainer, REPO_ROOT, RUNTIMES, shimProcesses, startContainerd, uniqueId,
  waitForTaskStatus, type Containerd,
} from './harness';
import { importBusyboxImage } from './image';
import { subscribeEvents } from './fixtures/events';
import { delay, type ProcessInfo } from './fixtures/system';
import { runtimeNames, useTestBed } from './fixtures/suite';

const bed = useTestBed();

const GROUP_ANNOTATION = 'io.containerd.runc.v2.group';

const bundleOf = (cd: Containerd, id: string): string => `${cd.dir}/state/io.containerd.runtime.v2.task/${cd.namespace}/${id}`;

/** The socket path a task's shim serves, from the `unix://...` its `start` wrote to the bundle. */
async function shimSocketOf(cd: Containerd, id: string): Promise<string> {
  const address = (await readFile(path.join(bundleOf(cd, id), 'address'), 'utf8')).trim();
  expect(address).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
  return address.slice('unix://'.length);
}

/**
 * Long-running shim daemons of this containerd started for one of `ids` (a daemon's `-id` is the
 * task that started it). Transient `start`/`delete` invocations end with their action word.
 */
async function shimDaemonsFor(cd: Containerd, ids: string[]): Promise<ProcessInfo[]> {
  const all = await shimProcesses(cd);
  return all.filter((p) => {
    const at = p.cmdline.indexOf('-id');
    const last = p.cmdline[p.cmdline.length - 1];
    return at >= 0 && ids.includes(p.cmdline[at + 1] ?? '') && last !== 'start' && last !== 'delete';
  });
}

async function parentPid(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised comm, which itself may contain spaces.
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}

async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await delay(50);
  }
}

/**
 * A containerd whose daemon can be stopped and started again in place: same config, socket, root
 * and state, so it reloads the tasks of the first incarnation. The harness's handle keeps serving
 * `ctr` (the socket path is unchanged); only its own daemon bookkeeping sees the first daemon
 * exit, which is why `close()` cleans the namespace and ends a respawned daemon itself before
 * `cd.stop()` removes the rest.
 */
interface RestartableContainerd {
  cd: Containerd;
  image: string;
  /** SIGTERMs the running daemon (only its pid) and waits for it to go. */
  stopDaemon(): Promise<void>;
  /** Starts the daemon again exactly as the harness did and waits until it answers. */
  startDaemon(): Promise<void>;
  close(): Promise<string[]>;
}

async function startRestartableContainerd(): Promise<RestartableContainerd> {
  const cd = await startContainerd();
  let image: string;
  try {
    image = await importBusyboxImage(cd);
  } catch (err) {
    await cd.stop();
    throw err;
  }
  /** undefined while stopped. */
  let daemonPid: number | undefined = cd.pid;
  /** Set once a daemon the harness does not know about runs; resolves when it exits. */
  let respawnedExit: Promise<void> | undefined;

  const stopDaemon = async (): Promise<void> => {
    const pid = daemonPid;
    if (pid === undefined) return;
    process.kill(pid, 'SIGTERM');
    await waitUntil(`containerd ${pid} exited`, () => !isAlive(pid), 15_000);
    daemonPid = undefined;
  };

  const startDaemon = async (): Promise<void> => {
    if (daemonPid !== undefined) throw new Error(`containerd ${daemonPid} is still running`);
    // Exactly how harness.ts starts it: cwd and PATH decide where the shim binaries come from.
    const logFd = openSync(path.join(cd.dir, 'containerd.log'), 'a');
    const daemon = spawn(CONTAINERD_BIN, ['--config', path.join(cd.dir, 'config.toml'), '--log-level', 'debug'], {
      cwd: cd.dir,
      env: { ...process.env, PATH: `${path.join(REPO_ROOT, 'bin')}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` },
      stdio: ['ignore', logFd, logFd],
    });
    closeSync(logFd);
    if (daemon.pid === undefined) throw new Error('failed to respawn containerd');
    daemonPid = daemon.pid;
    respawnedExit = new Promise((resolve) => daemon.on('exit', () => resolve()));
    const answers = async (): Promise<boolean> => (await cd.ctr(['version'], { allowFail: true, timeoutMs: 5_000 })).code === 0;
    await waitUntil('the restarted containerd answers', answers, 15_000);
  };

  return {
    cd,
    image,
    stopDaemon,
    startDaemon,
    async close() {
      const problems: string[] = [];
      if (respawnedExit !== undefined || daemonPid === undefined) {
        // The harness can no longer clean up through its own daemon handle; do it here.
        if (daemonPid === undefined) await startDaemon();
        const ids = (await cd.ctr(['containers', 'ls', '-q'], { allowFail: true })).stdout.split('\n').filter((l) => l !== '');
        for (const id of ids) await removeContainer(cd, id);
        problems.push(...(await findLeftovers(cd)));
        await stopDaemon().catch((err: unknown) => problems.push(String(err)));
        await respawnedExit;
      }
      problems.push(...(await cd.stop()));
      return problems;
    },
  };
}

describe.each(RUNTIMES)('shim processes with %s', (runtime) => {
  const names = runtimeNames(runtime);

  describe.concurrent('grouping', () => {
    it('serves two containers of one group from a single shim that exits with the last of them', async () => {
      const { cd, image } = bed();
      const group = uniqueId(`${names.prefix}group`);
      const [first, second] = [names.id('grp1'), names.id('grp2')];
      const run = (id: string): Promise<unknown> =>
        cd.ctr(['run', '-d', '--runtime', runtime, '--annotation', `${GROUP_ANNOTATION}=${group}`, image, id, 'sleep', '1000']);
      try {
        await run(first);
        await run(second);
        const firstTask = await waitForTaskStatus(cd, first, 'RUNNING');
        const secondTask = await waitForTaskStatus(cd, second, 'RUNNING');

        const daemons = await shimDaemonsFor(cd, [first, second]);
        expect(daemons.map((d) => d.cmdline)).toHaveLength(1);
        const shimPid = daemons[0]?.pid ?? -1;
        // Both inits were re-parented to that one shim, the subreaper that reaps them.
        expect(await parentPid(firstTask.pid)).toBe(shimPid);
        expect(await parentPid(secondTask.pid)).toBe(shimPid);
        const socket = await shimSocketOf(cd, first);
        expect(await shimSocketOf(cd, second)).toBe(socket);
        expect(await exists(socket)).toBe(true);

        await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', first]);
        await waitForTaskStatus(cd, first, 'STOPPED');
        expect((await waitForTaskStatus(cd, second, 'RUNNING', 1_000)).pid).toBe(secondTask.pid);
        const rm = await cd.ctr(['tasks', 'rm', first], { allowFail: true });
        expect(rm.stderr).toContain(`task ${first} exit with non-zero exit code 137`);
        await cd.ctr(['containers', 'rm', first]);

        // containerd's Shutdown after the first delete must not take the group's shim down.
        await delay(500);
        expect(isAlive(shimPid)).toBe(true);
        expect(await exists(socket)).toBe(true);
        expect((await cd.ctr(['tasks', 'exec', '--exec-id', 'after', second, 'echo', 'still-served'])).stdout).toBe('still-served\n');

        await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', second]);
        await waitForTaskStatus(cd, second, 'STOPPED');
        await cd.ctr(['tasks', 'rm', second], { allowFail: true });
        await cd.ctr(['containers', 'rm', second]);
        await waitUntil(`shim ${shimPid} exited`, () => !isAlive(shimPid));
        await waitUntil(`${socket} is removed`, async () => !(await exists(socket)), 2_000);
      } finally {
        await removeContainer(cd, first);
        await removeContainer(cd, second);
      }
    });
  });

  describe.concurrent('containerd restart', () => {
    it('keeps the task running across a containerd restart; it is then killed and deleted with its status', async () => {
      const rc = await startRestartableContainerd();
      const { cd, image } = rc;
      const id = names.id('restart');
      let problems: string[] = [];
      try {
        await cd.ctr(['run', '-d', '--runtime', runtime, image, id, 'sleep', '1000']);
        const before = await waitForTaskStatus(cd, id, 'RUNNING');
        const [shim] = await shimDaemonsFor(cd, [id]);
        expect(shim).toBeDefined();

        await rc.stopDaemon();
        await rc.startDaemon();
        expect(isAlive(shim?.pid ?? -1)).toBe(true);
        // containerd reconnected through <bundle>/address and asks the same shim for its state.
        expect(await waitForTaskStatus(cd, id, 'RUNNING', 5_000)).toEqual(before);
        expect((await cd.ctr(['tasks', 'exec', '--exec-id', 'after', id, 'echo', 'reconnected'])).stdout).toBe('reconnected\n');

        const events = await subscribeEvents(cd);
        try {
          await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
          const exit = await events.waitFor((e) => e.topic === '/tasks/exit' && e.body.container_id === id);
          expect(exit.body).toMatchObject({ id, pid: before.pid, exit_status: 137 });
        } finally {
          await events.stop();
        }
        await waitForTaskStatus(cd, id, 'STOPPED');
        const rm = await cd.ctr(['tasks', 'rm', id], { allowFail: true });
        expect(rm.stderr).toContain(`task ${id} exit with non-zero exit code 137`);
        await cd.ctr(['containers', 'rm', id]);
        await waitUntil(`shim ${shim?.pid ?? -1} exited`, () => !isAlive(shim?.pid ?? -1));
      } finally {
        problems = await rc.close();
      }
      expect(problems).toEqual([]);
    });

    it('keeps the exit status of a task that exits while containerd is down', async () => {
      const rc = await startRestartableContainerd();
      const { cd, image } = rc;
      const id = names.id('downexit');
      let problems: string[] = [];
      try {
        // The task exits 7 once a marker appears in its rootfs, which the host writes through
        // the bundle's rootfs mount while containerd is not there to receive the exit event.
        const script = 'while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 7';
        await cd.ctr(['run', '-d', '--runtime', runtime, image, id, 'sh', '-c', script]);
        const before = await waitForTaskStatus(cd, id, 'RUNNING');
        const [shim] = await shimDaemonsFor(cd, [id]);

        await rc.stopDaemon();
        await writeFile(path.join(bundleOf(cd, id), 'rootfs', 'tmp', 'go'), '');
        // Gone means exited and reaped by the shim, which still holds the status.
        await waitUntil(`task pid ${before.pid} exited`, () => !isAlive(before.pid));
        expect(isAlive(shim?.pid ?? -1)).toBe(true);
        await rc.startDaemon();
        expect((await waitForTaskStatus(cd, id, 'STOPPED', 5_000)).pid).toBe(before.pid);
        const rm = await cd.ctr(['tasks', 'rm', id], { allowFail: true });
        expect(rm.stderr).toContain(`task ${id} exit with non-zero exit code 7`);
        await cd.ctr(['containers', 'rm', id]);
      } finally {
        problems = await rc.close();
      }
      expect(problems).toEqual([]);
    });
  });

  it('leaves no task, container, mount or shim process behind', async () => {
    expect(await findLeftovers(bed().cd, names.prefix)).toEqual([]);
  });
});

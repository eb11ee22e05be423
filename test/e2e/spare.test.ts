/**
 * Spare daemons (src/common/spare.ts) through real containerd: the daemon `start` launches leaves a
 * spare behind, the next container is served by that very process (same pid, taking the identity a
 * launched daemon has: title, cwd, stderr, cgroup), a new spare replaces it, and spares never
 * outlive their usefulness. Everything else about adopted daemons is the whole e2e suite, which
 * runs once with spares (default) and once without (vitest project `e2e-without-spare`).
 */
import { promises as fs, readlinkSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  findLeftovers, removeContainer, shimProcesses, spareProcesses, startContainerd, uniqueId, waitForTaskStatus,
  type Containerd,
} from './harness';
import { importBusyboxImage } from './image';
import type { ProcessInfo } from './fixtures/system';
import { scratchDir, until } from './fixtures/suite';

const RUNTIME = 'io.containerd.tshim.v2';

const oneSpare = (cd: Containerd): Promise<ProcessInfo> =>
  until('exactly one spare', async () => {
    const spares = await spareProcesses(cd);
    return spares.length === 1 ? spares[0] : undefined;
  });

const shimOf = (cd: Containerd, id: string): Promise<ProcessInfo> =>
  until(`the shim of ${id}`, async () => (await shimProcesses(cd, id))[0]);

/** The path of the unix socket a process listens on as `fd`, from /proc/net/unix. */
function listeningSocketOf(pid: number, fd: number): string | undefined {
  const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[6] === inode) return fields[7];
  }
  return undefined;
}

function bundleOf(cd: Containerd, id: string): string {
  return path.join(cd.dir, 'state', 'io.containerd.runtime.v2.task', cd.namespace, id);
}

async function runtimeConfig(cd: Containerd, name: string, toml: string): Promise<string> {
  const file = path.join(await scratchDir(cd, name), 'runtime.toml');
  await fs.writeFile(file, toml);
  return file;
}

describe.skipIf(process.env['TSHIM_SPARE'] === '0')('spare daemons', () => {
  let cd: Containerd;
  let image: string;
  beforeAll(async () => {
    cd = await startContainerd();
    image = await importBusyboxImage(cd);
  });
  afterAll(async () => {
    const problems = await cd.stop();
    if (problems.length > 0) throw new Error(`teardown:\n${problems.join('\n')}`);
  });

  it('serves the next container from the spare the first start left, with a launched daemon\'s identity', async () => {
    expect(await spareProcesses(cd)).toEqual([]);
    const first = uniqueId('spare-a');
    const second = uniqueId('spare-b');
    const cgroupName = uniqueId('tshim-e2e-cg');
    const cgroupDir = path.join('/sys/fs/cgroup/memory', cgroupName);
    await fs.mkdir(cgroupDir);
    try {
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, first, 'sleep', '1000']);
      await waitForTaskStatus(cd, first, 'RUNNING');
      const launched = await shimOf(cd, first);
      const spare = await oneSpare(cd);
      expect(spare.pid).not.toBe(launched.pid);
      // This containerd logs at debug level and passed -debug to start: the spare preloads the logger.
      expect(spare.cmdline).toContain('-debug');

      // ShimCgroup travels with the second start: the adopted spare must be placed like a launched daemon.
      const config = await runtimeConfig(cd, second, `ShimCgroup = "/${cgroupName}"\n`);
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, '--runtime-config-path', config, image, second, 'sh', '-c', 'echo to-log >&2; sleep 1000']);
      await waitForTaskStatus(cd, second, 'RUNNING');
      const adopted = await shimOf(cd, second);
      expect(adopted.pid).toBe(spare.pid);
      expect(adopted.cmdline).toEqual(expect.arrayContaining(['-namespace', cd.namespace, '-id', second, '-address', cd.address]));
      // the same flags a launched daemon has, -publish-binary included
      const flagsOf = (argv: string[]): string[] => argv.slice(argv.indexOf('-namespace'));
      expect(flagsOf(adopted.cmdline)).toEqual(flagsOf(launched.cmdline).map((a) => (a === first ? second : a)));
      expect(readlinkSync(`/proc/${adopted.pid}/cwd`)).toBe(bundleOf(cd, second));
      expect(readlinkSync(`/proc/${adopted.pid}/fd/2`)).toBe(path.join(bundleOf(cd, second), 'log'));
      expect(readFileSync(`/proc/${adopted.pid}/cgroup`, 'utf8')).toContain(`:memory:/${cgroupName}\n`);
      const replacement = await oneSpare(cd);
      expect(replacement.pid).not.toBe(spare.pid);

      // The adopted daemon is a full daemon: exec, kill, exit status, delete, then it exits.
      const exec = await cd.ctr(['tasks', 'exec', '--exec-id', 'e1', second, 'sh', '-c', 'echo from-exec; exit 3'], { allowFail: true });
      expect(exec).toMatchObject({ code: 3, stdout: 'from-exec\n' });
      await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', second]);
      const stopped = await waitForTaskStatus(cd, second, 'STOPPED');
      expect(stopped.status).toBe('STOPPED');
      await removeContainer(cd, second);
      await until('the adopted daemon to exit', async () => ((await shimProcesses(cd, second)).length === 0 ? true : undefined));
    } finally {
      await removeContainer(cd, first);
      await removeContainer(cd, second);
      await until('shims gone', async () => ((await findLeftovers(cd, 'spare-', 0)).length === 0 ? true : undefined));
      await fs.rmdir(cgroupDir).catch(() => undefined);
    }
  });

  it('kills an adopted spare it cannot place and leaves nothing behind', async () => {
    const spare = await oneSpare(cd);
    const id = uniqueId('spare-bad');
    const config = await runtimeConfig(cd, id, 'ShimCgroup = "/tshim-e2e-no-such-cgroup"\n');
    const r = await cd.ctr(['run', '--rm', '--runtime', RUNTIME, '--runtime-config-path', config, image, id, 'true'], { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('failed to join shim cgroup');
    await until('the unplaced spare to die', async () => {
      try {
        await fs.access(`/proc/${spare.pid}`);
        return undefined;
      } catch {
        return true;
      }
    });
    expect(await findLeftovers(cd, 'spare-bad')).toEqual([]);
    await removeContainer(cd, id);
    // The next start launches a daemon itself, and a spare again.
    const next = uniqueId('spare-next');
    expect(await cd.ctr(['run', '--rm', '--runtime', RUNTIME, image, next, 'echo', 'ok'])).toMatchObject({ code: 0, stdout: 'ok\n' });
    await oneSpare(cd);
  });
});

describe.skipIf(process.env['TSHIM_SPARE'] === '0')('spare daemons, switched off or idle', () => {
  it('NoSpareDaemon keeps a runtime from adopting or leaving spares', async () => {
    const cd = await startContainerd();
    try {
      const image = await importBusyboxImage(cd);
      const id = uniqueId('nospare');
      const config = await runtimeConfig(cd, id, 'NoSpareDaemon = true\n');
      await cd.ctr(['run', '-d', '--runtime', RUNTIME, '--runtime-config-path', config, image, id, 'sleep', '1000']);
      await waitForTaskStatus(cd, id, 'RUNNING');
      const shim = await shimOf(cd, id);
      expect(shim.cmdline).not.toContain('-spare');
      expect(await spareProcesses(cd)).toEqual([]);
      await removeContainer(cd, id);
    } finally {
      const problems = await cd.stop();
      expect(problems).toEqual([]);
    }
  });

  it('an idle spare retires after TSHIM_SPARE_IDLE_SECONDS and removes its socket', async () => {
    // Long enough that the spare is seen before it retires even on a very busy machine.
    const cd = await startContainerd({ env: { TSHIM_SPARE_IDLE_SECONDS: '8' } });
    try {
      const image = await importBusyboxImage(cd);
      expect(await cd.ctr(['run', '--rm', '--runtime', RUNTIME, image, uniqueId('idle'), 'true'])).toMatchObject({ code: 0 });
      const spare = await oneSpare(cd);
      const socket = listeningSocketOf(spare.pid, 3);
      expect(socket).toMatch(/^\/run\/containerd\/s\/tshim-spare-[0-9a-f]{40}$/);
      await until('the idle spare to retire', async () => ((await spareProcesses(cd)).length === 0 ? true : undefined), 60_000);
      await expect(fs.access(socket as string)).rejects.toThrow();
    } finally {
      const problems = await cd.stop();
      expect(problems).toEqual([]);
    }
  });
});

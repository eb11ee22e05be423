/**
 * Operations on a running task, per runtime: exec (plain, terminal, duplicate id), ps, pause and
 * resume, kill (default signal, --all) and metrics. Each case starts its own long-running
 * container so the cases can run concurrently.
 */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { findLeftovers, removeContainer, RUNTIMES, waitForTaskStatus, type BackgroundCtr, type Containerd, type TaskRow } from './harness';
import { runtimeNames, stripCr, useTestBed } from './fixtures/suite';

const bed = useTestBed();

/** Starts `sleep 1000` detached and returns its RUNNING row. */
async function startSleeper(cd: Containerd, runtime: string, image: string, id: string): Promise<TaskRow> {
  await cd.ctr(['run', '-d', '--runtime', runtime, image, id, 'sleep', '1000']);
  return waitForTaskStatus(cd, id, 'RUNNING');
}

/** `ctr task ps`: PID INFO rows; INFO is "-" for init and mentions ExecID for execs (runc shim). */
async function taskPids(cd: Containerd, id: string): Promise<{ pid: number; info: string }[]> {
  const r = await cd.ctr(['tasks', 'ps', id]);
  return r.stdout
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const [pid, ...info] = l.trim().split(/\s+/);
      return { pid: Number(pid), info: info.join(' ') };
    });
}

async function hostArgv(pid: number): Promise<string[]> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8');
  return raw.split('\0').filter((a) => a !== '');
}

describe.each(RUNTIMES)('tasks with %s', (runtime) => {
  const names = runtimeNames(runtime);

  describe.concurrent('exec', () => {
    it('runs a process in the container and returns its output and exit code', async () => {
      const { cd, image } = bed();
      const id = names.id('exec');
      try {
        await startSleeper(cd, runtime, image, id);
        const r = await cd.ctr(['tasks', 'exec', '--exec-id', 'e1', id, 'sh', '-c', 'echo in-exec; echo exec-err >&2; exit 3'], { allowFail: true });
        expect(r).toMatchObject({ code: 3, stdout: 'in-exec\n' });
        expect(r.stderr).toContain('exec-err');
        // The finished exec id is free again once ctr has deleted the process.
        const again = await cd.ctr(['tasks', 'exec', '--exec-id', 'e1', id, 'id', '-u']);
        expect(again.stdout).toBe('0\n');
      } finally {
        await removeContainer(cd, id);
      }
    });

    it('refuses a second exec with the id of one still running', async () => {
      const { cd, image } = bed();
      const id = names.id('dupexec');
      try {
        await startSleeper(cd, runtime, image, id);
        await cd.ctr(['tasks', 'exec', '-d', '--exec-id', 'dup', id, 'sleep', '1000']);
        const second = await cd.ctr(['tasks', 'exec', '--exec-id', 'dup', id, 'true'], { allowFail: true });
        expect(second.code).not.toBe(0);
        expect(second.stderr).toMatch(/dup.*already exists/);
        // The first exec is untouched by the refused one.
        expect((await taskPids(cd, id)).filter((p) => p.info.includes('dup'))).toHaveLength(1);
      } finally {
        await removeContainer(cd, id);
      }
    });

    it('runs an exec on a terminal', async () => {
      const { cd, image } = bed();
      const id = names.id('ttyexec');
      try {
        await startSleeper(cd, runtime, image, id);
        const script = 'tty; i=0; while [ -z "$(stty size 2>/dev/null)" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; stty size; exit 2';
        const r = await cd.ctrInTerminal(['tasks', 'exec', '-t', '--exec-id', 't1', id, 'sh', '-c', script], {
          rows: 21, cols: 77, allowFail: true,
        });
        const out = stripCr(r.stdout);
        expect(out).toMatch(/^\/dev\/pts\/\d+$/m);
        expect(out).toMatch(/^21 77$/m);
        expect(r.code).toBe(2);
      } finally {
        await removeContainer(cd, id);
      }
    });
  });

  describe.concurrent('ps, pause, metrics', () => {
    it('lists the init and exec pids with ctr task ps', async () => {
      const { cd, image } = bed();
      const id = names.id('ps');
      try {
        const init = await startSleeper(cd, runtime, image, id);
        await cd.ctr(['tasks', 'exec', '-d', '--exec-id', 'side', id, 'sleep', '999']);
        const pids = await taskPids(cd, id);
        expect(pids).toHaveLength(2);
        expect(pids.find((p) => p.pid === init.pid)?.info).toBe('-');
        const exec = pids.find((p) => p.info.includes('side'));
        expect(exec).toBeDefined();
        // Host pids: the exec pid is the real `sleep 999` process.
        expect(await hostArgv(exec?.pid ?? -1)).toEqual(['sleep', '999']);
        expect(await hostArgv(init.pid)).toEqual(['sleep', '1000']);
      } finally {
        await removeContainer(cd, id);
      }
    });

    it('pauses and resumes the task', async () => {
      const { cd, image } = bed();
      const id = names.id('pause');
      try {
        await startSleeper(cd, runtime, image, id);
        await cd.ctr(['tasks', 'pause', id]);
        await waitForTaskStatus(cd, id, 'PAUSED', 2_000);
        // ctr puts the container in cgroup /<namespace>/<id>; the host is cgroup v1.
        const freezerState = `/sys/fs/cgroup/freezer/${cd.namespace}/${id}/freezer.state`;
        expect((await readFile(freezerState, 'utf8')).trim()).toBe('FROZEN');
        await cd.ctr(['tasks', 'resume', id]);
        await waitForTaskStatus(cd, id, 'RUNNING', 2_000);
        expect((await readFile(freezerState, 'utf8')).trim()).toBe('THAWED');
        // A resumed container runs new processes again.
        expect((await cd.ctr(['tasks', 'exec', '--exec-id', 'after', id, 'echo', 'alive'])).stdout).toBe('alive\n');
      } finally {
        await removeContainer(cd, id);
      }
    });

    it('reports cgroup v1 metrics with memory and pids', async () => {
      const { cd, image } = bed();
      const id = names.id('metrics');
      try {
        await startSleeper(cd, runtime, image, id);
        const table = await cd.ctr(['tasks', 'metrics', id]);
        expect(table.stdout).toMatch(/^memory\.usage_in_bytes\s+[1-9]\d*\s*$/m);
        expect(table.stdout).toMatch(/^pids\.current\s+1\s*$/m);
        const json = JSON.parse((await cd.ctr(['tasks', 'metrics', '--format', 'json', id])).stdout) as {
          pids?: { current?: number };
          memory?: { usage?: { usage?: number } };
        };
        expect(json.pids?.current).toBe(1);
        expect(json.memory?.usage?.usage).toBeGreaterThan(0);
      } finally {
        await removeContainer(cd, id);
      }
    });
  });

  describe.concurrent('kill', () => {
    it('sends SIGTERM by default', async () => {
      const { cd, image } = bed();
      const id = names.id('sigterm');
      // busybox sh as pid 1 ignores SIGTERM unless it traps it; the trap proves delivery.
      const script = 'trap "echo got-term; exit 42" TERM; echo ready; while true; do sleep 0.1; done';
      const bg = cd.ctrBackground(['run', '--rm', '--runtime', runtime, image, id, 'sh', '-c', script]);
      try {
        await bg.waitForOutput('ready\n');
        await cd.ctr(['tasks', 'kill', id]);
        const r = await bg.exited;
        expect(r).toMatchObject({ code: 42, stdout: 'ready\ngot-term\n' });
      } finally {
        await bg.stop('SIGKILL');
        await removeContainer(cd, id);
      }
    });

    it('signals every process of the container with --all', async () => {
      const { cd, image } = bed();
      const id = names.id('killall');
      let heldExec: BackgroundCtr | undefined;
      try {
        await startSleeper(cd, runtime, image, id);
        // `exec` keeps the pid count exact: ps lists every process in the container's cgroup.
        heldExec = cd.ctrBackground(['tasks', 'exec', '--exec-id', 'held', id, 'sh', '-c', 'echo up; exec sleep 1000']);
        await heldExec.waitForOutput('up\n');
        await cd.ctr(['tasks', 'exec', '-d', '--exec-id', 'bystander', id, 'sleep', '1000']);
        expect(await taskPids(cd, id)).toHaveLength(3);
        await cd.ctr(['tasks', 'kill', '--all', '-s', 'SIGKILL', id]);
        expect((await heldExec.exited).code).toBe(137);
        await waitForTaskStatus(cd, id, 'STOPPED');
        expect(await taskPids(cd, id)).toEqual([]);
      } finally {
        await heldExec?.stop('SIGKILL');
        await removeContainer(cd, id);
      }
    });
  });

  it('leaves no task, container, mount or shim process behind', async () => {
    expect(await findLeftovers(bed().cd, names.prefix)).toEqual([]);
  });
});

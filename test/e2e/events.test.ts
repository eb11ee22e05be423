/**
 * The task event stream as `ctr events` sees it, per runtime: topics, their order and the ids,
 * pids and exit statuses they carry.
 */
import { describe, expect, it } from 'vitest';
import { findLeftovers, removeContainer, RUNTIMES, waitForTaskStatus } from './harness';
import { subscribeEvents, type ContainerdEvent } from './fixtures/events';
import { runtimeNames, useTestBed } from './fixtures/suite';

const bed = useTestBed();

const summary = (events: ContainerdEvent[]): string[] =>
  events.map((e) => {
    const proc = e.body.exec_id ?? (e.topic === '/tasks/exit' ? e.body.id : undefined);
    return proc === undefined ? e.topic : `${e.topic} ${String(proc)}`;
  });

describe.each(RUNTIMES)('events with %s', (runtime) => {
  const names = runtimeNames(runtime);

  describe.concurrent('task lifecycle', () => {
    it('publishes create, start, exit and delete in order for ctr run', async () => {
      const { cd, image } = bed();
      const id = names.id('evrun');
      const events = await subscribeEvents(cd);
      try {
        const r = await cd.ctr(['run', '--rm', '--runtime', runtime, image, id, 'sh', '-c', 'exit 3'], { allowFail: true });
        expect(r.code).toBe(3);
        await events.waitFor((e) => e.topic === '/tasks/delete' && e.body.container_id === id);
        const seen = events.forContainer(id);
        expect(seen.map((e) => e.topic)).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
        const [create, start, exit, del] = seen;
        const pid = start?.body.pid;
        expect(typeof pid).toBe('number');
        expect(create?.body.pid).toBe(pid);
        expect(create?.body.bundle).toBe(`${cd.dir}/state/io.containerd.runtime.v2.task/${cd.namespace}/${id}`);
        expect(exit?.body).toMatchObject({ id, pid, exit_status: 3 });
        expect(del?.body).toMatchObject({ pid, exit_status: 3 });
        expect(typeof exit?.body.exited_at).toBe('string');
      } finally {
        await events.stop();
        await removeContainer(cd, id);
      }
    });

    it('publishes exec, pause and resume events, and exec exits before the init exit', async () => {
      const { cd, image } = bed();
      const id = names.id('evexec');
      const events = await subscribeEvents(cd);
      try {
        await cd.ctr(['run', '-d', '--runtime', runtime, image, id, 'sleep', '1000']);
        await waitForTaskStatus(cd, id, 'RUNNING');
        const exec = await cd.ctr(['tasks', 'exec', '--exec-id', 'e1', id, 'sh', '-c', 'exit 5'], { allowFail: true });
        expect(exec.code).toBe(5);
        await cd.ctr(['tasks', 'exec', '-d', '--exec-id', 'e2', id, 'sleep', '1000']);
        await cd.ctr(['tasks', 'pause', id]);
        await cd.ctr(['tasks', 'resume', id]);
        await cd.ctr(['tasks', 'kill', '--all', '-s', 'SIGKILL', id]);
        await waitForTaskStatus(cd, id, 'STOPPED');
        await cd.ctr(['tasks', 'rm', id]);
        await events.waitFor((e) => e.topic === '/tasks/delete' && e.body.container_id === id);

        const seen = events.forContainer(id);
        expect(summary(seen)).toEqual([
          '/tasks/create',
          '/tasks/start',
          '/tasks/exec-added e1',
          '/tasks/exec-started e1',
          `/tasks/exit e1`,
          '/tasks/exec-added e2',
          '/tasks/exec-started e2',
          '/tasks/paused',
          '/tasks/resumed',
          '/tasks/exit e2',
          `/tasks/exit ${id}`,
          '/tasks/delete',
        ]);
        const byTopic = (topic: string, proc: string): ContainerdEvent | undefined =>
          seen.find((e) => e.topic === topic && (e.body.exec_id === proc || e.body.id === proc));
        expect(byTopic('/tasks/exit', 'e1')?.body).toMatchObject({ exit_status: 5, pid: byTopic('/tasks/exec-started', 'e1')?.body.pid });
        expect(byTopic('/tasks/exit', 'e2')?.body).toMatchObject({ exit_status: 137 });
        expect(byTopic('/tasks/exit', id)?.body).toMatchObject({ exit_status: 137, pid: seen[1]?.body.pid });
      } finally {
        await events.stop();
        await removeContainer(cd, id);
      }
    });
  });

  it('leaves no task, container, mount or shim process behind', async () => {
    expect(await findLeftovers(bed().cd, names.prefix)).toEqual([]);
  });
});

/**
 * containerd restarted under running pods, with every CRI handler at once (a restart affects the
 * whole daemon, so this file has a test bed of its own): afterwards CRI lists the pods READY and
 * their containers RUNNING, served by the same shim processes, ExecSync works, new containers
 * start, and an exit after the restart is reported with its code.
 */
import { describe, expect, it } from 'vitest';
import {
  containerLogPath, CRI_HANDLERS, execStream, podLeftovers, podShims, removePod, runContainer, runPod, useCriTestBed,
  waitContainerState, waitForLog, type Pod,
} from './fixtures/cri-bed';

const bed = useCriTestBed();

describe('CRI across a containerd restart', () => {
  it(`keeps pods of ${CRI_HANDLERS.join(', ')} running and reports later exits`, async () => {
    const b = bed();
    interface Running {
      handler: string;
      pod: Pod;
      waiter: string;
      shims: number[];
    }
    const running: Running[] = [];
    try {
      for (const handler of CRI_HANDLERS) {
        const pod = await runPod(b, handler, `restart-${handler}`);
        // Exits 42 once /tmp/exit exists: the test decides when, after the restart.
        const waiter = await runContainer(b, pod, 'waiter', {
          command: ['sh', '-c', 'echo up; while [ ! -e /tmp/exit ]; do sleep 0.1; done; echo leaving; exit 42'],
        });
        await waitForLog(containerLogPath(pod, 'waiter'), 'up');
        const shims = await podShims(b, pod.id);
        expect(shims, handler).toHaveLength(1);
        running.push({ handler, pod, waiter, shims });
      }

      await b.restart();

      for (const r of running) {
        expect((await b.cri.listPodSandbox({ id: r.pod.id })).map((p) => p.state), r.handler).toEqual(['SANDBOX_READY']);
        expect((await b.cri.listContainers({ podSandboxId: r.pod.id })).map((c) => [c.id, c.state]), r.handler).toEqual([[r.waiter, 'CONTAINER_RUNNING']]);
        // The same shim serves the pod: containerd reconnected instead of starting another.
        expect(await podShims(b, r.pod.id), r.handler).toEqual(r.shims);
        const hello = await b.cri.execSync(r.waiter, ['echo', 'still-here'], 30);
        expect({ out: hello.stdout.toString(), code: hello.exitCode }, r.handler).toEqual({ out: 'still-here\n', code: 0 });
        expect(await execStream(b, r.waiter, ['sh', '-c', 'echo streamed; exit 3']), r.handler).toMatchObject({ stdout: 'streamed\n', exitCode: 3 });

        const late = await runContainer(b, r.pod, 'late', { command: ['sh', '-c', 'echo late-start'] });
        expect(await waitContainerState(b, late, 'CONTAINER_EXITED'), r.handler).toMatchObject({ exitCode: 0, reason: 'Completed' });
      }

      for (const r of running) {
        const touched = await b.cri.execSync(r.waiter, ['touch', '/tmp/exit'], 30);
        expect(touched.exitCode, r.handler).toBe(0);
      }
      for (const r of running) {
        expect(await waitContainerState(b, r.waiter, 'CONTAINER_EXITED'), r.handler).toMatchObject({ exitCode: 42, reason: 'Error' });
        await waitForLog(containerLogPath(r.pod, 'waiter'), 'leaving');
      }
    } finally {
      for (const r of running) await removePod(b, r.pod.id);
    }
    for (const r of running) expect(await podLeftovers(b, r.pod.id, [r.waiter]), r.handler).toEqual([]);
  });
});

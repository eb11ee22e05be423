/**
 * Checkpoint and live restore through ctr 1.6 (`ctr containers checkpoint --task` /
 * `ctr containers restore --live`; 1.6 has no `ctr run --checkpoint`). Needs a working CRIU:
 * when `criu check` fails (on this machine it does, on the vDSO) the case is skipped with
 * CRIU's own reason.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { findLeftovers, removeContainer, RUNTIMES, waitForTaskStatus, type Containerd } from './harness';
import { delay } from './fixtures/system';
import { runtimeNames, useTestBed } from './fixtures/suite';

const bed = useTestBed();
const execFileAsync = promisify(execFile);

/** undefined when CRIU works here, else the lines CRIU gave as the reason. */
async function criuUnusableReason(): Promise<string | undefined> {
  try {
    await execFileAsync('criu', ['check'], { timeout: 30_000 });
    return undefined;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message?: string };
    const text = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim() || (e.message ?? String(err));
    const errors = text.split('\n').filter((l) => /error/i.test(l) && !/exited, status=/.test(l));
    return (errors.length > 0 ? errors : text.split('\n')).slice(-4).join(' | ');
  }
}

async function readCounter(cd: Containerd, id: string, execId: string): Promise<number> {
  const r = await cd.ctr(['tasks', 'exec', '--exec-id', execId, id, 'cat', '/tmp/count']);
  return Number(r.stdout.trim());
}

describe.each(RUNTIMES)('checkpoint with %s', (runtime) => {
  const names = runtimeNames(runtime);

  it('restores a checkpointed task that continues from its saved memory state', async (ctx) => {
    const criuProblem = await criuUnusableReason();
    if (criuProblem !== undefined) {
      const note = `criu check fails on this host: ${criuProblem}`;
      // The default reporter only counts skips; the warning puts the reason in every run's output.
      console.warn(`SKIP checkpoint/restore (${runtime}): ${note}`);
      ctx.skip(note);
    }

    const { cd, image } = bed();
    const id = names.id('ckpt');
    const ref = `docker.io/tshim/checkpoint:${id}`;
    // The counter lives in shell memory; the file only reports it. A restored process continues
    // from the saved value, a freshly started one would count from 1 again.
    const counter = 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done';
    try {
      await cd.ctr(['run', '-d', '--runtime', runtime, image, id, 'sh', '-c', counter]);
      await waitForTaskStatus(cd, id, 'RUNNING');
      for (let n = 0; (await readCounter(cd, id, `r${n}`)) < 20; n++) await delay(200);

      await cd.ctr(['containers', 'checkpoint', '--task', '--rw', id, ref], { timeoutMs: 60_000 });
      const afterCheckpoint = await readCounter(cd, id, 'pre');
      expect(afterCheckpoint).toBeGreaterThanOrEqual(20);

      await cd.ctr(['tasks', 'rm', '-f', id]);
      await cd.ctr(['containers', 'rm', id]);
      await cd.ctr(['containers', 'restore', '--live', '--rw', id, ref], { timeoutMs: 60_000 });
      await waitForTaskStatus(cd, id, 'RUNNING');
      await delay(500);
      expect(await readCounter(cd, id, 'post')).toBeGreaterThanOrEqual(20);
    } finally {
      await removeContainer(cd, id);
      await cd.ctr(['images', 'rm', ref], { allowFail: true });
    }
  });

  it('leaves no task, container, mount or shim process behind', async () => {
    expect(await findLeftovers(bed().cd, names.prefix)).toEqual([]);
  });
});

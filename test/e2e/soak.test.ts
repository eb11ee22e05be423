/**
 * Soak and storms, bounded (issue #9 §4; `npm run soak` is the full-size run): container cycles and
 * an exec storm through ONE grouped tshim daemon (annotation io.containerd.runc.v2.group), then a
 * container that spews output while its reader vanishes and containerd restarts.
 *
 * Leak checks compare the daemon against itself after a warm-up cycle (fds by kind, children,
 * zombies) and the host's mounts under containerd's private dir; nothing depends on timing: each
 * step waits for ctr to finish, and the spewing container is read until its own END marker.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { codec } from '../../src/common/proto';
import { TASK_SERVICE_V2, type ConnectResponse } from '../../src/common/types';
import { listMountsUnder } from './fixtures/system';
import { scratchDir, useTestBed } from './fixtures/suite';
import type { Containerd } from './harness';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const soak = require('../../bench/lib/soak.js') as {
  sampleShim(pid: number): { fds: number; sockets: number; pipes: number; rssKiB: number; privateDirtyKiB: number; children: number; zombies: number };
  runGrouped(ctr: CtrFn, o: { runtime: string; image: string; group: string; id: string; fifoDir: string; command?: string[] }): Promise<void>;
  cycle(ctr: CtrFn, o: { runtime: string; image: string; group: string; id: string; fifoDir: string; status: number }): Promise<void>;
  execStorm(ctr: CtrFn, o: { id: string; total: number; concurrency: number; fifoDir: string; prefix?: string }): Promise<{ checked: number; wrong: string[] }>;
  execStatus(ctr: CtrFn, id: string, execId: string, status: number, fifoDir: string): Promise<number | null>;
};
type CtrFn = (args: string[], timeoutMs?: number) => Promise<{ code: number | null; stdout: string | Buffer; stderr: string | Buffer }>;

const RUNTIME = 'io.containerd.tshim.v2';
const CYCLES = 12;
const STORM = 100;
const STORM_CONCURRENCY = 20;

const bed = useTestBed();

function ctrOf(cd: Containerd): CtrFn {
  return (args, timeoutMs) => cd.ctr(args, { timeoutMs: timeoutMs ?? 120_000, allowFail: true });
}

function bundleFile(cd: Containerd, id: string, file: string): string {
  return path.join(cd.dir, 'state', 'io.containerd.runtime.v2.task', cd.namespace, id, file);
}

async function shimPidOf(cd: Containerd, id: string): Promise<number> {
  const address = fs.readFileSync(bundleFile(cd, id, 'address'), 'utf8').trim();
  const client = await TtrpcClient.connect(address, { timeoutMs: 10_000 });
  try {
    const reply = await client.call(TASK_SERVICE_V2, 'Connect', codec<{ id: string }>('containerd.task.v2.ConnectRequest').encode({ id }), { timeoutMs: 10_000 });
    return codec<ConnectResponse>('containerd.task.v2.ConnectResponse').decode(reply).shimPid;
  } finally {
    client.close();
  }
}

/** FIFO paths under `dir` that the daemon holds open. */
function fifosHeld(pid: number, dir: string): string[] {
  const held: string[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target.startsWith(dir)) held.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return held;
}

describe('soak and storms through one grouped tshim daemon', () => {
  it(`${CYCLES} create/start/exec/kill/delete cycles and a ${STORM}-exec storm leak no fds, processes, mounts, sockets or FIFOs`, async () => {
    const { cd, image } = bed();
    const ctr = ctrOf(cd);
    const fifoDir = await scratchDir(cd, 'soak-fifo');
    const group = `soak-${process.pid}`;
    await soak.runGrouped(ctr, { runtime: RUNTIME, image, group, id: 'soak-anchor', fifoDir });
    const pid = await shimPidOf(cd, 'soak-anchor');
    const socket = fs.readFileSync(bundleFile(cd, 'soak-anchor', 'address'), 'utf8').trim().replace(/^unix:\/\//, '');
    await soak.cycle(ctr, { runtime: RUNTIME, image, group, id: 'soak-warmup', fifoDir, status: 1 });
    const before = soak.sampleShim(pid);
    const mountsBefore = await listMountsUnder(cd.dir);

    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < CYCLES; i = next++) {
        await soak.cycle(ctr, { runtime: RUNTIME, image, group, id: `soak-c${i}`, fifoDir, status: (i % 254) + 1 });
        // Every container of the group went to the same daemon.
        expect(await shimPidOf(cd, 'soak-anchor')).toBe(pid);
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    // ctr returns once containerd has its answer; the daemon may still be closing the last
    // container's FIFOs, so the sample waits (bounded) until it holds no more than before.
    const settled = async (): Promise<ReturnType<typeof soak.sampleShim>> => {
      await waitFor(() => {
        const s = soak.sampleShim(pid);
        return s.fds <= before.fds && s.children === 1;
      }, 15_000);
      return soak.sampleShim(pid);
    };
    const afterCycles = await settled();

    const storm = await soak.execStorm(ctr, { id: 'soak-anchor', total: STORM, concurrency: STORM_CONCURRENCY, fifoDir });
    const afterStorm = await settled();

    expect(storm.wrong).toEqual([]);
    expect(storm.checked).toBe(STORM);
    for (const after of [afterCycles, afterStorm]) {
      expect({ fds: after.fds <= before.fds, sockets: after.sockets <= before.sockets, pipes: after.pipes <= before.pipes }, JSON.stringify({ before, after }))
        .toEqual({ fds: true, sockets: true, pipes: true });
      // Only the anchor's init is left under the daemon, and nothing unreaped.
      expect({ children: after.children, zombies: after.zombies }).toEqual({ children: 1, zombies: 0 });
    }
    expect(await listMountsUnder(cd.dir)).toEqual(mountsBefore);
    // The daemon holds only the anchor's FIFOs (stdout/stderr and its extra readers), none of a
    // deleted container's or a finished exec's.
    expect(fifosHeld(pid, fifoDir).every((f) => !/soak-c\d|soak-warmup/.test(f))).toBe(true);
    const anchorFifos = fifosHeld(pid, fifoDir).length;
    expect(anchorFifos).toBeLessThanOrEqual(before.pipes);

    // With its last container gone the daemon exits and removes its socket.
    expect((await cd.ctr(['task', 'rm', '-f', 'soak-anchor'])).code).toBe(0);
    expect((await cd.ctr(['container', 'rm', 'soak-anchor'])).code).toBe(0);
    const gone = await waitFor(() => !fs.existsSync(`/proc/${pid}`) || /^State:\s+Z/m.test(readStatus(pid)), 30_000);
    expect(gone, `grouped daemon ${pid} still running after its last container`).toBe(true);
    expect(fs.existsSync(socket)).toBe(false);
    expect(await listMountsUnder(cd.dir)).toEqual(mountsBefore.filter((m) => !m.includes('soak-anchor')));
  }, 600_000);

  it('a spewing container whose reader vanished blocks nothing, and its FIFO contents reach the reader that attaches after containerd restarts', async () => {
    const { cd, image } = bed();
    const ctr = ctrOf(cd);
    const fifoDir = await scratchDir(cd, 'spew-fifo');
    const group = `spew-${process.pid}`;
    // ~6.9 MB: far more than the FIFO and the shim's pipes hold (1 MiB each) and than the vanished
    // ctr can read in its short life
    const LINES = 1_000_000;
    // ctr run -d copies the FIFO to its stdout and exits right after Start: a reader that vanishes.
    const detached = await cd.ctr(['run', '-d', '--runtime', RUNTIME, '--fifo-dir', fifoDir, '--annotation', `io.containerd.runc.v2.group=${group}`,
      image, 'spew', 'sh', '-c', `seq 0 ${LINES - 1}; echo END; exec sleep 100000`]);
    expect(detached.code, detached.stderr).toBe(0);
    await soak.runGrouped(ctr, { runtime: RUNTIME, image, group, id: 'spew-other', fifoDir });
    expect(await shimPidOf(cd, 'spew-other')).toBe(await shimPidOf(cd, 'spew'));

    // Nobody reads 'spew' now; its output fills every buffer and its writer blocks. The Task API
    // and the other container of the same daemon do not.
    expect((await cd.ctr(['task', 'ps', 'spew'])).code).toBe(0);
    expect(await soak.execStatus(ctr, 'spew', 'probe1', 7, fifoDir)).toBe(7);
    expect(await soak.execStatus(ctr, 'spew-other', 'probe2', 9, fifoDir)).toBe(9);
    const echo = await cd.ctr(['task', 'exec', '--fifo-dir', fifoDir, '--exec-id', 'probe3', 'spew-other', 'sh', '-c', 'echo hello-from-other']);
    expect({ code: echo.code, out: echo.stdout.trim() }).toEqual({ code: 0, out: 'hello-from-other' });

    await cd.restart();
    // containerd reconnected to the daemon; a new reader attaches to the FIFOs the shim kept.
    const attach = cd.ctrBackground(['task', 'attach', 'spew']);
    try {
      const out = (await attach.waitForOutput(/^END$/m, 240_000)).replace(/\r/g, '');
      const lines = out.split('\n');
      const endAt = lines.indexOf('END');
      // The first line may be the tail of one the vanished reader took half of.
      const numbers = lines.slice(1, endAt).map(Number);
      expect(numbers.length).toBeGreaterThan(0);
      const first = numbers[0]!;
      const broken = numbers.findIndex((n, i) => n !== first + i);
      expect(broken, `sequence broken at ${broken}: ${numbers.slice(Math.max(0, broken - 2), broken + 2).join(',')}`).toBe(-1);
      expect(numbers[numbers.length - 1]).toBe(LINES - 1);
      // What was held while nobody read was kept, not dropped: nothing the vanished reader printed
      // comes again, and the new reader gets far more than a default pipe's 64 KiB (~9,000 lines).
      // How much the vanished ctr read into its own memory before exiting depends on timing (and
      // on the shim's 1 MiB pipes, which let it read faster), so where the new reader starts is
      // not bounded further.
      const detachedNumbers = detached.stdout.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
      const lastSeenBefore = detachedNumbers.length > 0 ? detachedNumbers[detachedNumbers.length - 1]! : -1;
      expect(first).toBeGreaterThan(lastSeenBefore);
      expect(numbers.length).toBeGreaterThan(20_000);
    } finally {
      await attach.stop('SIGKILL');
    }
    // The Task API still answers for both, after all that.
    expect(await soak.execStatus(ctr, 'spew', 'probe4', 3, fifoDir)).toBe(3);
    for (const id of ['spew', 'spew-other']) {
      expect((await cd.ctr(['task', 'rm', '-f', id])).code).toBe(0);
      expect((await cd.ctr(['container', 'rm', id])).code).toBe(0);
    }
  }, 600_000);
});

function readStatus(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return '';
  }
}

/** Polls `check` until true or `timeoutMs` (an upper bound for a busy machine, not a timing assumption). */
async function waitFor(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

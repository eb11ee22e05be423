import { spawn as rawSpawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { setChildSubreaper } from '../../src/linux/libc';
import { Reaper, UNKNOWN_EXIT_STATUS, type WaitResult } from '../../src/linux/reaper';
import { isNodeChild, run, spawnTracked } from '../../src/linux/spawn';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A FIFO the test holds open read-write and hands to `sh` as fd 3. Processes started with
 * `read x <&3` block until the test writes one line each, so no exit can happen before the test has
 * decided it should — never a sleep racing the setup.
 */
class Gate {
  private constructor(
    readonly fd: number,
    private readonly dir: string,
  ) {}

  static async open(): Promise<Gate> {
    const dir = mkdtempSync(path.join(tmpdir(), 'reaper-gate-'));
    const fifo = path.join(dir, 'gate');
    const made = await run('mkfifo', [fifo]);
    expect(made.code).toBe(0);
    // O_RDWR: opening never blocks, and the FIFO never reports EOF while we hold it.
    return new Gate(openSync(fifo, 'r+'), dir);
  }

  /** Lets `count` gated processes go on; each `read` consumes exactly one line. */
  release(count = 1): void {
    writeSync(this.fd, '\n'.repeat(count));
  }

  close(): void {
    closeSync(this.fd);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Starts `script` in the background of a short-lived sh (fd 3 = the gate) and returns the background
 * pids it echoes. Once sh exits, those processes are orphans re-parented to this (subreaper) test
 * process, exactly what happens to a container init after `runc create` exits.
 *
 * The background jobs must not exit while sh still runs: dash reaps a finished background job with
 * wait4(-1, WNOHANG) at its next fork, and that exit would then never reach us (the reaper reports
 * 255 for it). So scripts gate every job's exit on `read x <&3`.
 */
async function orphans(script: string, gate: Gate): Promise<number[]> {
  const out = await run('sh', ['-c', script], { extraFds: [gate.fd] });
  expect(out.code).toBe(0);
  return out.stdout
    .toString()
    .split('\n')
    .filter(Boolean)
    .map((line) => Number(line));
}

/** A background job that waits for the gate, then exits with `status`. */
const gatedJob = (status: string | number): string => `(read x <&3; exit ${status}) >/dev/null 2>&1 & echo $!`;

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function isZombieOrAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

let reaper: Reaper;
let strays: WaitResult[];
let gate: Gate;

beforeEach(async () => {
  strays = [];
  reaper = new Reaper({ onStray: (r) => strays.push(r) });
  reaper.start();
  gate = await Gate.open();
});

afterEach(() => {
  reaper.stop();
  gate.close();
});

describe('Reaper', () => {
  it('delivers the exit code of a re-parented process', async () => {
    const [pid] = await orphans(gatedJob(7), gate);
    const watch = reaper.watch(pid as number);
    gate.release();
    const result = await watch;
    expect(result).toEqual({ pid, status: 7, signaled: false });
    expect(isZombieOrAlive(pid as number)).toBe(false);
    expect(reaper.watchedCount).toBe(0);
  });

  it('reports 128+signal for a killed process, with one promise per pid', async () => {
    const [pid] = await orphans(gatedJob(0), gate);
    const first = reaper.watch(pid as number);
    expect(reaper.watch(pid as number)).toBe(first);
    expect(reaper.watchedCount).toBe(1);
    process.kill(pid as number, 'SIGKILL');
    expect(await first).toEqual({ pid, status: 137, signaled: true, signal: 9 });
  });

  it('delivers an exit that happened before watch() — zombie still unreaped', async () => {
    // A reaper that is not started never sweeps, so the zombie waits for watch() itself.
    const idle = new Reaper();
    setChildSubreaper();
    reaper.stop();
    const [pid] = await orphans(gatedJob(5), gate);
    gate.release();
    await until('zombie', () => isZombie(pid as number));
    const result = await idle.watch(pid as number);
    expect(result).toEqual({ pid, status: 5, signaled: false });
    expect(isZombieOrAlive(pid as number)).toBe(false);
  });

  it('delivers an exit reaped by the stray sweep before watch() was called, exactly once', async () => {
    const [pid] = await orphans(gatedJob(6), gate);
    gate.release();
    // SIGCHLD for the re-parented zombie makes the sweep reap it before anyone asked for the pid.
    await until('stray reap', () => strays.some((s) => s.pid === pid));
    expect(isZombieOrAlive(pid as number)).toBe(false);
    const results: WaitResult[] = [];
    const watch = reaper.watch(pid as number);
    void watch.then((r) => results.push(r));
    expect(await watch).toEqual({ pid, status: 6, signaled: false });
    await sleep(50);
    expect(results).toHaveLength(1);
    expect(reaper.watchedCount).toBe(0);
  });

  it('handles many concurrent processes, each with its own status', async () => {
    const count = 60;
    const pids = await orphans(`i=1; while [ $i -le ${count} ]; do ${gatedJob('$i')}; i=$((i+1)); done`, gate);
    expect(pids).toHaveLength(count);
    const watches = pids.map((pid) => reaper.watch(pid));
    gate.release(count);
    const results = await Promise.all(watches);
    results.forEach((result, i) => expect(result).toEqual({ pid: pids[i], status: i + 1, signaled: false }));
    expect(strays.filter((s) => pids.includes(s.pid))).toEqual([]);
  });

  it('reaps stray zombies nobody watches', async () => {
    const pids = await orphans(`${gatedJob(3)}; ${gatedJob(4)}`, gate);
    gate.release(2);
    await until('both strays', () => pids.every((pid) => strays.some((s) => s.pid === pid)));
    expect(strays.filter((s) => pids.includes(s.pid)).map((s) => s.status).sort()).toEqual([3, 4]);
    for (const pid of pids) expect(isZombieOrAlive(pid)).toBe(false);
  });

  it('never steals the exit status of Node children', async () => {
    // Orphans exiting all the time keep the sweep busy while Node children exit.
    const noise = orphans(
      'i=0; while [ $i -lt 20 ]; do (sleep 0.0$((i % 10)); exit 1) >/dev/null 2>&1 & echo $!; i=$((i+1)); done',
      gate,
    );
    const runs = Array.from({ length: 25 }, (_, i) => run('sh', ['-c', `sleep 0.0${i % 10}; exit ${i}`]));
    const tracked = spawnTracked('sh', ['-c', 'sleep 0.1; exit 9'], { stdio: 'ignore' });
    const trackedExit = new Promise<number | null>((r) => tracked.once('exit', (code) => r(code)));
    // A child started with child_process directly, bypassing spawn.ts, is protected too.
    const raw = rawSpawn('sh', ['-c', 'sleep 0.1; exit 11'], { stdio: 'ignore' });
    const rawExit = new Promise<number | null>((r) => raw.once('exit', (code) => r(code)));
    expect(isNodeChild(tracked.pid as number)).toBe(true);

    const results = await Promise.all(runs);
    results.forEach((r, i) => expect(r.code).toBe(i));
    expect(await trackedExit).toBe(9);
    expect(await rawExit).toBe(11);
    expect(isNodeChild(tracked.pid as number)).toBe(false);
    await noise;
    const nodePids = new Set([tracked.pid, raw.pid]);
    expect(strays.filter((s) => nodePids.has(s.pid))).toEqual([]);
  });

  it('refuses to wait for Node children and invalid pids', async () => {
    const child = spawnTracked('sleep', ['0.2'], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    await expect(reaper.watch(child.pid as number)).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await exited;
    for (const pid of [0, -1, 1.5]) {
      const err = await reaper.watch(pid).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ShimError);
      expect((err as ShimError).code).toBe(Code.InvalidArgument);
    }
  });

  it('resolves with 255 for a process that is not our child once it is gone', async () => {
    // sh stays alive as the parent (and reaper) of its gated background job.
    const parent = spawnTracked('sh', ['-c', `${gatedJob(3)}; wait`], { stdio: ['ignore', 'pipe', 'ignore', gate.fd] });
    const parentExit = new Promise((r) => parent.once('exit', r));
    const pid = await new Promise<number>((resolve) =>
      parent.stdout?.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim()))),
    );
    let settled = false;
    const watch = reaper.watch(pid).finally(() => {
      settled = true;
    });
    // The job cannot exit before the gate opens, so several /proc polls must leave the watch pending.
    await sleep(350);
    expect(settled).toBe(false);
    gate.release();
    expect(await watch).toEqual({ pid, status: UNKNOWN_EXIT_STATUS, signaled: false });
    await parentExit;
  });

  it('resolves with 255 immediately for a pid that does not exist', async () => {
    const [pid] = await orphans(gatedJob(0), gate);
    gate.release();
    await until('stray reap', () => strays.some((s) => s.pid === pid));
    await reaper.watch(pid as number); // claims the buffered exit
    expect(await reaper.watch(pid as number)).toEqual({ pid, status: UNKNOWN_EXIT_STATUS, signaled: false });
  });
});

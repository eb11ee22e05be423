import { spawn as rawSpawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { setChildSubreaper } from '../../src/linux/libc';
import { Reaper, UNKNOWN_EXIT_STATUS, type WaitResult } from '../../src/linux/reaper';
import { isNodeChild, run, spawnTracked } from '../../src/linux/spawn';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `script` in the background of a short-lived sh and returns the background pids it echoes.
 * Once sh exits, those processes are orphans re-parented to this (subreaper) test process — exactly
 * what happens to a container init after `runc create` exits.
 */
async function orphans(script: string): Promise<number[]> {
  const out = await run('sh', ['-c', script]);
  expect(out.code).toBe(0);
  return out.stdout
    .toString()
    .split('\n')
    .filter(Boolean)
    .map((line) => Number(line));
}

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

beforeEach(() => {
  strays = [];
  reaper = new Reaper({ onStray: (r) => strays.push(r) });
  reaper.start();
});

afterEach(() => {
  reaper.stop();
});

describe('Reaper', () => {
  it('delivers the exit code of a re-parented process', async () => {
    const [pid] = await orphans('(sleep 0.2; exit 7) >/dev/null 2>&1 & echo $!');
    const result = await reaper.watch(pid as number);
    expect(result).toEqual({ pid, status: 7, signaled: false });
    expect(isZombieOrAlive(pid as number)).toBe(false);
    expect(reaper.watchedCount).toBe(0);
  });

  it('reports 128+signal for a killed process, with one promise per pid', async () => {
    const [pid] = await orphans('sleep 30 >/dev/null 2>&1 & echo $!');
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
    const [pid] = await orphans('(sleep 0.05; exit 5) >/dev/null 2>&1 & echo $!');
    await until('zombie', () => isZombie(pid as number));
    const result = await idle.watch(pid as number);
    expect(result).toEqual({ pid, status: 5, signaled: false });
    expect(isZombieOrAlive(pid as number)).toBe(false);
  });

  it('delivers an exit reaped by the stray sweep before watch() was called, exactly once', async () => {
    const [pid] = await orphans('(sleep 0.05; exit 6) >/dev/null 2>&1 & echo $!');
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
    const pids = await orphans(
      `i=1; while [ $i -le ${count} ]; do (sleep 0.$((i % 4 + 1)); exit $i) >/dev/null 2>&1 & echo $!; i=$((i+1)); done`,
    );
    expect(pids).toHaveLength(count);
    const results = await Promise.all(pids.map((pid) => reaper.watch(pid)));
    results.forEach((result, i) => expect(result).toEqual({ pid: pids[i], status: i + 1, signaled: false }));
    expect(strays.filter((s) => pids.includes(s.pid))).toEqual([]);
  });

  it('reaps stray zombies nobody watches', async () => {
    const pids = await orphans(
      '(sleep 0.05; exit 3) >/dev/null 2>&1 & echo $!; (sleep 0.1; exit 4) >/dev/null 2>&1 & echo $!',
    );
    await until('both strays', () => pids.every((pid) => strays.some((s) => s.pid === pid)));
    expect(strays.filter((s) => pids.includes(s.pid)).map((s) => s.status).sort()).toEqual([3, 4]);
    for (const pid of pids) expect(isZombieOrAlive(pid)).toBe(false);
  });

  it('never steals the exit status of Node children', async () => {
    // Orphans exiting all the time keep the sweep busy while Node children exit.
    const noise = orphans(
      'i=0; while [ $i -lt 20 ]; do (sleep 0.0$((i % 10)); exit 1) >/dev/null 2>&1 & echo $!; i=$((i+1)); done',
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
    // sh stays alive as the parent (and reaper) of its background sleep.
    const parent = spawnTracked('sh', ['-c', 'sleep 0.4 & echo $!; wait'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const parentExit = new Promise((r) => parent.once('exit', r));
    const pid = await new Promise<number>((resolve) =>
      parent.stdout?.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim()))),
    );
    const started = Date.now();
    const result = await reaper.watch(pid);
    expect(result).toEqual({ pid, status: UNKNOWN_EXIT_STATUS, signaled: false });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    await parentExit;
  });

  it('resolves with 255 immediately for a pid that does not exist', async () => {
    const [pid] = await orphans('(sleep 0.05; exit 0) >/dev/null 2>&1 & echo $!');
    await until('stray reap', () => strays.some((s) => s.pid === pid));
    await reaper.watch(pid as number); // claims the buffered exit
    expect(await reaper.watch(pid as number)).toEqual({ pid, status: UNKNOWN_EXIT_STATUS, signaled: false });
  });
});

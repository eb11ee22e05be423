/**
 * In-place upgrade of running shims through a real containerd 1.6 (issue #9 §1, README
 * "Upgrading running shims"). containerd runs a launcher in a private shim dir, installed with
 * scripts/install-shim.js from this checkout; the test then installs, at the same path, a second
 * build whose package.json carries another version, and runs `-address <containerd> upgrade`.
 *
 * The containers: plain (with an exec running), stdin/stdout relayed through ctr, a TTY, one that
 * exits during the hand-over, one paused. Order comes from files and pipes only: the new build's
 * launcher is wrapped so that, when the exiting container's daemon execs it for the hand-over (the old
 * image is gone then, the new one not yet started) waits for a file; the test makes that container exit,
 * sees it become a zombie of the shim, and only then creates the file.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codec } from '../../src/common/proto';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { TASK_SERVICE_V2 } from '../../src/common/types';
import { REPO_ROOT, startContainerd, uniqueId, waitForTaskStatus, type BackgroundCtr, type Containerd } from './harness';
import { importBusyboxImage } from './image';
import { subscribeEvents, type EventStream } from './fixtures/events';
import { delay } from './fixtures/system';

const RUNTIME = 'io.containerd.tshim.v2';
const NAME = 'containerd-shim-tshim-v2';
const baseVersion = (JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const NEW_VERSION = `${baseVersion}-upgraded.${randomBytes(2).toString('hex')}`;

const connectRequest = codec<{ id: string }>('containerd.task.v2.ConnectRequest');
const connectResponse = codec<{ shimPid: number; taskPid: number; version: string }>('containerd.task.v2.ConnectResponse');
const waitRequest = codec<{ id: string; execId: string }>('containerd.task.v2.WaitRequest');
const waitResponse = codec<{ exitStatus: number }>('containerd.task.v2.WaitResponse');
const resizeRequest = codec<{ id: string; execId: string; width: number; height: number }>('containerd.task.v2.ResizePtyRequest');

interface Footprint {
  fds: number;
  rssKiB: number;
  privateDirtyKiB: number;
}

function footprint(pid: number): Footprint {
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN);
  return { fds: fs.readdirSync(`/proc/${pid}/fd`).length, rssKiB: field('Rss'), privateDirtyKiB: field('Private_Dirty') };
}

function processState(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return '';
  }
}

function parentPid(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await delay(20);
  }
}

/** A copy of the built package whose package.json names NEW_VERSION, installed as a launcher. */
function buildSecondVersion(root: string): string {
  const pkg = path.join(root, 'v2');
  fs.mkdirSync(pkg);
  fs.cpSync(path.join(REPO_ROOT, 'dist'), path.join(pkg, 'dist'), { recursive: true });
  fs.cpSync(path.join(REPO_ROOT, 'bin'), path.join(pkg, 'bin'), { recursive: true });
  fs.cpSync(path.join(REPO_ROOT, 'scripts'), path.join(pkg, 'scripts'), { recursive: true });
  fs.cpSync(path.join(REPO_ROOT, 'proto'), path.join(pkg, 'proto'), { recursive: true });
  fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
  const json = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  json.version = NEW_VERSION;
  fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify(json, null, 2));
  const dir = path.join(root, 'v2-installed');
  execFileSync(process.execPath, [path.join(pkg, 'scripts', 'install-shim.js'), dir]);
  return path.join(dir, NAME);
}

/** Puts `text` at `file` the way install-shim does: renamed into place, so a running exec sees old or new. */
function installFile(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o755 });
  fs.renameSync(tmp, file);
}

function runUpgrade(cd: Containerd, launcher: string, env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(launcher, ['-address', cd.address, 'upgrade'], { env, encoding: 'utf8', timeout: 300_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe('in-place upgrade of running tshim daemons through containerd', () => {
  let root = '';
  let shimDir = '';
  let stateDir = '';
  let cd: Containerd;
  let image = '';
  let events: EventStream;
  const ids = {
    plain: uniqueId('upg-plain'),
    io: uniqueId('upg-io'),
    tty: uniqueId('upg-tty'),
    exiting: uniqueId('upg-exit'),
    paused: uniqueId('upg-paused'),
    fresh: uniqueId('upg-fresh'),
  };
  let ioCtr: BackgroundCtr | undefined;
  const bundleOf = (id: string): string => `${cd.dir}/state/io.containerd.runtime.v2.task/${cd.namespace}/${id}`;
  const socketOf = (id: string): string => fs.readFileSync(path.join(bundleOf(id), 'address'), 'utf8').trim().replace(/^unix:\/\//, '');
  const shimEnv = (): NodeJS.ProcessEnv => ({ ...process.env, TSHIM_UPGRADE_DIR: stateDir });
  const connect = async (id: string): Promise<{ shimPid: number; taskPid: number; version: string }> => {
    const client = await TtrpcClient.connect(socketOf(id));
    try {
      return connectResponse.decode(await client.call(TASK_SERVICE_V2, 'Connect', connectRequest.encode({ id }), { timeoutMs: 10_000 }));
    } finally {
      client.close();
    }
  };

  beforeAll(async () => {
    root = fs.mkdtempSync('/tmp/tsu-');
    shimDir = path.join(root, 'shim');
    stateDir = path.join(root, 'state');
    execFileSync(process.execPath, [path.join(REPO_ROOT, 'scripts', 'install-shim.js'), shimDir]);
    cd = await startContainerd({ shimDir, env: { TSHIM_UPGRADE_DIR: stateDir } });
    image = await importBusyboxImage(cd);
    events = await subscribeEvents(cd);
  }, 120_000);

  afterAll(async () => {
    ioCtr?.endInput();
    await events?.stop();
    const problems = cd ? await cd.stop() : [];
    fs.rmSync(root, { recursive: true, force: true });
    expect(problems).toEqual([]);
  }, 120_000);

  it('hands every daemon over with containers running; nothing is lost, duplicated or reordered', async () => {
    // plain, with an exec running
    await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, ids.plain, 'sleep', '1000']);
    await cd.ctr(['task', 'exec', '-d', '--exec-id', 'e1', ids.plain, 'sleep', '1000']);
    // stdin → stdout through ctr's FIFOs
    ioCtr = cd.ctrBackground(['run', '--runtime', RUNTIME, image, ids.io, 'sh', '-c', 'while read l; do echo "got:$l"; done; exit 5'], { stdin: true });
    for (const l of ['a1', 'a2', 'a3']) ioCtr.write(`${l}\n`);
    await ioCtr.waitForOutput('got:a3\n', 30_000);
    // a TTY that reports its size whenever it changes
    await cd.ctrInTerminal(['run', '-d', '-t', '--runtime', RUNTIME, image, ids.tty, 'sh', '-c', 'trap "stty size > /tmp/size" WINCH; while :; do sleep 1; done']);
    // one that exits (7) when the host writes to its FIFO
    await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, ids.exiting, 'sh', '-c', 'mkfifo /tmp/go; read x < /tmp/go; exit 7']);
    // one paused
    await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, ids.paused, 'sleep', '1000']);
    await waitForTaskStatus(cd, ids.paused, 'RUNNING');
    await cd.ctr(['task', 'pause', ids.paused]);
    await waitForTaskStatus(cd, ids.paused, 'PAUSED');
    const exitingTask = await waitForTaskStatus(cd, ids.exiting, 'RUNNING');
    await waitUntil('the exiting container made its FIFO', () => fs.existsSync(path.join(bundleOf(ids.exiting), 'rootfs', 'tmp', 'go')));

    const all = [ids.plain, ids.io, ids.tty, ids.exiting, ids.paused];
    const before = new Map<string, { shimPid: number; version: string }>();
    for (const id of all) before.set(id, await connect(id));
    for (const [, c] of before) expect(c.version).toBe(baseVersion);
    const plainShim = before.get(ids.plain)!.shimPid;
    const footprintBefore = footprint(plainShim);

    // a Wait of our own that stays pending across the hand-over
    const waiter = await TtrpcClient.connect(socketOf(ids.exiting));
    const pendingWait = waiter.call(TASK_SERVICE_V2, 'Wait', waitRequest.encode({ id: ids.exiting, execId: '' }));
    pendingWait.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile

    // the new build, wrapped so the exiting container's hand-over waits for the test at the check
    const newLauncher = buildSecondVersion(root);
    const hold = path.join(root, 'hold');
    fs.mkdirSync(hold);
    execFileSync('mkfifo', [path.join(hold, 'go')]);
    // A node script, not sh: a shell wait(2)s for any child before it execs, and would reap the
    // container's zombie, which belongs to the new image.
    const wrapper = [
      `#!${process.execPath}`,
      "'use strict';",
      "const fs = require('fs');",
      `if (process.env.TSHIM_UPGRADE_STATE && require('path').basename(process.cwd()) === ${JSON.stringify(ids.exiting)}) {`,
      // the old image has exec'd this (same pid) and is gone; the new one has not started
      `  fs.writeFileSync(${JSON.stringify(path.join(hold, 'ready'))}, '');`,
      `  fs.readFileSync(${JSON.stringify(path.join(hold, 'go'))});`,
      '}',
      `require(${JSON.stringify(newLauncher)});`,
      '',
    ].join('\n');
    installFile(path.join(shimDir, NAME), wrapper);

    const upgrading = runUpgrade(cd, path.join(shimDir, NAME), shimEnv());
    await waitUntil('the exiting container\'s daemon is between its old and new image', () => fs.existsSync(path.join(hold, 'ready')), 120_000);
    fs.writeFileSync(path.join(bundleOf(ids.exiting), 'rootfs', 'tmp', 'go'), 'go\n');
    await waitUntil('the exiting container is a zombie of its shim', () => processState(exitingTask.pid) === 'Z');
    expect(parentPid(exitingTask.pid)).toBe(before.get(ids.exiting)!.shimPid);
    fs.writeFileSync(path.join(hold, 'go'), 'go\n');
    const result = await upgrading;
    const hadOutput = `${result.stdout}${result.stderr}`;
    expect(result.code, hadOutput).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines, hadOutput).toHaveLength(all.length);
    const pauses: number[] = [];
    for (const id of all) {
      const pid = before.get(id)!.shimPid;
      const line = lines.find((l) => l.includes(`pid=${pid} `));
      expect(line, hadOutput).toMatch(new RegExp(`^upgraded pid=${pid} socket=\\S+ from=${baseVersion} to=${NEW_VERSION} pause_ms=[0-9.]+ containers=1 fds=\\d+$`));
      pauses.push(Number(/pause_ms=([0-9.]+)/.exec(line ?? '')?.[1]));
    }
    console.log(`hand-over pauses (ms): ${pauses.join(', ')}`);

    // same pids, new version
    for (const id of all) {
      const c = await connect(id);
      expect(c.shimPid).toBe(before.get(id)!.shimPid);
      expect(c.version).toBe(NEW_VERSION);
    }

    // the exit during the hand-over: reaped by the new image, reported once, to every waiter
    const waited = waitResponse.decode(await pendingWait).exitStatus;
    if (waited !== 7) console.log(cd.logText().split('\n').filter((l) => /stray|upgrade|hand|reap|exit/i.test(l) && l.includes(ids.exiting)).join('\n'));
    expect(waited).toBe(7);
    waiter.close();
    await waitForTaskStatus(cd, ids.exiting, 'STOPPED');
    await events.waitFor((e) => e.topic === '/tasks/exit' && e.body['container_id'] === ids.exiting);
    const rm = await cd.ctr(['tasks', 'rm', ids.exiting], { allowFail: true });
    expect(rm.stderr).toContain(`exit with non-zero exit code 7`);
    await events.waitFor((e) => e.topic === '/tasks/delete' && e.body['container_id'] === ids.exiting);
    const exitEvents = events.all().filter((e) => e.body['container_id'] === ids.exiting);
    expect(exitEvents.map((e) => e.topic)).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    expect(exitEvents[2]?.body).toMatchObject({ exit_status: 7, pid: exitingTask.pid });

    // IO both ways, nothing lost or repeated; containerd's own Wait (ctr) survived too
    for (const l of ['b1', 'b2', 'b3']) ioCtr.write(`${l}\n`);
    await ioCtr.waitForOutput('got:b3\n', 30_000);
    ioCtr.endInput();
    const ioResult = await ioCtr.exited;
    ioCtr = undefined;
    expect(ioResult.stdout).toBe(['a1', 'a2', 'a3', 'b1', 'b2', 'b3'].map((l) => `got:${l}\n`).join(''));
    expect(ioResult.code).toBe(5);

    // execs and kill
    expect((await cd.ctr(['task', 'exec', '--exec-id', 'after', ids.plain, 'echo', 'exec-after-upgrade'])).stdout).toBe('exec-after-upgrade\n');
    await cd.ctr(['task', 'kill', '-s', 'SIGKILL', '--exec-id', 'e1', ids.plain]);
    await events.waitFor((e) => e.topic === '/tasks/exit' && e.body['container_id'] === ids.plain && e.body['id'] === 'e1');

    // ResizePty reaches the inherited pty master
    const ttyClient = await TtrpcClient.connect(socketOf(ids.tty));
    await ttyClient.call(TASK_SERVICE_V2, 'ResizePty', resizeRequest.encode({ id: ids.tty, execId: '', width: 123, height: 45 }));
    ttyClient.close();
    const sizeFile = path.join(bundleOf(ids.tty), 'rootfs', 'tmp', 'size');
    await waitUntil('the TTY saw its new size', () => fs.existsSync(sizeFile) && fs.readFileSync(sizeFile, 'utf8') === '45 123\n');

    // the paused one is still paused, and resumes
    expect((await waitForTaskStatus(cd, ids.paused, 'PAUSED')).pid).toBeGreaterThan(0);
    await cd.ctr(['task', 'resume', ids.paused]);
    await waitForTaskStatus(cd, ids.paused, 'RUNNING');

    // footprint: like a freshly started shim of the new version
    await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, ids.fresh, 'sleep', '1000']);
    await cd.ctr(['task', 'exec', '-d', '--exec-id', 'e1', ids.fresh, 'sleep', '1000']);
    await cd.ctr(['task', 'exec', '--exec-id', 'after', ids.fresh, 'echo', 'x']);
    await cd.ctr(['task', 'kill', '-s', 'SIGKILL', '--exec-id', 'e1', ids.fresh]);
    await events.waitFor((e) => e.topic === '/tasks/exit' && e.body['container_id'] === ids.fresh && e.body['id'] === 'e1');
    const fresh = await connect(ids.fresh);
    expect(fresh.version).toBe(NEW_VERSION);
    const footprintAfter = footprint(plainShim);
    const footprintFresh = footprint(fresh.shimPid);
    console.log(`footprint of the plain shim: before ${JSON.stringify(footprintBefore)}, after ${JSON.stringify(footprintAfter)}, fresh shim ${JSON.stringify(footprintFresh)}`);
    expect(Math.abs(footprintAfter.fds - footprintFresh.fds)).toBeLessThanOrEqual(3);
    expect(footprintAfter.rssKiB).toBeLessThan(footprintFresh.rssKiB * 1.5 + 10_240);
    expect(footprintAfter.privateDirtyKiB).toBeLessThan(footprintFresh.privateDirtyKiB * 1.5 + 10_240);

    // events of each container stayed in order
    for (const id of [ids.plain, ids.io, ids.paused]) {
      const topics = events.all().filter((e) => e.body['container_id'] === id).map((e) => e.topic);
      expect(topics.slice(0, 2), id).toEqual(['/tasks/create', '/tasks/start']);
      if (topics.includes('/tasks/delete')) expect(topics.lastIndexOf('/tasks/exit'), id).toBeLessThan(topics.indexOf('/tasks/delete'));
    }
    const ioTopics = events.all().filter((e) => e.body['container_id'] === ids.io).map((e) => e.topic);
    expect(ioTopics.filter((t) => t === '/tasks/exit')).toHaveLength(1);

    // an upgrade to a build that cannot start leaves every daemon serving (the command itself runs
    // from the checkout)
    installFile(path.join(shimDir, NAME), '#!/bin/sh\necho broken build >&2\nexit 1\n');
    const failed = await runUpgrade(cd, path.join(REPO_ROOT, 'bin', NAME), shimEnv());
    expect(failed.code, `${failed.stdout}${failed.stderr}`).toBe(1);
    const failedLines = failed.stdout.trim().split('\n');
    expect(failedLines.length).toBeGreaterThanOrEqual(4);
    for (const l of failedLines) expect(l).toMatch(/^failed pid=\d+ socket=\S+ version=\S+ reason=".*refused the hand-over.*broken build.*"$/);
    for (const id of [ids.plain, ids.tty, ids.paused, ids.fresh]) expect((await connect(id)).version).toBe(NEW_VERSION);
    expect((await cd.ctr(['task', 'exec', '--exec-id', 'after2', ids.plain, 'echo', 'still-serving'])).stdout).toBe('still-serving\n');
    installFile(path.join(shimDir, NAME), wrapper);

    for (const id of [ids.plain, ids.tty, ids.paused, ids.fresh]) {
      await cd.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
      await waitForTaskStatus(cd, id, 'STOPPED');
      const r = await cd.ctr(['tasks', 'rm', id], { allowFail: true });
      expect(r.stderr).toContain('exit with non-zero exit code 137');
    }
    expect(fs.readdirSync(stateDir)).toEqual([]);
  }, 600_000);
});

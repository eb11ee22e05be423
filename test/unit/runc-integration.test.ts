/**
 * The driver and process IO against the real runc on this machine: a busybox container, its
 * lifecycle, an exec with output, and the errors containerd relies on.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { createProcessIO, type ProcessIO } from '../../src/linux/io';
import { Runc } from '../../src/linux/runc';
import { NO_SUCH_CONTAINER, PROCESS_ALREADY_FINISHED } from '../../src/linux/runc-errors';

const haveRunc = spawnSync('runc', ['--version']).status === 0 && fs.existsSync('/bin/busybox');
const suffix = randomBytes(4).toString('hex');
const id = `tshim-runc-${suffix}`;
const badId = `tshim-runc-bad-${suffix}`;

let dir: string;
let bundle: string;
let runc: Runc;
const ios: ProcessIO[] = [];
const sockets: net.Socket[] = [];

function makeBundle(at: string, args: string[]): void {
  fs.mkdirSync(path.join(at, 'rootfs', 'bin'), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(at, 'rootfs', 'bin', 'busybox'));
  fs.chmodSync(path.join(at, 'rootfs', 'bin', 'busybox'), 0o755);
  for (const applet of ['sh', 'sleep', 'cat', 'echo']) {
    fs.symlinkSync('busybox', path.join(at, 'rootfs', 'bin', applet));
  }
  execFileSync('runc', ['spec'], { cwd: at });
  const config = JSON.parse(fs.readFileSync(path.join(at, 'config.json'), 'utf8')) as {
    process: { args: string[]; terminal: boolean };
  };
  config.process.args = args;
  config.process.terminal = false;
  fs.writeFileSync(path.join(at, 'config.json'), JSON.stringify(config));
}

function fifo(name: string): string {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  return p;
}

/** A containerd-style reader on a FIFO: text so far, and a promise for EOF. */
function readFifo(p: string): { text: () => string; done: Promise<string> } {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const socket = new net.Socket({ fd, readable: true, writable: false });
  sockets.push(socket);
  let text = '';
  socket.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const done = new Promise<string>((resolve) => socket.once('end', () => resolve(text)));
  return { text: () => text, done };
}

interface ProcessUnderTest {
  io: ProcessIO;
  out: ReturnType<typeof readFifo>;
  err: ReturnType<typeof readFifo>;
}

const owner = { namespace: 'default', ioUid: 0, ioGid: 0 };

async function processIO(processId: string): Promise<ProcessUnderTest> {
  const stdout = fifo(`${processId}-stdout`);
  const stderr = fifo(`${processId}-stderr`);
  const out = readFifo(stdout);
  const err = readFifo(stderr);
  const io = await createProcessIO(processId, { stdin: '', stdout, stderr, terminal: false }, owner);
  ios.push(io);
  return { io, out, err };
}

function runcFor(at: string): Runc {
  return new Runc({
    binary: 'runc',
    root: path.join(dir, 'state', 'default'),
    systemdCgroup: false,
    logPath: path.join(at, 'log.json'),
  });
}

/** An OCI Process for `runc exec`. */
function processSpec(args: string[]): string {
  return JSON.stringify({ args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, terminal: false });
}

async function failure(p: Promise<unknown>): Promise<ShimError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ShimError);
  return err as ShimError;
}

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!haveRunc)('Runc with real runc', () => {
  let init: ProcessUnderTest;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-runc-it-'));
    bundle = path.join(dir, 'bundle');
    makeBundle(bundle, ['sh', '-c', 'echo hi; sleep 100']);
    runc = runcFor(bundle);
  });

  afterAll(async () => {
    for (const cid of [id, badId]) {
      spawnSync('runc', ['--root', path.join(dir, 'state', 'default'), 'delete', '--force', cid]);
    }
    for (const io of ios) await io.close();
    for (const s of sockets) s.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports its version and features', async () => {
    expect(await runc.version()).toMatch(/^\d+\.\d+\.\d+/);
    expect(await runc.features()).toHaveProperty('ociVersionMin');
  });

  it('creates and starts a container whose output reaches the FIFO', async () => {
    init = await processIO(id);
    await runc.create(id, { bundle, pidFile: path.join(bundle, 'init.pid'), stdio: init.io.runtimeStdio });
    init.io.closeAfterStart();
    const pid = Number(fs.readFileSync(path.join(bundle, 'init.pid'), 'utf8'));
    const created = await runc.state(id);
    expect(created).toMatchObject({ id, pid, status: 'created', bundle });

    await runc.start(id);
    expect((await runc.state(id)).status).toBe('running');
    await waitFor(() => init.out.text() === 'hi\n');
    expect(await runc.ps(id)).toContain(pid);
  });

  it('refuses a second container with the same id', async () => {
    const devNull = fs.openSync('/dev/null', 'r+');
    const err = await failure(
      runc.create(id, { bundle, pidFile: path.join(dir, 'dup.pid'), stdio: [devNull, devNull, devNull] }),
    ).finally(() => fs.closeSync(devNull));
    expect(err.code).toBe(Code.Unknown);
    expect(err.message).toMatch(/^OCI runtime create failed: .*already exists/);
  });

  it('runs an exec whose stdout and stderr arrive separately', async () => {
    const exec = await processIO('exec1');
    const spec = processSpec(['sh', '-c', 'echo exec-out; echo exec-err >&2']);
    await runc.exec(id, spec, { pidFile: path.join(bundle, 'exec1.pid'), stdio: exec.io.runtimeStdio });
    exec.io.closeAfterStart();
    expect(Number(fs.readFileSync(path.join(bundle, 'exec1.pid'), 'utf8'))).toBeGreaterThan(0);
    await exec.io.drain(10_000);
    expect(await exec.out.done).toBe('exec-out\n');
    expect(await exec.err.done).toBe('exec-err\n');
  });

  it('reports a failing exec with runc’s own words', async () => {
    const exec = await processIO('exec2');
    const pidFile = path.join(bundle, 'exec2.pid');
    const err = await failure(runc.exec(id, processSpec(['nosuch']), { pidFile, stdio: exec.io.runtimeStdio }));
    exec.io.closeAfterStart();
    expect(err.code).toBe(Code.Unknown);
    expect(err.message).toBe(
      'OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch": executable file not found in $PATH',
    );
  });

  it('pauses, resumes, updates and reports stats', async () => {
    await runc.pause(id);
    expect((await runc.state(id)).status).toBe('paused');
    await runc.resume(id);
    expect((await runc.state(id)).status).toBe('running');
    await runc.update(id, JSON.stringify({ pids: { limit: 100 } }));
    const stats = (await runc.stats(id)) as { pids?: { limit?: number } };
    expect(stats.pids?.limit).toBe(100);
  });

  it('maps kill errors: bad signal, stopped container, unknown container', async () => {
    const bad = await failure(runc.kill(id, 99, false));
    expect([bad.code, bad.message]).toEqual([
      Code.Unknown,
      'unknown error after kill: unable to signal init: invalid argument',
    ]);

    await runc.kill(id, 9, false);
    await waitFor(async () => (await runc.state(id)).status === 'stopped');
    await init.io.drain(5_000);
    expect(await init.out.done).toBe('hi\n');

    const stopped = await failure(runc.kill(id, 9, false));
    expect([stopped.code, stopped.message]).toEqual([Code.NotFound, PROCESS_ALREADY_FINISHED]);
    const unknownContainer = await failure(runc.kill(`${id}-nope`, 9, false));
    expect([unknownContainer.code, unknownContainer.message]).toEqual([Code.NotFound, NO_SUCH_CONTAINER]);
  });

  it('deletes, idempotently', async () => {
    await runc.delete(id, false);
    const gone = await failure(runc.state(id));
    expect(gone.code).toBe(Code.NotFound);
    await runc.delete(id, false);
    await runc.delete(id, true);
  });

  it('reports a create whose process cannot start', async () => {
    const badBundle = path.join(dir, 'bad');
    makeBundle(badBundle, ['nosuchbin']);
    const io = await processIO(badId);
    const pidFile = path.join(badBundle, 'init.pid');
    const err = await failure(runcFor(badBundle).create(badId, { bundle: badBundle, pidFile, stdio: io.io.runtimeStdio }));
    io.io.closeAfterStart();
    expect(err.code).toBe(Code.Unknown);
    expect(err.message).toMatch(/^OCI runtime create failed: .*"nosuchbin": executable file not found in \$PATH$/);
  });
});

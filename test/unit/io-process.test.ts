import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { createProcessIO, parseStdioScheme, type ProcessIO } from '../../src/linux/io';

let dir: string;
const cleanups: Array<() => unknown> = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-io-'));
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
  fs.rmSync(dir, { recursive: true, force: true });
});

function fifo(name: string): string {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  return p;
}

/** Reads a FIFO the way containerd's client does: non-blocking open, collect until EOF. */
function readFifo(p: string): { done: Promise<Buffer>; socket: net.Socket } {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const socket = new net.Socket({ fd, readable: true, writable: false });
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
  cleanups.push(() => socket.destroy());
  return { done, socket };
}

async function open(id: string, paths: { stdin?: string; stdout?: string; stderr?: string }, uid = 0, gid = 0) {
  const io = await createProcessIO(
    id,
    { stdin: paths.stdin ?? '', stdout: paths.stdout ?? '', stderr: paths.stderr ?? '', terminal: false },
    { namespace: 'testns', ioUid: uid, ioGid: gid },
  );
  cleanups.push(() => io.close());
  return io;
}

/** Starts a process on the IO's runtime fds, as runc would, then drops the shim's copies. */
function startOn(io: ProcessIO, script: string): { child: ChildProcess; exited: Promise<number | null> } {
  const child = spawn('/bin/sh', ['-c', script], { stdio: io.runtimeStdio });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  io.closeAfterStart();
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, exited };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('createProcessIO: fifo scheme', () => {
  it('delivers 1 MiB written right before exit, stdout and stderr separately', async () => {
    const payload = randomBytes(1024 * 1024);
    const payloadFile = path.join(dir, 'payload');
    fs.writeFileSync(payloadFile, payload);
    const out = fifo('t-stdout');
    const err = fifo('t-stderr');
    const outReader = readFifo(out);
    const errReader = readFifo(err);

    const io = await open('t', { stdout: out, stderr: err });
    const proc = startOn(io, `cat ${payloadFile}; echo to-stderr >&2; exit 3`);
    expect(await proc.exited).toBe(3);
    await io.drain(10_000);

    const [gotOut, gotErr] = await Promise.all([outReader.done, errReader.done]);
    expect(gotOut.length).toBe(payload.length);
    expect(sha(gotOut)).toBe(sha(payload));
    expect(gotErr.toString()).toBe('to-stderr\n');
  });

  it('keeps the container stdin open until CloseIO, then delivers EOF', async () => {
    const stdin = fifo('t-stdin');
    const out = fifo('t-stdout');
    const outReader = readFifo(out);
    const io = await open('t', { stdin, stdout: out });

    const proc = startOn(io, 'cat; echo done');
    const clientWriter = fs.openSync(stdin, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    fs.writeSync(clientWriter, 'hello\n');
    fs.closeSync(clientWriter);

    // the client's writer is gone, but the shim still holds one: no EOF yet
    const early = await Promise.race([proc.exited.then(() => 'exited'), delay(300).then(() => 'running')]);
    expect(early).toBe('running');

    io.closeStdin();
    expect(await proc.exited).toBe(0);
    await io.drain(5_000);
    expect((await outReader.done).toString()).toBe('hello\ndone\n');
  });

  it('survives a container that exits without reading its stdin', async () => {
    const stdin = fifo('epipe-stdin');
    const io = await open('epipe', { stdin });
    const proc = startOn(io, 'exit 0');
    expect(await proc.exited).toBe(0);
    const clientWriter = fs.openSync(stdin, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    fs.writeSync(clientWriter, Buffer.alloc(60_000, 'x'));
    // the shim's copy now writes into a pipe nobody reads: EPIPE must end the copy quietly
    await delay(200);
    fs.closeSync(clientWriter);
    io.closeStdin();
    await io.close();
  });

  it('opens FIFOs nobody reads yet and keeps early output for a reader that attaches later', async () => {
    const out = fifo('late-stdout');
    const io = await open('late', { stdout: out });
    const proc = startOn(io, 'echo early-bird; sleep 0.4; echo later');
    await delay(150);
    const reader = readFifo(out);
    expect(await proc.exited).toBe(0);
    await io.drain(5_000);
    expect((await reader.done).toString()).toBe('early-bird\nlater\n');
  });

  it('appends to a regular file given in place of a FIFO', async () => {
    const file = path.join(dir, 'plain.log');
    fs.writeFileSync(file, 'old\n');
    const io = await open('plain', { stdout: file });
    const proc = startOn(io, 'echo new');
    await proc.exited;
    await io.drain(5_000);
    expect(fs.readFileSync(file, 'utf8')).toBe('old\nnew\n');
  });

  it('fails with a ShimError when the stdout path does not exist', async () => {
    const err = await open('missing', { stdout: path.join(dir, 'nope') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Unknown);
    expect((err as ShimError).message).toContain('nope');
  });

  it('survives a reader that goes away early', async () => {
    const out = fifo('gone-stdout');
    const payloadFile = path.join(dir, 'payload');
    // More than the container pipe and the FIFO hold together (1 MiB each, PIPE_SIZE), so the copy
    // cannot finish into kernel buffers once nobody reads.
    fs.writeFileSync(payloadFile, randomBytes(8 * 1024 * 1024));
    const reader = readFifo(out);
    const firstChunk = new Promise<void>((resolve) => reader.socket.once('data', () => resolve()));
    const io = await open('gone', { stdout: out });
    const proc = startOn(io, `cat ${payloadFile}`);
    await firstChunk;
    reader.socket.destroy();

    // nobody reads any more: draining gives up at its deadline instead of hanging
    const started = Date.now();
    await io.drain(300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    await io.close();
    // with the pipes gone the writer dies of EPIPE/SIGPIPE; the shim (this process) lives on
    await proc.exited;
    expect(proc.child.exitCode !== 0 || proc.child.signalCode !== null).toBe(true);
  });
});

describe('createProcessIO: runtime fds', () => {
  it('gives /dev/null for every stream when none is wanted', async () => {
    const io = await open('null', {});
    for (const fd of io.runtimeStdio) expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toBe('/dev/null');
    await io.drain(10); // nothing to wait for
  });

  it('gives /dev/null for unwanted streams and chowns the container ends', async () => {
    const out = fifo('own-stdout');
    readFifo(out);
    const io = await open('own', { stdout: out }, 1234, 4321);
    const [stdin, stdout, stderr] = io.runtimeStdio;
    expect(fs.readlinkSync(`/proc/self/fd/${stdin}`)).toBe('/dev/null');
    expect(fs.readlinkSync(`/proc/self/fd/${stderr}`)).toBe('/dev/null');
    expect(fs.readlinkSync(`/proc/self/fd/${stdout}`)).toMatch(/^pipe:/);
    const st = fs.fstatSync(stdout);
    expect([st.uid, st.gid]).toEqual([1234, 4321]);
  });

  it('closeAfterStart releases the container ends', async () => {
    const out = fifo('rel-stdout');
    readFifo(out);
    const io = await open('rel', { stdout: out });
    const fd = io.runtimeStdio[1];
    const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    io.closeAfterStart();
    let now: string | undefined;
    try {
      now = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      now = undefined;
    }
    expect(now).not.toBe(target);
  });
});

describe('createProcessIO: file scheme', () => {
  it('creates the directory and appends stdout and stderr to one file', async () => {
    const file = path.join(dir, 'logs', 'sub', 'c.log');
    const uri = `file://${file}`;
    const io = await open('filed', { stdout: uri, stderr: uri });
    const proc = startOn(io, 'echo one; echo two >&2; echo three');
    await proc.exited;
    await io.drain(5_000);
    const text = fs.readFileSync(file, 'utf8');
    expect(text.split('\n').filter(Boolean).sort()).toEqual(['one', 'three', 'two']);
    expect(fs.statSync(file).mode & 0o777).toBe(0o644);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o755);

    const again = await open('filed2', { stdout: uri, stderr: uri });
    const proc2 = startOn(again, 'echo four');
    await proc2.exited;
    await again.drain(5_000);
    expect(fs.readFileSync(file, 'utf8')).toBe(`${text}four\n`);
  });
});

describe('createProcessIO: binary scheme', () => {
  it('starts the logger with fds 3/4/5 and a bare environment, after it is ready', async () => {
    const logger = path.join(dir, 'logger.sh');
    const outFile = path.join(dir, 'logger-out');
    const errFile = path.join(dir, 'logger-err');
    const envFile = path.join(dir, 'logger-env');
    const argsFile = path.join(dir, 'logger-args');
    fs.writeFileSync(
      logger,
      [
        '#!/bin/sh',
        `echo "$@" > ${argsFile}`,
        `tr '\\0' '\\n' < /proc/$$/environ > ${envFile}`,
        `/bin/cat <&3 > ${outFile} &`,
        `/bin/cat <&4 > ${errFile} &`,
        // readiness only after a noticeable delay: createProcessIO must wait for it
        'sleep 0.3',
        'echo ready >&5',
        'exec 5>&-',
        'wait',
      ].join('\n'),
      { mode: 0o755 },
    );
    const started = Date.now();
    const io = await open('exec-7', { stdout: `binary://${logger}?mode=test&x=1`, stderr: `binary://${logger}` });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(fs.readFileSync(argsFile, 'utf8')).toBe('mode test x 1\n');
    const env = fs.readFileSync(envFile, 'utf8').split('\n').filter(Boolean).sort();
    expect(env).toEqual(['CONTAINER_ID=exec-7', 'CONTAINER_NAMESPACE=testns']);

    const proc = startOn(io, 'echo out-line; echo err-line >&2');
    await proc.exited;
    const text = (f: string): string => fs.readFileSync(f, 'utf8');
    await waitFor(() => text(outFile) === 'out-line\n' && text(errFile) === 'err-line\n');
    await io.close();
  });

  it('reports a logger that cannot be started', async () => {
    const err = await open('x', { stdout: `binary://${dir}/no-such-logger` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Unknown);
    expect((err as ShimError).message).toContain('failed to start binary process');
  });

  it('stops a logger with SIGTERM on close', async () => {
    const logger = path.join(dir, 'stubborn.sh');
    const pidFile = path.join(dir, 'stubborn.pid');
    fs.writeFileSync(logger, ['#!/bin/sh', `echo $$ > ${pidFile}`, 'exec 5>&-', 'exec sleep 100'].join('\n'), {
      mode: 0o755,
    });
    const io = await open('s', { stdout: `binary://${logger}` });
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    expect(alive(pid)).toBe(true);
    await io.close();
    expect(alive(pid)).toBe(false);
  });
});

describe('stdio URIs', () => {
  it('rejects an unknown scheme with InvalidArgument', async () => {
    const err = await open('u', { stdout: 'foo:///bar' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.InvalidArgument);
    expect((err as ShimError).message).toBe('unknown STDIO scheme foo');
  });

  it('parses plain paths, fifo://, file:// and binary:// with percent-encoding', () => {
    expect(parseStdioScheme({ stdout: '/run/x/a-stdout', stderr: '/run/x/a-stderr' })).toEqual({
      scheme: 'fifo',
      stdout: '/run/x/a-stdout',
      stderr: '/run/x/a-stderr',
    });
    expect(parseStdioScheme({ stdout: 'fifo:///run/a', stderr: 'fifo:///run/a' })).toEqual({
      scheme: 'fifo',
      stdout: '/run/a',
      stderr: '/run/a',
    });
    expect(parseStdioScheme({ stdout: 'file:///var/log/my%20app.log', stderr: '' })).toEqual({
      scheme: 'file',
      path: '/var/log/my app.log',
    });
    const bin = parseStdioScheme({ stdout: 'BINARY:///usr/bin/logger?a=b', stderr: '' });
    expect(bin.scheme).toBe('binary');
  });
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = check();
    } catch {
      ok = false;
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await delay(25);
  }
}

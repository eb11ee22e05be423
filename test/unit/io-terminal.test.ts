import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { openTerminalFifos, type TerminalFifos } from '../../src/linux/io';

let dir: string;
const cleanups: Array<() => unknown> = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-tio-'));
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

function readFifo(p: string): Promise<Buffer> {
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const socket = new net.Socket({ fd, readable: true, writable: false });
  cleanups.push(() => socket.destroy());
  const chunks: Buffer[] = [];
  return new Promise<Buffer>((resolve, reject) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

async function open(paths: { stdin?: string; stdout?: string }, target?: { id: string; namespace: string }) {
  const fifos = await openTerminalFifos(
    { stdin: paths.stdin ?? '', stdout: paths.stdout ?? '', stderr: '', terminal: true },
    target,
  );
  cleanups.push(() => fifos.close());
  return fifos;
}

function collect(stream: NodeJS.ReadableStream): { data: () => string; ended: Promise<void> } {
  let text = '';
  stream.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const ended = new Promise<void>((resolve) => stream.once('end', () => resolve()));
  return { data: () => text, ended };
}

function writeAndEnd(fifos: TerminalFifos, text: string): Promise<void> {
  const output = fifos.output as NodeJS.WritableStream;
  return new Promise((resolve) => output.end(text, () => resolve()));
}

describe('openTerminalFifos', () => {
  it('relays stdin from the FIFO and holds it open until closeStdin', async () => {
    const stdin = fifo('t-stdin');
    const fifos = await open({ stdin });
    expect(fifos.output).toBeUndefined();
    const input = collect(fifos.input as NodeJS.ReadableStream);

    const client = fs.openSync(stdin, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    fs.writeSync(client, 'typed\n');
    fs.closeSync(client);
    const early = await Promise.race([input.ended.then(() => 'ended'), delay(250).then(() => 'open')]);
    expect(early).toBe('open');
    expect(input.data()).toBe('typed\n');

    fifos.closeStdin();
    await input.ended;
  });

  it('writes pty output to the stdout FIFO and flushes it on close', async () => {
    const stdout = fifo('t-stdout');
    const reader = readFifo(stdout);
    const fifos = await open({ stdout });
    expect(fifos.input).toBeUndefined();
    const big = 'x'.repeat(200_000); // more than a FIFO buffer: needs the reader to keep up
    await writeAndEnd(fifos, `${big}\r\nbye\r\n`);
    await fifos.close();
    expect((await reader).toString()).toBe(`${big}\r\nbye\r\n`);
  });

  it('appends to a file:// target', async () => {
    const file = path.join(dir, 'deep', 'tty.log');
    const fifos = await open({ stdout: `file://${file}` });
    await writeAndEnd(fifos, 'line\r\n');
    await fifos.close();
    expect(fs.readFileSync(file, 'utf8')).toBe('line\r\n');
  });

  it('feeds a binary:// logger through its fd 3', async () => {
    const logger = path.join(dir, 'logger.sh');
    const outFile = path.join(dir, 'out');
    const envFile = path.join(dir, 'env');
    fs.writeFileSync(
      logger,
      [
        '#!/bin/sh',
        `echo "$CONTAINER_ID/$CONTAINER_NAMESPACE" > ${envFile}`,
        // readiness by closing fd 5 (before forking, or the child would hold it open)
        'exec 5>&-',
        `/bin/cat <&3 > ${outFile} &`,
        'wait',
      ].join('\n'),
      { mode: 0o755 },
    );
    const fifos = await open({ stdout: `binary://${logger}` }, { id: 'c1', namespace: 'k8s.io' });
    await writeAndEnd(fifos, 'through-logger\r\n');
    await waitFor(() => fs.readFileSync(outFile, 'utf8') === 'through-logger\r\n');
    expect(fs.readFileSync(envFile, 'utf8')).toBe('c1/k8s.io\n');
    await fifos.close();
  });

  it('endOutput gives the stdout reader EOF with all output, before close, and is idempotent', async () => {
    const stdout = fifo('t-end-stdout');
    const reader = readFifo(stdout);
    const fifos = await open({ stdout });
    const big = 'y'.repeat(200_000);
    (fifos.output as NodeJS.WritableStream).write(`${big}\r\n`);
    const ended = fifos.endOutput();
    expect(fifos.endOutput()).toBe(ended);
    await ended;
    // EOF arrived although close() (Delete) has not run: nothing else holds the write end.
    expect((await reader).toString()).toBe(`${big}\r\n`);
    await fifos.close();
  });

  it('endOutput closes a file:// target and ends a binary:// logger\'s input', async () => {
    const file = path.join(dir, 'end.log');
    const fileFifos = await open({ stdout: `file://${file}` });
    (fileFifos.output as NodeJS.WritableStream).write('to-file\r\n');
    await fileFifos.endOutput();
    expect(fs.readFileSync(file, 'utf8')).toBe('to-file\r\n');
    expect((fileFifos.output as fs.WriteStream).closed).toBe(true);

    const logger = path.join(dir, 'eof-logger.sh');
    const outFile = path.join(dir, 'logger-out');
    const eofMarker = path.join(dir, 'logger-saw-eof');
    fs.writeFileSync(
      logger,
      ['#!/bin/sh', 'exec 5>&-', `/bin/cat <&3 > ${outFile}`, `/bin/cat <&4 >> ${outFile}`, `touch ${eofMarker}`, 'exec sleep 30'].join('\n'),
      { mode: 0o755 },
    );
    const fifos = await open({ stdout: `binary://${logger}` }, { id: 'c2', namespace: 'default' });
    (fifos.output as NodeJS.WritableStream).write('through-logger\r\n');
    await fifos.endOutput();
    // The logger saw EOF on fd 3 and fd 4 while it still runs: close() (Delete) only stops it.
    await waitFor(() => fs.existsSync(eofMarker));
    expect(fs.readFileSync(outFile, 'utf8')).toBe('through-logger\r\n');
    await fifos.close();
    await fileFifos.close();
  });

  it('refuses a binary:// logger without a process identity', async () => {
    const err = await openTerminalFifos({ stdin: '', stdout: 'binary:///bin/true', stderr: '', terminal: true }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.InvalidArgument);
  });
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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

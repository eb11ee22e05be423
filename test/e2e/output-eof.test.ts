/**
 * The end of a process's output is the end of its stdout FIFO (issue #11). containerd's CRI exec
 * waits for EOF on the FIFOs it reads before it finishes the exec and only then sends Delete, so a
 * shim that holds its write end open until Delete hangs `kubectl exec -it` after the process is
 * gone. `ctr` cannot show this (it waits on Wait, not EOF), so these cases drive containerd's Tasks
 * API directly with FIFOs the test creates and opens the way containerd does: stdout/stderr for
 * reading, stdin held open for writing the whole time, like a client that keeps typing.
 */
import { execFileSync } from 'node:child_process';
import { constants as fsc, closeSync, openSync, promises as fs } from 'node:fs';
import net from 'node:net';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  createTask, deleteProcess, execProcess, killProcess, startProcess, waitProcess, type TaskStdio,
} from './fixtures/containerd-api';
import { removeContainer, RUNTIMES, type Containerd } from './harness';
import { makeBusyboxRootfs } from './image';
import { runtimeNames, scratchDir, stripCr, useTestBed } from './fixtures/suite';

const bed = useTestBed();

/** A hang fails the case long before the file's timeout; a prompt EOF takes milliseconds. */
const EOF_DEADLINE_MS = 15_000;
const LINES = 3000; // well over a pty's and a pipe's buffer: the tail must be drained, not dropped
const COMMAND = `seq 1 ${LINES}; echo end; echo err >&2`;
const expectedStdout = [...Array.from({ length: LINES }, (_, i) => String(i + 1)), 'end'].join('\n') + '\n';

interface OutputReader {
  /** Resolves with everything read once the writer side is gone (EOF); rejects after the deadline. */
  readonly eof: Promise<string>;
  close(): void;
}

/** Opens a FIFO for reading as containerd's fifo package does (O_RDONLY|O_NONBLOCK) and collects it. */
function readFifo(file: string): OutputReader {
  const socket = new net.Socket({ fd: openSync(file, fsc.O_RDONLY | fsc.O_NONBLOCK), readable: true, writable: false });
  const chunks: Buffer[] = [];
  let timer: NodeJS.Timeout | undefined;
  const eof = new Promise<string>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString()));
    socket.on('error', reject);
    timer = setTimeout(
      () => reject(new Error(`no EOF on ${path.basename(file)} within ${EOF_DEADLINE_MS} ms; got ${Buffer.concat(chunks).length} bytes`)),
      EOF_DEADLINE_MS,
    );
  }).finally(() => clearTimeout(timer));
  eof.catch(() => undefined);
  return { eof, close: () => socket.destroy() };
}

interface Fifos {
  stdio: TaskStdio;
  stdout: OutputReader;
  stderr: OutputReader | undefined;
  close(): void;
}

/** stdin (held open for writing until close) and stdout, plus stderr without a terminal. */
async function openFifos(dir: string, name: string, terminal: boolean): Promise<Fifos> {
  const file = (stream: string): string => path.join(dir, `${name}-${stream}`);
  const streams = terminal ? ['stdin', 'stdout'] : ['stdin', 'stdout', 'stderr'];
  execFileSync('mkfifo', streams.map(file));
  // O_RDWR: never blocks, and the shim never sees EOF on stdin while the test holds it.
  const stdinWriter = openSync(file('stdin'), fsc.O_RDWR);
  const stdout = readFifo(file('stdout'));
  const stderr = terminal ? undefined : readFifo(file('stderr'));
  return {
    stdio: { stdin: file('stdin'), stdout: file('stdout'), stderr: terminal ? '' : file('stderr'), terminal },
    stdout,
    stderr,
    close() {
      stdout.close();
      stderr?.close();
      closeSync(stdinWriter);
    },
  };
}

/** `ctr containers create` on a plain rootfs directory, so Tasks.Create needs no mounts. */
async function createContainer(cd: Containerd, runtime: string, id: string, tty: boolean, args: string[]): Promise<string> {
  const dir = await scratchDir(cd, id);
  const rootfs = path.join(dir, 'rootfs');
  await makeBusyboxRootfs(rootfs);
  // The command is a script in the rootfs: ctr 1.6 takes a `-c` among the args for its own flag.
  await fs.writeFile(path.join(rootfs, 'output.sh'), `${COMMAND}\n`);
  await cd.ctr(['containers', 'create', '--runtime', runtime, '--rootfs', ...(tty ? ['--tty'] : []), rootfs, id, ...args]);
  return dir;
}

describe.each(RUNTIMES)('end of output with %s', (runtime) => {
  const names = runtimeNames(runtime);

  describe.concurrent.each([
    { terminal: true, label: 'with a terminal' },
    { terminal: false, label: 'without a terminal' },
  ])('$label', ({ terminal }) => {
    it('a task\'s stdout reaches EOF when its init exits, before Delete, with all output', async () => {
      const { cd } = bed();
      const id = names.id(terminal ? 'eof-tty' : 'eof');
      const dir = await createContainer(cd, runtime, id, terminal, ['/bin/sh', '/output.sh']);
      const fifos = await openFifos(dir, 'init', terminal);
      try {
        await createTask(cd, id, fifos.stdio);
        await startProcess(cd, id);
        // No Delete has been sent: EOF must come from the exit alone.
        const stdout = await fifos.stdout.eof;
        expect(stripCr(stdout)).toBe(terminal ? `${expectedStdout}err\n` : expectedStdout);
        if (fifos.stderr) expect(await fifos.stderr.eof).toBe('err\n');
        expect(await waitProcess(cd, id)).toBe(0);
        expect(await deleteProcess(cd, id)).toBe(0);
      } finally {
        fifos.close();
        await removeContainer(cd, id);
      }
    });

    it('an exec\'s stdout reaches EOF when it exits, before DeleteProcess, with all output', async () => {
      const { cd } = bed();
      const id = names.id(terminal ? 'eofx-tty' : 'eofx');
      const dir = await createContainer(cd, runtime, id, false, ['/bin/sleep', '100000']);
      const fifos = await openFifos(dir, 'exec', terminal);
      try {
        await createTask(cd, id, {});
        await startProcess(cd, id);
        const spec = { terminal, user: { uid: 0, gid: 0 }, args: ['/bin/sh', '-c', COMMAND], env: ['PATH=/bin'], cwd: '/' };
        await execProcess(cd, id, 'exec1', spec, fifos.stdio);
        await startProcess(cd, id, 'exec1');
        const stdout = await fifos.stdout.eof;
        expect(stripCr(stdout)).toBe(terminal ? `${expectedStdout}err\n` : expectedStdout);
        if (fifos.stderr) expect(await fifos.stderr.eof).toBe('err\n');
        expect(await waitProcess(cd, id, 'exec1')).toBe(0);
        expect(await deleteProcess(cd, id, 'exec1')).toBe(0);
        await killProcess(cd, id, 9);
        expect(await waitProcess(cd, id)).toBe(137);
      } finally {
        fifos.close();
        await removeContainer(cd, id);
      }
    });

    it('an exec\'s stdout reaches EOF when its container exits first', async () => {
      const { cd } = bed();
      const id = names.id(terminal ? 'eofk-tty' : 'eofk');
      const dir = await createContainer(cd, runtime, id, false, ['/bin/sleep', '100000']);
      const fifos = await openFifos(dir, 'exec', terminal);
      try {
        await createTask(cd, id, {});
        await startProcess(cd, id);
        const spec = { terminal, user: { uid: 0, gid: 0 }, args: ['/bin/sleep', '100000'], env: ['PATH=/bin'], cwd: '/' };
        await execProcess(cd, id, 'exec1', spec, fifos.stdio);
        await startProcess(cd, id, 'exec1');
        await killProcess(cd, id, 9);
        // The exec dies with its pid namespace's init; its output ends without any Delete.
        await fifos.stdout.eof;
        if (fifos.stderr) await fifos.stderr.eof;
        expect(await waitProcess(cd, id, 'exec1')).toBe(137);
        expect(await waitProcess(cd, id)).toBe(137);
      } finally {
        fifos.close();
        await removeContainer(cd, id);
      }
    });
  });
});

/**
 * The CLI contract and transport as containerd on Windows runs them, the runhcs way (spec §6.1-6.2):
 * - address `\\.\pipe\ProtectedPrefix\Administrators\containerd-shim-<namespace>-<key>-pipe`, key =
 *   the CRI sandbox id for a pod's containers, else the task id (one shim per pod);
 * - `start` re-executes itself as the daemon with `-socket <pipe>`, its stderr going to
 *   `<bundle>\panic.log`, and reads the daemon's stdout to EOF: the daemon closes stdout once it
 *   serves (readiness), and whatever it wrote before that is the error `start` reports;
 * - the daemon serves a log pipe `\\.\pipe\containerd-shim-<namespace>-<id>-log` that containerd
 *   dials as a client (it tolerates it missing), and writes log lines to whoever is connected.
 * No file descriptors are handed over (Windows has no fd 3 to pass a listening socket through).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import type { PlatformTransport } from '../common/backend';
import type { StartInputs, StartResult } from '../common/bootstrap';
import { daemonFlags, type ShimFlags } from '../common/cli';
import { forNodeStart } from '../common/node-env';

const PIPE_ROOT = '\\\\.\\pipe\\';
/** libuv's default threadpool (4) would be pinned by a few blocked stdio reads (spec §2.4, §11.5). */
const DAEMON_THREADPOOL = '64';

export function shimPipeAddress(namespace: string, key: string): string {
  return `${PIPE_ROOT}ProtectedPrefix\\Administrators\\containerd-shim-${namespace}-${key}-pipe`;
}

export function shimLogPipe(namespace: string, id: string): string {
  return `${PIPE_ROOT}containerd-shim-${namespace}-${id}-log`;
}

/** A pod's containers share the sandbox's shim (spec §6.8); anything else gets its own. */
export function windowsGroupingKey(bundle: string, id: string): string {
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
    const a = spec.annotations ?? {};
    if (a['io.kubernetes.cri.container-type'] === 'container' && a['io.kubernetes.cri.sandbox-id']) return a['io.kubernetes.cri.sandbox-id'];
    return a['io.containerd.runc.v2.group'] || id;
  } catch {
    return id;
  }
}

function isServing(pipe: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(pipe);
    const done = (alive: boolean): void => {
      socket.destroy();
      resolve(alive);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

export async function startWindows(inputs: StartInputs): Promise<StartResult> {
  const { flags, bundle } = inputs;
  if (!flags.id) throw new Error('start: -id is required');
  if (!flags.namespace) throw new Error('start: -namespace is required');
  const address = shimPipeAddress(flags.namespace, windowsGroupingKey(bundle, flags.id));
  if (!(await isServing(address))) {
    const pid = await spawnDaemon(inputs, address);
    writeAtomically(path.join(bundle, 'shim.pid'), String(pid));
  }
  writeAtomically(path.join(bundle, 'address'), address);
  return { output: address, address };
}

function spawnDaemon(inputs: StartInputs, address: string): Promise<number> {
  const { flags, bundle } = inputs;
  const [command, ...prefix] = inputs.selfCommand;
  const args = [...prefix, ...daemonFlags(flags), '-socket', address];
  const panicLog = fs.openSync(path.join(bundle, 'panic.log'), 'a');
  return new Promise<number>((resolve, reject) => {
    const child = spawn(command!, args, {
      cwd: bundle,
      detached: true,
      windowsHide: true,
      stdio: ['ignore', 'pipe', panicLog],
      env: forNodeStart({ ...process.env, TSHIM_PROTOCOL: inputs.protocol, UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? DAEMON_THREADPOOL }),
    });
    fs.closeSync(panicLog);
    const said: Buffer[] = [];
    child.once('error', reject);
    child.stdout!.on('data', (chunk: Buffer) => said.push(chunk));
    // EOF on stdout is the readiness signal; text before it is the daemon's reason for failing.
    // A daemon that died also closes stdout: it is ready only if the pipe then answers.
    child.stdout!.once('close', () => {
      const text = Buffer.concat(said).toString('utf8').trim();
      child.unref();
      void isServing(address).then((serving) => {
        if (!text && serving && child.pid !== undefined) return resolve(child.pid);
        if (child.pid !== undefined && child.exitCode === null) child.kill();
        reject(new Error(text || `shim daemon did not start: ${panicTail(bundle)}`));
      });
    });
  });
}

function panicTail(bundle: string): string {
  try {
    return fs.readFileSync(path.join(bundle, 'panic.log'), 'utf8').trim().split('\n').slice(-5).join('\n');
  } catch {
    return 'no panic.log';
  }
}

/** Log lines go to the connected containerd (the last one to dial), or nowhere. */
class LogPipe extends Writable {
  private client: net.Socket | undefined;
  private readonly server: net.Server;

  constructor(pipe: string) {
    super();
    this.server = net.createServer((socket) => {
      this.client?.destroy();
      this.client = socket;
      socket.on('error', () => socket.destroy());
      socket.on('close', () => {
        if (this.client === socket) this.client = undefined;
      });
    });
    this.server.on('error', () => undefined);
    this.server.listen(pipe);
    this.server.unref();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.client && !this.client.destroyed) this.client.write(chunk);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.client?.destroy();
    this.server.close();
    callback(error);
  }
}

export const windowsTransport: PlatformTransport = {
  start: startWindows,

  async listen(flags: ShimFlags) {
    if (!flags.socket) throw new Error('serve: -socket is required on Windows');
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(flags.socket, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // closing the server removes the pipe; there is no file to unlink
    return { server, remove: () => undefined };
  },

  logStream(flags: ShimFlags) {
    if (!flags.namespace || !flags.id) return undefined;
    return new LogPipe(shimLogPipe(flags.namespace, flags.id));
  },

  ready() {
    // `start` reads our stdout to EOF: closing it says "serving". Neither process.stdout.destroy()
    // nor fs.closeSync(1) closes it on Windows, so the HANDLE is closed through Win32 (a daemon
    // without stdout has nothing to close: closeStdoutHandle checks). A failure here (koffi that
    // does not load) must end the daemon with its reason in panic.log, never leave `start` waiting
    // for an EOF that cannot come, as a swallowed error once did.
    (require('./win32') as typeof import('./win32')).closeStdoutHandle();
  },
};

/**
 * `binary://` log URIs on Windows, the contract runhcs gives logging drivers (containerd's
 * runtime/v2/logging on Windows speaks it): the shim serves three named pipes,
 * `\\.\pipe\binary-<tag>-stdout|stderr|wait` (loggerTag), starts the driver named by the URI's path with the
 * query as arguments (each key, then its value when not empty) and CONTAINER_ID,
 * CONTAINER_NAMESPACE, CONTAINER_STDOUT, CONTAINER_STDERR, CONTAINER_WAIT in its environment. The
 * driver dials stdout and stderr, then dials the wait pipe and closes it: from then on it consumes
 * the container's output. At the end the shim ends both pipes and gives the driver 10 s to exit.
 *
 * Unlike runhcs, the driver also inherits the shim's environment (PATH, TEMP, SystemRoot): a driver
 * written for runhcs sees the same five variables, and one that needs a PATH finds it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { invalidArgument, unavailable } from '../common/errors';
import { logger } from '../common/log';
import { settlesWithin, within } from '../common/settle';

/** hcsshim's binaryCmdStartTimeout / binaryCmdWaitTimeout */
const START_TIMEOUT_MS = 10_000;
const EXIT_TIMEOUT_MS = 10_000;

export interface BinaryLogger {
  readonly stdout: net.Socket;
  readonly stderr: net.Socket;
  readonly pid: number;
  /** Ends both pipes and waits for the driver (killed after 10 s). Once. */
  close(): Promise<void>;
}

export interface LoggerIdentity {
  /** CONTAINER_ID */
  containerId: string;
  namespace: string;
  /** unique per process in this shim: the pipes' names */
  tag: string;
}

export function isBinaryUri(p: string): boolean {
  return p.startsWith('binary://');
}

/** The driver's path and arguments; a UNC path is refused as runhcs refuses it. */
export function driverCommand(uri: string): { path: string; args: string[] } {
  // Read by hand, not with URL: in `binary://C:/x` a URL parser takes `C:` for a host and port.
  const rest = uri.slice('binary://'.length).replace(/#.*$/, '');
  const q = rest.indexOf('?');
  let p: string;
  try {
    p = decodeURIComponent(q < 0 ? rest : rest.slice(0, q));
  } catch {
    throw invalidArgument(`log URI ${JSON.stringify(uri)} is not a valid URI`);
  }
  p = p.replace(/\//g, '\\');
  if (/^\\[A-Za-z]:\\/.test(p)) p = p.slice(1);
  if (!p || p === '\\') throw invalidArgument(`log URI ${JSON.stringify(uri)} names no logging driver`);
  if (p.startsWith('\\\\')) throw invalidArgument(`log URI ${JSON.stringify(uri)}: a UNC path is not a safe logging driver path`);
  const args: string[] = [];
  for (const [k, v] of new URLSearchParams(q < 0 ? '' : rest.slice(q + 1))) {
    args.push(k);
    if (v !== '') args.push(v);
  }
  return { path: p, args };
}

/**
 * The part of a process's pipe names that is its own: namespace, container id and exec id, joined
 * by characters containerd never allows in those identifiers (letters, digits, `.`, `_` and `-`
 * only), so no two processes on the host share a pipe name (runhcs uses the task id alone: two
 * namespaces, or an exec `b` of `a` and a container `a-b`, would collide). Drivers read the names
 * from CONTAINER_STDOUT/STDERR/WAIT, never build them.
 */
export function loggerTag(namespace: string, containerId: string, execId?: string): string {
  return `${namespace}+${containerId}${execId ? `@${execId}` : ''}`;
}

/** Who a process's driver logs for, and its pipes' tag. */
export function loggerIdentity(namespace: string, containerId: string, execId?: string): LoggerIdentity {
  return { containerId, namespace, tag: loggerTag(namespace, containerId, execId) };
}

function pipeName(tag: string, which: string): string {
  return `\\\\.\\pipe\\binary-${tag}-${which}`;
}

/** One named pipe server that takes one connection. */
class OneConnection {
  readonly server = net.createServer();
  readonly connected: Promise<net.Socket>;

  constructor(readonly path: string) {
    this.connected = new Promise((resolve, reject) => {
      this.server.once('connection', (socket) => {
        socket.on('error', (err) => logger.debug('logging driver pipe error', { pipe: path, error: err }));
        resolve(socket);
        this.server.close();
      });
      this.server.once('error', reject);
    });
    this.connected.catch(() => undefined);
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => {
        this.server.removeListener('error', reject);
        resolve();
      });
    });
  }

  close(): void {
    if (this.server.listening) this.server.close();
  }
}

const startTimeout = (what: string): Error => unavailable(`failed to start binary logger: ${what} timed out after ${START_TIMEOUT_MS / 1000} s`);

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
}

export async function startBinaryLogger(uri: string, who: LoggerIdentity): Promise<BinaryLogger> {
  const command = driverCommand(uri);
  const pipes = { stdout: new OneConnection(pipeName(who.tag, 'stdout')), stderr: new OneConnection(pipeName(who.tag, 'stderr')), wait: new OneConnection(pipeName(who.tag, 'wait')) };
  const all = Object.values(pipes);
  let child: ChildProcess | undefined;
  try {
    for (const p of all) {
      await p.listen().catch((err: Error) => {
        throw unavailable(`binary logger: cannot serve ${p.path}: ${err.message}`);
      });
    }
    const env = {
      ...process.env,
      CONTAINER_ID: who.containerId,
      CONTAINER_NAMESPACE: who.namespace,
      CONTAINER_STDOUT: pipes.stdout.path,
      CONTAINER_STDERR: pipes.stderr.path,
      CONTAINER_WAIT: pipes.wait.path,
    };
    const started = spawn(command.path, command.args, { env, stdio: 'ignore', windowsHide: true });
    child = started;
    const failed = new Promise<never>((_, reject) => {
      started.once('error', (err) => reject(unavailable(`failed to start binary logger ${command.path}: ${err.message}`)));
      started.once('exit', (code) => reject(unavailable(`binary logger ${command.path} exited (${code}) before it was ready`)));
    });
    failed.catch(() => undefined);
    // Ready = the wait pipe was dialled and closed again.
    const ready = pipes.wait.connected.then(
      (socket) =>
        new Promise<void>((resolve) => {
          socket.resume();
          socket.once('close', () => resolve());
        }),
    );
    await within(Promise.race([ready, failed]), START_TIMEOUT_MS, () => startTimeout('waiting for the driver to be ready'));
    const [stdout, stderr] = await within(Promise.race([Promise.all([pipes.stdout.connected, pipes.stderr.connected]), failed]), START_TIMEOUT_MS, () => startTimeout('waiting for the driver to open stdout and stderr'));
    started.removeAllListeners('exit');
    started.removeAllListeners('error');
    started.on('error', (err) => logger.warn('binary logger', { id: who.containerId, error: err }));
    logger.debug('binary logger started', { id: who.containerId, pid: started.pid, driver: command.path });
    let closing: Promise<void> | undefined;
    return {
      stdout,
      stderr,
      pid: started.pid ?? 0,
      close: () => {
        closing ??= (async () => {
          stdout.end();
          stderr.end();
          if (!(await settlesWithin(exited(started), EXIT_TIMEOUT_MS))) {
            logger.warn('binary logger did not exit within 10 s; killing it', { id: who.containerId, pid: started.pid });
            started.kill();
          }
        })();
        return closing;
      },
    };
  } catch (err) {
    for (const p of all) {
      p.close();
      void p.connected.then((s) => s.destroy(), () => undefined);
    }
    child?.kill();
    throw err;
  }
}

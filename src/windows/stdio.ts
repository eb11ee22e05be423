/**
 * A process's stdio on Windows (spec §6.3, §6.5): containerd creates named pipe servers
 * (`\\.\pipe\ctr-<id>-stdin|stdout|stderr`) that accept one connection each; the shim dials them
 * before the process exists (so a bad path fails Create/Start, not the process), then relays between
 * them and the raw pipe HANDLEs HCS returns.
 *
 * - stdout/stderr: HCS → containerd until end of stream, then CloseHandle and end the connection.
 * - stdin: containerd → HCS; at its end (or CloseIO) the HCS stdin is closed (CloseHandle modify on
 *   the process, then CloseHandle of our end) so the process sees EOF.
 * - After the process exits, output gets 1 s to drain; then the reads are cancelled (CancelIoEx),
 *   because HCS does not always deliver EOF. A handle is closed only once no call is using it.
 */
import * as net from 'node:net';
import type { StdioSpec } from '../common/backend';
import { failedPrecondition, invalidArgument, unavailable } from '../common/errors';
import { logger } from '../common/log';
import { settlesWithin } from '../common/settle';
import { isBinaryUri, startBinaryLogger, type BinaryLogger, type LoggerIdentity } from './binary-logger';
import type { ProcessInformation, StdioHandle, StdioIo } from './hcs-api';

const CHUNK = 32 * 1024;
/** hcsshim's CopyAfterExitTimeout */
export const COPY_AFTER_EXIT_MS = 1000;
const CONNECT_TIMEOUT_MS = 10_000;

export interface Upstream {
  stdin?: net.Socket;
  stdout?: net.Socket;
  stderr?: net.Socket;
  /** a `binary://` logging driver, which owns stdout and stderr */
  logger?: BinaryLogger;
}

function checkPath(p: string, which: string): void {
  if (!p) return;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(p)) throw invalidArgument(`${which}: unsupported stdio scheme in ${JSON.stringify(p)}`);
}

function dial(p: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(p);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(unavailable(`timed out connecting to ${p}`));
    }, CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', (err) => logger.debug('stdio pipe error', { pipe: p, error: err }));
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(unavailable(`cannot connect to ${p}: ${err.message}`));
    });
  });
}

/**
 * Dials containerd's pipes; on any failure closes what was opened. A `binary://` stdout starts its
 * logging driver instead, for stdout and stderr both (runhcs ignores stdin then too).
 */
export async function connectUpstream(spec: StdioSpec, who: LoggerIdentity): Promise<Upstream> {
  if (spec.terminal && spec.stderr) throw failedPrecondition('if using terminal, stderr must be empty');
  if (isBinaryUri(spec.stdout)) {
    const driver = await startBinaryLogger(spec.stdout, who);
    return { stdout: driver.stdout, stderr: driver.stderr, logger: driver };
  }
  checkPath(spec.stdin, 'stdin');
  checkPath(spec.stdout, 'stdout');
  checkPath(spec.stderr, 'stderr');
  const up: Upstream = {};
  try {
    if (spec.stdin) up.stdin = await dial(spec.stdin);
    if (spec.stdout) up.stdout = await dial(spec.stdout);
    if (spec.stderr) up.stderr = await dial(spec.stderr);
  } catch (err) {
    void closeUpstream(up);
    throw err;
  }
  return up;
}

/** Containerd's pipes are dropped; a logging driver gets the end of its pipes and time to exit. */
export async function closeUpstream(up: Upstream): Promise<void> {
  up.stdin?.destroy();
  if (up.logger) return up.logger.close();
  up.stdout?.destroy();
  up.stderr?.destroy();
}

export class ProcessRelay {
  private readonly outputs: Array<{ handle: StdioHandle; done: Promise<void> }> = [];
  private stdinDone: Promise<void> = Promise.resolve();
  private stdinHandle: StdioHandle | null;
  private stdinClosing = false;

  constructor(
    private readonly io: StdioIo,
    private readonly up: Upstream,
    info: ProcessInformation,
    /** the CloseHandle-StdIn modify on the process; skipped by the caller once it exited */
    private readonly closeProcessStdin: () => Promise<void>,
  ) {
    this.stdinHandle = info.stdInput;
    if (info.stdOutput) this.outputs.push({ handle: info.stdOutput, done: this.copyOut(info.stdOutput, up.stdout) });
    if (info.stdError) this.outputs.push({ handle: info.stdError, done: this.copyOut(info.stdError, up.stderr) });
    if (info.stdInput && up.stdin) this.stdinDone = this.copyIn(info.stdInput, up.stdin);
    else if (info.stdInput) void this.finishStdin();
  }

  private async copyOut(handle: StdioHandle, sink: net.Socket | undefined): Promise<void> {
    try {
      for (;;) {
        const chunk = await this.io.read(handle, CHUNK);
        if (chunk.length === 0) break;
        if (sink && !sink.destroyed && !sink.write(chunk)) {
          await new Promise<void>((resolve) => {
            sink.once('drain', resolve);
            sink.once('close', resolve);
          });
        }
      }
    } catch (err) {
      logger.debug('stdio read ended', { error: err });
    } finally {
      this.io.close(handle);
      sink?.end();
    }
  }

  private copyIn(handle: StdioHandle, source: net.Socket): Promise<void> {
    return new Promise<void>((resolve) => {
      let writing: Promise<boolean> = Promise.resolve(true);
      source.on('data', (chunk: Buffer) => {
        source.pause();
        writing = writing.then((ok) => (ok ? this.io.write(handle, chunk) : false));
        void writing.then((ok) => {
          if (ok) source.resume();
          else source.destroy();
        });
      });
      source.once('close', () => {
        void writing.then(() => this.finishStdin()).then(resolve, resolve);
      });
    });
  }

  /** HCS stdin: tell the process (EOF), then close our end. Once. */
  private async finishStdin(): Promise<void> {
    if (this.stdinClosing) return;
    this.stdinClosing = true;
    const handle = this.stdinHandle;
    this.stdinHandle = null;
    await this.closeProcessStdin().catch((err: unknown) => logger.debug('closing process stdin', { error: err }));
    if (handle) this.io.close(handle);
  }

  /** CloseIO: the upstream stdin is done; the process gets EOF. */
  async closeStdin(): Promise<void> {
    if (this.up.stdin && !this.up.stdin.destroyed) {
      this.up.stdin.destroy();
      await this.stdinDone;
    } else {
      await this.finishStdin();
    }
  }

  /** After the process exited: output drains for 1 s, then its reads are cancelled. */
  async afterExit(): Promise<void> {
    this.up.stdin?.destroy();
    const all = Promise.all(this.outputs.map((o) => o.done));
    if (await settlesWithin(all, COPY_AFTER_EXIT_MS)) return;
    for (const o of this.outputs) {
      try {
        this.io.cancel(o.handle);
      } catch {
        // already closed by its loop
      }
    }
    if (!(await settlesWithin(all, COPY_AFTER_EXIT_MS))) {
      // never close a handle a worker is still blocked on: leak it rather than crash
      logger.warn('stdio read did not end after cancel; leaving its handle open');
    }
  }

  close(): Promise<void> {
    return closeUpstream(this.up);
  }
}

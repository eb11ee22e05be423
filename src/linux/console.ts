/**
 * Terminal support (spec §9.2): the `--console-socket` runc sends the pty master over, and the relay
 * between containerd's FIFOs and that master.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { readSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tty from 'node:tty';
import { Code, ShimError, errnoCode, failedPrecondition, internal, unknown } from '../common/errors';
import type { Readable, Writable } from 'node:stream';
import { fdOf, flushed, stopReading } from '../common/upgrade/handles';
import { close as closeFd, dup, recvFd, setNonBlocking, setWinsize } from './libc';

/** Backoff bounds while runc has connected but its message is not queued yet. */
const RECV_RETRY_MIN_MS = 2;
const RECV_RETRY_MAX_MS = 50;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function canceled(what: string): ShimError {
  return new ShimError(Code.Canceled, `${what} canceled`);
}

/** The kernel fd behind an accepted unix socket. Node exposes it only on the internal handle. */
function socketFd(socket: net.Socket): number {
  const fd = fdOf(socket);
  if (fd < 0) throw internal('accepted console socket has no file descriptor');
  return fd;
}

/**
 * A one-shot listening socket for `runc create|exec --console-socket <path>`. runc connects once and
 * sends a single message: the master's name as payload plus the master fd as SCM_RIGHTS. Node's net
 * cannot receive descriptors, so the connection is accepted paused (libuv never reads from it) and the
 * message is taken off its fd with recvmsg.
 */
export class ConsoleSocket {
  private master: Promise<number> | undefined;
  private closed = false;
  private readonly closeHooks = new Set<() => void>();

  private constructor(
    readonly path: string,
    private readonly dir: string,
    private readonly server: net.Server,
  ) {}

  /** Listens on `pty.sock` in a fresh `pty*` dir under $XDG_RUNTIME_DIR (or the temp dir). */
  static async create(): Promise<ConsoleSocket> {
    const base = process.env.XDG_RUNTIME_DIR || tmpdir();
    let dir: string;
    try {
      dir = await mkdtemp(join(base, 'pty'));
    } catch (err) {
      throw unknown(`create console socket dir in ${base}: ${message(err)}`, err);
    }
    const path = join(dir, 'pty.sock');
    const server = net.createServer({ pauseOnConnect: true });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      server.close();
      await rm(dir, { recursive: true, force: true });
      throw unknown(`listen on console socket ${path}: ${message(err)}`, err);
    }
    return new ConsoleSocket(path, dir, server);
  }

  /**
   * Resolves with the pty master fd (close-on-exec, owned by the caller) once runc has connected and
   * sent it. Waits without a deadline, like runc-shim; cancel with `signal` or `close()` (Canceled).
   * Calling it again returns the same promise.
   */
  receiveMaster(signal?: AbortSignal): Promise<number> {
    this.master ??= this.receive(signal);
    return this.master;
  }

  /** Stops listening and removes the socket dir. Idempotent; a pending `receiveMaster` is canceled. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const hook of this.closeHooks) hook();
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }

  private receive(signal: AbortSignal | undefined): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let done = false;
      let conn: net.Socket | undefined;
      let retry: NodeJS.Timeout | undefined;

      const finish = (outcome: number | ShimError): void => {
        if (done) {
          if (typeof outcome === 'number') closeQuietly(outcome);
          return;
        }
        done = true;
        clearTimeout(retry);
        signal?.removeEventListener('abort', onAbort);
        this.closeHooks.delete(onClose);
        this.server.off('connection', onConnection);
        conn?.destroy();
        // Accept once: nobody else may hand us a terminal on this path.
        if (this.server.listening) this.server.close();
        if (typeof outcome === 'number') resolve(outcome);
        else reject(outcome);
      };
      const onAbort = (): void => finish(canceled('waiting for the console socket'));
      const onClose = (): void => finish(canceled('console socket closed; waiting for the pty master'));

      const tryReceive = (socket: net.Socket, delay: number): void => {
        let received: { fd: number; name: string } | undefined;
        try {
          received = recvFd(socketFd(socket));
        } catch (err) {
          finish(err instanceof ShimError ? err : unknown(`receive pty master: ${message(err)}`, err));
          return;
        }
        if (received) {
          finish(received.fd);
          return;
        }
        retry = setTimeout(() => tryReceive(socket, Math.min(delay * 2, RECV_RETRY_MAX_MS)), delay);
      };

      const onConnection = (socket: net.Socket): void => {
        if (conn) {
          socket.destroy();
          return;
        }
        conn = socket;
        socket.on('error', () => undefined); // never read from; errors surface through recvmsg
        tryReceive(socket, RECV_RETRY_MIN_MS);
      };

      if (this.closed) {
        onClose();
        return;
      }
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.closeHooks.add(onClose);
      this.server.on('connection', onConnection);
    });
  }
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed: nothing left to release
  }
}

/**
 * Relays a pty master: input → master, master → output. Takes ownership of `masterFd`.
 *
 * The master is read through a tty stream on a dup of the fd (libuv cannot register one fd twice, and fs
 * streams would park threadpool threads in blocking reads forever). libuv has one flaw with pty masters:
 * on hang-up it declares EOF after any short read, yet a pty master returns at most ~4 KiB per read, so
 * the tail of the output may still be queued in the kernel. After the stream ends, the rest is therefore
 * read synchronously from the original (non-blocking) fd until EIO — the master's "slave closed" EOF.
 */
export class PtyRelay {
  private stream: tty.ReadStream | undefined;
  private closed = false;
  private stopRelay: (() => void) | undefined;
  private suspendRelay: (() => Promise<void>) | undefined;
  private resumeRelay: (() => void) | undefined;

  constructor(readonly masterFd: number) {}

  /**
   * Upgrade: stops reading the master and the input, and hands what was already read to its
   * destination; resolves once that is written. Unread data stays in the kernel for the next reader.
   */
  async suspend(): Promise<void> {
    await this.suspendRelay?.();
  }

  /** Upgrade abandoned: relays again. */
  resume(): void {
    this.resumeRelay?.();
  }

  /**
   * Resolves when the master reached EOF/EIO (every process holding the slave is gone) and everything
   * read was handed to `output` and flushed. `output` is not ended: the caller owns it. An input EOF
   * only stops copying (the terminal stays open). `close()` makes a pending start resolve early.
   */
  start(input: NodeJS.ReadableStream | undefined, output: NodeJS.WritableStream): Promise<void> {
    if (this.stream || this.closed) return Promise.reject(failedPrecondition('pty relay already started or closed'));
    let stream: tty.ReadStream;
    try {
      setNonBlocking(this.masterFd, true);
      stream = new tty.ReadStream(dup(this.masterFd), { readable: true, writable: true });
    } catch (err) {
      return Promise.reject(unknown(`open pty master: ${message(err)}`, err));
    }
    this.stream = stream;

    return new Promise<void>((resolve, reject) => {
      let pendingWrites = 0;
      let ended = false;
      let settled = false;
      let failure: ShimError | undefined;
      let outputBlocked = false;
      let outputFailed = false;
      let inputBlocked = false;

      const settleIfFlushed = (): void => {
        if (settled || !ended || pendingWrites > 0) return;
        settled = true;
        input?.removeListener('data', onInput);
        output.removeListener('error', onOutputError);
        if (failure) reject(failure);
        else resolve();
      };
      const forward = (chunk: Buffer): boolean => {
        // Once the output is broken, keep reading the master anyway (into the void): a terminal nobody
        // reads blocks the container's writes forever.
        if (outputFailed) return true;
        pendingWrites++;
        return output.write(chunk, () => {
          pendingWrites--;
          settleIfFlushed();
        });
      };
      const finishOutput = (): void => {
        if (ended) return;
        if (!this.closed) this.drainTail(forward);
        ended = true;
        settleIfFlushed();
      };
      this.stopRelay = () => {
        pendingWrites = 0;
        ended = true;
        settleIfFlushed();
      };
      this.suspendRelay = async () => {
        if (ended) return;
        for (const chunk of stopReading(stream)) forward(chunk);
        const waits: Promise<void>[] = [];
        if (input && 'read' in input) {
          for (const chunk of stopReading(input as Readable)) {
            if (!stream.destroyed && stream.writable) stream.write(chunk);
          }
        }
        if (!stream.destroyed) waits.push(flushed(stream));
        waits.push(flushed(output as Writable));
        await Promise.all(waits);
      };
      this.resumeRelay = () => {
        if (ended) return;
        if (!outputBlocked) stream.resume();
        if (!inputBlocked) input?.resume();
      };

      const onOutputError = (err: Error): void => {
        outputFailed = true;
        failure ??= unknown(`write terminal output: ${err.message}`, err);
        pendingWrites = 0; // callbacks of a failed stream are not guaranteed; nothing more will flush
        if (outputBlocked) {
          outputBlocked = false;
          stream.resume();
        }
        settleIfFlushed();
      };
      output.on('error', onOutputError);

      // master → output, pausing the master while the output is backed up
      stream.on('data', (chunk: Buffer) => {
        if (!forward(chunk) && !outputBlocked) {
          outputBlocked = true;
          stream.pause();
          output.once('drain', () => {
            if (!outputBlocked) return;
            outputBlocked = false;
            stream.resume();
          });
        }
      });
      stream.on('end', finishOutput);
      stream.on('error', (err) => {
        // EIO is how a pty master reports that the slave side was closed: the normal end.
        if (errnoCode(err) !== 'EIO') failure ??= unknown(`read pty master: ${err.message}`, err);
        finishOutput();
      });

      // input → master, pausing the input while the terminal does not take more
      const onInput = (chunk: Buffer | string): void => {
        if (stream.destroyed || !stream.writable) return;
        if (!stream.write(chunk) && !inputBlocked) {
          inputBlocked = true;
          input?.pause();
          stream.once('drain', () => {
            inputBlocked = false;
            input?.resume();
          });
        }
      };
      input?.on('data', onInput);
      input?.resume();
    });
  }

  /** ioctl(TIOCSWINSZ); the container sees SIGWINCH. */
  resize(width: number, height: number): void {
    if (this.closed) throw failedPrecondition('pty relay is closed');
    try {
      setWinsize(this.masterFd, height, width);
    } catch (err) {
      throw unknown(`resize pty: ${message(err)}`, err);
    }
  }

  /** Stops relaying and closes the master. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream?.destroy();
    this.stopRelay?.();
    closeQuietly(this.masterFd);
  }

  /** Reads whatever the kernel still holds after libuv reported EOF; stops at EIO/EAGAIN. */
  private drainTail(forward: (chunk: Buffer) => boolean): void {
    const buffer = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      let n: number;
      try {
        n = readSync(this.masterFd, buffer, 0, buffer.length, null);
      } catch {
        return; // EIO (slave closed, drained), EAGAIN (reopened slave, nothing queued) or EBADF
      }
      if (n <= 0) return;
      forward(Buffer.from(buffer.subarray(0, n)));
    }
  }
}

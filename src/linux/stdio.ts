/**
 * A process's stdio as the Linux backend sees it: either pipes relayed to containerd's FIFOs
 * (io.ts) or a pty whose master runc hands over on a console socket (console.ts). Both look the
 * same to the process code: fds/console socket for runc, then relay, resize, close stdin, drain.
 */
import * as fs from 'node:fs';
import type { StdioSpec } from '../common/backend';
import { logger } from '../common/log';
import { settlesWithin } from '../common/settle';
import { ConsoleSocket, PtyRelay } from './console';
import { createProcessIO, openTerminalFifos, type ProcessIO } from './io';

type TerminalFifos = Awaited<ReturnType<typeof openTerminalFifos>>;

export interface ProcessStdio {
  /** what runc gets as the container's stdin/stdout/stderr */
  readonly runtimeStdio: [number, number, number];
  /** set when a terminal was asked for */
  readonly consoleSocket: string | undefined;
  /** after runc create/exec/restore returned successfully */
  started(): Promise<void>;
  resize(width: number, height: number): void;
  closeStdin(): void;
  drain(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface StdioOwner {
  namespace: string;
  ioUid: number;
  ioGid: number;
}

export async function openStdio(processId: string, spec: StdioSpec, owner: StdioOwner): Promise<ProcessStdio> {
  if (spec.terminal) return TerminalStdio.open(processId, spec, owner);
  return new PipeStdio(await createProcessIO(processId, spec, owner));
}

class PipeStdio implements ProcessStdio {
  readonly consoleSocket = undefined;
  constructor(private readonly io: ProcessIO) {}

  get runtimeStdio(): [number, number, number] {
    return this.io.runtimeStdio;
  }
  async started(): Promise<void> {
    this.io.closeAfterStart();
  }
  resize(): void {
    // no terminal: nothing to size, as the runc shim answers OK
  }
  closeStdin(): void {
    this.io.closeStdin();
  }
  drain(timeoutMs: number): Promise<void> {
    return this.io.drain(timeoutMs);
  }
  close(): Promise<void> {
    return this.io.close();
  }
}

class TerminalStdio implements ProcessStdio {
  private relay: PtyRelay | undefined;
  private relayDone: Promise<void> = Promise.resolve();
  private readonly abort = new AbortController();
  private readonly master: Promise<number>;

  private constructor(
    private readonly fifos: TerminalFifos,
    private readonly socket: ConsoleSocket,
    readonly runtimeStdio: [number, number, number],
  ) {
    this.master = socket.receiveMaster(this.abort.signal);
    // runc may fail before connecting; the rejection is then handled by close().
    this.master.catch(() => undefined);
  }

  /** The FIFOs are opened first: if they cannot be, nothing has run yet and nothing leaks. */
  static async open(processId: string, spec: StdioSpec, owner: StdioOwner): Promise<TerminalStdio> {
    const fifos = await openTerminalFifos(spec, { id: processId, ...owner });
    let socket: ConsoleSocket | undefined;
    try {
      socket = await ConsoleSocket.create();
      const devNull = fs.openSync('/dev/null', 'r+');
      return new TerminalStdio(fifos, socket, [devNull, devNull, devNull]);
    } catch (err) {
      await socket?.close();
      await fifos.close();
      throw err;
    }
  }

  get consoleSocket(): string {
    return this.socket.path;
  }

  async started(): Promise<void> {
    try {
      const master = await this.master;
      this.relay = new PtyRelay(master);
      // The output ends with the terminal, not at Delete: CRI's exec waits for EOF on the stdout FIFO
      // before it sends Delete, so holding it open would hang `kubectl exec -it` after the process exits.
      this.relayDone = this.relay
        .start(this.fifos.input, this.fifos.output ?? discard())
        .catch((err: unknown) => {
          logger.warn('pty relay failed', { error: err });
        })
        .then(() => this.fifos.endOutput());
    } finally {
      this.releaseSetup();
      await this.socket.close();
    }
  }

  resize(width: number, height: number): void {
    this.relay?.resize(width, height);
  }
  closeStdin(): void {
    this.fifos.closeStdin();
  }
  async drain(timeoutMs: number): Promise<void> {
    await settlesWithin(this.relayDone, timeoutMs);
  }
  async close(): Promise<void> {
    this.abort.abort();
    this.releaseSetup();
    this.relay?.close();
    await this.fifos.close();
    await this.socket.close();
  }

  private releaseSetup(): void {
    const fd = this.runtimeStdio[0];
    if (fd >= 0) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
      this.runtimeStdio[0] = this.runtimeStdio[1] = this.runtimeStdio[2] = -1;
    }
  }
}

function discard(): NodeJS.WritableStream {
  return fs.createWriteStream('/dev/null');
}

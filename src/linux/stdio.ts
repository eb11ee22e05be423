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
import { createProcessIO, openTerminalFifos, restoreProcessIO, restoreTerminalFifos, type ProcessIO } from './io';
import type { IoState } from '../common/upgrade/state';

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
  /** upgrade: stop relaying, write out what was read (what is unread stays in the kernel) */
  suspend(): Promise<void>;
  /** upgrade abandoned */
  resume(): void;
  /** upgrade: descriptors and roles, once suspended */
  handover(): IoState;
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
  suspend(): Promise<void> {
    return this.io.suspend();
  }
  resume(): void {
    this.io.resume();
  }
  handover(): IoState {
    return this.io.handover();
  }
}

class TerminalStdio implements ProcessStdio {
  private relay: PtyRelay | undefined;
  private relayDone: Promise<void> = Promise.resolve();
  private readonly abort = new AbortController();
  /** undefined when restored by an upgraded image: the master came with the hand-over */
  private readonly master: Promise<number> | undefined;

  private constructor(
    private readonly fifos: TerminalFifos,
    private readonly socket: ConsoleSocket | undefined,
    readonly runtimeStdio: [number, number, number],
  ) {
    this.master = socket?.receiveMaster(this.abort.signal);
    // runc may fail before connecting; the rejection is then handled by close().
    this.master?.catch(() => undefined);
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

  /** A terminal rebuilt by an upgraded image: the pty master and FIFO ends it inherited. */
  static restore(state: Extract<IoState, { kind: 'pty' }>, fifos: TerminalFifos): TerminalStdio {
    const stdio = new TerminalStdio(fifos, undefined, [-1, -1, -1]);
    if (state.outputEnded) stdio.relay = new PtyRelay(state.masterFd);
    else stdio.startRelay(state.masterFd);
    return stdio;
  }

  /**
   * The output ends with the terminal, not at Delete: CRI's exec waits for EOF on the stdout FIFO
   * before it sends Delete, so holding it open would hang `kubectl exec -it` after the process exits.
   */
  private startRelay(master: number): void {
    this.relay = new PtyRelay(master);
    this.relayDone = this.relay
      .start(this.fifos.input, this.fifos.output ?? discard())
      .catch((err: unknown) => {
        logger.warn('pty relay failed', { error: err });
      })
      .then(() => this.fifos.endOutput());
  }

  get consoleSocket(): string | undefined {
    return this.socket?.path;
  }

  async started(): Promise<void> {
    if (!this.master) return; // restored: running already
    try {
      this.startRelay(await this.master);
    } finally {
      this.releaseSetup();
      await this.socket?.close();
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
    await this.socket?.close();
  }

  async suspend(): Promise<void> {
    if (!this.relay) throw new Error('the terminal has not been handed over by the runtime yet');
    await this.relay.suspend();
  }
  resume(): void {
    this.relay?.resume();
  }
  handover(): IoState {
    if (!this.relay) throw new Error('the terminal has not been handed over by the runtime yet');
    return { kind: 'pty', masterFd: this.relay.masterFd, ...this.fifos.handover() };
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

/** Rebuilds a process's stdio from its hand-over record (upgrade); undefined for none. */
export function restoreStdio(state: IoState): ProcessStdio | undefined {
  if (state.kind === 'none') return undefined;
  if (state.kind === 'pty') return TerminalStdio.restore(state, restoreTerminalFifos(state));
  return new PipeStdio(restoreProcessIO(state));
}

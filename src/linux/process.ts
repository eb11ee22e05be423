/**
 * The Linux halves of a task's processes. The init is created by `runc create` (or restored) and
 * started by `runc start`; an exec is prepared at Exec and run by `runc exec --detach` at Start.
 * Exit statuses come from the reaper, which the pid (from runc's pid file) is handed to as soon as
 * it is known; a process that already exited stays a zombie until then, so nothing is lost.
 */
import { rmSync } from 'node:fs';
import type { ExitStatus, PlatformProcess } from '../common/backend';
import { notFound, PROCESS_ALREADY_FINISHED } from '../common/errors';
import { logger } from '../common/log';
import { Deferred } from '../common/mutex';
import { readPidFile } from './bundle';
import type { Reaper, WaitResult } from './reaper';
import type { ProcessStdio } from './stdio';
import type { IoState } from '../common/upgrade/state';

export const IO_DRAIN_MS = 2000;

/**
 * One exit per process: resolves once the pid is known (`begin`) and the reaper collected it,
 * however early the process died.
 */
export class ExitWatch {
  private readonly pidKnown = new Deferred<number>();
  readonly exit: Promise<ExitStatus>;
  private done = false;

  constructor(reaper: Reaper) {
    this.exit = this.pidKnown.promise
      .then((pid) => reaper.watch(pid))
      .then((r: WaitResult) => {
        this.done = true;
        return { status: r.status, exitedAt: new Date() };
      });
  }

  begin(pid: number): void {
    this.pidKnown.resolve(pid);
  }

  get exited(): boolean {
    return this.done;
  }
}

export abstract class LinuxProcess implements PlatformProcess {
  protected pidValue = 0;
  protected readonly exitWatch: ExitWatch;

  constructor(
    reaper: Reaper,
    protected stdio: ProcessStdio | undefined,
  ) {
    this.exitWatch = new ExitWatch(reaper);
  }

  get pid(): number {
    return this.pidValue;
  }

  get hasExited(): boolean {
    return this.exitWatch.exited;
  }

  abstract start(): Promise<number>;
  abstract kill(signal: number, all: boolean): Promise<void>;
  protected abstract deleteRuntimeState(): Promise<void>;

  waitExit(): Promise<ExitStatus> {
    return this.exitWatch.exit;
  }

  /** pid known: from here on its exit is collected */
  protected adopt(pid: number): void {
    this.pidValue = pid;
    this.exitWatch.begin(pid);
  }

  /** Upgrade, new image: a process the old image knew; its exit is collected again while it runs. */
  restorePid(pid: number, running: boolean): void {
    if (running) this.adopt(pid);
    else this.pidValue = pid;
  }

  async suspendIo(): Promise<void> {
    await this.stdio?.suspend();
  }

  resumeIo(): void {
    this.stdio?.resume();
  }

  handoverIo(): IoState {
    return this.stdio?.handover() ?? { kind: 'none' };
  }

  protected async readPid(file: string): Promise<number> {
    const pid = await readPidFile(file);
    this.adopt(pid);
    return pid;
  }

  async resizePty(width: number, height: number): Promise<void> {
    this.stdio?.resize(width, height);
  }

  async closeStdin(): Promise<void> {
    this.stdio?.closeStdin();
  }

  async delete(): Promise<void> {
    if (this.stdio) {
      await this.stdio.drain(IO_DRAIN_MS);
    }
    await this.deleteRuntimeState();
    await this.closeStdio();
  }

  protected async closeStdio(): Promise<void> {
    const stdio = this.stdio;
    this.stdio = undefined;
    if (!stdio) return;
    try {
      await stdio.close();
    } catch (err) {
      logger.warn('closing process io', { error: err });
    }
  }

  /** Direct signal to a pid we own (execs); ESRCH means it is already gone. */
  protected signalPid(signal: number): void {
    if (this.exitWatch.exited || this.pidValue <= 0) throw notFound(PROCESS_ALREADY_FINISHED);
    try {
      process.kill(this.pidValue, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw notFound(PROCESS_ALREADY_FINISHED);
      throw err;
    }
  }
}

/** Synchronous: a file in the bundle (an exec's pid file), removed while containerd waits on Delete. */
export function removeQuietly(file: string): void {
  try {
    rmSync(file, { force: true });
  } catch {
    // gone with its bundle, or never written
  }
}

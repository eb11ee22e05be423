/**
 * A process the shim manages (the init or an exec): identity fields are readonly; the mutable
 * state changes only through its state object, under `mutex`. Waiters get the exit from `exit`,
 * which settles once the exit has been published.
 */
import type { ExitStatus, PlatformProcess, StdioSpec } from '../backend';
import { internal } from '../errors';
import { Deferred, Mutex } from '../mutex';
import type { TaskStatus } from '../types';
import { initialExecState, restoredExecState } from './exec-states';
import { initialInitState, restoredInitState } from './init-states';
import type { ProcessState, StateHost, StateName } from './state';

/** Pause and resume act on the whole container; only the init's states call them. */
export interface Pauser {
  pause(): Promise<void>;
  resume(): Promise<void>;
}

export interface ProcessIdentity {
  /** container id */
  containerId: string;
  /** '' for the init */
  execId: string;
  stdio: StdioSpec;
}

export class ManagedProcess implements StateHost {
  readonly containerId: string;
  readonly execId: string;
  readonly stdio: StdioSpec;
  readonly kind: 'container' | 'process';
  readonly mutex = new Mutex();
  /** settles when the exit is known and published */
  readonly exit = new Deferred<ExitStatus>();
  private state: ProcessState;
  private exitStatus: ExitStatus | undefined;
  private startedPid = 0;
  private readonly pauser: Pauser | undefined;

  constructor(
    identity: ProcessIdentity,
    readonly platform: PlatformProcess,
    options: { fromCheckpoint?: boolean; pauser?: Pauser } = {},
  ) {
    this.pauser = options.pauser;
    this.containerId = identity.containerId;
    this.execId = identity.execId;
    this.stdio = identity.stdio;
    this.kind = identity.execId === '' ? 'container' : 'process';
    this.state =
      identity.execId === '' ? initialInitState(this, options.fromCheckpoint ?? false) : initialExecState(this);
  }

  /**
   * Upgrade, new image: back in the state the old image left it in, with its pid and exit. An exit
   * already known was published by the old image, so waiters get it at once.
   */
  restore(state: StateName, pid: number, exit: ExitStatus | undefined): void {
    this.state = this.isInit ? restoredInitState(this, state) : restoredExecState(this, state);
    this.startedPid = pid;
    if (exit) {
      this.exitStatus = exit;
      this.exit.resolve(exit);
    }
  }

  /** container id for the init, exec id for an exec: the id containerd shows for this process */
  get id(): string {
    return this.execId === '' ? this.containerId : this.execId;
  }
  get isInit(): boolean {
    return this.execId === '';
  }
  get pid(): number {
    return this.startedPid || this.platform.pid;
  }
  get stateName(): StateName {
    return this.state.name;
  }
  get status(): TaskStatus {
    return this.state.status;
  }
  get exited(): ExitStatus | undefined {
    return this.exitStatus;
  }

  // --- operations, each forwarded to the current state under the mutex ---

  /** `onStarted` runs under the lock, so what it publishes precedes this process's exit event. */
  start(onStarted: (pid: number) => void): Promise<number> {
    return this.mutex.run(async () => {
      const pid = await this.state.start();
      onStarted(pid);
      return pid;
    });
  }
  delete(): Promise<void> {
    return this.mutex.run(() => this.state.delete());
  }
  kill(signal: number, all: boolean): Promise<void> {
    return this.mutex.run(() => this.state.kill(signal, all));
  }
  pause(): Promise<void> {
    return this.mutex.run(() => this.state.pause());
  }
  resume(): Promise<void> {
    return this.mutex.run(() => this.state.resume());
  }
  resize(width: number, height: number): Promise<void> {
    return this.mutex.run(() => this.state.resize(width, height));
  }
  update(work: () => Promise<void>): Promise<void> {
    return this.mutex.run(() => this.state.update(work));
  }
  checkpoint(work: () => Promise<void>): Promise<void> {
    return this.mutex.run(() => this.state.checkpoint(work));
  }
  closeStdin(): Promise<void> {
    return this.platform.closeStdin();
  }
  /** Runs `check` against the state while holding the lock (e.g. "may an exec be added now?"). */
  withState<T>(check: (state: ProcessState) => T): Promise<T> {
    return this.mutex.run(() => check(this.state));
  }
  /** Records the exit under the lock; returns false when it was already known. */
  markExited(status: ExitStatus): Promise<boolean> {
    return this.mutex.run(() => {
      if (this.exitStatus) return false;
      this.state.exited(status);
      return true;
    });
  }

  // --- StateHost: what states may do ---

  transition(next: ProcessState): void {
    this.state = next;
  }
  recordExit(status: ExitStatus): void {
    this.exitStatus = status;
  }
  async workStart(): Promise<number> {
    this.startedPid = await this.platform.start();
    return this.startedPid;
  }
  workDelete(): Promise<void> {
    return this.platform.delete();
  }
  workKill(signal: number, all: boolean): Promise<void> {
    return this.platform.kill(signal, all);
  }
  workPause(): Promise<void> {
    if (!this.pauser) return Promise.reject(internal('pause reached a process without a container'));
    return this.pauser.pause();
  }
  workResume(): Promise<void> {
    if (!this.pauser) return Promise.reject(internal('resume reached a process without a container'));
    return this.pauser.resume();
  }
  workResize(width: number, height: number): Promise<void> {
    return this.platform.resizePty(width, height);
  }
}

/**
 * One small class per lifecycle state, each answering every operation: allowed ones do the work
 * (through the process's worker methods), the rest reject with FailedPrecondition and a message in
 * the runc shim's words. The owning process holds one mutex and forwards each call to its state.
 */
import { failedPrecondition, notFound, PROCESS_ALREADY_FINISHED } from '../errors';
import type { ExitStatus } from '../backend';
import { TaskStatus } from '../types';

export type StateName = 'created' | 'createdCheckpoint' | 'running' | 'paused' | 'stopped' | 'deleted';

export interface ProcessState {
  readonly name: StateName;
  readonly status: TaskStatus;
  start(): Promise<number>;
  delete(): Promise<void>;
  kill(signal: number, all: boolean): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  resize(width: number, height: number): Promise<void>;
  update(work: () => Promise<void>): Promise<void>;
  checkpoint(work: () => Promise<void>): Promise<void>;
  /** throws unless an exec may be added to the container in this (init) state */
  checkExec(): void;
  /** the process exited; records it and moves to stopped where that is a legal move */
  exited(status: ExitStatus): void;
}

/** What states are allowed to touch on their process. */
export interface StateHost {
  readonly kind: 'container' | 'process';
  transition(next: ProcessState, from: ProcessState): void;
  recordExit(status: ExitStatus): void;
  workStart(): Promise<number>;
  workDelete(): Promise<void>;
  workKill(signal: number, all: boolean): Promise<void>;
  workPause(): Promise<void>;
  workResume(): Promise<void>;
  workResize(width: number, height: number): Promise<void>;
}

/**
 * Rejects everything: concrete states override what they allow. The messages follow the runc
 * shim's so users see familiar text; the code is FailedPrecondition, as an illegal transition is.
 */
export abstract class BaseState implements ProcessState {
  abstract readonly name: StateName;
  abstract readonly status: TaskStatus;
  /** states this one may move to */
  protected abstract readonly next: readonly StateName[];

  constructor(protected readonly host: StateHost) {}

  protected get label(): string {
    return this.name === 'createdCheckpoint' ? 'created' : this.name;
  }

  protected move(to: ProcessState): void {
    if (!this.next.includes(to.name)) {
      throw failedPrecondition(`invalid state transition from ${this.name} to ${to.name}`);
    }
    this.host.transition(to, this);
  }

  /** Shared moves: run the work, then change state; a failed work leaves the state as it was. */
  protected async startThen(next: ProcessState): Promise<number> {
    const pid = await this.host.workStart();
    this.move(next);
    return pid;
  }
  protected async deleteThen(next: ProcessState): Promise<void> {
    await this.host.workDelete();
    this.move(next);
  }
  protected exitThen(status: ExitStatus, next: ProcessState): void {
    this.host.recordExit(status);
    this.move(next);
  }

  start(): Promise<number> {
    return Promise.reject(failedPrecondition(`cannot start a ${this.label} process`));
  }
  delete(): Promise<void> {
    return Promise.reject(failedPrecondition(`cannot delete a ${this.label} process`));
  }
  kill(_signal: number, _all: boolean): Promise<void> {
    return Promise.reject(notFound(PROCESS_ALREADY_FINISHED));
  }
  pause(): Promise<void> {
    return Promise.reject(failedPrecondition(`cannot pause a ${this.label} ${this.host.kind}`));
  }
  resume(): Promise<void> {
    return Promise.reject(failedPrecondition(`cannot resume a ${this.label} ${this.host.kind}`));
  }
  resize(_width: number, _height: number): Promise<void> {
    return Promise.reject(failedPrecondition(`cannot resize a ${this.label} container`));
  }
  update(_work: () => Promise<void>): Promise<void> {
    return Promise.reject(failedPrecondition(`cannot update a ${this.label} container`));
  }
  checkpoint(_work: () => Promise<void>): Promise<void> {
    return Promise.reject(failedPrecondition(`cannot checkpoint a ${this.label} container`));
  }
  checkExec(): void {
    throw failedPrecondition(`cannot exec in a ${this.label} state`);
  }
  exited(_status: ExitStatus): void {
    // An exit seen after stopped/deleted is a duplicate report; the first one stands.
  }
}

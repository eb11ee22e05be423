/** The init process's lifecycle: created → running ⇄ paused → stopped → deleted. */
import type { ExitStatus } from '../backend';
import { notFound } from '../errors';
import { TaskStatus } from '../types';
import { BaseState, type ProcessState, type StateHost, type StateName } from './state';

export function initialInitState(host: StateHost, fromCheckpoint: boolean): ProcessState {
  return fromCheckpoint ? new InitCreatedCheckpoint(host) : new InitCreated(host);
}

/** Not started yet: Start runs it, Delete drops it, its death makes it stopped. */
abstract class InitNotStarted extends BaseState {
  readonly status = TaskStatus.CREATED;
  protected readonly next: readonly StateName[] = ['running', 'stopped', 'deleted'];

  override start(): Promise<number> {
    return this.startThen(new InitRunning(this.host));
  }
  override delete(): Promise<void> {
    return this.deleteThen(new InitDeleted(this.host));
  }
  override exited(status: ExitStatus): void {
    this.exitThen(status, new InitStopped(this.host));
  }
}

class InitCreated extends InitNotStarted {
  readonly name: StateName = 'created';

  override kill(signal: number, all: boolean): Promise<void> {
    return this.host.workKill(signal, all);
  }
  override resize(width: number, height: number): Promise<void> {
    return this.host.workResize(width, height);
  }
  override update(work: () => Promise<void>): Promise<void> {
    return work();
  }
  override checkExec(): void {}
}

/** Created from a checkpoint: nothing runs until Start restores it. */
class InitCreatedCheckpoint extends InitNotStarted {
  readonly name: StateName = 'createdCheckpoint';
}

/** Running or paused: the process exists and can be signalled, sized, updated, checkpointed. */
abstract class InitLive extends BaseState {
  protected readonly next: readonly StateName[] = ['running', 'paused', 'stopped'];

  override kill(signal: number, all: boolean): Promise<void> {
    return this.host.workKill(signal, all);
  }
  override resize(width: number, height: number): Promise<void> {
    return this.host.workResize(width, height);
  }
  override update(work: () => Promise<void>): Promise<void> {
    return work();
  }
  override checkpoint(work: () => Promise<void>): Promise<void> {
    return work();
  }
  override exited(status: ExitStatus): void {
    this.exitThen(status, new InitStopped(this.host));
  }
}

class InitRunning extends InitLive {
  readonly name: StateName = 'running';
  readonly status = TaskStatus.RUNNING;

  override async pause(): Promise<void> {
    await this.host.workPause();
    this.move(new InitPaused(this.host));
  }
  override checkExec(): void {}
}

class InitPaused extends InitLive {
  readonly name: StateName = 'paused';
  readonly status = TaskStatus.PAUSED;

  override async resume(): Promise<void> {
    await this.host.workResume();
    this.move(new InitRunning(this.host));
  }
}

class InitStopped extends BaseState {
  readonly name: StateName = 'stopped';
  readonly status = TaskStatus.STOPPED;
  protected readonly next: readonly StateName[] = ['deleted'];

  override delete(): Promise<void> {
    return this.deleteThen(new InitDeleted(this.host));
  }
}

class InitDeleted extends BaseState {
  readonly name: StateName = 'deleted';
  // containerd expects a deleted init to still read as stopped
  readonly status = TaskStatus.STOPPED;
  protected readonly next: readonly StateName[] = [];

  override start(): Promise<number> {
    return Promise.reject(notFound('process already deleted'));
  }
  override delete(): Promise<void> {
    return Promise.reject(notFound('process already deleted'));
  }
}

/** Upgrade, new image: the init state the old image was in. */
export function restoredInitState(host: StateHost, name: StateName): ProcessState {
  switch (name) {
    case 'created':
      return new InitCreated(host);
    case 'createdCheckpoint':
      return new InitCreatedCheckpoint(host);
    case 'running':
      return new InitRunning(host);
    case 'paused':
      return new InitPaused(host);
    case 'stopped':
      return new InitStopped(host);
    case 'deleted':
      return new InitDeleted(host);
  }
}

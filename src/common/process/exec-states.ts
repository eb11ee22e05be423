/** An exec process's lifecycle: created → running → stopped → deleted. */
import type { ExitStatus } from '../backend';
import { failedPrecondition, notFound } from '../errors';
import { TaskStatus } from '../types';
import { BaseState, type ProcessState, type StateHost, type StateName } from './state';

export function initialExecState(host: StateHost): ProcessState {
  return new ExecCreated(host);
}

class ExecCreated extends BaseState {
  readonly name: StateName = 'created';
  readonly status = TaskStatus.CREATED;
  protected readonly next: readonly StateName[] = ['running', 'stopped', 'deleted'];

  override start(): Promise<number> {
    return this.startThen(new ExecRunning(this.host));
  }
  override delete(): Promise<void> {
    return this.deleteThen(new ExecDeleted(this.host));
  }
  override kill(): Promise<void> {
    return Promise.reject(failedPrecondition('process not created'));
  }
  override exited(status: ExitStatus): void {
    this.exitThen(status, new ExecStopped(this.host));
  }
}

class ExecRunning extends BaseState {
  readonly name: StateName = 'running';
  readonly status = TaskStatus.RUNNING;
  protected readonly next: readonly StateName[] = ['stopped'];

  override kill(signal: number, all: boolean): Promise<void> {
    return this.host.workKill(signal, all);
  }
  override resize(width: number, height: number): Promise<void> {
    return this.host.workResize(width, height);
  }
  override exited(status: ExitStatus): void {
    this.exitThen(status, new ExecStopped(this.host));
  }
}

class ExecStopped extends BaseState {
  readonly name: StateName = 'stopped';
  readonly status = TaskStatus.STOPPED;
  protected readonly next: readonly StateName[] = ['deleted'];

  override delete(): Promise<void> {
    return this.deleteThen(new ExecDeleted(this.host));
  }
}

class ExecDeleted extends BaseState {
  readonly name: StateName = 'deleted';
  readonly status = TaskStatus.STOPPED;
  protected readonly next: readonly StateName[] = [];

  override start(): Promise<number> {
    return Promise.reject(notFound('process already deleted'));
  }
  override delete(): Promise<void> {
    return Promise.reject(notFound('process already deleted'));
  }
}

/** Upgrade, new image: the exec state the old image was in (an exec is never paused itself). */
export function restoredExecState(host: StateHost, name: StateName): ProcessState {
  switch (name) {
    case 'created':
    case 'createdCheckpoint':
      return new ExecCreated(host);
    case 'running':
    case 'paused':
      return new ExecRunning(host);
    case 'stopped':
      return new ExecStopped(host);
    case 'deleted':
      return new ExecDeleted(host);
  }
}

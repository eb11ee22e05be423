/** The init process's lifecycle: created → running ⇄ paused → stopped → deleted. */
import type { ExitStatus } from '../backend';
import { notFound } from '../errors';
import { TaskStatus } from '../types';
import { BaseState, type ProcessState, type StateHost, type StateName } from './state';

export function initialInitState(host: StateHost, fromCheckpoint: boolean): ProcessState {
  return fromCheckpoint ? new InitCreatedCheckpoint(host) : new InitCreated(host);
}

class InitCreated extends BaseState {
  readonly name: StateName = 'created';
  readonly status = TaskStatus.CREATED;
  protected readonly next: readonly StateName[] = ['running', 'stopped', 'deleted'];

  override async start(): Promise<number> {
    const pid = await this.host.workStart();
    this.move(new InitRunning(this.host));
    return pid;
  }
  override async delete(): Promise<void> {
    await this.host.workDelete();
    this.move(new InitDeleted(this.host));
  }
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
  override exited(status: ExitStatus): void {
    this.host.recordExit(status);
    this.move(new InitStopped(this.host));
  }
}

/** Created from a checkpoint: nothing runs until Start restores it. */
class InitCreatedCheckpoint extends BaseState {
  readonly name: StateName = 'createdCheckpoint';
  readonly status = TaskStatus.CREATED;
  protected readonly next: readonly StateName[] = ['running', 'stopped', 'deleted'];

  override async start(): Promise<number> {
    const pid = await this.host.workStart();
    this.move(new InitRunning(this.host));
    return pid;
  }
  override async delete(): Promise<void> {
    await this.host.workDelete();
    this.move(new InitDeleted(this.host));
  }
  override exited(status: ExitStatus): void {
    this.host.recordExit(status);
    this.move(new InitStopped(this.host));
  }
}

class InitRunning extends BaseState {
  readonly name: StateName = 'running';
  readonly status = TaskStatus.RUNNING;
  protected readonly next: readonly StateName[] = ['paused', 'stopped'];

  override kill(signal: number, all: boolean): Promise<void> {
    return this.host.workKill(signal, all);
  }
  override async pause(): Promise<void> {
    await this.host.workPause();
    this.move(new InitPaused(this.host));
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
  override checkExec(): void {}
  override exited(status: ExitStatus): void {
    this.host.recordExit(status);
    this.move(new InitStopped(this.host));
  }
}

class InitPaused extends BaseState {
  readonly name: StateName = 'paused';
  readonly status = TaskStatus.PAUSED;
  protected readonly next: readonly StateName[] = ['running', 'stopped'];

  override kill(signal: number, all: boolean): Promise<void> {
    return this.host.workKill(signal, all);
  }
  override async resume(): Promise<void> {
    await this.host.workResume();
    this.move(new InitRunning(this.host));
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
    this.host.recordExit(status);
    this.move(new InitStopped(this.host));
  }
}

class InitStopped extends BaseState {
  readonly name: StateName = 'stopped';
  readonly status = TaskStatus.STOPPED;
  protected readonly next: readonly StateName[] = ['deleted'];

  override async delete(): Promise<void> {
    await this.host.workDelete();
    this.move(new InitDeleted(this.host));
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

/**
 * One task: its init, its execs, and the rules that tie them together — exec ids are unique,
 * execs need a live init, and the init's exit is published only after every exec's exit, so
 * consumers see (exec exits)* → init exit → delete.
 */
import type { ExecRequest, ExitStatus, PlatformContainer, StdioSpec } from './backend';
import type { EventSink } from './events';
import { alreadyExists, failedPrecondition, notFound } from './errors';
import { logger } from './log';
import { ManagedProcess } from './process/process';
import { toTimestamp } from './proto';
import { settlesWithin } from './settle';
import type { ContainerStateRecord, ProcessStateRecord } from './upgrade/state';

export const TOPIC = {
  create: ['/tasks/create', 'containerd.events.TaskCreate'],
  start: ['/tasks/start', 'containerd.events.TaskStart'],
  exit: ['/tasks/exit', 'containerd.events.TaskExit'],
  delete: ['/tasks/delete', 'containerd.events.TaskDelete'],
  execAdded: ['/tasks/exec-added', 'containerd.events.TaskExecAdded'],
  execStarted: ['/tasks/exec-started', 'containerd.events.TaskExecStarted'],
  paused: ['/tasks/paused', 'containerd.events.TaskPaused'],
  resumed: ['/tasks/resumed', 'containerd.events.TaskResumed'],
  checkpointed: ['/tasks/checkpointed', 'containerd.events.TaskCheckpointed'],
  oom: ['/tasks/oom', 'containerd.events.TaskOOM'],
} as const;

export type Topic = keyof typeof TOPIC;

/** Wait's answer for an exec whose start failed: it never ran, so it has no exit code of its own. */
const NEVER_RAN_STATUS = 255;

/** How long an exec may outlive its init before it is killed. */
const EXEC_EXIT_GRACE_MS = 5000;


export class Container {
  readonly id: string;
  readonly bundle: string;
  readonly init: ManagedProcess;
  private readonly execs = new Map<string, ManagedProcess>();
  /** exec ids whose platform half is being prepared */
  private readonly reserved = new Set<string>();
  /** exits being handled (cleanup, ordering, publishing): an upgrade waits for none */
  private exitWork = 0;

  constructor(
    params: { id: string; bundle: string; stdio: StdioSpec; fromCheckpoint: boolean },
    readonly platform: PlatformContainer,
    private readonly events: EventSink,
  ) {
    this.id = params.id;
    this.bundle = params.bundle;
    this.init = new ManagedProcess({ containerId: params.id, execId: '', stdio: params.stdio }, platform.init, {
      fromCheckpoint: params.fromCheckpoint,
      pauser: {
        pause: () => platform.pause(),
        resume: () => platform.resume(),
      },
    });
  }

  emit(topic: Topic, event: object): void {
    const [name, type] = TOPIC[topic];
    this.events.publish(name, type, event);
  }

  /** The init's exit can come as soon as it exists, even before Start (a kill in created). */
  watchInit(): void {
    this.platform.init.waitExit().then(
      (status) => this.handleInitExit(status),
      (err: unknown) => logger.error('waiting for init exit failed', { id: this.id, error: err }),
    );
  }

  private watchExec(p: ManagedProcess): void {
    p.platform.waitExit().then(
      (status) => this.handleExecExit(p, status),
      (err: unknown) => logger.error('waiting for exec exit failed', { id: this.id, execId: p.execId, error: err }),
    );
  }

  process(execId: string): ManagedProcess {
    if (execId === '') return this.init;
    const p = this.execs.get(execId);
    if (!p) throw notFound(`process does not exist ${execId}: not found`);
    return p;
  }

  get execProcesses(): readonly ManagedProcess[] {
    return [...this.execs.values()];
  }

  async addExec(request: ExecRequest): Promise<void> {
    const { execId } = request;
    if (this.execs.has(execId) || this.reserved.has(execId)) throw alreadyExists(`id ${execId}: already exists`);
    this.reserved.add(execId);
    try {
      await this.init.withState((s) => s.checkExec());
      const platform = await this.platform.createExec(request);
      this.execs.set(execId, new ManagedProcess({ containerId: this.id, execId, stdio: request.stdio }, platform));
    } finally {
      this.reserved.delete(execId);
    }
    this.emit('execAdded', { containerId: this.id, execId });
  }

  async start(execId: string): Promise<number> {
    const p = this.process(execId);
    if (!p.isInit && this.init.exited) {
      throw failedPrecondition(`container ${this.id} init process is not running`);
    }
    // Publishing inside the process lock keeps start/exec-started ahead of that process's exit.
    const started = p.start((pid) => {
      if (p.isInit) {
        this.emit('start', { containerId: this.id, pid });
      } else {
        this.emit('execStarted', { containerId: this.id, execId: p.execId, pid });
        this.watchExec(p);
      }
    });
    if (!p.isInit) {
      // An exec that never ran will never exit: release its waiters (CRI waits before it starts).
      started.catch(() => p.exit.resolve({ status: NEVER_RAN_STATUS, exitedAt: new Date() }));
    }
    return started;
  }

  /** Deletes an exec (no event, like the runc shim) or the init (TaskDelete). */
  async delete(execId: string): Promise<{ pid: number; status: ExitStatus }> {
    const p = this.process(execId);
    await p.delete();
    const status = p.exited ?? { status: 0, exitedAt: new Date() };
    // Deleted before it exited (never started): nobody may wait on it forever.
    p.exit.resolve(status);
    if (p.isInit) {
      this.emit('delete', {
        containerId: this.id,
        pid: p.pid,
        exitStatus: status.status,
        exitedAt: toTimestamp(status.exitedAt),
      });
    } else {
      this.execs.delete(execId);
    }
    return { pid: p.pid, status };
  }

  /** Upgrade: true while an exit is being handled or an exec is being prepared. */
  get busy(): boolean {
    return this.exitWork > 0 || this.reserved.size > 0;
  }

  /** Upgrade: the container as its hand-over record (its IO suspended already). */
  handover(namespace: string): ContainerStateRecord {
    if (this.init.stateName === 'createdCheckpoint') {
      throw new Error(`container ${this.id} waits to be restored from a checkpoint; start it first`);
    }
    const record = (p: ManagedProcess): ProcessStateRecord => {
      const r: ProcessStateRecord = {
        execId: p.execId,
        stdio: p.stdio,
        state: p.stateName,
        pid: p.pid,
        io: p.platform.handoverIo?.() ?? { kind: 'none' },
      };
      if (p.exited) r.exit = { status: p.exited.status, exitedAt: p.exited.exitedAt.getTime() };
      if (!p.isInit) r.processJson = (p.platform as { processJson?: string }).processJson ?? '';
      return r;
    };
    return {
      id: this.id,
      bundle: this.bundle,
      namespace,
      stdio: this.init.stdio,
      mountedRootfs: this.platform.mountedRootfs ?? false,
      init: record(this.init),
      execs: this.execProcesses.map(record),
    };
  }

  /** Upgrade, new image: processes back in their states, exits watched again where still to come. */
  static restore(record: ContainerStateRecord, platform: PlatformContainer, events: EventSink): Container {
    const c = new Container(
      { id: record.id, bundle: record.bundle, stdio: record.init.stdio, fromCheckpoint: record.init.state === 'createdCheckpoint' },
      platform,
      events,
    );
    const exitOf = (r: ProcessStateRecord): ExitStatus | undefined =>
      r.exit ? { status: r.exit.status, exitedAt: new Date(r.exit.exitedAt) } : undefined;
    c.init.restore(record.init.state, record.init.pid, exitOf(record.init));
    for (const e of record.execs) {
      const restore = platform.restoreExec;
      if (!restore) throw new Error('this platform cannot restore execs');
      const p = new ManagedProcess({ containerId: record.id, execId: e.execId, stdio: e.stdio }, restore.call(platform, e));
      p.restore(e.state, e.pid, exitOf(e));
      c.execs.set(e.execId, p);
      if (e.state === 'running' && !e.exit) c.watchExec(p);
    }
    if (!c.init.exited && c.init.pid > 0) c.watchInit();
    return c;
  }

  private async handleExecExit(p: ManagedProcess, status: ExitStatus): Promise<void> {
    this.exitWork++;
    try {
      if (await p.markExited(status)) this.publishExit(p, status);
      p.exit.resolve(status);
    } finally {
      this.exitWork--;
    }
  }

  private async handleInitExit(status: ExitStatus): Promise<void> {
    this.exitWork++;
    try {
      await this.handleInitExitNow(status);
    } finally {
      this.exitWork--;
    }
  }

  private async handleInitExitNow(status: ExitStatus): Promise<void> {
    try {
      await this.platform.afterInitExit();
    } catch (err) {
      logger.warn('cleanup after init exit failed', { id: this.id, error: err });
    }
    // Exec exits first: wait for every exec that started (or is starting) to be published. One
    // that outlives its init (it escaped the kill) is killed, so the init's exit is never held forever.
    for (const exec of this.execs.values()) {
      await exec.withState(() => undefined);
      if (exec.stateName !== 'running' || (await settlesWithin(exec.exit.promise, EXEC_EXIT_GRACE_MS))) continue;
      logger.warn('exec outlived its init; killing it', { id: this.id, execId: exec.execId });
      await exec.kill(9, false).catch(() => undefined);
      await settlesWithin(exec.exit.promise, EXEC_EXIT_GRACE_MS);
    }
    if (await this.init.markExited(status)) this.publishExit(this.init, status);
    this.init.exit.resolve(status);
  }

  private publishExit(p: ManagedProcess, status: ExitStatus): void {
    this.emit('exit', {
      containerId: this.id,
      id: p.id,
      pid: p.pid,
      exitStatus: status.status,
      exitedAt: toTimestamp(status.exitedAt),
    });
  }
}

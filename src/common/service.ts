/**
 * The Task API. Every method has one shape: validate, look up (NotFound), delegate to the
 * container/process state machine, queue events, return. Transports call these through
 * task-handlers.ts; errors leave as ShimErrors and are converted once by the transport.
 */
import type { Backend, StdioSpec } from './backend';
import { Container } from './container';
import { removeDeletedMarker, writeDeletedMarker } from './deleted-marker';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from './errors';
import type { EventSink } from './events';
import { logger } from './log';
import { secondsFromEnv } from './spare';
import { packAny, toTimestamp } from './proto';
import type * as T from './types';
import type { ContainerStateRecord } from './upgrade/state';
import { shimVersion } from './version';
import { encodeDeleteResponse } from './wire';

export interface ServiceHost {
  /**
   * Called once, when Shutdown (or a lapsed reservation) finds nothing left to serve. The host
   * stops accepting connections before it returns, so no `start` can find this daemon afterwards.
   */
  requestShutdown(): void;
}

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$/;
/**
 * How long a reservation (group.ts) holds an empty daemon for a Create that has not come: far
 * beyond containerd's own path from a shim's `start` to its Create, short enough that a start whose
 * containerd gave up does not keep a daemon alive for long.
 */
export const RESERVATION_MS = 60_000;

/** `<bundle>/<exec id>.pid` would be the init's pid file */
const RESERVED_EXEC_ID = 'init';

export class TaskService {
  private readonly containers = new Map<string, Container>();
  private readonly creating = new Set<string>();
  /** containers a `start` reserved this daemon for, with the timer that lets each lapse */
  private readonly reservations = new Map<string, NodeJS.Timeout>();
  private ending = false;

  constructor(
    private readonly backend: Backend,
    private readonly events: EventSink,
    private readonly namespace: string,
    private readonly host: ServiceHost,
  ) {}

  /** Upgrade: a Create or Exec is being prepared, or an exit is being handled. */
  get busy(): boolean {
    return this.creating.size > 0 || [...this.containers.values()].some((c) => c.busy);
  }

  get containerIds(): string[] {
    return [...this.containers.keys()];
  }

  /** Upgrade: every process's IO stops being relayed; what was read is written out first. */
  async suspendIo(): Promise<void> {
    const all = [...this.containers.values()].flatMap((c) => [c.init, ...c.execProcesses]);
    await Promise.all(all.map((p) => p.platform.suspendIo?.()));
  }

  /** Upgrade abandoned. */
  resumeIo(): void {
    for (const c of this.containers.values()) for (const p of [c.init, ...c.execProcesses]) p.platform.resumeIo?.();
  }

  handoverContainers(): ContainerStateRecord[] {
    return [...this.containers.values()].map((c) => c.handover(this.namespace));
  }

  /** Upgrade, new image: the containers of the old one, in its order. */
  async restoreContainers(records: ContainerStateRecord[]): Promise<void> {
    const restore = this.backend.restoreContainer;
    if (!restore) throw new Error('this platform cannot restore containers');
    for (const record of records) {
      let container: Container | undefined;
      const platform = await restore.call(this.backend, record, {
        onOom: () => container?.emit('oom', { containerId: record.id }),
      });
      container = Container.restore(record, platform, this.events);
      this.containers.set(record.id, container);
    }
  }

  get containerCount(): number {
    return this.containers.size + this.creating.size;
  }

  /**
   * Holds the daemon for container `id` until its Create (group.ts). False once the daemon is
   * ending: its socket is gone by then, and `start` launches a new daemon.
   */
  reserve(id: string): boolean {
    if (this.ending) return false;
    clearTimeout(this.reservations.get(id));
    const timer = setTimeout(() => {
      this.reservations.delete(id);
      logger.info('reservation lapsed without a Create', { for: id });
      this.endIfIdle();
    }, secondsFromEnv(process.env, 'TSHIM_RESERVATION_SECONDS', RESERVATION_MS));
    timer.unref();
    this.reservations.set(id, timer);
    logger.debug('reserved for a start', { for: id, reserved: this.reservations.size });
    return true;
  }

  private releaseReservation(id: string): void {
    if (!this.reservations.has(id)) return;
    clearTimeout(this.reservations.get(id));
    this.reservations.delete(id);
    logger.debug('reservation released', { for: id, reserved: this.reservations.size });
  }

  /** Nothing served, created, or reserved: the daemon ends (decided once, synchronously). */
  private endIfIdle(): boolean {
    if (this.ending) return true;
    if (this.containerCount > 0 || this.reservations.size > 0) return false;
    this.ending = true;
    this.host.requestShutdown();
    return true;
  }

  async create(r: T.CreateTaskRequest): Promise<T.CreateTaskResponse> {
    if (!ID_PATTERN.test(r.id)) throw invalidArgument(`invalid container id ${JSON.stringify(r.id)}`);
    this.releaseReservation(r.id);
    if (this.ending) throw failedPrecondition(`shim is shutting down: container ${r.id} cannot be created here`);
    if (this.containers.has(r.id) || this.creating.has(r.id)) {
      throw alreadyExists(`container ${r.id}: already exists`);
    }
    this.creating.add(r.id);
    try {
      // a marker left by an earlier task in this bundle must not answer for this one
      removeDeletedMarker(r.bundle);
      const stdio = stdioOf(r);
      let container: Container | undefined;
      const platform = await this.backend.createContainer(
        {
          id: r.id,
          namespace: this.namespace,
          bundle: r.bundle,
          rootfs: (r.rootfs ?? []).map((m) => ({ type: m.type, source: m.source, target: m.target ?? '', options: m.options ?? [] })),
          stdio,
          checkpoint: r.checkpoint ?? '',
          parentCheckpoint: r.parentCheckpoint ?? '',
          options: r.options ?? undefined,
        },
        { onOom: () => container?.emit('oom', { containerId: r.id }) },
      );
      container = new Container({ id: r.id, bundle: r.bundle, stdio, fromCheckpoint: !!r.checkpoint }, platform, this.events);
      this.containers.set(r.id, container);
      container.emit('create', {
        containerId: r.id,
        bundle: r.bundle,
        rootfs: r.rootfs ?? [],
        io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
        checkpoint: r.checkpoint ?? '',
        pid: platform.init.pid,
      });
      container.watchInit();
      return { pid: platform.init.pid };
    } finally {
      this.creating.delete(r.id);
    }
  }

  async start(r: T.StartRequest): Promise<T.StartResponse> {
    const pid = await this.container(r.id).start(r.execId ?? '');
    return { pid };
  }

  async delete(r: T.DeleteRequest): Promise<T.DeleteResponse> {
    const container = this.container(r.id);
    const { pid, status } = await container.delete(r.execId ?? '');
    if (!r.execId) {
      this.containers.delete(r.id);
      try {
        writeDeletedMarker(container.bundle, encodeDeleteResponse({ pid, exitStatus: status.status, exitedAt: status.exitedAt }));
      } catch (err) {
        // the `delete` action then does the full cleanup, which finds nothing left
        logger.debug('cannot leave the deleted marker', { id: r.id, error: err });
      }
    }
    return { pid, exitStatus: status.status, exitedAt: toTimestamp(status.exitedAt) };
  }

  async exec(r: T.ExecProcessRequest): Promise<T.Empty> {
    if (!r.execId) throw invalidArgument('exec id must not be empty');
    if (!ID_PATTERN.test(r.execId) || r.execId === RESERVED_EXEC_ID) {
      throw invalidArgument(`invalid exec id ${JSON.stringify(r.execId)}`);
    }
    await this.container(r.id).addExec({
      execId: r.execId,
      stdio: { stdin: r.stdin ?? '', stdout: r.stdout ?? '', stderr: r.stderr ?? '', terminal: !!r.terminal },
      spec: r.spec ?? undefined,
    });
    return {};
  }

  async state(r: T.StateRequest): Promise<T.StateResponse> {
    const container = this.container(r.id);
    const p = container.process(r.execId ?? '');
    let status = p.status;
    // An exec reads as paused while its container is.
    if (!p.isInit && p.stateName === 'running' && container.init.stateName === 'paused') status = container.init.status;
    const exit = p.exited;
    return {
      id: p.id,
      bundle: container.bundle,
      pid: p.pid,
      status,
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exitStatus: exit?.status ?? 0,
      exitedAt: toTimestamp(exit?.exitedAt),
      execId: p.execId,
    };
  }

  async wait(r: T.WaitRequest, signal?: AbortSignal): Promise<T.WaitResponse> {
    const p = this.container(r.id).process(r.execId ?? '');
    const status = await abortable(p.exit.promise, signal);
    return { exitStatus: status.status, exitedAt: toTimestamp(status.exitedAt) };
  }

  async kill(r: T.KillRequest): Promise<T.Empty> {
    await this.container(r.id).process(r.execId ?? '').kill(r.signal, !!r.all);
    return {};
  }

  async pids(r: T.PidsRequest): Promise<T.PidsResponse> {
    const container = this.container(r.id);
    if (container.init.stateName === 'stopped' || container.init.stateName === 'deleted') return { processes: [] };
    const execByPid = new Map(container.execProcesses.filter((e) => e.pid > 0).map((e) => [e.pid, e.execId]));
    if (container.platform.processList) {
      return { processes: await container.platform.processList((pid) => execByPid.get(pid) ?? '') };
    }
    const pids = await container.platform.pids();
    return {
      processes: pids.map((pid) => {
        const execId = execByPid.get(pid);
        return execId === undefined
          ? { pid }
          : { pid, info: packAny('containerd.runc.v1.ProcessDetails', { execId }) };
      }),
    };
  }

  async pause(r: T.PauseRequest): Promise<T.Empty> {
    const container = this.container(r.id);
    await container.init.pause();
    container.emit('paused', { containerId: r.id });
    return {};
  }

  async resume(r: T.ResumeRequest): Promise<T.Empty> {
    const container = this.container(r.id);
    await container.init.resume();
    container.emit('resumed', { containerId: r.id });
    return {};
  }

  async checkpoint(r: T.CheckpointTaskRequest): Promise<T.Empty> {
    const container = this.container(r.id);
    await container.init.checkpoint(() => container.platform.checkpoint({ path: r.path, options: r.options ?? undefined }));
    container.emit('checkpointed', { containerId: r.id, checkpoint: r.path });
    return {};
  }

  async resizePty(r: T.ResizePtyRequest): Promise<T.Empty> {
    await this.container(r.id).process(r.execId ?? '').resize(r.width, r.height);
    return {};
  }

  async closeIO(r: T.CloseIORequest): Promise<T.Empty> {
    await this.container(r.id).process(r.execId ?? '').closeStdin();
    return {};
  }

  async update(r: T.UpdateTaskRequest): Promise<T.Empty> {
    const container = this.container(r.id);
    await container.init.update(() => container.platform.update(r.resources ?? undefined, r.annotations ?? {}));
    return {};
  }

  async stats(r: T.StatsRequest): Promise<T.StatsResponse> {
    return { stats: await this.container(r.id).platform.stats() };
  }

  async connect(r: T.ConnectRequest): Promise<T.ConnectResponse> {
    const container = this.containers.get(r.id);
    return { shimPid: process.pid, taskPid: container?.init.pid ?? 0, version: shimVersion() };
  }

  async shutdown(r: T.ShutdownRequest): Promise<T.Empty> {
    // containerd is done with this container: a start's reservation for it (its Create never came
    // or failed) holds nothing any more.
    this.releaseReservation(r.id);
    if (!this.endIfIdle()) {
      logger.debug('shutdown requested while containers remain or are reserved', {
        // not `id`: every line of a daemon carries the id it was started for (log.ts defaultMeta)
        for: r.id,
        containers: [...this.containers.keys(), ...this.creating].join(','),
        reserved: [...this.reservations.keys()].join(','),
      });
    }
    return {};
  }

  private container(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw notFound('container not created: not found');
    return c;
  }
}

function stdioOf(r: T.CreateTaskRequest): StdioSpec {
  return { stdin: r.stdin ?? '', stdout: r.stdout ?? '', stderr: r.stderr ?? '', terminal: !!r.terminal };
}

/** A Wait whose connection went away stops waiting; the exit stays recorded for the next one. */
function abortable<V>(promise: Promise<V>, signal: AbortSignal | undefined): Promise<V> {
  if (!signal) return promise;
  return new Promise<V>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason instanceof Error ? signal.reason : new Error('call aborted'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      reject,
    );
  });
}

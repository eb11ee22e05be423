/** A scriptable Backend for driving TaskService without a platform. */
import type {
  Backend,
  CleanupResult,
  ContainerHooks,
  CreateContainerRequest,
  ExecRequest,
  ExitStatus,
  PlatformContainer,
  PlatformProcess,
} from '../../src/common/backend';
import { Code, notFound, ShimError } from '../../src/common/errors';
import { Deferred } from '../../src/common/mutex';
import type { AnyMessage } from '../../src/common/proto';

let nextPid = 1000;

export class FakeProcess implements PlatformProcess {
  pid = 0;
  readonly calls: string[] = [];
  private readonly exitDeferred = new Deferred<ExitStatus>();
  startGate: Promise<void> = Promise.resolve();
  constructor(assignPidNow: boolean) {
    if (assignPidNow) this.pid = nextPid++;
  }
  async start(): Promise<number> {
    this.calls.push('start');
    await this.startGate;
    if (this.pid === 0) this.pid = nextPid++;
    return this.pid;
  }
  waitExit(): Promise<ExitStatus> {
    return this.exitDeferred.promise;
  }
  exit(status: number): void {
    this.exitDeferred.resolve({ status, exitedAt: new Date() });
  }
  get hasExited(): boolean {
    return this.exitDeferred.settled;
  }
  async kill(signal: number, all: boolean): Promise<void> {
    this.calls.push(`kill ${signal} ${all}`);
    if (this.hasExited) throw notFound('process already finished');
    if (signal === 9) this.exit(137);
  }
  async resizePty(width: number, height: number): Promise<void> {
    this.calls.push(`resize ${width}x${height}`);
  }
  async closeStdin(): Promise<void> {
    this.calls.push('closeStdin');
  }
  async delete(): Promise<void> {
    this.calls.push('delete');
  }
}

export class FakeContainer implements PlatformContainer {
  readonly init = new FakeProcess(true);
  readonly execs = new Map<string, FakeProcess>();
  readonly calls: string[] = [];
  /** false: execs outlive the init, as in a shared pid namespace whose kill failed */
  killExecsOnInitExit = true;
  constructor(readonly hooks: ContainerHooks) {}
  async createExec(request: ExecRequest): Promise<PlatformProcess> {
    const p = new FakeProcess(false);
    this.execs.set(request.execId, p);
    return p;
  }
  async pause(): Promise<void> {
    this.calls.push('pause');
  }
  async resume(): Promise<void> {
    this.calls.push('resume');
  }
  async pids(): Promise<number[]> {
    return [this.init.pid, ...[...this.execs.values()].map((e) => e.pid).filter((p) => p > 0)];
  }
  async stats(): Promise<AnyMessage> {
    return { typeUrl: 'io.containerd.cgroups.v1.Metrics', value: Buffer.alloc(0) };
  }
  async update(): Promise<void> {
    this.calls.push('update');
  }
  async checkpoint(): Promise<void> {
    this.calls.push('checkpoint');
  }
  async afterInitExit(): Promise<void> {
    this.calls.push('afterInitExit');
    // the init's exit takes the execs with it (private pid namespace, or kill --all)
    if (!this.killExecsOnInitExit) return;
    for (const e of this.execs.values()) if (e.pid > 0 && !e.hasExited) e.exit(137);
  }
}

export class FakeBackend implements Backend {
  readonly platform = 'fake';
  readonly containers = new Map<string, FakeContainer>();
  failCreate: Error | undefined;
  async createContainer(request: CreateContainerRequest, hooks: ContainerHooks): Promise<PlatformContainer> {
    if (this.failCreate) throw this.failCreate;
    const c = new FakeContainer(hooks);
    this.containers.set(request.id, c);
    return c;
  }
  async cleanup(): Promise<CleanupResult> {
    return { pid: 0 };
  }
  async runtimeFeatures(): Promise<AnyMessage | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
}

export class RecordingSink {
  readonly events: Array<{ topic: string; type: string; event: Record<string, unknown> }> = [];
  publish(topic: string, type: string, event: object): void {
    this.events.push({ topic, type, event: event as Record<string, unknown> });
  }
  topics(): string[] {
    return this.events.map((e) => e.topic);
  }
}

/** 'ok', or the gRPC code a call was refused with; anything but a ShimError is a test failure. */
export async function outcome(p: Promise<unknown>): Promise<'ok' | Code> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof ShimError) return err.code;
    throw err;
  }
}

/**
 * The Windows halves of a task's processes. Windows containers have no implicit init: the init's
 * Start starts the compute system and then creates the OCI process in it; an exec's Start creates
 * its process in the running system (spec §5, §11.10). The lifecycle states live in the core
 * (src/common/process); these classes only do the HCS work a state asks for.
 *
 * Exit: ProcessExited → exit code read from HCS (before the handle closes) → output drained (≤1 s)
 * → handle closed → `waitExit` resolves. Kill: 9 terminates through fresh handles (HCS serializes
 * signals per handle, spec §6.6); other mapped signals go out in the background because servercore
 * blocks the call until the target exits.
 */
import type { ExitStatus, PlatformProcess, StdioSpec } from '../common/backend';
import { failedPrecondition, notFound, PROCESS_ALREADY_FINISHED } from '../common/errors';
import { logger } from '../common/log';
import { Deferred } from '../common/mutex';
import { ComputeSystem, type Hcs, type HcsProcess } from './hcs';
import type { StdioIo } from './hcs-api';
import { toShimError } from './hcs-errors';
import { processParameters, signalAction, type OciProcess } from './schema';
import { loggerIdentity, type LoggerIdentity } from './binary-logger';
import { closeUpstream, connectUpstream, ProcessRelay, type Upstream } from './stdio';

/** What a process needs from its container. */
export interface ProcessHost {
  readonly id: string;
  readonly hcs: Hcs;
  readonly io: StdioIo;
  readonly system: ComputeSystem;
  readonly annotations: Record<string, string>;
  readonly namespace: string;
}

/** Exit status of an exec forced out of created (never ran), as runhcs reports it. */
export const FORCED_FROM_CREATED = 1;

export abstract class WindowsProcess implements PlatformProcess {
  protected proc: HcsProcess | undefined;
  protected relay: ProcessRelay | undefined;
  protected upstream: Upstream | undefined;
  protected readonly exit = new Deferred<ExitStatus>();

  constructor(
    protected readonly host: ProcessHost,
    protected readonly spec: OciProcess,
    protected readonly stdio: StdioSpec,
  ) {}

  get pid(): number {
    return this.proc?.pid ?? 0;
  }

  get hasExited(): boolean {
    return this.exit.settled;
  }

  abstract start(): Promise<number>;

  waitExit(): Promise<ExitStatus> {
    return this.exit.promise;
  }

  /** Dials containerd's pipes, creates the process, wires the relay, arms the exit. */
  protected async launch(): Promise<number> {
    const upstream = this.upstream ?? (await connectUpstream(this.stdio, this.loggerIdentity()));
    this.upstream = upstream;
    let proc: HcsProcess;
    try {
      const params = processParameters(
        this.spec,
        { stdin: !!this.stdio.stdin, stdout: !!this.stdio.stdout, stderr: !!this.stdio.stderr, terminal: this.stdio.terminal },
        this.host.annotations,
      );
      proc = await this.host.system.createProcess(params);
    } catch (err) {
      void closeUpstream(upstream);
      this.upstream = undefined;
      throw toShimError(err);
    }
    this.proc = proc;
    this.relay = new ProcessRelay(this.host.io, upstream, proc.info, () => (proc.exited ? Promise.resolve() : proc.closeStdin()));
    void proc.exitCode.then((code) => this.finish(code));
    return proc.pid;
  }

  private async finish(code: number): Promise<void> {
    try {
      await this.relay?.afterExit();
      await this.proc?.close();
    } catch (err) {
      logger.warn('closing an exited process', { id: this.host.id, pid: this.pid, error: err });
    }
    this.exit.resolve({ status: code, exitedAt: new Date() });
  }

  async kill(signal: number, all: boolean): Promise<void> {
    const action = signalAction(signal);
    const proc = this.proc;
    if (!proc) return this.killNotStarted(signal, all);
    if (this.exit.settled || proc.exited) throw notFound(PROCESS_ALREADY_FINISHED);
    if (action.kind === 'terminate') {
      await terminateFresh(this.host, proc);
      return;
    }
    void proc.signal(action.signal).catch((err: unknown) => logger.warn('signal not delivered', { id: this.host.id, pid: proc.pid, signal: action.signal, error: err }));
  }

  protected abstract killNotStarted(signal: number, all: boolean): Promise<void>;

  /** A binary:// logging driver's identity: the container's, with pipes of this process's own. */
  protected abstract loggerIdentity(): LoggerIdentity;

  async resizePty(width: number, height: number): Promise<void> {
    if (!this.stdio.terminal || !this.proc) return;
    await this.proc.resizeConsole(width, height).catch((err: unknown) => {
      throw toShimError(err);
    });
  }

  async closeStdin(): Promise<void> {
    if (this.relay) await this.relay.closeStdin();
    else if (this.upstream) {
      this.upstream.stdin?.destroy();
    }
  }

  /** Output drained and handles closed by now (exit path); the rest is idempotent. */
  async delete(): Promise<void> {
    if (this.proc && !this.exit.settled) throw failedPrecondition(`process ${this.pid} is still running`);
    const upstream = this.upstream;
    this.upstream = undefined;
    await (this.relay ? this.relay.close() : upstream ? closeUpstream(upstream) : undefined);
    await this.proc?.close();
  }
}

/** HcsTerminateProcess on fresh system and process handles; falls back to the handle we hold. */
async function terminateFresh(host: ProcessHost, proc: HcsProcess): Promise<void> {
  let fresh: ComputeSystem | undefined;
  let target: HcsProcess | undefined;
  try {
    fresh = await ComputeSystem.open(host.hcs, host.id);
    target = await fresh.openProcess(proc.pid);
    await target.terminate();
  } catch (err) {
    logger.debug('terminate through fresh handles failed; using the held handle', { id: host.id, pid: proc.pid, error: err });
    await proc.terminate().catch((e: unknown) => {
      throw toShimError(e);
    });
  } finally {
    await target?.close();
    await fresh?.close();
  }
}

/** The container's init: Start = start the compute system, then create the OCI process. */
export class WindowsInit extends WindowsProcess {
  /** execs to signal too on Kill(all) */
  execs: () => WindowsProcess[] = () => [];

  constructor(
    host: ProcessHost,
    spec: OciProcess,
    stdio: StdioSpec,
    upstream: Upstream,
    /** the container's teardown (system closed, layers unmounted): deleting the init ends it */
    private readonly teardown: () => Promise<void>,
  ) {
    super(host, spec, stdio);
    this.upstream = upstream;
    // A system that stops before Start (killed in created, crashed) ends the init too.
    void host.system.exited.then(() => {
      if (!this.proc) this.exit.resolve({ status: FORCED_FROM_CREATED, exitedAt: new Date() });
    });
  }

  async start(): Promise<number> {
    try {
      await this.host.system.start();
    } catch (err) {
      throw toShimError(err);
    }
    return this.launch();
  }

  override async kill(signal: number, all: boolean): Promise<void> {
    if (all) {
      for (const exec of this.execs()) await exec.kill(signal, false).catch(() => undefined);
    }
    await super.kill(signal, all);
  }

  override async delete(): Promise<void> {
    await super.delete();
    await this.teardown();
  }

  protected loggerIdentity(): LoggerIdentity {
    return loggerIdentity(this.host.namespace, this.host.id);
  }

  /** Killed before Start: the container goes, and the init with it. */
  protected async killNotStarted(): Promise<void> {
    if (this.exit.settled) throw notFound(PROCESS_ALREADY_FINISHED);
    await this.host.system.terminate().catch((err: unknown) => {
      throw toShimError(err);
    });
  }
}

export class WindowsExec extends WindowsProcess {
  constructor(
    host: ProcessHost,
    spec: OciProcess,
    stdio: StdioSpec,
    private readonly execId: string,
  ) {
    super(host, spec, stdio);
  }

  protected loggerIdentity(): LoggerIdentity {
    return loggerIdentity(this.host.namespace, this.host.id, this.execId);
  }

  start(): Promise<number> {
    if (this.host.system.stateName !== 'running') {
      return Promise.reject(failedPrecondition(`container ${this.host.id} is not running`));
    }
    return this.launch();
  }

  protected async killNotStarted(): Promise<void> {
    throw notFound(PROCESS_ALREADY_FINISHED);
  }
}

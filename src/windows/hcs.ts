/**
 * Promise-shaped HCS objects: `ComputeSystem` and `HcsProcess` (spec §2.3). A call that returns
 * "pending" waits for its completion notification, raced against the system's exit, a service
 * disconnect, the handle being closed and a named timeout. Each object has a small state table; an
 * operation the state does not allow is a FailedPrecondition before HCS is ever called.
 *
 * Ordering rules kept here (spec §11.6-7): the notification context exists before the register
 * call; the callback is registered right after create/open; exit codes are read before the process
 * handle is closed; callbacks are unregistered (asynchronously) before their handle is closed.
 */
import { Code, ShimError } from '../common/errors';
import { logger } from '../common/log';
import type { CallbackHandle, HcsApi, ProcessHandle, ProcessInformation, SystemHandle } from './hcs-api';
import { failed, HcsError, hcsError, isAlreadyStopped, isNotExist, isPending } from './hcs-errors';
import { Notification, NotificationRouter, type NotificationContext } from './notifications';

/** Named per-operation timeouts (hcsshim defaults: 4 min), overridable in seconds by env var. */
export function timeoutMs(name: 'SYSTEMCREATE' | 'SYSTEMSTART' | 'SYSTEMPAUSE' | 'SYSTEMRESUME', env = process.env): number {
  const value = Number(env[`TSHIM_TIMEOUT_${name}`]);
  return Number.isFinite(value) && value > 0 ? value * 1000 : 4 * 60 * 1000;
}

/** The exit status containerd gets when HCS could not say (−1 as uint32). */
export const UNKNOWN_EXIT = 4294967295;

type SystemState = 'created' | 'running' | 'paused' | 'stopped' | 'closed';

const SYSTEM_TRANSITIONS: Readonly<Record<string, readonly SystemState[]>> = {
  start: ['created'],
  pause: ['running'],
  resume: ['paused'],
  createProcess: ['running'],
  properties: ['created', 'running', 'paused', 'stopped'],
  modify: ['running', 'paused'],
  shutdown: ['created', 'running', 'paused', 'stopped'],
  terminate: ['created', 'running', 'paused', 'stopped'],
};

/** Shared by every HCS object of one daemon: the binding and the notification table. */
export class Hcs {
  readonly router: NotificationRouter;
  constructor(readonly api: HcsApi) {
    this.router = new NotificationRouter(api);
  }
}

export class ComputeSystem {
  private state: SystemState;
  private callback: CallbackHandle | null = null;
  /** settles with the SystemExited status; never rejects */
  readonly exited: Promise<number>;

  private constructor(
    private readonly hcs: Hcs,
    readonly id: string,
    private readonly handle: SystemHandle,
    private readonly ctx: NotificationContext,
    state: SystemState,
  ) {
    this.state = state;
    this.exited = ctx.wait(Notification.SystemExited, 'wait', id).then(
      (status) => {
        if (this.state !== 'closed') this.state = 'stopped';
        return status;
      },
      // closed before it exited: whoever closed it no longer cares
      () => 0,
    );
  }

  /** HcsCreateComputeSystem; on a create timeout the half-made system is terminated and closed. */
  static async create(hcs: Hcs, id: string, document: object): Promise<ComputeSystem> {
    const ctx = hcs.router.open('system');
    const r = await hcs.api.createComputeSystem(id, JSON.stringify(document)).catch((err: unknown) => {
      hcs.router.close(ctx);
      throw err;
    });
    if ((failed(r.hr) && !isPending(r.hr)) || !r.system) {
      hcs.router.close(ctx);
      throw hcsError('create', id, r.hr, r.result);
    }
    const system = new ComputeSystem(hcs, id, r.system, ctx, 'created');
    await system.register();
    if (isPending(r.hr)) {
      try {
        await ctx.wait(Notification.SystemCreateCompleted, 'create', id, timeoutMs('SYSTEMCREATE'));
      } catch (err) {
        await hcs.api.terminateComputeSystem(r.system, '').catch(() => undefined);
        await system.close();
        throw err;
      }
    }
    return system;
  }

  /** HcsOpenComputeSystem: NotFound when there is no such system. */
  static async open(hcs: Hcs, id: string): Promise<ComputeSystem> {
    const ctx = hcs.router.open('system');
    const r = await hcs.api.openComputeSystem(id);
    if (failed(r.hr) || !r.system) {
      hcs.router.close(ctx);
      throw hcsError('open', id, r.hr, r.result);
    }
    const system = new ComputeSystem(hcs, id, r.system, ctx, 'running');
    await system.register();
    return system;
  }

  get stateName(): SystemState {
    return this.state;
  }

  private async register(): Promise<void> {
    const r = await this.hcs.api.registerComputeSystemCallback(this.handle, this.ctx.key);
    if (failed(r.hr) || !r.callback) {
      await this.close();
      throw hcsError('register callback', this.id, r.hr);
    }
    this.callback = r.callback;
  }

  private check(op: string): void {
    if (!SYSTEM_TRANSITIONS[op]!.includes(this.state)) {
      throw new ShimError(Code.FailedPrecondition, `${op} ${this.id}: compute system is ${this.state}`);
    }
  }

  async start(): Promise<void> {
    this.check('start');
    await this.pendingOp('start', (h) => this.hcs.api.startComputeSystem(h, ''), Notification.SystemStartCompleted, timeoutMs('SYSTEMSTART'));
    this.state = 'running';
  }

  async pause(): Promise<void> {
    this.check('pause');
    await this.pendingOp('pause', (h) => this.hcs.api.pauseComputeSystem(h, ''), Notification.SystemPauseCompleted, timeoutMs('SYSTEMPAUSE'));
    this.state = 'paused';
  }

  async resume(): Promise<void> {
    this.check('resume');
    await this.pendingOp('resume', (h) => this.hcs.api.resumeComputeSystem(h, ''), Notification.SystemResumeCompleted, timeoutMs('SYSTEMRESUME'));
    this.state = 'running';
  }

  /** Fire and forget (the exit shows as SystemExited); gone or already stopped is success. */
  async shutdown(): Promise<void> {
    if (this.state === 'closed' || this.state === 'stopped') return;
    const r = await this.hcs.api.shutdownComputeSystem(this.handle, '');
    this.checkStop('shutdown', r);
  }

  async terminate(): Promise<void> {
    if (this.state === 'closed' || this.state === 'stopped') return;
    const r = await this.hcs.api.terminateComputeSystem(this.handle, '');
    this.checkStop('terminate', r);
  }

  /** Pending is the normal answer; already stopped or gone means no SystemExited will come: say it ourselves. */
  private checkStop(op: string, r: { hr: number; result: string }): void {
    if (isAlreadyStopped(r.hr) || isNotExist(r.hr)) {
      this.ctx.deliver(Notification.SystemExited, 0);
      return;
    }
    if (failed(r.hr) && !isPending(r.hr)) throw hcsError(op, this.id, r.hr, r.result);
  }

  async properties<T extends object>(types: readonly string[]): Promise<T> {
    this.check('properties');
    const r = await this.hcs.api.getComputeSystemProperties(this.handle, JSON.stringify({ PropertyTypes: types }));
    if (failed(r.hr)) throw hcsError('properties', this.id, r.hr, r.result);
    try {
      return JSON.parse(r.properties || '{}') as T;
    } catch (err) {
      throw new ShimError(Code.Internal, `properties ${this.id}: compute service returned invalid JSON: ${(err as Error).message}`);
    }
  }

  async modify(request: object): Promise<void> {
    this.check('modify');
    const r = await this.hcs.api.modifyComputeSystem(this.handle, JSON.stringify(request));
    if (failed(r.hr)) throw hcsError('modify', this.id, r.hr, r.result);
  }

  async createProcess(parameters: object): Promise<HcsProcess> {
    this.check('createProcess');
    const ctx = this.hcs.router.open('process');
    const r = await this.hcs.api.createProcess(this.handle, JSON.stringify(parameters)).catch((err: unknown) => {
      this.hcs.router.close(ctx);
      throw err;
    });
    if (failed(r.hr) || !r.process) {
      this.hcs.router.close(ctx);
      throw hcsError('create process', this.id, r.hr, r.result);
    }
    return HcsProcess.adopt(this.hcs, this.id, r.process, r.info, ctx);
  }

  /** A fresh handle to one process of this system (kill uses fresh handles, spec §6.6). */
  async openProcess(pid: number): Promise<HcsProcess> {
    const ctx = this.hcs.router.open('process');
    const r = await this.hcs.api.openProcess(this.handle, pid);
    if (failed(r.hr) || !r.process) {
      this.hcs.router.close(ctx);
      throw hcsError('open process', `${this.id}/${pid}`, r.hr, r.result);
    }
    return HcsProcess.adopt(this.hcs, this.id, r.process, { processId: pid, stdInput: null, stdOutput: null, stdError: null }, ctx);
  }

  /** Unregister (waits for callbacks in flight, off the JS thread), then close. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.callback) {
      const cb = this.callback;
      this.callback = null;
      await this.hcs.api.unregisterComputeSystemCallback(cb).catch((err: unknown) => logger.warn('unregister system callback', { id: this.id, error: err }));
    }
    await this.hcs.api.closeComputeSystem(this.handle).catch((err: unknown) => logger.warn('close system', { id: this.id, error: err }));
    this.hcs.router.close(this.ctx);
  }

  private async pendingOp(
    op: string,
    call: (h: SystemHandle) => Promise<{ hr: number; result: string }>,
    completion: number,
    ms: number,
  ): Promise<void> {
    const r = await call(this.handle);
    if (isPending(r.hr)) {
      await this.ctx.wait(completion, op, this.id, ms);
      return;
    }
    if (failed(r.hr)) throw hcsError(op, this.id, r.hr, r.result);
  }
}

type ProcessState = 'running' | 'exited' | 'closed';

/** ProcessStatus (spec §4.4) */
interface ProcessStatus {
  ProcessId?: number;
  Exited?: boolean;
  ExitCode?: number;
  LastWaitResult?: number;
}

export class HcsProcess {
  private state: ProcessState = 'running';
  private callback: CallbackHandle | null = null;
  /** The exit code, read from HCS before the handle may close; never rejects. */
  readonly exitCode: Promise<number>;
  private resolveExit!: (code: number) => void;

  private constructor(
    private readonly hcs: Hcs,
    readonly systemId: string,
    private readonly handle: ProcessHandle,
    readonly info: ProcessInformation,
    private readonly ctx: NotificationContext,
  ) {
    this.exitCode = new Promise<number>((resolve) => (this.resolveExit = resolve));
  }

  get pid(): number {
    return this.info.processId;
  }

  get exited(): boolean {
    return this.state !== 'running';
  }

  static async adopt(hcs: Hcs, systemId: string, handle: ProcessHandle, info: ProcessInformation, ctx: NotificationContext): Promise<HcsProcess> {
    const p = new HcsProcess(hcs, systemId, handle, info, ctx);
    const r = await hcs.api.registerProcessCallback(handle, ctx.key);
    if (failed(r.hr) || !r.callback) {
      await hcs.api.closeProcess(handle).catch(() => undefined);
      hcs.router.close(ctx);
      throw hcsError('register process callback', `${systemId}/${info.processId}`, r.hr);
    }
    p.callback = r.callback;
    p.watchExit();
    return p;
  }

  private watchExit(): void {
    this.ctx.wait(Notification.ProcessExited, 'wait', `${this.systemId}/${this.pid}`).then(
      () => this.collectExit(),
      // handle closed first: nobody can read the code any more
      () => this.finishExit(UNKNOWN_EXIT),
    );
  }

  private async collectExit(): Promise<void> {
    let code = UNKNOWN_EXIT;
    try {
      const status = await this.status();
      if (status.Exited !== false && !status.LastWaitResult) code = (status.ExitCode ?? UNKNOWN_EXIT) >>> 0;
    } catch (err) {
      logger.warn('reading exit code', { id: this.systemId, pid: this.pid, error: err });
    }
    this.finishExit(code);
  }

  private finishExit(code: number): void {
    if (this.state === 'running') this.state = 'exited';
    this.resolveExit(code);
  }

  async status(): Promise<ProcessStatus> {
    const r = await this.hcs.api.getProcessProperties(this.handle);
    if (failed(r.hr)) throw hcsError('process properties', `${this.systemId}/${this.pid}`, r.hr, r.result);
    return JSON.parse(r.properties || '{}') as ProcessStatus;
  }

  /** CtrlC/CtrlBreak/CtrlShutdown...; an already-stopped process counts as delivered. */
  async signal(signal: string): Promise<void> {
    if (this.state !== 'running') return;
    const r = await this.hcs.api.signalProcess(this.handle, JSON.stringify({ Signal: signal }));
    if (failed(r.hr) && !isAlreadyStopped(r.hr)) throw hcsError('signal', `${this.systemId}/${this.pid}`, r.hr, r.result);
  }

  async terminate(): Promise<void> {
    if (this.state === 'closed') return;
    const r = await this.hcs.api.terminateProcess(this.handle);
    // access denied is what terminating an already-dead process returns (spec §3.1)
    if (failed(r.hr) && !isAlreadyStopped(r.hr) && !isNotExist(r.hr) && !(r.hr >>> 0 === 0x80070005)) {
      throw hcsError('terminate', `${this.systemId}/${this.pid}`, r.hr, r.result);
    }
  }

  async resizeConsole(width: number, height: number): Promise<void> {
    if (this.state !== 'running') return;
    await this.modify({ Operation: 'ConsoleSize', ConsoleSize: { Height: height & 0xffff, Width: width & 0xffff } }, 'resize');
  }

  async closeStdin(): Promise<void> {
    if (this.state !== 'running') return;
    await this.modify({ Operation: 'CloseHandle', CloseHandle: { Handle: 'StdIn' } }, 'close stdin');
  }

  private async modify(settings: object, op: string): Promise<void> {
    const r = await this.hcs.api.modifyProcess(this.handle, JSON.stringify(settings));
    // the process may exit between our check and HCS's: nothing left to modify
    if (failed(r.hr) && !isAlreadyStopped(r.hr) && !(this.exited || isNotExistOrStopped(r.hr))) {
      throw new HcsError(op, `${this.systemId}/${this.pid}`, r.hr);
    }
  }

  /** After the exit code was read (or never will be): unregister, then close. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.callback) {
      const cb = this.callback;
      this.callback = null;
      await this.hcs.api.unregisterProcessCallback(cb).catch(() => undefined);
    }
    await this.hcs.api.closeProcess(this.handle).catch(() => undefined);
    this.hcs.router.close(this.ctx);
  }
}

function isNotExistOrStopped(hr: number): boolean {
  return isNotExist(hr) || isAlreadyStopped(hr);
}

/**
 * The Windows backend: process-isolated Windows Server containers through the Host Compute Service
 * (vmcompute.dll). The DLL is bound on the first container (or `delete`), so `-info` and `start`
 * never load it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Backend, BackendContext, CleanupRequest, CleanupResult, ContainerHooks, CreateContainerRequest, PlatformContainer } from '../common/backend';
import { logger } from '../common/log';
import type { AnyMessage } from '../common/proto';
import { settlesWithin } from '../common/settle';
import { ComputeSystem, Hcs } from './hcs';
import type { HcsApi, StdioIo } from './hcs-api';
import { HcsError, isNotExist } from './hcs-errors';
import { forgetLayerMount, Layers, readLayerRecord } from './layers';
import { loadVmCompute } from './vmcompute';
import { win32StdioIo } from './win32';

/** DeleteResponse.exit_status of the `delete` action, as runhcs reports it. */
const DELETE_EXIT_STATUS = 255;
const DELETE_WAIT_MS = 30_000;
const PANIC_LOG_MAX = 1024 * 1024;

export interface WindowsBackendDeps {
  api?: HcsApi;
  io?: StdioIo;
}

export function createWindowsBackend(_context: BackendContext, deps: WindowsBackendDeps = {}): Backend {
  return new WindowsBackend(deps);
}

class WindowsBackend implements Backend {
  readonly platform = 'windows';
  private bound: { hcs: Hcs; layers: Layers; io: StdioIo } | undefined;

  constructor(private readonly deps: WindowsBackendDeps) {}

  private native(): { hcs: Hcs; layers: Layers; io: StdioIo } {
    if (!this.bound) {
      const api = this.deps.api ?? loadVmCompute();
      this.bound = { hcs: new Hcs(api), layers: new Layers(api), io: this.deps.io ?? win32StdioIo() };
    }
    return this.bound;
  }

  async createContainer(request: CreateContainerRequest, _hooks: ContainerHooks): Promise<PlatformContainer> {
    const { createWindowsContainer } = await import('./container');
    return createWindowsContainer(request, this.native());
  }

  /**
   * The `delete` action after a daemon that is gone: panic.log to stderr (containerd logs it),
   * terminate the compute system if HCS still has it, unmount the recorded scratch layer.
   */
  async cleanup(request: CleanupRequest): Promise<CleanupResult> {
    const { id, bundle } = request;
    reportPanicLog(bundle);
    const { hcs, layers } = this.native();
    try {
      const system = await ComputeSystem.open(hcs, id);
      try {
        await system.terminate();
        await settlesWithin(system.exited, DELETE_WAIT_MS);
      } finally {
        await system.close();
      }
    } catch (err) {
      if (!(err instanceof HcsError && isNotExist(err.hr))) logger.warn('delete: terminating compute system', { id, error: err });
    }
    const scratch = await readLayerRecord(bundle);
    if (scratch && (await layers.unmount(scratch))) await forgetLayerMount(bundle);
    let pid = 0;
    try {
      pid = Number(fs.readFileSync(path.join(bundle, 'shim.pid'), 'utf8').trim()) || 0;
    } catch {
      // no shim.pid: nothing to report
    }
    return { pid, exitStatus: DELETE_EXIT_STATUS };
  }

  async runtimeFeatures(_options: AnyMessage | undefined): Promise<AnyMessage | undefined> {
    return undefined;
  }

  async close(): Promise<void> {
    // HCS handles are closed by their containers; the koffi trampoline lives until exit.
  }
}

function reportPanicLog(bundle: string): void {
  try {
    const file = path.join(bundle, 'panic.log');
    const size = fs.statSync(file).size;
    if (size === 0) return;
    const fd = fs.openSync(file, 'r');
    try {
      const length = Math.min(size, PANIC_LOG_MAX);
      const buf = Buffer.alloc(length);
      fs.readSync(fd, buf, 0, length, size - length);
      process.stderr.write(buf);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // no panic.log
  }
}

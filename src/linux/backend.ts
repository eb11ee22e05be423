/**
 * The Linux backend: runc (or any OCI runtime named by BinaryName), the subreaper, cgroups.
 * The reaper starts with the first container, so the short-lived `delete` and `-info` runs never
 * become subreapers.
 */
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import type {
  Backend,
  BackendContext,
  CleanupRequest,
  CleanupResult,
  ContainerHooks,
  CreateContainerRequest,
  PlatformContainer,
} from '../common/backend';
import { logger } from '../common/log';
import { decodeOptions, fromOptionsJson, DEFAULT_OPTIONS, type RuntimeOptions } from '../common/options';
import type { AnyMessage } from '../common/proto';
import { bundleFiles, readPidFile, runtimeFor } from './bundle';
import { dup2, loadLibc } from './libc';
import { unmountAll } from './mount';
import { Reaper } from './reaper';
import { Runc } from './runc';
import type { ContainerStateRecord } from '../common/upgrade/state';

const FEATURES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/features/Features';

export function createLinuxBackend(_context: BackendContext): Backend {
  return new LinuxBackend();
}

/**
 * Loads now what the first Create would load (container machinery, koffi and libc), for a spare
 * daemon that does its loading before any container is handed to it.
 */
export async function warmUp(): Promise<void> {
  await import('./container');
  loadLibc();
}

/**
 * Points fd 2 at the bundle's `log` FIFO, where a daemon launched by `start` has its stderr, so
 * what the runtime itself prints when it dies (V8 out of memory, aborts) reaches containerd's log.
 * Best effort: no FIFO or no reader means stderr stays where it was.
 */
export function redirectStderr(fifoPath: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(fifoPath, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    dup2(fd, 2);
  } catch (err) {
    logger.debug('stderr stays unredirected', { path: fifoPath, error: err });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

class LinuxBackend implements Backend {
  readonly platform = 'linux';
  private reaper: Reaper | undefined;

  private ensureReaper(): Reaper {
    if (!this.reaper) {
      this.reaper = new Reaper({
        onStray: (r) => logger.debug('reaped stray process', { pid: r.pid, status: r.status }),
      });
      this.reaper.start();
    }
    return this.reaper;
  }

  async createContainer(request: CreateContainerRequest, hooks: ContainerHooks): Promise<PlatformContainer> {
    const reaper = this.ensureReaper();
    const options = await decodeOptions(request.options);
    // Loaded on first use: `delete` and `-info` runs never need the container machinery.
    const { createLinuxContainer } = await import('./container');
    return createLinuxContainer(request, hooks, { reaper, options });
  }

  /** Best effort, like the runc shim: every failure is logged, the answer is still given. */
  async cleanup(request: CleanupRequest): Promise<CleanupResult> {
    const { bundle, id, namespace } = request;
    const options = await readSavedOptions(bundle);
    const runc = runtimeFor(options, namespace, bundle);
    if (await runc.hasState(id)) {
      await runc.delete(id, true).catch((err: unknown) => logger.warn('runtime delete --force', { id, error: err }));
    }
    await unmountAll(bundleFiles.rootfs(bundle)).catch((err: unknown) =>
      logger.warn('unmounting rootfs', { id, error: err }),
    );
    const pid = await readPidFile(bundleFiles.initPid(bundle)).catch(() => 0);
    return { pid };
  }

  async runtimeFeatures(options: AnyMessage | undefined): Promise<AnyMessage | undefined> {
    const o = await decodeOptions(options);
    const runc = new Runc({ binary: o.binaryName, root: o.root, systemdCgroup: o.systemdCgroup, logPath: '/dev/null' });
    const features = await runc.features().catch(() => undefined);
    if (features === undefined) return undefined;
    return { typeUrl: FEATURES_TYPE_URL, value: Buffer.from(JSON.stringify(features)) };
  }

  async close(): Promise<void> {
    this.reaper?.stop();
  }

  suspendExits(): void {
    this.reaper?.stop();
  }

  resumeExits(): void {
    this.reaper?.start();
  }

  handoverReaper(): { watchedPids: number[]; strays: Array<{ pid: number; status: number; at: number }> } {
    return this.reaper?.handover() ?? { watchedPids: [], strays: [] };
  }

  restoreReaper(strays: Array<{ pid: number; status: number; at: number }>): void {
    this.ensureReaper().restoreStrays(strays);
  }

  async restoreContainer(record: ContainerStateRecord, hooks: ContainerHooks): Promise<PlatformContainer> {
    const reaper = this.ensureReaper();
    const { restoreLinuxContainer } = await import('./container');
    return restoreLinuxContainer(record, hooks, { reaper });
  }
}

async function readSavedOptions(bundle: string): Promise<RuntimeOptions> {
  try {
    return fromOptionsJson(await fs.readFile(bundleFiles.options(bundle), 'utf8'));
  } catch {
    return { ...DEFAULT_OPTIONS };
  }
}

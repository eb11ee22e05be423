/** The container's init: runc create (done by the container factory), start or restore, kill, delete. */
import { logger } from '../common/log';
import { bundleFiles } from './bundle';
import { LinuxProcess } from './process';
import type { Reaper } from './reaper';
import type { Runc } from './runc';
import type { ProcessStdio } from './stdio';
import { unmountAll } from './mount';

export interface InitParams {
  id: string;
  bundle: string;
  runc: Runc;
  reaper: Reaper;
  stdio: ProcessStdio;
  /** set when Start must restore this checkpoint instead of starting a created container */
  restore?: { imagePath: string; parentPath: string; workPath: string; noPivot: boolean };
  /** mounts we made on <bundle>/rootfs and must undo */
  mountedRootfs: boolean;
}

export class LinuxInit extends LinuxProcess {
  /** set by the container: a restored init's cgroup is known only once it runs */
  onRestored: ((pid: number) => Promise<void>) | undefined;

  constructor(private readonly params: InitParams) {
    super(params.reaper, params.stdio);
  }

  get mountedRootfs(): boolean {
    return this.params.mountedRootfs;
  }

  /** after `runc create`: the init exists (blocked in runc init) and its exit can be collected */
  async created(): Promise<number> {
    return this.readPid(bundleFiles.initPid(this.params.bundle));
  }

  async start(): Promise<number> {
    const { id, runc, bundle, restore } = this.params;
    if (!restore) {
      await runc.start(id);
      return this.pid;
    }
    const stdio = this.stdio!;
    await runc.restore(id, {
      bundle,
      imagePath: restore.imagePath,
      workPath: restore.workPath,
      parentPath: restore.parentPath || undefined,
      pidFile: bundleFiles.initPid(bundle),
      consoleSocket: stdio.consoleSocket,
      noPivot: restore.noPivot,
      stdio: stdio.runtimeStdio,
    });
    await stdio.started();
    const pid = await this.readPid(bundleFiles.initPid(bundle));
    await this.onRestored?.(pid);
    return pid;
  }

  kill(signal: number, all: boolean): Promise<void> {
    return this.params.runc.kill(this.params.id, signal, all);
  }

  protected async deleteRuntimeState(): Promise<void> {
    const { id, runc, bundle } = this.params;
    try {
      await runc.delete(id, false);
    } catch (err) {
      // A created-but-never-run or restored-then-failed container may need force.
      logger.warn('runtime delete failed, forcing', { id, error: err });
      await runc.delete(id, true);
    }
    if (this.params.mountedRootfs) await unmountAll(bundleFiles.rootfs(bundle));
  }
}

/**
 * A runc container: created by `createLinuxContainer` (options → mounts → io → runc create), then
 * serving the container-wide operations. Failures during creation undo what was done, in reverse.
 */
import { accessSync, mkdirSync, promises as fs, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type {
  CheckpointRequest,
  ContainerHooks,
  CreateContainerRequest,
  ExecRequest,
  PlatformContainer,
  PlatformProcess,
} from '../common/backend';
import { invalidArgument, notFound } from '../common/errors';
import { logger } from '../common/log';
import { fromOptionsJson, toOptionsJson, type RuntimeOptions } from '../common/options';
import { packAny, unpackAny, type AnyMessage } from '../common/proto';
import type { CheckpointOptions as CheckpointOptionsMessage } from '../common/types';
import { assertSafeName, bundleFiles, runtimeFor, sharesPidNamespace } from './bundle';
import { cgroupOfPid, enableSubtreeControllers, OomWatcher, readMetrics, type CgroupRef } from './cgroups';
import { LinuxExec, execProcessJson } from './exec-process';
import { LinuxInit } from './init-process';
import { mountAll, unmountAll } from './mount';
import type { Reaper } from './reaper';
import type { Runc } from './runc';
import { openStdio, restoreStdio, type ProcessStdio, type StdioOwner } from './stdio';
import type { ContainerStateRecord, ProcessStateRecord } from '../common/upgrade/state';

export interface LinuxContainerDeps {
  reaper: Reaper;
  options: RuntimeOptions;
}

export async function createLinuxContainer(
  request: CreateContainerRequest,
  hooks: ContainerHooks,
  deps: LinuxContainerDeps,
): Promise<LinuxContainer> {
  const { id, bundle, namespace } = request;
  const { options, reaper } = deps;
  assertSafeName('container id', id);
  if (!path.isAbsolute(bundle)) throw invalidArgument(`bundle path ${JSON.stringify(bundle)} must be absolute`);
  // Synchronous: small files in containerd's own state dir, where a threadpool round trip costs
  // more than the call (a loop wake-up each, worst under load).
  try {
    accessSync(bundleFiles.config(bundle));
  } catch {
    throw invalidArgument(`bundle ${bundle} has no config.json`);
  }
  // What the `delete` action needs to clean up after us if this daemon dies.
  writeFileSync(bundleFiles.options(bundle), toOptionsJson(options));
  writeFileSync(bundleFiles.runtime(bundle), options.binaryName);

  const runc = runtimeFor(options, namespace, bundle);
  const owner: StdioOwner = { namespace, ioUid: options.ioUid, ioGid: options.ioGid };
  const undo: Array<() => Promise<void>> = [];
  try {
    const rootfs = bundleFiles.rootfs(bundle);
    const mountedRootfs = request.rootfs.length > 0;
    if (mountedRootfs) {
      mkdirSync(rootfs, { recursive: true, mode: 0o711 });
      await mountAll(request.rootfs, rootfs);
      undo.push(() => unmountAll(rootfs));
    }
    const stdio = await openStdio(id, request.stdio, owner);
    undo.push(() => stdio.close());
    const restore = request.checkpoint
      ? {
          imagePath: request.checkpoint,
          parentPath: request.parentCheckpoint,
          workPath: options.criuWorkPath || bundleFiles.work(bundle),
          noPivot: options.noPivotRoot,
        }
      : undefined;
    const init = new LinuxInit({ id, bundle, runc, reaper, stdio, restore, mountedRootfs });
    if (!restore) {
      await runc.create(id, {
        bundle,
        pidFile: bundleFiles.initPid(bundle),
        consoleSocket: stdio.consoleSocket,
        noPivot: options.noPivotRoot,
        noNewKeyring: options.noNewKeyring,
        stdio: stdio.runtimeStdio,
      });
      undo.push(() => runc.delete(id, true));
      await stdio.started();
      await init.created();
    }
    const container = new LinuxContainer({ id, bundle, runc, reaper, owner, options, init, stdio, hooks });
    if (!restore) await container.watchCgroup(init.pid);
    return container;
  } catch (err) {
    for (const step of undo.reverse()) {
      await step().catch((e: unknown) => logger.warn('undoing failed create', { id, error: e }));
    }
    throw err;
  }
}

/**
 * Upgrade, new image: a container the old image ran, rebuilt from its hand-over record. Runtime
 * options come from the bundle, where Create saved them for the `delete` action.
 */
export async function restoreLinuxContainer(
  record: ContainerStateRecord,
  hooks: ContainerHooks,
  deps: { reaper: Reaper },
): Promise<LinuxContainer> {
  const { id, bundle, namespace } = record;
  const options = fromOptionsJson(await fs.readFile(bundleFiles.options(bundle), 'utf8'));
  const runc = runtimeFor(options, namespace, bundle);
  const owner: StdioOwner = { namespace, ioUid: options.ioUid, ioGid: options.ioGid };
  const stdio = restoreStdio(record.init.io);
  const init = new LinuxInit({
    id, bundle, runc, reaper: deps.reaper, stdio: stdio as ProcessStdio, mountedRootfs: record.mountedRootfs,
  });
  if (!stdio) (init as unknown as { stdio: undefined }).stdio = undefined;
  const running = isLive(record.init);
  if (record.init.pid > 0) init.restorePid(record.init.pid, running);
  const container = new LinuxContainer({ id, bundle, runc, reaper: deps.reaper, owner, options, init, stdio: stdio as ProcessStdio, hooks });
  if (running) await container.watchCgroup(record.init.pid);
  return container;
}

/** A process whose exit is still to come: the reaper must watch it. */
function isLive(p: ProcessStateRecord): boolean {
  return p.exit === undefined && p.pid > 0 && p.state !== 'stopped' && p.state !== 'deleted';
}

interface ContainerParams {
  id: string;
  bundle: string;
  runc: Runc;
  reaper: Reaper;
  owner: StdioOwner;
  options: RuntimeOptions;
  init: LinuxInit;
  stdio: ProcessStdio;
  hooks: ContainerHooks;
}

export class LinuxContainer implements PlatformContainer {
  readonly init: LinuxInit;
  private cgroup: CgroupRef | undefined;
  private oom: OomWatcher | undefined;

  constructor(private readonly p: ContainerParams) {
    this.init = p.init;
    this.init.onRestored = (pid) => this.watchCgroup(pid);
  }

  /** Stats and OOM follow the init's cgroup, resolved once it has a pid. */
  async watchCgroup(pid: number): Promise<void> {
    try {
      this.cgroup = await cgroupOfPid(pid);
      if (this.cgroup.mode === 'v2') await enableSubtreeControllers(this.cgroup);
      this.oom = new OomWatcher(this.cgroup, () => this.p.hooks.onOom());
      await this.oom.start();
    } catch (err) {
      logger.warn('cgroup not watched', { id: this.p.id, error: err });
    }
  }

  get mountedRootfs(): boolean {
    return this.init.mountedRootfs;
  }

  restoreExec(record: ProcessStateRecord): PlatformProcess {
    const { id, bundle, runc, reaper, owner } = this.p;
    return LinuxExec.restore(
      {
        containerId: id,
        execId: record.execId,
        bundle,
        runc,
        reaper,
        owner,
        stdioSpec: record.stdio,
        processJson: record.processJson ?? '{}',
      },
      restoreStdio(record.io),
      record.pid,
      isLive(record),
    );
  }

  async createExec(request: ExecRequest): Promise<PlatformProcess> {
    assertSafeName('exec id', request.execId);
    const { id, bundle, runc, reaper, owner } = this.p;
    return new LinuxExec({
      containerId: id,
      execId: request.execId,
      bundle,
      runc,
      reaper,
      owner,
      stdioSpec: request.stdio,
      processJson: execProcessJson(request.spec?.value, request.stdio.terminal),
    });
  }

  pause(): Promise<void> {
    return this.p.runc.pause(this.p.id);
  }

  resume(): Promise<void> {
    return this.p.runc.resume(this.p.id);
  }

  pids(): Promise<number[]> {
    return this.p.runc.ps(this.p.id);
  }

  async stats(): Promise<AnyMessage> {
    // Resolved late only while the init lives: an exited pid may already name someone else.
    if (!this.cgroup && this.init.pid > 0 && !this.init.hasExited) await this.watchCgroup(this.init.pid);
    if (!this.cgroup) throw notFound('cgroup does not exist');
    const { typeName, metrics } = await readMetrics(this.cgroup);
    return packAny(typeName, metrics);
  }

  async update(resources: AnyMessage | undefined): Promise<void> {
    if (!resources || resources.value.length === 0) throw invalidArgument('update: resources are missing');
    await this.p.runc.update(this.p.id, resources.value);
  }

  async checkpoint(request: CheckpointRequest): Promise<void> {
    const opts = unpackAny<CheckpointOptionsMessage>(request.options)?.message;
    const imagePath = opts?.imagePath || request.path || this.p.options.criuImagePath;
    if (!imagePath) throw invalidArgument('checkpoint: image path is missing');
    const workPath = opts?.workPath || this.p.options.criuWorkPath || path.join(bundleFiles.work(this.p.bundle), 'criu-work');
    await fs.mkdir(workPath, { recursive: true });
    try {
      await this.p.runc.checkpoint(this.p.id, {
        imagePath,
        workPath,
        leaveRunning: !opts?.exit,
        tcpEstablished: opts?.openTcp,
        extUnixSockets: opts?.externalUnixSockets,
        shellJob: opts?.terminal,
        fileLocks: opts?.fileLocks,
        emptyNamespaces: opts?.emptyNamespaces,
        cgroupsMode: opts?.cgroupsMode || undefined,
      });
    } catch (err) {
      // Keep criu's own account where an operator will look for it.
      await fs.copyFile(path.join(workPath, 'dump.log'), path.join(this.p.bundle, 'criu-dump.log')).catch(() => undefined);
      throw err;
    } finally {
      if (!opts?.workPath) await fs.rm(workPath, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  async afterInitExit(): Promise<void> {
    if (await sharesPidNamespace(this.p.bundle)) {
      await this.p.runc.kill(this.p.id, 9, true).catch((err: unknown) => {
        logger.debug('kill --all after init exit', { id: this.p.id, error: err });
      });
    }
    if (this.oom) {
      await this.oom.drain().catch(() => undefined);
      this.oom.stop();
    }
  }
}

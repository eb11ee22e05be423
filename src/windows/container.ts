/**
 * A process-isolated Windows Server container: created by `createWindowsContainer` as a list of
 * steps with an undo stack (spec check → layers mounted → compute system created → containerd's
 * stdio pipes dialed), so a failure part way leaves nothing mounted or running. Torn down once, in
 * reverse, after the init exited (before its exit is published, as runhcs orders it) or when a
 * never-started init is deleted.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CreateContainerRequest, ExecRequest, PlatformContainer, PlatformProcess } from '../common/backend';
import { Code, failedPrecondition, invalidArgument, notFound, ShimError, unimplemented } from '../common/errors';
import { logger } from '../common/log';
import { packAny, unpackAny, type AnyMessage } from '../common/proto';
import { settlesWithin } from '../common/settle';
import { ComputeSystem, type Hcs } from './hcs';
import type { LayerDescriptor, StdioIo } from './hcs-api';
import { HcsError, isAccessDenied, isInvalidState, isNotExist, toShimError, WIN32, win32Code } from './hcs-errors';
import { forgetLayerMount, layerMountFromFolders, parseLayerMount, recordLayerMount, type Layers } from './layers';
import { WindowsExec, WindowsInit, type ProcessHost, type WindowsProcess } from './process';
import { checkSupported, containerDocument, isVolumePath, windowsBuild, type OciProcess, type OciSpec } from './schema';
import { loggerIdentity } from './binary-logger';
import { closeUpstream, connectUpstream } from './stdio';
import { processDetails, statistics, type HcsProcessListEntry, type HcsStatistics } from './stats';

export const OWNER = 'containerd-shim-tshim-v2.exe';
/** How long a shut-down system may take to report its exit before it is terminated. */
const SYSTEM_STOP_MS = 30_000;

export interface WindowsDeps {
  hcs: Hcs;
  layers: Layers;
  io: StdioIo;
}

export async function readSpec(bundle: string): Promise<OciSpec> {
  let text: string;
  try {
    text = await fs.readFile(path.join(bundle, 'config.json'), 'utf8');
  } catch {
    throw invalidArgument(`bundle ${bundle} has no config.json`);
  }
  try {
    return JSON.parse(text) as OciSpec;
  } catch (err) {
    throw invalidArgument(`config.json is not valid JSON: ${(err as Error).message}`);
  }
}

export async function createWindowsContainer(request: CreateContainerRequest, deps: WindowsDeps): Promise<WindowsContainer> {
  const { id, bundle } = request;
  const spec = await readSpec(bundle);
  refuseHypervisorOption(request.options);
  checkSupported(spec, windowsBuild(os.release()));
  const undo: Array<() => Promise<void>> = [];
  try {
    // Rootfs: exactly one of the windows-layer mount or windows.layerFolders (spec §5).
    const folders = spec.windows?.layerFolders ?? [];
    if (request.rootfs.length > 0 && folders.length > 0) throw failedPrecondition('rootfs mounts and windows.layerFolders are both set; give one');
    const mount = parseLayerMount(request.rootfs) ?? (folders.length > 0 ? layerMountFromFolders(folders) : undefined);
    if (!mount) throw failedPrecondition('no rootfs: give a windows-layer mount or windows.layerFolders');
    let volumePath = spec.root?.path ?? '';
    let parents: LayerDescriptor[];
    let mountedScratch: string | undefined;
    if (volumePath) {
      if (!isVolumePath(volumePath)) throw invalidArgument(`root.path ${JSON.stringify(volumePath)} must be a volume GUID path when set`);
      parents = await deps.layers.descriptors(mount.parents); // pre-mounted by the caller
    } else {
      const mounted = await deps.layers.mount(mount);
      mountedScratch = mount.scratch;
      undo.push(async () => void (await deps.layers.unmount(mount.scratch)));
      await recordLayerMount(bundle, mount.scratch);
      undo.push(() => forgetLayerMount(bundle));
      volumePath = mounted.volumePath;
      parents = mounted.parents;
    }
    const document = containerDocument({ spec, volumePath, layers: parents, owner: OWNER, hostProcessors: os.cpus().length });
    const system = await ComputeSystem.create(deps.hcs, id, document).catch((err: unknown) => {
      throw toShimError(err);
    });
    undo.push(async () => {
      await system.terminate().catch(() => undefined);
      await system.close();
    });
    const upstream = await connectUpstream(request.stdio, loggerIdentity(request.namespace, id));
    undo.push(() => closeUpstream(upstream));
    const container = new WindowsContainer(id, request.namespace, bundle, spec, system, deps, mountedScratch);
    container.createInit(spec.process ?? {}, request.stdio, upstream);
    return container;
  } catch (err) {
    for (const step of undo.reverse()) await step().catch((e: unknown) => logger.warn('undoing failed create', { id, error: e }));
    throw toShimError(err);
  }
}

export class WindowsContainer implements PlatformContainer {
  init!: WindowsInit;
  private readonly execs = new Set<WindowsProcess>();
  private readonly host: ProcessHost;
  private tornDown: Promise<void> | undefined;

  constructor(
    readonly id: string,
    namespace: string,
    readonly bundle: string,
    spec: OciSpec,
    readonly system: ComputeSystem,
    private readonly deps: WindowsDeps,
    /** the scratch we mounted (undefined when the caller pre-mounted the volume) */
    private readonly scratch: string | undefined,
  ) {
    this.host = { id, namespace, hcs: deps.hcs, io: deps.io, system, annotations: spec.annotations ?? {} };
  }

  createInit(process: OciProcess, stdio: CreateContainerRequest['stdio'], upstream: Awaited<ReturnType<typeof connectUpstream>>): void {
    this.init = new WindowsInit(this.host, process, stdio, upstream, () => this.teardown());
    this.init.execs = () => [...this.execs];
  }

  async createExec(request: ExecRequest): Promise<PlatformProcess> {
    if (this.system.stateName === 'paused') throw failedPrecondition(`container ${this.id} is paused`);
    if (this.system.stateName !== 'running' || this.init.pid === 0 || this.init.hasExited) {
      throw failedPrecondition(`container ${this.id} init process is not running`);
    }
    const spec = parseProcessSpec(request.spec);
    const exec = new WindowsExec(this.host, spec, request.stdio, request.execId);
    this.execs.add(exec);
    void exec.waitExit().then(() => this.execs.delete(exec));
    return exec;
  }

  /**
   * HcsPauseComputeSystem freezes the whole silo (runhcs answers NotImplemented here; tshim asks HCS,
   * and a build that cannot pause a process-isolated container says so through its HRESULT, mapped
   * like every other). The core's state machine has already refused a pause that is not running.
   */
  async pause(): Promise<void> {
    try {
      await this.system.pause();
    } catch (err) {
      throw toShimError(err);
    }
  }

  async resume(): Promise<void> {
    try {
      await this.system.resume();
    } catch (err) {
      throw toShimError(err);
    }
  }

  /**
   * A documented refusal: HCS saves only virtual machines (HcsSaveComputeSystem needs a Hyper-V
   * partition); a process-isolated container has no state HCS can write out or restore.
   */
  checkpoint(): Promise<void> {
    return Promise.reject(
      unimplemented('checkpoint of a process-isolated Windows container is not possible: HCS can save only Hyper-V virtual machines (HcsSaveComputeSystem), which tshim does not create'),
    );
  }

  async pids(): Promise<number[]> {
    return (await this.processList(() => '')).map((p) => p.pid);
  }

  async processList(execIdOf: (pid: number) => string): Promise<Array<{ pid: number; info?: AnyMessage }>> {
    const props = await this.query<{ ProcessList?: HcsProcessListEntry[] }>(['ProcessList']);
    return (props.ProcessList ?? []).map((p) => ({ pid: p.ProcessId, info: packAny('containerd.runhcs.v1.ProcessDetails', processDetails(p, execIdOf(p.ProcessId))) }));
  }

  async stats(): Promise<AnyMessage> {
    const props = await this.query<{ Statistics?: HcsStatistics }>(['Statistics']);
    return packAny('containerd.runhcs.stats.v1.Statistics', statistics(props.Statistics ?? {}));
  }

  /** A container going away answers NotFound, as runhcs maps it for Stats and Pids. */
  private async query<T extends object>(types: string[]): Promise<T> {
    if (this.system.stateName === 'closed' || this.system.stateName === 'stopped') throw notFound(`container ${this.id} is not running`);
    try {
      return await this.system.properties<T>(types);
    } catch (err) {
      if (err instanceof HcsError && (isNotExist(err.hr) || isInvalidState(err.hr) || isAccessDenied(err.hr) || win32Code(err.hr) === WIN32.INVALID_HANDLE)) {
        throw new ShimError(Code.NotFound, err.message, { cause: err });
      }
      throw toShimError(err);
    }
  }

  /** Memory and CPU of a running container (build 20H2+ for CPU), from WindowsResources JSON. */
  async update(resources: AnyMessage | undefined): Promise<void> {
    if (!resources || resources.value.length === 0) throw invalidArgument('update: resources are missing');
    let r: { memory?: { limit?: number }; cpu?: { count?: number; shares?: number; maximum?: number } };
    try {
      r = JSON.parse(resources.value.toString('utf8')) as typeof r;
    } catch {
      throw invalidArgument(`update: resources (${resources.typeUrl}) are not WindowsResources JSON`);
    }
    try {
      if (r.memory?.limit) {
        let mb = Math.ceil(r.memory.limit / 1024 / 1024);
        if (mb % 2 === 1) mb++; // HCS wants an even number of MB
        await this.system.modify({ ResourcePath: 'Container/Memory/SizeInMB', RequestType: 'Update', Settings: mb });
      }
      if (r.cpu && (r.cpu.count || r.cpu.shares || r.cpu.maximum)) {
        const settings: Record<string, number> = {};
        if (r.cpu.count) settings['Count'] = r.cpu.count;
        if (r.cpu.maximum) settings['Maximum'] = r.cpu.maximum;
        if (r.cpu.shares) settings['Weight'] = r.cpu.shares;
        await this.system.modify({ ResourcePath: 'Container/Processor', RequestType: 'Update', Settings: settings });
      }
    } catch (err) {
      throw toShimError(err);
    }
  }

  async afterInitExit(): Promise<void> {
    await this.teardown();
  }

  /** Shut the system down (terminate if it lingers), close it, unmount the layers. Once. */
  teardown(): Promise<void> {
    this.tornDown ??= this.doTeardown();
    return this.tornDown;
  }

  private async doTeardown(): Promise<void> {
    const { system } = this;
    try {
      if (system.stateName !== 'stopped' && system.stateName !== 'closed') {
        // A frozen silo cannot run a graceful shutdown; it is terminated at once.
        const graceful = system.stateName !== 'paused';
        if (graceful) await system.shutdown().catch((err: unknown) => logger.debug('shutdown', { id: this.id, error: err }));
        if (!graceful || !(await settlesWithin(system.exited, SYSTEM_STOP_MS))) {
          await system.terminate().catch((err: unknown) => logger.warn('terminate', { id: this.id, error: err }));
          await settlesWithin(system.exited, SYSTEM_STOP_MS);
        }
      }
    } finally {
      await system.close();
      if (this.scratch && (await this.deps.layers.unmount(this.scratch))) await forgetLayerMount(this.bundle);
    }
  }
}

/** runhcs turns SandboxIsolation=HYPERVISOR into windows.hyperv; tshim refuses it the same way. */
function refuseHypervisorOption(options: AnyMessage | undefined): void {
  const o = unpackAny<{ sandboxIsolation?: number }>(options);
  if (o?.name === 'containerd.runhcs.v1.Options' && o.message.sandboxIsolation === 1) {
    throw failedPrecondition('runtime option SandboxIsolation=HYPERVISOR asks for Hyper-V isolation, which tshim does not support: it needs a utility VM; use PROCESS');
  }
}

/** The exec's OCI Process, JSON in an Any (containerd's runtime-spec Process type). */
function parseProcessSpec(spec: AnyMessage | undefined): OciProcess {
  if (!spec || spec.value.length === 0) throw invalidArgument('exec: process spec is missing');
  try {
    const parsed = JSON.parse(spec.value.toString('utf8')) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as OciProcess;
  } catch (err) {
    throw invalidArgument(`exec: process spec is not valid JSON: ${(err as Error).message}`);
  }
}


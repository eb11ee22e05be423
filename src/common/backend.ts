/**
 * The contract between the platform-neutral task service and a platform (Linux runc, Windows HCS),
 * and the one place that picks the platform. The service owns the state machines: a backend is
 * only called in a state where the operation is legal, so it never re-checks states; it reports
 * failures as ShimErrors already classified (NotFound for "process already finished", ...).
 */
import { Code, ShimError } from './errors';
import type { AnyMessage } from './proto';
import type { ContainerStateRecord, IoState, ProcessStateRecord } from './upgrade/state';

export interface ExitStatus {
  /** exit code, or 128+signal when the process was killed */
  status: number;
  exitedAt: Date;
}

export interface StdioSpec {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface MountSpec {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface CreateContainerRequest {
  id: string;
  namespace: string;
  bundle: string;
  rootfs: MountSpec[];
  stdio: StdioSpec;
  /** image path to restore from instead of creating anew */
  checkpoint: string;
  parentCheckpoint: string;
  options: AnyMessage | undefined;
}

export interface ExecRequest {
  execId: string;
  stdio: StdioSpec;
  /** JSON OCI Process (Any value) */
  spec: AnyMessage | undefined;
}

export interface CheckpointRequest {
  path: string;
  options: AnyMessage | undefined;
}

/** Callbacks a container raises on its own. */
export interface ContainerHooks {
  onOom(): void;
}

/**
 * One process (the init or an exec) as the platform sees it.
 * - `start`: valid once, in created. Resolves with the pid.
 * - `waitExit`: valid after `start` resolved (init: after the container was created); resolves
 *   exactly once, even if the process exited before anyone asked.
 * - `kill`: running/paused/created-init. Must reject NotFound "process already finished" when the
 *   process is gone.
 * - `resizePty`: no-op without a terminal.
 * - `delete`: drains IO (≤2 s), closes IO, removes files; for the init also the runtime state and
 *   the rootfs mounts. Idempotent.
 */
export interface PlatformProcess {
  readonly pid: number;
  start(): Promise<number>;
  waitExit(): Promise<ExitStatus>;
  kill(signal: number, all: boolean): Promise<void>;
  resizePty(width: number, height: number): Promise<void>;
  closeStdin(): Promise<void>;
  delete(): Promise<void>;
  /** upgrade: stop relaying IO, write out what was read */
  suspendIo?(): Promise<void>;
  /** upgrade abandoned */
  resumeIo?(): void;
  /** upgrade: the IO descriptors and their roles */
  handoverIo?(): IoState;
}

export interface PlatformContainer {
  readonly init: PlatformProcess;
  /** Prepares an exec; nothing runs until its `start`. */
  createExec(request: ExecRequest): Promise<PlatformProcess>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** every pid in the container */
  pids(): Promise<number[]>;
  /** cgroup (or HCS) metrics as an Any */
  stats(): Promise<AnyMessage>;
  update(resources: AnyMessage | undefined, annotations: Readonly<Record<string, string>>): Promise<void>;
  checkpoint(request: CheckpointRequest): Promise<void>;
  /**
   * Runs after the init exited and before its exit is published: kill what the init left behind
   * when the pid namespace is shared, deliver a last OOM notification.
   */
  afterInitExit(): Promise<void>;
  /** upgrade: whether we mounted the rootfs (and must unmount it at delete) */
  readonly mountedRootfs?: boolean;
  /** upgrade: an exec rebuilt from its hand-over record */
  restoreExec?(record: ProcessStateRecord): PlatformProcess;
}

export interface CleanupRequest {
  id: string;
  namespace: string;
  bundle: string;
}

export interface CleanupResult {
  pid: number;
}

export interface Backend {
  readonly platform: string;
  createContainer(request: CreateContainerRequest, hooks: ContainerHooks): Promise<PlatformContainer>;
  /** The `delete` action: best-effort cleanup after a shim that is gone. */
  cleanup(request: CleanupRequest): Promise<CleanupResult>;
  /** What the OCI runtime supports (`runc features`), for `-info`; undefined when it cannot say. */
  runtimeFeatures(options: AnyMessage | undefined): Promise<AnyMessage | undefined>;
  /** Daemon is shutting down for good. */
  close(): Promise<void>;
  /** upgrade: stop collecting exits (they stay zombies for the next image); resumeExits undoes it */
  suspendExits?(): void;
  resumeExits?(): void;
  /** upgrade: what the reaper knows beyond the processes: exits reaped without a watcher */
  handoverReaper?(): { watchedPids: number[]; strays: Array<{ pid: number; status: number; at: number }> };
  /** upgrade, new image: the reaper's kept exits, then each container */
  restoreReaper?(strays: Array<{ pid: number; status: number; at: number }>): void;
  restoreContainer?(record: ContainerStateRecord, hooks: ContainerHooks): Promise<PlatformContainer>;
}

export interface BackendContext {
  namespace: string;
  debug: boolean;
}

/** What a daemon does before it serves, whether launched by `start` or adopted as a spare. */
export interface PlatformDaemon {
  /** Loads now what the first Create would load. */
  warmUp(): Promise<void>;
  /** Sends the process's own stderr to containerd's log FIFO of the bundle it serves. */
  redirectStderr(fifoPath: string): void;
}

export async function loadPlatformDaemon(): Promise<PlatformDaemon> {
  if (process.platform !== 'linux') {
    throw new ShimError(Code.Unimplemented, `no tshim backend for platform ${process.platform} in this build`);
  }
  const { warmUp, redirectStderr } = await import('../linux/backend');
  return { warmUp, redirectStderr };
}

/**
 * The only place that imports a platform folder. Loaded lazily so `start` never pays for it.
 */
export async function loadBackend(context: BackendContext): Promise<Backend> {
  if (process.platform !== 'linux') {
    // The HCS backend (src/windows/) is tracked separately; refuse clearly rather than half-work.
    throw new ShimError(Code.Unimplemented, `no tshim backend for platform ${process.platform} in this build`);
  }
  const { createLinuxBackend } = await import('../linux/backend');
  return createLinuxBackend(context);
}

/** What an in-place upgrade needs from the platform beyond the backend (upgrade/handover.ts). */
export interface HandoverPlatform {
  setCloseOnExec(fd: number, on: boolean): void;
  execve(file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never;
  /** Loads the code a restored daemon runs, so a build that cannot load it fails its check. */
  warmUp(): Promise<void>;
}

export async function loadHandoverPlatform(): Promise<HandoverPlatform> {
  if (process.platform !== 'linux') {
    throw new ShimError(Code.Unimplemented, `no tshim backend for platform ${process.platform} in this build`);
  }
  const { setCloseOnExec, execve } = await import('../linux/libc');
  const { warmUp } = await import('../linux/backend');
  return { setCloseOnExec, execve, warmUp };
}

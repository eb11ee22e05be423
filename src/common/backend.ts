/**
 * The contract between the platform-neutral task service and a platform (Linux runc, Windows HCS).
 * Which platform runs is decided outside src/common (src/platform.ts), so the core never imports a
 * platform folder; it receives a `Platform` from the entry point. The service owns the state machines: a backend is
 * only called in a state where the operation is legal, so it never re-checks states; it reports
 * failures as ShimErrors already classified (NotFound for "process already finished", ...).
 */
import type { Server } from 'node:net';
import type { StartInputs, StartResult } from './bootstrap';
import type { ShimFlags } from './cli';
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
  /**
   * Pids with the platform's own detail message (Windows: containerd.runhcs.v1.ProcessDetails);
   * when present the service answers Pids with it instead of `pids()`. `execIdOf` names the exec
   * that owns a pid, '' for none.
   */
  processList?(execIdOf: (pid: number) => string): Promise<Array<{ pid: number; info?: AnyMessage }>>;
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
  /** what DeleteResponse reports; 137 (SIGKILL) when unset, as the runc shim does */
  exitStatus?: number;
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

export interface Platform {
  readonly name: string;
  loadBackend(context: BackendContext): Promise<Backend>;
  /** Loads now what the first Create would load (for spare daemons, see spare.ts). */
  warmUp?(): Promise<void>;
  /** Sends the process's own stderr to containerd's log FIFO of the bundle an adopted spare serves. */
  redirectStderr?(fifoPath: string): void;
  /** What an in-place upgrade needs (upgrade/handover.ts); absent where it is not supported. */
  handover?(): Promise<HandoverPlatform>;
  /**
   * How this platform's containerd expects the CLI contract and the daemon's transport, when it is
   * not the unix-socket one of bootstrap.ts (Windows: named pipes, stdout close as readiness).
   */
  readonly transport?: PlatformTransport;
}

export interface PlatformTransport {
  /** the `start` action: spawn (or reuse) a daemon, return what containerd reads on stdout */
  start(inputs: StartInputs): Promise<StartResult>;
  /** the daemon's listener; `remove` runs at shutdown */
  listen(flags: ShimFlags, bundle: string): Promise<{ server: Server; remove(): void }>;
  /** where the daemon's log lines go (undefined: nowhere) */
  logStream(flags: ShimFlags, bundle: string): NodeJS.WritableStream | undefined;
  /** the daemon serves: tell `start` (Windows: close stdout); std handles are unused after this */
  ready(): void;
}

/** What an in-place upgrade needs from the platform beyond the backend (upgrade/handover.ts). */
export interface HandoverPlatform {
  setCloseOnExec(fd: number, on: boolean): void;
  execve(file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never;
}


/**
 * TypeScript shapes of the protobuf messages in proto/, as `codec()` from ./proto decodes them and
 * accepts them for encoding: camelCase names, numbers for integers and enums, Buffer for bytes,
 * plain objects for maps.
 *
 * Scalars, repeated and map fields are always present after decoding (proto3 defaults). Message
 * fields are `?: T | null` when they may legitimately be absent; they are required when the Go
 * runc shim always sends them, so the compiler keeps us from ever omitting an `exited_at`
 * (containerd needs Go's zero time there, see GO_ZERO_TIME) or an envelope's event.
 */
import type { AnyMessage, Timestamp } from './proto';

// --- service and method names --------------------------------------------------------------------

export const TASK_SERVICE_V2 = 'containerd.task.v2.Task';
/** containerd 2.x only; its messages are byte-identical to v2, so the same handlers serve both. */
export const TASK_SERVICE_V3 = 'containerd.task.v3.Task';
export const EVENTS_SERVICE_TTRPC = 'containerd.services.events.ttrpc.v1.Events';

const EMPTY = 'google.protobuf.Empty';

/** Wire method name -> request/response message full names, for the 17 Task methods. */
export const TASK_METHODS = {
  State: { request: 'containerd.task.v2.StateRequest', response: 'containerd.task.v2.StateResponse' },
  Create: { request: 'containerd.task.v2.CreateTaskRequest', response: 'containerd.task.v2.CreateTaskResponse' },
  Start: { request: 'containerd.task.v2.StartRequest', response: 'containerd.task.v2.StartResponse' },
  Delete: { request: 'containerd.task.v2.DeleteRequest', response: 'containerd.task.v2.DeleteResponse' },
  Pids: { request: 'containerd.task.v2.PidsRequest', response: 'containerd.task.v2.PidsResponse' },
  Pause: { request: 'containerd.task.v2.PauseRequest', response: EMPTY },
  Resume: { request: 'containerd.task.v2.ResumeRequest', response: EMPTY },
  Checkpoint: { request: 'containerd.task.v2.CheckpointTaskRequest', response: EMPTY },
  Kill: { request: 'containerd.task.v2.KillRequest', response: EMPTY },
  Exec: { request: 'containerd.task.v2.ExecProcessRequest', response: EMPTY },
  ResizePty: { request: 'containerd.task.v2.ResizePtyRequest', response: EMPTY },
  CloseIO: { request: 'containerd.task.v2.CloseIORequest', response: EMPTY },
  Update: { request: 'containerd.task.v2.UpdateTaskRequest', response: EMPTY },
  Wait: { request: 'containerd.task.v2.WaitRequest', response: 'containerd.task.v2.WaitResponse' },
  Stats: { request: 'containerd.task.v2.StatsRequest', response: 'containerd.task.v2.StatsResponse' },
  Connect: { request: 'containerd.task.v2.ConnectRequest', response: 'containerd.task.v2.ConnectResponse' },
  Shutdown: { request: 'containerd.task.v2.ShutdownRequest', response: EMPTY },
} as const satisfies Record<string, { request: string; response: string }>;

export type TaskMethod = keyof typeof TASK_METHODS;

/** Event topic -> message full name. There is deliberately no '/tasks/io' topic. */
export const EVENT_TOPICS = {
  '/tasks/create': 'containerd.events.TaskCreate',
  '/tasks/start': 'containerd.events.TaskStart',
  '/tasks/delete': 'containerd.events.TaskDelete',
  '/tasks/exit': 'containerd.events.TaskExit',
  '/tasks/oom': 'containerd.events.TaskOOM',
  '/tasks/exec-added': 'containerd.events.TaskExecAdded',
  '/tasks/exec-started': 'containerd.events.TaskExecStarted',
  '/tasks/paused': 'containerd.events.TaskPaused',
  '/tasks/resumed': 'containerd.events.TaskResumed',
  '/tasks/checkpointed': 'containerd.events.TaskCheckpointed',
} as const satisfies Record<string, string>;

export type EventTopic = keyof typeof EVENT_TOPICS;

/** Well-known Any type URLs for payloads that are protobuf messages we define. */
export const TYPE_URLS = {
  runcOptions: 'containerd.runc.v1.Options',
  runcCheckpointOptions: 'containerd.runc.v1.CheckpointOptions',
  runcProcessDetails: 'containerd.runc.v1.ProcessDetails',
  runtimeOptions: 'runtimeoptions.v1.Options',
  cgroupsV1Metrics: 'io.containerd.cgroups.v1.Metrics',
  cgroupsV2Metrics: 'io.containerd.cgroups.v2.Metrics',
} as const;

// --- shared types --------------------------------------------------------------------------------

/** containerd.v1.types.Status; numbering is part of the wire. */
export enum TaskStatus {
  UNKNOWN = 0,
  CREATED = 1,
  RUNNING = 2,
  STOPPED = 3,
  PAUSED = 4,
  PAUSING = 5,
}

/** containerd.types.Mount */
export interface Mount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** containerd.v1.types.ProcessInfo */
export interface ProcessInfo {
  pid: number;
  info?: AnyMessage | null;
}

/** google.protobuf.Empty */
export type Empty = Record<string, never>;

// --- containerd.task.v2 requests and responses ---------------------------------------------------

export interface CreateTaskRequest {
  id: string;
  bundle: string;
  rootfs: Mount[];
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
  checkpoint: string;
  parentCheckpoint: string;
  options?: AnyMessage | null;
}

export interface CreateTaskResponse {
  pid: number;
}

/** Shape shared by DeleteRequest, StateRequest, StartRequest and WaitRequest. */
export interface ProcessRequest {
  id: string;
  /** Empty for the init process. */
  execId: string;
}

export type DeleteRequest = ProcessRequest;
export type StateRequest = ProcessRequest;
export type StartRequest = ProcessRequest;
export type WaitRequest = ProcessRequest;

export interface DeleteResponse {
  pid: number;
  exitStatus: number;
  exitedAt: Timestamp;
}

export interface ExecProcessRequest {
  id: string;
  execId: string;
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
  /** JSON of an OCI Process; typeUrl 'types.containerd.io/opencontainers/runtime-spec/1/Process'. */
  spec?: AnyMessage | null;
}

/** Declared by the API but unused: Exec replies with Empty. */
export type ExecProcessResponse = Empty;

export interface ResizePtyRequest {
  id: string;
  execId: string;
  width: number;
  height: number;
}

export interface StateResponse {
  /** The process id: container id for init, exec id for an exec. */
  id: string;
  bundle: string;
  pid: number;
  status: TaskStatus;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  exitStatus: number;
  exitedAt: Timestamp;
  /** Not filled by the runc shim. */
  execId: string;
}

export interface KillRequest {
  id: string;
  execId: string;
  signal: number;
  all: boolean;
}

export interface CloseIORequest {
  id: string;
  execId: string;
  stdin: boolean;
}

/** Shape shared by PidsRequest, StatsRequest, ConnectRequest, PauseRequest and ResumeRequest. */
export interface ContainerRequest {
  id: string;
}

export type PidsRequest = ContainerRequest;
export type StatsRequest = ContainerRequest;
export type ConnectRequest = ContainerRequest;
export type PauseRequest = ContainerRequest;
export type ResumeRequest = ContainerRequest;

export interface PidsResponse {
  processes: ProcessInfo[];
}

export interface CheckpointTaskRequest {
  id: string;
  path: string;
  options?: AnyMessage | null;
}

export interface UpdateTaskRequest {
  id: string;
  /** JSON of OCI LinuxResources. */
  resources?: AnyMessage | null;
  annotations: Record<string, string>;
}

export interface StartResponse {
  pid: number;
}

export interface WaitResponse {
  exitStatus: number;
  exitedAt: Timestamp;
}

export interface StatsResponse {
  /** io.containerd.cgroups.v1.Metrics or io.containerd.cgroups.v2.Metrics. */
  stats: AnyMessage;
}

export interface ConnectResponse {
  shimPid: number;
  taskPid: number;
  version: string;
}

export interface ShutdownRequest {
  id: string;
  now: boolean;
}

/** Request and response TS types of each Task method, keyed like TASK_METHODS. */
export interface TaskMethodTypes {
  State: { request: StateRequest; response: StateResponse };
  Create: { request: CreateTaskRequest; response: CreateTaskResponse };
  Start: { request: StartRequest; response: StartResponse };
  Delete: { request: DeleteRequest; response: DeleteResponse };
  Pids: { request: PidsRequest; response: PidsResponse };
  Pause: { request: PauseRequest; response: Empty };
  Resume: { request: ResumeRequest; response: Empty };
  Checkpoint: { request: CheckpointTaskRequest; response: Empty };
  Kill: { request: KillRequest; response: Empty };
  Exec: { request: ExecProcessRequest; response: Empty };
  ResizePty: { request: ResizePtyRequest; response: Empty };
  CloseIO: { request: CloseIORequest; response: Empty };
  Update: { request: UpdateTaskRequest; response: Empty };
  Wait: { request: WaitRequest; response: WaitResponse };
  Stats: { request: StatsRequest; response: StatsResponse };
  Connect: { request: ConnectRequest; response: ConnectResponse };
  Shutdown: { request: ShutdownRequest; response: Empty };
}

// --- containerd.events ---------------------------------------------------------------------------

export interface TaskIO {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface TaskCreate {
  containerId: string;
  bundle: string;
  rootfs: Mount[];
  io: TaskIO;
  checkpoint: string;
  pid: number;
}

export interface TaskStart {
  containerId: string;
  pid: number;
}

export interface TaskDelete {
  containerId: string;
  pid: number;
  exitStatus: number;
  exitedAt: Timestamp;
  /** Exec id; left empty by the runc shim (init). */
  id: string;
}

export interface TaskExit {
  containerId: string;
  /** Container id for the init process, exec id for an exec. */
  id: string;
  pid: number;
  exitStatus: number;
  exitedAt: Timestamp;
}

export interface TaskOOM {
  containerId: string;
}

export interface TaskExecAdded {
  containerId: string;
  execId: string;
}

export interface TaskExecStarted {
  containerId: string;
  execId: string;
  pid: number;
}

export interface TaskPaused {
  containerId: string;
}

export interface TaskResumed {
  containerId: string;
}

export interface TaskCheckpointed {
  containerId: string;
  checkpoint: string;
}

/** Event message TS type of each topic, keyed like EVENT_TOPICS. */
export interface EventTypes {
  '/tasks/create': TaskCreate;
  '/tasks/start': TaskStart;
  '/tasks/delete': TaskDelete;
  '/tasks/exit': TaskExit;
  '/tasks/oom': TaskOOM;
  '/tasks/exec-added': TaskExecAdded;
  '/tasks/exec-started': TaskExecStarted;
  '/tasks/paused': TaskPaused;
  '/tasks/resumed': TaskResumed;
  '/tasks/checkpointed': TaskCheckpointed;
}

/**
 * containerd.services.events.ttrpc.v1.Envelope (wire-identical to
 * containerd.services.events.v1.Envelope and 2.x's containerd.types.Envelope).
 */
export interface Envelope {
  /** Must not be zero: containerd rejects it with InvalidArgument. */
  timestamp: Timestamp;
  namespace: string;
  topic: string;
  event: AnyMessage;
}

/** containerd.services.events.ttrpc.v1.ForwardRequest */
export interface ForwardRequest {
  envelope: Envelope;
}

// --- runtime options -----------------------------------------------------------------------------

/** containerd.runc.v1.Options */
export interface RuncOptions {
  noPivotRoot: boolean;
  noNewKeyring: boolean;
  shimCgroup: string;
  ioUid: number;
  ioGid: number;
  binaryName: string;
  root: string;
  /** 1.6/1.7 only. */
  criuPath: string;
  systemdCgroup: boolean;
  criuImagePath: string;
  criuWorkPath: string;
  /** 2.x only, deprecated there. */
  taskApiAddress: string;
  /** 2.x only, deprecated there. */
  taskApiVersion: number;
}

/** containerd.runc.v1.CheckpointOptions */
export interface CheckpointOptions {
  exit: boolean;
  openTcp: boolean;
  externalUnixSockets: boolean;
  terminal: boolean;
  fileLocks: boolean;
  emptyNamespaces: string[];
  /** soft, full or strict */
  cgroupsMode: string;
  imagePath: string;
  workPath: string;
}

/** containerd.runc.v1.ProcessDetails (ProcessInfo.info of exec processes in Pids). */
export interface ProcessDetails {
  execId: string;
}

/** containerd.linux.runc.RuncOptions (runtime v1; recognised only to be ignored). */
export interface LegacyRuncOptions {
  runtime: string;
  runtimeRoot: string;
  criuPath: string;
  systemdCgroup: boolean;
}

/** containerd.linux.runc.CreateOptions (runtime v1; recognised only to be ignored). */
export interface LegacyCreateOptions {
  noPivotRoot: boolean;
  openTcp: boolean;
  externalUnixSockets: boolean;
  terminal: boolean;
  fileLocks: boolean;
  emptyNamespaces: string[];
  cgroupsMode: string;
  noNewKeyring: boolean;
  shimCgroup: string;
  ioUid: number;
  ioGid: number;
  criuWorkPath: string;
  criuImagePath: string;
}

/** containerd.linux.runc.CheckpointOptions (work/image path numbers differ from runc.v1's). */
export interface LegacyCheckpointOptions {
  exit: boolean;
  openTcp: boolean;
  externalUnixSockets: boolean;
  terminal: boolean;
  fileLocks: boolean;
  emptyNamespaces: string[];
  cgroupsMode: string;
  workPath: string;
  imagePath: string;
}

/** runtimeoptions.v1.Options: what CRI sends for runtime types other than runc's. */
export interface RuntimeOptions {
  typeUrl: string;
  configPath: string;
  /** 1.7+: TOML of the runtime's [options] table when configPath is empty. */
  configBody: Buffer;
}

// --- start/-info protocol (containerd 2.x) -------------------------------------------------------

/** containerd.runtime.bootstrap.v1.LogLevel: an open enum, unknown values map to the nearest. */
export enum LogLevel {
  INFO = 0,
  TRACE = -8,
  DEBUG = -4,
  WARN = 4,
  ERROR = 8,
  FATAL = 10,
  PANIC = 12,
}

/** containerd.runtime.bootstrap.v1.Capability */
export enum Capability {
  UNSPECIFIED = 0,
}

/** containerd.runtime.bootstrap.v1.Extension */
export interface BootstrapExtension {
  value?: AnyMessage | null;
}

/** containerd.runtime.bootstrap.v1.BootstrapParams: the `start` stdin from containerd 2.3. */
export interface BootstrapParams {
  instanceId: string;
  namespace: string;
  logLevel: LogLevel;
  containerdVersion: string;
  containerdTtrpcAddress: string;
  containerdGrpcAddress: string;
  containerdBinary: string;
  extensions: BootstrapExtension[];
  /** proto3 `optional`: absent (not '') when containerd did not set it. */
  socketDir?: string;
}

/** containerd.runtime.bootstrap.v1.BootstrapResult */
export interface BootstrapResult {
  version: number;
  address: string;
  protocol: string;
  capabilities: Capability[];
  metadata: Record<string, string>;
}

/** containerd.types.RuntimeVersion */
export interface RuntimeVersion {
  version: string;
  revision: string;
}

/** containerd.types.RuntimeInfo: what `-info` writes to stdout. */
export interface RuntimeInfo {
  name: string;
  version?: RuntimeVersion | null;
  options?: AnyMessage | null;
  /** JSON of `runc features`; typeUrl 'types.containerd.io/opencontainers/runtime-spec/1/features/Features'. */
  features?: AnyMessage | null;
  annotations: Record<string, string>;
}

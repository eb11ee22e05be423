/**
 * The shape of vmcompute.dll as the HCS wrappers see it, with no koffi in sight: every call is
 * already asynchronous (run off the JS thread), every HCS-allocated string is already decoded and
 * freed, and every handle is a branded opaque value so a process handle can never be passed where
 * a system handle is expected (koffi's pointers would not catch the mix-up; HCS would crash).
 *
 * vmcompute.ts implements this over koffi; unit tests implement it with fakes.
 */

declare const brand: unique symbol;
/** An opaque native handle of one kind. */
export type Handle<K extends string> = object & { readonly [brand]: K };

export type SystemHandle = Handle<'HCS_SYSTEM'>;
export type ProcessHandle = Handle<'HCS_PROCESS'>;
export type CallbackHandle = Handle<'HCS_CALLBACK'>;
/** A Win32 pipe HANDLE HCS gave us for a process's stdio; we own it and must CloseHandle it. */
export type StdioHandle = Handle<'HANDLE'>;

/** An HRESULT plus the (possibly empty) result document HCS returned with it. */
export interface HcsResult {
  hr: number;
  /** the error JSON document (spec §3.3), '' when HCS returned none */
  result: string;
}

export interface ProcessInformation {
  processId: number;
  stdInput: StdioHandle | null;
  stdOutput: StdioHandle | null;
  stdError: StdioHandle | null;
}

/** One read-only parent layer for PrepareLayer: its NameToGuid id and folder. */
export interface LayerDescriptor {
  /** lower-case GUID without braces */
  id: string;
  path: string;
}

/** (type, context, status): what the notification callback passes on; `data` is never read. */
export type NotificationSink = (type: number, context: number, status: number) => void;

export interface HcsApi {
  // compute systems
  createComputeSystem(id: string, configuration: string): Promise<HcsResult & { system: SystemHandle | null }>;
  openComputeSystem(id: string): Promise<HcsResult & { system: SystemHandle | null }>;
  closeComputeSystem(system: SystemHandle): Promise<number>;
  startComputeSystem(system: SystemHandle, options: string): Promise<HcsResult>;
  shutdownComputeSystem(system: SystemHandle, options: string): Promise<HcsResult>;
  terminateComputeSystem(system: SystemHandle, options: string): Promise<HcsResult>;
  pauseComputeSystem(system: SystemHandle, options: string): Promise<HcsResult>;
  resumeComputeSystem(system: SystemHandle, options: string): Promise<HcsResult>;
  getComputeSystemProperties(system: SystemHandle, query: string): Promise<HcsResult & { properties: string }>;
  modifyComputeSystem(system: SystemHandle, configuration: string): Promise<HcsResult>;
  registerComputeSystemCallback(system: SystemHandle, context: number): Promise<{ hr: number; callback: CallbackHandle | null }>;
  unregisterComputeSystemCallback(callback: CallbackHandle): Promise<number>;

  // processes
  createProcess(system: SystemHandle, parameters: string): Promise<HcsResult & { process: ProcessHandle | null; info: ProcessInformation }>;
  openProcess(system: SystemHandle, pid: number): Promise<HcsResult & { process: ProcessHandle | null }>;
  closeProcess(process: ProcessHandle): Promise<number>;
  terminateProcess(process: ProcessHandle): Promise<HcsResult>;
  signalProcess(process: ProcessHandle, options: string): Promise<HcsResult>;
  getProcessProperties(process: ProcessHandle): Promise<HcsResult & { properties: string }>;
  modifyProcess(process: ProcessHandle, settings: string): Promise<HcsResult>;
  registerProcessCallback(process: ProcessHandle, context: number): Promise<{ hr: number; callback: CallbackHandle | null }>;
  unregisterProcessCallback(callback: CallbackHandle): Promise<number>;

  // layers (DriverInfo is always {FilterDriver, ""}; the id is the full layer folder path)
  activateLayer(path: string): Promise<number>;
  prepareLayer(path: string, parents: readonly LayerDescriptor[]): Promise<number>;
  getLayerMountPath(path: string): Promise<{ hr: number; mountPath: string }>;
  unprepareLayer(path: string): Promise<number>;
  deactivateLayer(path: string): Promise<number>;
  nameToGuid(name: string): Promise<{ hr: number; guid: string }>;

  /** Where notifications go; set once, before the first register call. */
  setNotificationSink(sink: NotificationSink): void;
}

/** The few Win32 I/O calls the stdio relay needs on HCS pipe handles. */
export interface StdioIo {
  /** Reads up to `size` bytes; resolves with an empty buffer at end of stream (or any failure). */
  read(handle: StdioHandle, size: number): Promise<Buffer>;
  /** Writes all of `data`; resolves false when the other end is gone. */
  write(handle: StdioHandle, data: Buffer): Promise<boolean>;
  /** Cancels I/O in flight on the handle (CancelIoEx); the blocked call then returns. */
  cancel(handle: StdioHandle): void;
  close(handle: StdioHandle): void;
}

/**
 * The one FFI binding to vmcompute.dll (the Host Compute Service, spec §1). Each declaration below
 * is the C prototype, in fixed-width types only: HRESULT is int32_t (never `long`, which is 4 bytes
 * on Windows and 8 on Linux, so a signature checked on Linux would lie), counts and contexts are
 * uintptr_t, strings are UTF-16 `char16_t`.
 *
 * Rules this file enforces for everyone above it (spec §2.4, §11):
 * - every export runs through koffi's `.async` on a worker thread: HCS invokes our callback on its
 *   own thread and blocks until the JS thread ran it, so a synchronous HcsUnregister*Callback (which
 *   waits for callbacks in flight) on the JS thread would deadlock;
 * - every HCS-allocated string (`PWSTR*` out-parameters) is decoded and then freed with
 *   CoTaskMemFree, on success and failure alike, both strings when there are two;
 * - one callback trampoline for the whole process, registered with koffi once and never
 *   unregistered, dispatching by the integer context HCS echoes back.
 *
 * The library is loaded on first use, so importing this module on Linux (unit tests, type checks)
 * costs nothing; `declarations()` parses every prototype without loading the DLL.
 */
import type * as Koffi from 'koffi';
import { koffi as ffi } from '../common/koffi';
import { failedPrecondition, unimplemented } from '../common/errors';
import type {
  CallbackHandle,
  HcsApi,
  HcsResult,
  LayerDescriptor,
  NotificationSink,
  ProcessHandle,
  ProcessInformation,
  StdioHandle,
  SystemHandle,
} from './hcs-api';
import { coTaskMemFree, decodeWide } from './win32';

/** DriverInfo.Flavour: hcsshim always passes FilterDriver with an empty home directory. */
const FILTER_DRIVER = 1;

/** C prototypes, in the order of spec §1.2-§1.5. `HANDLE`-like types are opaque pointers. */
export const PROTOTYPES = {
  // compute systems (§1.2)
  HcsCreateComputeSystem:
    'int32_t __stdcall HcsCreateComputeSystem(const char16_t *id, const char16_t *configuration, void *identity, _Out_ HCS_SYSTEM *computeSystem, _Out_ void **result)',
  HcsOpenComputeSystem: 'int32_t __stdcall HcsOpenComputeSystem(const char16_t *id, _Out_ HCS_SYSTEM *computeSystem, _Out_ void **result)',
  HcsCloseComputeSystem: 'int32_t __stdcall HcsCloseComputeSystem(HCS_SYSTEM computeSystem)',
  HcsStartComputeSystem: 'int32_t __stdcall HcsStartComputeSystem(HCS_SYSTEM computeSystem, const char16_t *options, _Out_ void **result)',
  HcsShutdownComputeSystem: 'int32_t __stdcall HcsShutdownComputeSystem(HCS_SYSTEM computeSystem, const char16_t *options, _Out_ void **result)',
  HcsTerminateComputeSystem: 'int32_t __stdcall HcsTerminateComputeSystem(HCS_SYSTEM computeSystem, const char16_t *options, _Out_ void **result)',
  HcsPauseComputeSystem: 'int32_t __stdcall HcsPauseComputeSystem(HCS_SYSTEM computeSystem, const char16_t *options, _Out_ void **result)',
  HcsResumeComputeSystem: 'int32_t __stdcall HcsResumeComputeSystem(HCS_SYSTEM computeSystem, const char16_t *options, _Out_ void **result)',
  HcsGetComputeSystemProperties:
    'int32_t __stdcall HcsGetComputeSystemProperties(HCS_SYSTEM computeSystem, const char16_t *propertyQuery, _Out_ void **properties, _Out_ void **result)',
  HcsModifyComputeSystem: 'int32_t __stdcall HcsModifyComputeSystem(HCS_SYSTEM computeSystem, const char16_t *configuration, _Out_ void **result)',
  HcsRegisterComputeSystemCallback:
    'int32_t __stdcall HcsRegisterComputeSystemCallback(HCS_SYSTEM computeSystem, HcsNotificationCallback *callback, uintptr_t context, _Out_ HCS_CALLBACK *callbackHandle)',
  HcsUnregisterComputeSystemCallback: 'int32_t __stdcall HcsUnregisterComputeSystemCallback(HCS_CALLBACK callbackHandle)',
  // processes (§1.3)
  HcsCreateProcess:
    'int32_t __stdcall HcsCreateProcess(HCS_SYSTEM computeSystem, const char16_t *processParameters, _Out_ HCS_PROCESS_INFORMATION *processInformation, _Out_ HCS_PROCESS *process, _Out_ void **result)',
  HcsOpenProcess: 'int32_t __stdcall HcsOpenProcess(HCS_SYSTEM computeSystem, uint32_t pid, _Out_ HCS_PROCESS *process, _Out_ void **result)',
  HcsCloseProcess: 'int32_t __stdcall HcsCloseProcess(HCS_PROCESS process)',
  HcsTerminateProcess: 'int32_t __stdcall HcsTerminateProcess(HCS_PROCESS process, _Out_ void **result)',
  HcsSignalProcess: 'int32_t __stdcall HcsSignalProcess(HCS_PROCESS process, const char16_t *options, _Out_ void **result)',
  HcsGetProcessProperties: 'int32_t __stdcall HcsGetProcessProperties(HCS_PROCESS process, _Out_ void **processProperties, _Out_ void **result)',
  HcsModifyProcess: 'int32_t __stdcall HcsModifyProcess(HCS_PROCESS process, const char16_t *settings, _Out_ void **result)',
  HcsRegisterProcessCallback:
    'int32_t __stdcall HcsRegisterProcessCallback(HCS_PROCESS process, HcsNotificationCallback *callback, uintptr_t context, _Out_ HCS_CALLBACK *callbackHandle)',
  HcsUnregisterProcessCallback: 'int32_t __stdcall HcsUnregisterProcessCallback(HCS_CALLBACK callbackHandle)',
  // layers (§1.5)
  ActivateLayer: 'int32_t __stdcall ActivateLayer(const DriverInfo *info, const char16_t *id)',
  PrepareLayer: 'int32_t __stdcall PrepareLayer(const DriverInfo *info, const char16_t *id, const WC_LAYER_DESCRIPTOR *layers, uintptr_t count)',
  GetLayerMountPath: 'int32_t __stdcall GetLayerMountPath(const DriverInfo *info, const char16_t *id, _Inout_ uintptr_t *length, void *buffer)',
  UnprepareLayer: 'int32_t __stdcall UnprepareLayer(const DriverInfo *info, const char16_t *id)',
  DeactivateLayer: 'int32_t __stdcall DeactivateLayer(const DriverInfo *info, const char16_t *id)',
  NameToGuid: 'int32_t __stdcall NameToGuid(const char16_t *name, _Out_ GUID *guid)',
} as const;

export type ExportName = keyof typeof PROTOTYPES;

/** `void __stdcall HcsNotificationCallback(uint32_t type, uintptr_t context, int32_t status, const char16_t *data)` */
const CALLBACK_PROTOTYPE =
  'void __stdcall HcsNotificationCallback(uint32_t notificationType, uintptr_t context, int32_t notificationStatus, const char16_t *notificationData)';

interface Types {
  koffi: typeof Koffi;
  callback: Koffi.IKoffiCType;
  guid: Koffi.IKoffiCType;
  processInformation: Koffi.IKoffiCType;
  driverInfo: Koffi.IKoffiCType;
  layerDescriptor: Koffi.IKoffiCType;
}

let types: Types | undefined;

/**
 * Declares the handle, struct and callback types (once per process: koffi names are global).
 * Layouts are the x64 ones of spec §1.3/§1.5; padding members are declared, not implied.
 */
export function declarations(): Types {
  if (types) return types;
  const koffi = ffi(); // the package's, or the single executable's beside it
  for (const name of ['HCS_SYSTEM', 'HCS_PROCESS', 'HCS_CALLBACK']) koffi.pointer(name, koffi.opaque());
  try {
    koffi.pointer('HANDLE', koffi.opaque());
  } catch {
    // win32.ts declared it first (the daemon's stdout close runs before any container)
  }
  const handle = 'HANDLE';
  // typedef struct { uint32_t Data1; uint16_t Data2; uint16_t Data3; uint8_t Data4[8]; } GUID;  16 bytes
  const guid = koffi.struct('GUID', {
    Data1: 'uint32_t',
    Data2: 'uint16_t',
    Data3: 'uint16_t',
    Data4: koffi.array('uint8_t', 8, 'Array'),
  });
  // typedef struct { DWORD ProcessId; DWORD Reserved; HANDLE StdInput, StdOutput, StdError; } HCS_PROCESS_INFORMATION;  32 bytes
  const processInformation = koffi.struct('HCS_PROCESS_INFORMATION', {
    ProcessId: 'uint32_t',
    Reserved: 'uint32_t',
    StdInput: handle,
    StdOutput: handle,
    StdError: handle,
  });
  // typedef struct { int32_t Flavour; /* 4 bytes padding */ PCWSTR HomeDir; } DriverInfo;  16 bytes
  const driverInfo = koffi.struct('DriverInfo', { Flavour: 'int32_t', Padding: 'uint32_t', HomeDir: 'const char16_t *' });
  // typedef struct { GUID LayerId; uint32_t Flags; /* padding */ PCWSTR Path; } WC_LAYER_DESCRIPTOR;  32 bytes
  const layerDescriptor = koffi.struct('WC_LAYER_DESCRIPTOR', {
    LayerId: guid,
    Flags: 'uint32_t',
    Padding: 'uint32_t',
    Path: 'const char16_t *',
  });
  const callback = koffi.proto(CALLBACK_PROTOTYPE);
  types = { koffi, callback, guid, processInformation, driverInfo, layerDescriptor };
  return types;
}

type AsyncFn = (...args: unknown[]) => void;

interface Bound {
  fns: Map<ExportName, Koffi.KoffiFunction>;
  trampoline: Koffi.IKoffiRegisteredCallback | undefined;
}

/** GUID struct → lower-case string without braces; Data1-3 are integers, printed big-endian. */
export function guidToString(g: { Data1: number; Data2: number; Data3: number; Data4: number[] }): string {
  const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');
  const d4 = g.Data4.map((b) => hex(b, 2)).join('');
  return `${hex(g.Data1 >>> 0, 8)}-${hex(g.Data2, 4)}-${hex(g.Data3, 4)}-${d4.slice(0, 4)}-${d4.slice(4)}`;
}

export function guidFromString(text: string): { Data1: number; Data2: number; Data3: number; Data4: number[] } {
  const m = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i.exec(text);
  if (!m) throw new Error(`not a GUID: ${text}`);
  const tail = m[4]! + m[5]!;
  const data4: number[] = [];
  for (let i = 0; i < 16; i += 2) data4.push(parseInt(tail.slice(i, i + 2), 16));
  return { Data1: parseInt(m[1]!, 16), Data2: parseInt(m[2]!, 16), Data3: parseInt(m[3]!, 16), Data4: data4 };
}

/** JS strings reach C as NUL-terminated UTF-16: an embedded NUL would silently cut them. */
function wide(text: string, what: string): string {
  if (text.includes('\u0000')) throw new Error(`${what} contains a NUL character`);
  return text;
}

/** Decodes and frees one HCS-allocated string (CoTaskMemFree, never the C runtime's free). */
function take(ptr: unknown): string {
  if (ptr === null || ptr === undefined) return '';
  try {
    return decodeWide(ptr);
  } finally {
    coTaskMemFree(ptr);
  }
}

/** The vmcompute.dll binding. `dll` is the name LoadLibrary resolves (system32 on Windows). */
export function loadVmCompute(dll = 'vmcompute.dll'): HcsApi {
  const t = declarations();
  const { koffi } = t;
  let lib: Koffi.IKoffiLib | undefined;
  const bound: Bound = { fns: new Map(), trampoline: undefined };
  let sink: NotificationSink = () => undefined;

  function fn(name: ExportName): Koffi.KoffiFunction {
    let f = bound.fns.get(name);
    if (f) return f;
    try {
      lib ??= koffi.load(dll);
    } catch (err) {
      throw failedPrecondition(`${dll} cannot be loaded (${(err as Error).message}): is the Windows Containers feature installed?`);
    }
    try {
      f = lib.func(PROTOTYPES[name]);
    } catch (err) {
      // hcsshim looks exports up lazily too: a missing one is an error, not a crash.
      throw unimplemented(`${name} is not supported on this Windows build (${(err as Error).message})`);
    }
    bound.fns.set(name, f);
    return f;
  }

  function call<R>(name: ExportName, ...args: unknown[]): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      (fn(name).async as AsyncFn)(...args, (err: unknown, res: R) => (err ? reject(err) : resolve(res)));
    });
  }

  /** The trampoline: tiny, never throws, never calls HCS (it runs while HCS waits for it). */
  function trampoline(): Koffi.IKoffiRegisteredCallback {
    bound.trampoline ??= koffi.register(
      (type: number, context: number | bigint, status: number) => {
        try {
          sink(type >>> 0, Number(context), status | 0);
        } catch {
          // koffi would swallow it anyway; HCS must get its thread back
        }
      },
      koffi.pointer(t.callback),
    );
    return bound.trampoline;
  }

  const driver = { Flavour: FILTER_DRIVER, Padding: 0, HomeDir: '' };

  async function withResult(name: ExportName, ...args: unknown[]): Promise<HcsResult> {
    const result: unknown[] = [null];
    const hr = await call<number>(name, ...args, result);
    return { hr, result: take(result[0]) };
  }

  return {
    setNotificationSink(next) {
      sink = next;
    },

    async createComputeSystem(id, configuration) {
      const system: unknown[] = [null];
      const result: unknown[] = [null];
      const hr = await call<number>('HcsCreateComputeSystem', wide(id, 'id'), wide(configuration, 'configuration'), null, system, result);
      return { hr, result: take(result[0]), system: (system[0] ?? null) as SystemHandle | null };
    },
    async openComputeSystem(id) {
      const system: unknown[] = [null];
      const result: unknown[] = [null];
      const hr = await call<number>('HcsOpenComputeSystem', wide(id, 'id'), system, result);
      return { hr, result: take(result[0]), system: (system[0] ?? null) as SystemHandle | null };
    },
    closeComputeSystem: (system) => call<number>('HcsCloseComputeSystem', system),
    startComputeSystem: (system, options) => withResult('HcsStartComputeSystem', system, options),
    shutdownComputeSystem: (system, options) => withResult('HcsShutdownComputeSystem', system, options),
    terminateComputeSystem: (system, options) => withResult('HcsTerminateComputeSystem', system, options),
    pauseComputeSystem: (system, options) => withResult('HcsPauseComputeSystem', system, options),
    resumeComputeSystem: (system, options) => withResult('HcsResumeComputeSystem', system, options),
    async getComputeSystemProperties(system, query) {
      const properties: unknown[] = [null];
      const result: unknown[] = [null];
      const hr = await call<number>('HcsGetComputeSystemProperties', system, wide(query, 'query'), properties, result);
      return { hr, properties: take(properties[0]), result: take(result[0]) };
    },
    modifyComputeSystem: (system, configuration) => withResult('HcsModifyComputeSystem', system, wide(configuration, 'configuration')),
    async registerComputeSystemCallback(system, context) {
      const handle: unknown[] = [null];
      const hr = await call<number>('HcsRegisterComputeSystemCallback', system, trampoline(), context, handle);
      return { hr, callback: (handle[0] ?? null) as CallbackHandle | null };
    },
    unregisterComputeSystemCallback: (callback) => call<number>('HcsUnregisterComputeSystemCallback', callback),

    async createProcess(system, parameters) {
      const info: Record<string, unknown> = {};
      const process: unknown[] = [null];
      const result: unknown[] = [null];
      const hr = await call<number>('HcsCreateProcess', system, wide(parameters, 'process parameters'), info, process, result);
      return {
        hr,
        result: take(result[0]),
        process: (process[0] ?? null) as ProcessHandle | null,
        info: processInformation(info),
      };
    },
    async openProcess(system, pid) {
      const process: unknown[] = [null];
      const result: unknown[] = [null];
      const hr = await call<number>('HcsOpenProcess', system, pid >>> 0, process, result);
      return { hr, result: take(result[0]), process: (process[0] ?? null) as ProcessHandle | null };
    },
    closeProcess: (process) => call<number>('HcsCloseProcess', process),
    async terminateProcess(process) {
      const result: unknown[] = [null];
      const hr = await call<number>('HcsTerminateProcess', process, result);
      return { hr, result: take(result[0]) };
    },
    signalProcess: (process, options) => withResult('HcsSignalProcess', process, wide(options, 'options')),
    async getProcessProperties(process) {
      const properties: unknown[] = [null];
      const result: unknown[] = [null];
      const hr = await call<number>('HcsGetProcessProperties', process, properties, result);
      return { hr, properties: take(properties[0]), result: take(result[0]) };
    },
    modifyProcess: (process, settings) => withResult('HcsModifyProcess', process, wide(settings, 'settings')),
    async registerProcessCallback(process, context) {
      const handle: unknown[] = [null];
      const hr = await call<number>('HcsRegisterProcessCallback', process, trampoline(), context, handle);
      return { hr, callback: (handle[0] ?? null) as CallbackHandle | null };
    },
    unregisterProcessCallback: (callback) => call<number>('HcsUnregisterProcessCallback', callback),

    activateLayer: (path) => call<number>('ActivateLayer', driver, wide(path, 'layer path')),
    prepareLayer(path, parents: readonly LayerDescriptor[]) {
      const descriptors = parents.map((p) => ({ LayerId: guidFromString(p.id), Flags: 0, Padding: 0, Path: wide(p.path, 'layer path') }));
      return call<number>('PrepareLayer', driver, wide(path, 'layer path'), descriptors, descriptors.length);
    },
    async getLayerMountPath(path) {
      // Two calls: the first (NULL buffer) reports the length in UTF-16 units, NUL included.
      const length: number[] = [0];
      let hr = await call<number>('GetLayerMountPath', driver, wide(path, 'layer path'), length, null);
      if (hr < 0) return { hr, mountPath: '' };
      const units = Number(length[0] ?? 0);
      if (units === 0) return { hr, mountPath: '' };
      const buffer = Buffer.alloc(units * 2);
      hr = await call<number>('GetLayerMountPath', driver, path, length, buffer);
      const text = buffer.toString('utf16le');
      const nul = text.indexOf('\u0000');
      return { hr, mountPath: nul >= 0 ? text.slice(0, nul) : text };
    },
    unprepareLayer: (path) => call<number>('UnprepareLayer', driver, wide(path, 'layer path')),
    deactivateLayer: (path) => call<number>('DeactivateLayer', driver, wide(path, 'layer path')),
    async nameToGuid(name) {
      const guid: Record<string, unknown> = {};
      const hr = await call<number>('NameToGuid', wide(name, 'layer name'), guid);
      if (hr < 0) return { hr, guid: '' };
      return { hr, guid: guidToString(guid as { Data1: number; Data2: number; Data3: number; Data4: number[] }) };
    },
  };
}

function processInformation(raw: Record<string, unknown>): ProcessInformation {
  return {
    processId: Number(raw['ProcessId'] ?? 0),
    stdInput: (raw['StdInput'] ?? null) as StdioHandle | null,
    stdOutput: (raw['StdOutput'] ?? null) as StdioHandle | null,
    stdError: (raw['StdError'] ?? null) as StdioHandle | null,
  };
}

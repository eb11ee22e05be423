/**
 * The Windows backend's platform-neutral pieces, on Linux: FFI declarations parsed and sized by
 * koffi (fixed-width types make these identical to Windows x64), HRESULT classification, the
 * notification state machine and the layer sequence against a fake HcsApi, names and parsing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Code } from '../../src/common/errors';
import { packAny, type AnyMessage } from '../../src/common/proto';
import { createWindowsContainer } from '../../src/windows/container';
import { ComputeSystem, Hcs } from '../../src/windows/hcs';
import type { CallbackHandle, HcsApi, HcsResult, LayerDescriptor, NotificationSink, ProcessHandle, StdioIo, SystemHandle } from '../../src/windows/hcs-api';
import { describeHresult, grpcCodeOf, HcsError, isAlreadyStopped, isNotExist, isPending, isRetryableLayerError, resultEvents, toShimError, win32Code } from '../../src/windows/hcs-errors';
import { layerName, Layers, parseLayerMount } from '../../src/windows/layers';
import { Notification } from '../../src/windows/notifications';
import { shimLogPipe, shimPipeAddress, windowsGroupingKey } from '../../src/windows/pipes';
import { processDetails, statistics } from '../../src/windows/stats';
import { declarations, guidFromString, guidToString, PROTOTYPES } from '../../src/windows/vmcompute';
import { OVERLAPPED_SIZE, WIN32_PROTOTYPES } from '../../src/windows/win32';
import * as koffi from 'koffi';

describe('vmcompute FFI declarations (parsed by koffi on Linux)', () => {
  it('struct layouts match x64 Windows: HCS_PROCESS_INFORMATION 32, WC_LAYER_DESCRIPTOR 32, GUID 16, DriverInfo 16', () => {
    const t = declarations();
    expect(koffi.sizeof(t.processInformation)).toBe(32);
    expect(koffi.sizeof(t.layerDescriptor)).toBe(32);
    expect(koffi.sizeof(t.guid)).toBe(16);
    expect(koffi.sizeof(t.driverInfo)).toBe(16);
    expect(koffi.offsetof(t.processInformation, 'StdInput')).toBe(8);
    expect(koffi.offsetof(t.layerDescriptor, 'Path')).toBe(24);
    expect(OVERLAPPED_SIZE).toBe(32);
  });

  it('every prototype parses, returns int32_t HRESULTs and uses no platform-sized C types', () => {
    declarations();
    for (const [name, proto] of Object.entries(PROTOTYPES)) {
      expect(() => koffi.proto(proto.replace(` ${name}(`, ` Check${name}(`)), name).not.toThrow();
      expect(proto.startsWith('int32_t __stdcall'), name).toBe(true);
      expect(proto, name).not.toMatch(/\b(long|wchar_t|int|unsigned|size_t)\b/);
    }
    for (const proto of Object.values(WIN32_PROTOTYPES)) expect(proto).not.toMatch(/\b(long|wchar_t|size_t)\b/);
  });

  it('GUIDs print Data1-3 as integers (not raw little-endian bytes) and round-trip', () => {
    const g = { Data1: 0x01020304, Data2: 0x0506, Data3: 0x0708, Data4: [9, 10, 11, 12, 13, 14, 15, 16] };
    expect(guidToString(g)).toBe('01020304-0506-0708-090a-0b0c0d0e0f10');
    expect(guidFromString('{01020304-0506-0708-090A-0B0C0D0E0F10}')).toEqual(g);
  });
});

describe('HRESULTs (both families, signed as koffi returns them)', () => {
  const signed = (u: number): number => u | 0;
  it('classifies pending, not-found, already-stopped and Win32-wrapped codes', () => {
    expect(isPending(signed(0xc0370103))).toBe(true);
    expect(isPending(signed(0x80370117))).toBe(false); // computecore's pending is not vmcompute's
    expect(isNotExist(signed(0xc037010e)) && isNotExist(signed(0x8037010e))).toBe(true);
    expect(isNotExist(signed(0x80070490))).toBe(true);
    expect(isAlreadyStopped(signed(0xc0370110)) && isAlreadyStopped(signed(0x8037011f))).toBe(true);
    expect(win32Code(signed(0x80070490))).toBe(1168);
    expect(isRetryableLayerError(signed(0x80070015)) && isRetryableLayerError(signed(0x8007048f))).toBe(true);
    expect(isRetryableLayerError(signed(0x80070005))).toBe(false);
  });

  it('maps to gRPC codes as runhcs does', () => {
    expect(grpcCodeOf(signed(0xc037010e))).toBe(Code.NotFound);
    expect(grpcCodeOf(signed(0x80070006))).toBe(Code.NotFound);
    expect(grpcCodeOf(signed(0xc0370105))).toBe(Code.FailedPrecondition);
    expect(grpcCodeOf(signed(0xc0370101))).toBe(Code.FailedPrecondition);
    expect(grpcCodeOf(signed(0xc037010d))).toBe(Code.Unimplemented);
    expect(grpcCodeOf(signed(0x80070005))).toBe(Code.PermissionDenied);
    expect(grpcCodeOf(signed(0x8037011e))).toBe(Code.Unavailable);
    expect(grpcCodeOf(signed(0x80004005))).toBe(Code.Unknown);
    expect(toShimError(new HcsError('start', 'c1', signed(0xc0370101))).code).toBe(Code.FailedPrecondition);
  });

  it('formats the error with the event messages of the result document; bad JSON never masks the HRESULT', () => {
    const doc = JSON.stringify({ Error: -1, ErrorMessage: 'x', ErrorEvents: [{ Message: 'layer missing' }] });
    expect(resultEvents(doc)).toEqual(['layer missing']);
    expect(resultEvents('{not json')).toEqual([]);
    expect(new HcsError('create', 'c1', signed(0xc037010e), ['layer missing']).message).toBe(
      'create c1: a compute system with the given identifier does not exist (0xc037010e)\nlayer missing',
    );
    expect(describeHresult(signed(0x80004005))).toBe('HRESULT 0x80004005');
  });
});

/** A scripted HCS: records calls, answers from a table, notifications sent by the test. */
class FakeApi implements HcsApi {
  sink: NotificationSink = () => undefined;
  calls: string[] = [];
  answers = new Map<string, number[]>();
  contexts = new Map<string, number>();
  private nextHandle = 1;

  private answer(name: string, fallback = 0): number {
    const q = this.answers.get(name);
    return q && q.length > 0 ? q.shift()! : fallback;
  }
  private handle<T>(): T {
    return { n: this.nextHandle++ } as unknown as T;
  }
  private r(name: string, fallback = 0): Promise<HcsResult> {
    this.calls.push(name);
    return Promise.resolve({ hr: this.answer(name, fallback), result: '' });
  }
  notify(kind: 'system' | 'process', type: number, status = 0): void {
    this.sink(type, this.contexts.get(kind) ?? -1, status);
  }

  setNotificationSink(sink: NotificationSink): void {
    this.sink = sink;
  }
  async createComputeSystem(id: string): Promise<HcsResult & { system: SystemHandle | null }> {
    this.calls.push(`create ${id}`);
    return { hr: this.answer('create', 0xc0370103 | 0), result: '', system: this.handle() };
  }
  async openComputeSystem(id: string): Promise<HcsResult & { system: SystemHandle | null }> {
    this.calls.push(`open ${id}`);
    const hr = this.answer('open');
    return { hr, result: '', system: hr < 0 ? null : this.handle() };
  }
  async closeComputeSystem(): Promise<number> {
    this.calls.push('close');
    return 0;
  }
  startComputeSystem = (): Promise<HcsResult> => this.r('start', 0xc0370103 | 0);
  shutdownComputeSystem = (): Promise<HcsResult> => this.r('shutdown', 0xc0370103 | 0);
  terminateComputeSystem = (): Promise<HcsResult> => this.r('terminate', 0xc0370103 | 0);
  pauseComputeSystem = (): Promise<HcsResult> => this.r('pause', 0xc0370103 | 0);
  resumeComputeSystem = (): Promise<HcsResult> => this.r('resume', 0xc0370103 | 0);
  async getComputeSystemProperties(): Promise<HcsResult & { properties: string }> {
    this.calls.push('properties');
    return { hr: this.answer('properties'), result: '', properties: '{"State":"Running"}' };
  }
  modifyComputeSystem = (): Promise<HcsResult> => this.r('modify');
  async registerComputeSystemCallback(_s: SystemHandle, context: number): Promise<{ hr: number; callback: CallbackHandle | null }> {
    this.calls.push('register');
    this.contexts.set('system', context);
    return { hr: 0, callback: this.handle() };
  }
  async unregisterComputeSystemCallback(): Promise<number> {
    this.calls.push('unregister');
    return 0;
  }
  async createProcess(): Promise<HcsResult & { process: ProcessHandle | null; info: { processId: number; stdInput: null; stdOutput: null; stdError: null } }> {
    this.calls.push('createProcess');
    return { hr: 0, result: '', process: this.handle(), info: { processId: 42, stdInput: null, stdOutput: null, stdError: null } };
  }
  async openProcess(): Promise<HcsResult & { process: ProcessHandle | null }> {
    this.calls.push('openProcess');
    return { hr: 0, result: '', process: this.handle() };
  }
  async closeProcess(): Promise<number> {
    this.calls.push('closeProcess');
    return 0;
  }
  terminateProcess = (): Promise<HcsResult> => this.r('terminateProcess');
  signalProcess = (): Promise<HcsResult> => this.r('signalProcess');
  async getProcessProperties(): Promise<HcsResult & { properties: string }> {
    this.calls.push('processProperties');
    return { hr: 0, result: '', properties: '{"ProcessId":42,"Exited":true,"ExitCode":3,"LastWaitResult":0}' };
  }
  modifyProcess = (): Promise<HcsResult> => this.r('modifyProcess');
  async registerProcessCallback(_p: ProcessHandle, context: number): Promise<{ hr: number; callback: CallbackHandle | null }> {
    this.calls.push('registerProcess');
    this.contexts.set('process', context);
    return { hr: 0, callback: this.handle() };
  }
  async unregisterProcessCallback(): Promise<number> {
    this.calls.push('unregisterProcess');
    return 0;
  }
  async activateLayer(p: string): Promise<number> {
    this.calls.push(`activate ${p}`);
    return this.answer('activate');
  }
  async prepareLayer(p: string, parents: readonly LayerDescriptor[]): Promise<number> {
    this.calls.push(`prepare ${p} ${parents.map((l) => `${l.id}=${l.path}`).join(' ')}`);
    return this.answer('prepare');
  }
  async getLayerMountPath(p: string): Promise<{ hr: number; mountPath: string }> {
    this.calls.push(`mountPath ${p}`);
    const hr = this.answer('mountPath');
    return { hr, mountPath: hr < 0 ? '' : '\\\\?\\Volume{00000000-0000-0000-0000-000000000001}\\' };
  }
  async unprepareLayer(p: string): Promise<number> {
    this.calls.push(`unprepare ${p}`);
    return this.answer('unprepare');
  }
  async deactivateLayer(p: string): Promise<number> {
    this.calls.push(`deactivate ${p}`);
    return this.answer('deactivate');
  }
  async nameToGuid(name: string): Promise<{ hr: number; guid: string }> {
    return { hr: 0, guid: `00000000-0000-0000-0000-${name.padStart(12, '0')}` };
  }
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('ComputeSystem: pending operations complete through notifications', () => {
  it('create waits for SystemCreateCompleted (registered right after the call); start for SystemStartCompleted', async () => {
    const api = new FakeApi();
    const hcs = new Hcs(api);
    const creating = ComputeSystem.create(hcs, 'c1', {});
    await flush();
    expect(api.calls).toEqual(['create c1', 'register']);
    api.notify('system', Notification.SystemCreateCompleted);
    const system = await creating;
    const starting = system.start();
    await flush();
    api.notify('system', Notification.SystemStartCompleted);
    await starting;
    expect(system.stateName).toBe('running');
    await system.close();
    expect(api.calls.slice(-2)).toEqual(['unregister', 'close']);
    expect(hcs.router.size).toBe(0);
  });

  it('a failed completion status rejects with that HRESULT; a notification that names another context is ignored', async () => {
    const api = new FakeApi();
    const hcs = new Hcs(api);
    const creating = ComputeSystem.create(hcs, 'c1', {});
    await flush();
    api.sink(Notification.SystemCreateCompleted, 999, 0);
    api.notify('system', Notification.SystemCreateCompleted);
    const system = await creating;
    const starting = system.start();
    await flush();
    api.notify('system', Notification.SystemStartCompleted, 0xc0370101 | 0);
    await expect(starting).rejects.toMatchObject({ hr: 0xc0370101 | 0 });
    await system.close();
  });

  it('SystemExited while waiting for a start is "unexpected container exit"; ServiceDisconnect is Unavailable', async () => {
    const api = new FakeApi();
    const hcs = new Hcs(api);
    const creating = ComputeSystem.create(hcs, 'c1', {});
    await flush();
    api.notify('system', Notification.SystemCreateCompleted);
    const system = await creating;
    const starting = system.start();
    await flush();
    api.notify('system', Notification.SystemExited);
    await expect(starting).rejects.toMatchObject({ code: Code.FailedPrecondition, message: expect.stringContaining('unexpected container exit') });
    expect(await system.exited).toBe(0);
    await system.close();

    const api2 = new FakeApi();
    const hcs2 = new Hcs(api2);
    const creating2 = ComputeSystem.create(hcs2, 'c2', {});
    await flush();
    api2.notify('system', Notification.ServiceDisconnect);
    await expect(creating2).rejects.toMatchObject({ code: Code.Unavailable });
    expect(api2.calls).toContain('terminate'); // a create that never completed is terminated and closed
    expect(api2.calls.slice(-1)).toEqual(['close']);
  });

  it('a create timeout terminates and closes the half-made system', async () => {
    const api = new FakeApi();
    const hcs = new Hcs(api);
    process.env['TSHIM_TIMEOUT_SYSTEMCREATE'] = '0.01';
    try {
      await expect(ComputeSystem.create(hcs, 'slow', {})).rejects.toMatchObject({ code: Code.DeadlineExceeded });
    } finally {
      delete process.env['TSHIM_TIMEOUT_SYSTEMCREATE'];
    }
    expect(api.calls).toEqual(['create slow', 'register', 'terminate', 'unregister', 'close']);
  });

  it('operations the state forbids are FailedPrecondition before HCS is called', async () => {
    const api = new FakeApi();
    api.answers.set('create', [0]);
    const system = await ComputeSystem.create(new Hcs(api), 'c1', {});
    await expect(system.createProcess({})).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await expect(system.resume()).rejects.toMatchObject({ code: Code.FailedPrecondition });
    expect(api.calls).not.toContain('createProcess');
    await system.close();
  });

  it('terminate on an already-stopped system is success and counts as its exit', async () => {
    const api = new FakeApi();
    api.answers.set('create', [0]);
    api.answers.set('terminate', [0xc0370110 | 0]);
    const system = await ComputeSystem.create(new Hcs(api), 'c1', {});
    await system.terminate();
    expect(await system.exited).toBe(0);
    await system.close();
  });

  it('a process exit code is read from HCS before the handle is closed', async () => {
    const api = new FakeApi();
    api.answers.set('create', [0]);
    api.answers.set('start', [0]);
    const system = await ComputeSystem.create(new Hcs(api), 'c1', {});
    await system.start();
    const proc = await system.createProcess({ CommandLine: 'x' });
    expect(proc.pid).toBe(42);
    api.notify('process', Notification.ProcessExited);
    expect(await proc.exitCode).toBe(3);
    await proc.close();
    const i = api.calls.indexOf('processProperties');
    expect(i).toBeGreaterThan(0);
    expect(api.calls.indexOf('unregisterProcess')).toBeGreaterThan(i);
    expect(api.calls.indexOf('closeProcess')).toBeGreaterThan(api.calls.indexOf('unregisterProcess'));
    await system.close();
  });
});

describe('windows-layer mounts', () => {
  const mount = (options: string[]) => [{ type: 'windows-layer', source: 'C:\\s\\9', target: '', options }];

  it('parses parentLayerPaths (nearest first) and refuses other mount types', () => {
    expect(parseLayerMount(mount(['rw', 'parentLayerPaths=["C:\\\\s\\\\2","C:\\\\s\\\\1"]']))).toEqual({ scratch: 'C:\\s\\9', parents: ['C:\\s\\2', 'C:\\s\\1'] });
    expect(parseLayerMount(mount(['rw']))).toEqual({ scratch: 'C:\\s\\9', parents: [] });
    expect(parseLayerMount([])).toBeUndefined();
    expect(() => parseLayerMount([{ type: 'CimFS', source: 'x', target: '', options: [] }])).toThrow(expect.objectContaining({ code: Code.FailedPrecondition }));
    expect(() => parseLayerMount(mount(['parentLayerPaths=[1]']))).toThrow(expect.objectContaining({ code: Code.InvalidArgument }));
    expect(layerName('C:\\s\\12\\')).toBe('12');
  });

  it('activate → prepare (NameToGuid ids) → mount path; a failure undoes in reverse', async () => {
    const api = new FakeApi();
    const layers = new Layers(api);
    const r = await layers.mount({ scratch: 'S', parents: ['C:\\p\\2', 'C:\\p\\1'] });
    expect(r.volumePath).toMatch(/^\\\\\?\\Volume\{/);
    expect(api.calls).toEqual(['activate S', 'prepare S 00000000-0000-0000-0000-000000000002=C:\\p\\2 00000000-0000-0000-0000-000000000001=C:\\p\\1', 'mountPath S']);

    const failing = new FakeApi();
    failing.answers.set('mountPath', [0x80004005 | 0]);
    await expect(new Layers(failing).mount({ scratch: 'S', parents: [] })).rejects.toBeInstanceOf(HcsError);
    expect(failing.calls).toEqual(['activate S', 'prepare S ', 'mountPath S', 'unprepare S', 'deactivate S']);

    const prepareFails = new FakeApi();
    prepareFails.answers.set('prepare', [0x80070005 | 0]);
    await expect(new Layers(prepareFails).mount({ scratch: 'S', parents: [] })).rejects.toBeInstanceOf(HcsError);
    expect(prepareFails.calls).toEqual(['activate S', 'prepare S ', 'deactivate S']);
  });

  it('retries activate/prepare on NOT_READY and DEVICE_NOT_CONNECTED, at most 5 times', async () => {
    const api = new FakeApi();
    api.answers.set('activate', [0x80070015 | 0, 0x8007048f | 0]);
    await new Layers(api).mount({ scratch: 'S', parents: [] });
    expect(api.calls.filter((c) => c.startsWith('activate'))).toHaveLength(3);

    const never = new FakeApi();
    never.answers.set('prepare', Array(10).fill(0x80070015 | 0));
    await expect(new Layers(never).mount({ scratch: 'S', parents: [] })).rejects.toBeInstanceOf(HcsError);
    expect(never.calls.filter((c) => c.startsWith('prepare'))).toHaveLength(5);
    expect(never.calls.slice(-1)).toEqual(['deactivate S']);
  });

  it('PrepareLayer calls never overlap, even for different containers', async () => {
    let inFlight = 0;
    let most = 0;
    const api = new FakeApi();
    api.prepareLayer = async () => {
      inFlight++;
      most = Math.max(most, inFlight);
      await flush();
      inFlight--;
      return 0;
    };
    const layers = new Layers(api);
    await Promise.all([layers.mount({ scratch: 'A', parents: [] }), layers.mount({ scratch: 'B', parents: [] })]);
    expect(most).toBe(1);
  });
});

describe('names and conversions', () => {
  it('pipe names are runhcs-style', () => {
    expect(shimPipeAddress('k8s.io', 'pod1')).toBe('\\\\.\\pipe\\ProtectedPrefix\\Administrators\\containerd-shim-k8s.io-pod1-pipe');
    expect(shimLogPipe('default', 'c1')).toBe('\\\\.\\pipe\\containerd-shim-default-c1-log');
  });

  it('HCS statistics become runhcs Statistics in ns; process list entries become ProcessDetails', () => {
    const s = statistics({ Uptime100ns: 5, Processor: { TotalRuntime100ns: 7 }, Memory: { MemoryUsageCommitBytes: 9 }, Timestamp: '2026-01-01T00:00:00Z' }) as { windows: Record<string, any> };
    expect(s.windows['uptimeNs']).toBe(500);
    expect(s.windows['processor']['totalRuntimeNs']).toBe(700);
    expect(s.windows['memory']['memoryUsageCommitBytes']).toBe(9);
    expect(s.windows['timestamp']).toEqual({ seconds: 1767225600, nanos: 0 });
    expect(processDetails({ ProcessId: 4, ImageName: 'cmd.exe', KernelTime100ns: 2 }, 'e1')).toMatchObject({ processId: 4, imageName: 'cmd.exe', kernelTime_100Ns: 2, execId: 'e1' });
  });
});

describe('createWindowsContainer (fake HCS)', () => {
  const bundleWith = (spec: object): string => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-win-bundle-'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(spec));
    return dir;
  };
  const spec = { ociVersion: '1.1.0', root: { path: '' }, process: { args: ['cmd'] }, windows: {} };
  const request = (bundle: string, options?: AnyMessage) => ({
    id: 'c1',
    namespace: 'default',
    bundle,
    rootfs: [{ type: 'windows-layer', source: 'C:\\s\\9', target: '', options: ['rw', 'parentLayerPaths=["C:\\\\s\\\\1"]'] }],
    stdio: { stdin: '', stdout: '', stderr: '', terminal: false },
    checkpoint: '',
    parentCheckpoint: '',
    options,
  });

  it('refuses runhcs SandboxIsolation=HYPERVISOR before touching HCS', async () => {
    const api = new FakeApi();
    const bundle = bundleWith(spec);
    const options = packAny('containerd.runhcs.v1.Options', { sandboxIsolation: 1 });
    await expect(createWindowsContainer(request(bundle, options), { hcs: new Hcs(api), layers: new Layers(api), io: {} as StdioIo })).rejects.toMatchObject({
      code: Code.FailedPrecondition,
      message: expect.stringContaining('HYPERVISOR'),
    });
    expect(api.calls).toEqual([]);
    fs.rmSync(bundle, { recursive: true });
  });

  it('a failed system create undoes the layers in reverse and forgets the recorded scratch', async () => {
    const api = new FakeApi();
    api.answers.set('create', [0xc0370101 | 0]);
    const bundle = bundleWith(spec);
    await expect(createWindowsContainer(request(bundle), { hcs: new Hcs(api), layers: new Layers(api), io: {} as StdioIo })).rejects.toMatchObject({ code: Code.FailedPrecondition });
    expect(api.calls).toEqual(['activate C:\\s\\9', 'prepare C:\\s\\9 00000000-0000-0000-0000-000000000001=C:\\s\\1', 'mountPath C:\\s\\9', 'create c1', 'unprepare C:\\s\\9', 'deactivate C:\\s\\9']);
    expect(fs.existsSync(path.join(bundle, 'layer-mount.json'))).toBe(false);
    fs.rmSync(bundle, { recursive: true });
  });

  it('groups a CRI workload container under its sandbox shim', () => {
    const bundle = bundleWith({ annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'sb1' } });
    expect(windowsGroupingKey(bundle, 'c1')).toBe('sb1');
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ annotations: { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': 'sb1' } }));
    expect(windowsGroupingKey(bundle, 'sb1')).toBe('sb1');
    expect(windowsGroupingKey(path.join(bundle, 'missing'), 'c2')).toBe('c2');
    fs.rmSync(bundle, { recursive: true });
  });
});

describe('binding failures are classified, not crashes', () => {
  it('a vmcompute.dll that cannot be loaded is FailedPrecondition naming the Containers feature', async () => {
    const api = (await import('../../src/windows/vmcompute')).loadVmCompute('/nonexistent/vmcompute.dll');
    await expect(api.activateLayer('C:\\x')).rejects.toMatchObject({ code: Code.FailedPrecondition, message: expect.stringContaining('Containers feature') });
  });
});

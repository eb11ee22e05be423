/**
 * OCI runtime spec (its Windows section) → HCS schema 2.1 documents for a process-isolated Windows
 * Server container (spec §4.2, §4.4, §5, hcsshim's createWindowsContainerDocument). Pure: no I/O,
 * so every mapped field and every refusal has a golden-file test that runs on Linux.
 *
 * Refused, each with what is missing: Linux containers (spec.linux), Hyper-V isolation
 * (windows.hyperv: needs a utility VM), host-process containers, read-only roots, credential specs
 * (need container credential guard), device id types HCS cannot assign to a process-isolated
 * container, endpoints without a network namespace (needs HCN, computenetwork.dll), builds before
 * RS5 (schema 1 only).
 */
import { failedPrecondition, invalidArgument } from '../common/errors';
import type { LayerDescriptor } from './hcs-api';

/** The parts of the OCI spec this mapping reads. */
export interface OciSpec {
  ociVersion?: string;
  hostname?: string;
  annotations?: Record<string, string>;
  root?: { path?: string; readonly?: boolean };
  process?: OciProcess;
  mounts?: Array<{ destination?: string; source?: string; type?: string; options?: string[] }>;
  linux?: unknown;
  windows?: {
    layerFolders?: string[];
    resources?: {
      memory?: { limit?: number };
      cpu?: { count?: number; shares?: number; maximum?: number };
      storage?: { iops?: number; bps?: number; sandboxSize?: number };
    };
    network?: {
      endpointList?: string[];
      allowUnqualifiedDNSQuery?: boolean;
      DNSSearchList?: string[];
      networkSharedContainerName?: string;
      networkNamespace?: string;
    };
    hyperv?: { utilityVMPath?: string } | null;
    credentialSpec?: unknown;
    devices?: Array<{ id?: string; idType?: string }>;
    ignoreFlushesDuringBoot?: boolean;
  };
}

export interface OciProcess {
  terminal?: boolean;
  consoleSize?: { height?: number; width?: number };
  user?: { username?: string };
  args?: string[];
  commandLine?: string;
  env?: string[];
  cwd?: string;
}

export const ANNOTATION = {
  processorCount: 'io.microsoft.container.processor.count',
  processorLimit: 'io.microsoft.container.processor.limit',
  processorWeight: 'io.microsoft.container.processor.weight',
  memorySizeInMB: 'io.microsoft.container.memory.sizeinmb',
  storageIops: 'io.microsoft.container.storage.qos.iopsmaximum',
  storageBandwidth: 'io.microsoft.container.storage.qos.bandwidthmaximum',
  hostProcess: 'microsoft.com/hostprocess-container',
  containerType: 'io.kubernetes.cri.container-type',
  sandboxId: 'io.kubernetes.cri.sandbox-id',
} as const;

/** First Windows build with schema 2.1 through vmcompute (RS5, Windows Server 2019). */
export const MIN_BUILD = 17763;

export interface ContainerDocumentInputs {
  spec: OciSpec;
  /** the mounted scratch volume, `\\?\Volume{GUID}` with or without the trailing backslash */
  volumePath: string;
  /** read-only parents, top-most first, base last, with their NameToGuid ids */
  layers: readonly LayerDescriptor[];
  /** Owner field: the shim binary's name */
  owner: string;
  hostProcessors: number;
}

/** Everything the spec asks that tshim cannot do, refused before any layer is touched. */
export function checkSupported(spec: OciSpec, windowsBuild: number): void {
  if (spec.linux !== undefined && spec.linux !== null) {
    throw failedPrecondition('Linux containers on Windows (spec.linux) are not supported by tshim: it runs Windows Server containers only');
  }
  if (!spec.windows) throw invalidArgument('spec.windows is missing: a Windows container needs the OCI Windows section');
  if (spec.windows.hyperv !== undefined && spec.windows.hyperv !== null) {
    throw failedPrecondition(
      'Hyper-V isolation (windows.hyperv) is not supported by tshim: it needs a utility VM (the base layer\'s UtilityVM image and a schema 2 VirtualMachine document), which tshim does not create; use process isolation',
    );
  }
  if ((spec.annotations ?? {})[ANNOTATION.hostProcess] === 'true') {
    throw failedPrecondition(`host-process containers (${ANNOTATION.hostProcess}) are not supported by tshim: they run as a job object, not through HCS`);
  }
  if (spec.root?.readonly) throw failedPrecondition('root.readonly is not supported for Windows containers');
  if (spec.windows.credentialSpec !== undefined && spec.windows.credentialSpec !== null) {
    throw failedPrecondition('windows.credentialSpec (gMSA) is not supported by tshim: it needs container credential guard setup');
  }
  const net = spec.windows.network;
  if (net?.endpointList && net.endpointList.length > 0 && !net.networkNamespace) {
    throw failedPrecondition('windows.network.endpointList without networkNamespace is not supported by tshim: creating an HCN namespace needs computenetwork.dll');
  }
  if (windowsBuild > 0 && windowsBuild < MIN_BUILD) {
    throw failedPrecondition(`Windows build ${windowsBuild} needs HCS schema 1; tshim speaks schema 2.1 (build ${MIN_BUILD} or later)`);
  }
}

function annotationNumber(spec: OciSpec, key: string): number | undefined {
  const raw = (spec.annotations ?? {})[key];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw invalidArgument(`annotation ${key}=${JSON.stringify(raw)} is not a non-negative integer`);
  return n;
}

function positive(n: number | undefined): number | undefined {
  return n !== undefined && n > 0 ? n : undefined;
}

export function withTrailingBackslash(p: string): string {
  return p.endsWith('\\') ? p : `${p}\\`;
}

const VOLUME_PATH = /^\\\\\?\\Volume\{[0-9a-fA-F-]{36}\}\\?$/;

export function isVolumePath(p: string): boolean {
  return VOLUME_PATH.test(p);
}

const PIPE_PREFIX = '\\\\.\\pipe\\';

/** The HCS ComputeSystem document (schema 2.1) for a process-isolated container. */
export function containerDocument(inputs: ContainerDocumentInputs): Record<string, unknown> {
  const { spec, volumePath, layers, owner } = inputs;
  const windows = spec.windows ?? {};
  const resources = windows.resources ?? {};
  if (!isVolumePath(volumePath)) throw invalidArgument(`root path ${JSON.stringify(volumePath)} is not a volume GUID path (\\\\?\\Volume{GUID}\\)`);

  const container: Record<string, unknown> = {};
  if (spec.hostname) container['GuestOs'] = { HostName: spec.hostname };

  const storage: Record<string, unknown> = {
    Layers: layers.map((l) => ({ Id: l.id, Path: l.path })),
    Path: withTrailingBackslash(volumePath),
  };
  const iops = annotationNumber(spec, ANNOTATION.storageIops) ?? positive(resources.storage?.iops);
  const bps = annotationNumber(spec, ANNOTATION.storageBandwidth) ?? positive(resources.storage?.bps);
  if (iops || bps) storage['QoS'] = { ...(iops ? { IopsMaximum: iops } : {}), ...(bps ? { BandwidthMaximum: bps } : {}) };
  container['Storage'] = storage;

  const { directories, pipes } = mappedMounts(spec);
  if (directories.length > 0) container['MappedDirectories'] = directories;
  if (pipes.length > 0) container['MappedPipes'] = pipes;

  const devices = assignedDevices(windows.devices ?? []);
  if (devices.length > 0) container['AssignedDevices'] = devices;

  const memoryMB = annotationNumber(spec, ANNOTATION.memorySizeInMB) ?? (positive(resources.memory?.limit) !== undefined ? Math.floor(resources.memory!.limit! / 1024 / 1024) : undefined);
  if (memoryMB) container['Memory'] = { SizeInMB: memoryMB };
  container['Processor'] = processor(spec, inputs.hostProcessors);

  const net = windows.network;
  if (net) {
    const networking: Record<string, unknown> = {};
    if (net.allowUnqualifiedDNSQuery) networking['AllowUnqualifiedDnsQuery'] = true;
    if (net.DNSSearchList && net.DNSSearchList.length > 0) networking['DnsSearchList'] = net.DNSSearchList.join(',');
    if (net.networkSharedContainerName) networking['NetworkSharedContainerName'] = net.networkSharedContainerName;
    if (net.networkNamespace) networking['Namespace'] = net.networkNamespace;
    container['Networking'] = networking;
  }

  // Graceful stops inside servercore are otherwise cut to 5 s (spec §4.2).
  container['RegistryChanges'] = {
    AddValues: [
      {
        Key: { Hive: 'System', Name: 'ControlSet001\\Control' },
        Name: 'WaitToKillServiceTimeout',
        Type: 'String',
        StringValue: '2147483647',
      },
    ],
  };

  return {
    Owner: owner,
    SchemaVersion: { Major: 2, Minor: 1 },
    ShouldTerminateOnLastHandleClosed: true,
    Container: container,
  };
}

function processor(spec: OciSpec, hostProcessors: number): Record<string, number> {
  const cpu = spec.windows?.resources?.cpu ?? {};
  const count = annotationNumber(spec, ANNOTATION.processorCount) ?? positive(cpu.count);
  const maximum = annotationNumber(spec, ANNOTATION.processorLimit) ?? positive(cpu.maximum);
  const weight = annotationNumber(spec, ANNOTATION.processorWeight) ?? positive(cpu.shares);
  const set = [count, maximum, weight].filter((v) => v !== undefined && v > 0).length;
  if (set > 1) throw invalidArgument('windows.resources.cpu: count, maximum and shares are mutually exclusive');
  const out: Record<string, number> = {};
  if (count) out['Count'] = hostProcessors > 0 ? Math.min(count, hostProcessors) : count;
  if (maximum) out['Maximum'] = maximum;
  if (weight) out['Weight'] = weight;
  return out;
}

function mappedMounts(spec: OciSpec): { directories: object[]; pipes: object[] } {
  const directories: object[] = [];
  const pipes: object[] = [];
  for (const [i, m] of (spec.mounts ?? []).entries()) {
    if (!m.source || !m.destination) throw invalidArgument(`mounts[${i}]: source and destination must not be empty`);
    if (m.source.toLowerCase().startsWith(PIPE_PREFIX) && m.destination.toLowerCase().startsWith(PIPE_PREFIX)) {
      pipes.push({ ContainerPipeName: m.destination.slice(PIPE_PREFIX.length), HostPath: m.source });
      continue;
    }
    const readOnly = (m.options ?? []).some((o) => o.toLowerCase() === 'ro');
    directories.push({ HostPath: m.source, ContainerPath: m.destination, ReadOnly: readOnly });
  }
  return { directories, pipes };
}

/**
 * windows.devices → schema 2 `AssignedDevices` (process isolation: the host's device is exposed in
 * the silo, hcsshim's parseAssignedDevices): an interface class GUID (`class`, or its newer name
 * `vpci-class-guid`) exposes every device of that class; `vpci-location-path` one device instance.
 */
function assignedDevices(devices: ReadonlyArray<{ id?: string; idType?: string }>): object[] {
  return devices.map((d, i) => {
    if (!d.id) throw invalidArgument(`windows.devices[${i}]: id is empty`);
    switch (d.idType) {
      case 'class':
      case 'vpci-class-guid':
        if (!GUID.test(d.id)) throw invalidArgument(`windows.devices[${i}]: ${JSON.stringify(d.id)} is not an interface class GUID`);
        return { InterfaceClassGuid: d.id };
      case 'vpci-location-path':
        return { Type: 'DeviceInstance', LocationPath: d.id };
      default:
        throw invalidArgument(
          `windows.devices[${i}]: id type ${JSON.stringify(d.idType ?? '')} cannot be assigned to a process-isolated container (use class, vpci-class-guid or vpci-location-path; vpci-instance-id needs Hyper-V isolation)`,
        );
    }
  });
}

const GUID = /^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$/;

/** Which of containerd's stdio paths are set: decides the CreateStd*Pipe flags. */
export interface StdioFlags {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  terminal: boolean;
}

const SANDBOX_CMD = 'c:\\windows\\system32\\cmd.exe';
const SANDBOX_KEEPALIVE = 'cmd /c ping -t 127.0.0.1 > nul';

/** ProcessParameters (spec §4.4) for the init or an exec. */
export function processParameters(process: OciProcess | undefined, stdio: StdioFlags, annotations: Record<string, string> = {}): Record<string, unknown> {
  if (!process) throw invalidArgument('process is missing from the spec');
  if (stdio.terminal && stdio.stderr) throw failedPrecondition('if using terminal, stderr must be empty');
  let commandLine = process.commandLine || (process.args ?? []).map(escapeArg).join(' ');
  if (!commandLine) throw invalidArgument('process: commandLine and args are both empty');
  // runhcs keeps a CRI pause container on plain cmd.exe alive the same way
  if (annotations[ANNOTATION.containerType] === 'sandbox' && commandLine.toLowerCase() === SANDBOX_CMD) commandLine = SANDBOX_KEEPALIVE;
  const params: Record<string, unknown> = { CommandLine: commandLine };
  if (process.user?.username) params['User'] = process.user.username;
  if (process.cwd) params['WorkingDirectory'] = process.cwd;
  const env = environment(process.env ?? []);
  if (Object.keys(env).length > 0) params['Environment'] = env;
  if (stdio.terminal) {
    params['EmulateConsole'] = true;
    const h = process.consoleSize?.height ?? 0;
    const w = process.consoleSize?.width ?? 0;
    if (h > 0 || w > 0) params['ConsoleSize'] = [h, w];
  }
  if (stdio.stdin) params['CreateStdInPipe'] = true;
  if (stdio.stdout) params['CreateStdOutPipe'] = true;
  if (stdio.stderr && !stdio.terminal) params['CreateStdErrPipe'] = true;
  return params;
}

/** KEY=VALUE list → object; entries with an empty value are dropped, as hcsshim drops them. */
export function environment(list: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of list) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const value = entry.slice(eq + 1);
    if (value === '') continue;
    out[entry.slice(0, eq)] = value;
  }
  return out;
}

/**
 * Windows command-line quoting (Go's syscall.EscapeArg): empty → `""`; quoted when it holds a space
 * or tab; a `"` becomes `\"`; backslashes are doubled only before a `"` or the closing quote.
 */
export function escapeArg(arg: string): string {
  if (arg === '') return '""';
  const needsQuotes = /[ \t]/.test(arg);
  if (!/[ \t"\\]/.test(arg)) return arg;
  let out = needsQuotes ? '"' : '';
  let slashes = 0;
  for (const ch of arg) {
    if (ch === '\\') {
      slashes++;
      out += '\\';
      continue;
    }
    if (ch === '"') {
      out += '\\'.repeat(slashes) + '\\"';
      slashes = 0;
      continue;
    }
    slashes = 0;
    out += ch;
  }
  if (needsQuotes) out += '\\'.repeat(slashes) + '"';
  return out;
}

/** Kill's signal → what HCS does with it (spec §6.6, build ≥ 17763). */
export type SignalAction = { kind: 'terminate' } | { kind: 'signal'; signal: 'CtrlC' | 'CtrlBreak' | 'CtrlClose' | 'CtrlLogOff' | 'CtrlShutdown' };

export function signalAction(signal: number): SignalAction {
  switch (signal) {
    case 9:
      return { kind: 'terminate' };
    case 15:
    case 6:
      return { kind: 'signal', signal: 'CtrlShutdown' };
    case 0:
      return { kind: 'signal', signal: 'CtrlC' };
    case 1:
      return { kind: 'signal', signal: 'CtrlBreak' };
    case 2:
      return { kind: 'signal', signal: 'CtrlClose' };
    case 5:
      return { kind: 'signal', signal: 'CtrlLogOff' };
    default:
      throw failedPrecondition(`signal ${signal} is not supported for Windows containers (9, 15, 6, 0, 1, 2, 5 are)`);
  }
}

/** The Windows build number from os.release() ("10.0.20348"), 0 when unknown. */
export function windowsBuild(release: string): number {
  const parts = release.split('.');
  const n = Number(parts[2]);
  return Number.isInteger(n) ? n : 0;
}

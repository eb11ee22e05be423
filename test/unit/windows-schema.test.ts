/**
 * OCI spec → HCS schema 2.1 documents, against golden files (test/unit/fixtures/windows-schema/).
 * One case per mapped field and one per refusal; platform-neutral, so they run on Linux too.
 * `TSHIM_UPDATE_GOLDEN=1` rewrites the goldens (review the diff before committing).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ShimError } from '../../src/common/errors';
import {
  checkSupported,
  containerDocument,
  escapeArg,
  environment,
  processParameters,
  signalAction,
  windowsBuild,
  type OciSpec,
  type StdioFlags,
} from '../../src/windows/schema';

const GOLDEN = path.join(__dirname, 'fixtures', 'windows-schema');
const VOLUME = '\\\\?\\Volume{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}';
const LAYERS = [
  { id: '1c4a7f9e-0d2b-5e8c-9a1b-3c4d5e6f7a8b', path: 'C:\\ProgramData\\containerd\\snapshots\\7' },
  { id: '2d5b8a0f-1e3c-5f9d-8b2c-4d5e6f7a8b9c', path: 'C:\\ProgramData\\containerd\\snapshots\\3' },
];
const PROCESS = { args: ['cmd.exe', '/c', 'echo hi'], cwd: 'C:\\' };
const STDIO: StdioFlags = { stdin: false, stdout: true, stderr: true, terminal: false };

function base(extra: Partial<OciSpec> = {}, windows: NonNullable<OciSpec['windows']> = {}): OciSpec {
  return { ociVersion: '1.1.0', root: { path: '' }, process: PROCESS, ...extra, windows: { ...windows } };
}

interface DocCase {
  spec: OciSpec;
  hostProcessors?: number;
  volumePath?: string;
  build?: number;
}

const DOCUMENT_CASES: Record<string, DocCase> = {
  'minimal': { spec: base() },
  'hostname': { spec: base({ hostname: 'web-0' }) },
  'volume-trailing-backslash-kept': { spec: base(), volumePath: `${VOLUME}\\` },
  'memory-limit-bytes-to-mb': { spec: base({}, { resources: { memory: { limit: 512 * 1024 * 1024 + 100 } } }) },
  'memory-annotation-wins': { spec: base({ annotations: { 'io.microsoft.container.memory.sizeinmb': '1024' } }, { resources: { memory: { limit: 512 * 1024 * 1024 } } }) },
  'cpu-count-clamped-to-host': { spec: base({}, { resources: { cpu: { count: 64 } } }), hostProcessors: 4 },
  'cpu-maximum': { spec: base({}, { resources: { cpu: { maximum: 5000 } } }) },
  'cpu-shares-to-weight': { spec: base({}, { resources: { cpu: { shares: 200 } } }) },
  'cpu-annotation-wins': { spec: base({ annotations: { 'io.microsoft.container.processor.count': '2' } }), hostProcessors: 8 },
  'storage-qos': { spec: base({}, { resources: { storage: { iops: 300, bps: 1048576, sandboxSize: 99 } } }) },
  'storage-qos-annotations': {
    spec: base({ annotations: { 'io.microsoft.container.storage.qos.iopsmaximum': '50', 'io.microsoft.container.storage.qos.bandwidthmaximum': '4096' } }),
  },
  'mounts-directories-and-pipes': {
    spec: base({
      mounts: [
        { source: 'C:\\data', destination: 'C:\\app\\data', options: ['rw'] },
        { source: 'C:\\config', destination: 'C:\\app\\config', options: ['RO'] },
        { source: '\\\\.\\pipe\\docker_engine', destination: '\\\\.\\pipe\\docker_engine' },
      ],
    }),
  },
  'network-namespace-and-dns': {
    spec: base({}, { network: { networkNamespace: '9f3c6c1e-2b7a-4d5e-8f90-1a2b3c4d5e6f', DNSSearchList: ['svc.local', 'cluster.local'], allowUnqualifiedDNSQuery: true, networkSharedContainerName: 'pause' } }),
  },
  'network-endpoints-with-namespace': { spec: base({}, { network: { endpointList: ['e1'], networkNamespace: '9f3c6c1e-2b7a-4d5e-8f90-1a2b3c4d5e6f' } }) },
  'refuse-linux': { spec: { ...base(), linux: {} } },
  'refuse-missing-windows': { spec: { ociVersion: '1.1.0', process: PROCESS } },
  'refuse-hyperv': { spec: base({}, { hyperv: {} }) },
  'refuse-hostprocess': { spec: base({ annotations: { 'microsoft.com/hostprocess-container': 'true' } }) },
  'refuse-readonly-root': { spec: base({ root: { path: '', readonly: true } }) },
  'refuse-credential-spec': { spec: base({}, { credentialSpec: { ActiveDirectoryConfig: {} } }) },
  'devices-class-and-location-path': {
    spec: base({}, {
      devices: [
        { id: '5B45201D-F2F2-4F3B-85BB-30FF1F953599', idType: 'class' },
        { id: '{4d36e978-e325-11ce-bfc1-08002be10318}', idType: 'vpci-class-guid' },
        { id: 'PCIROOT(0)#PCI(0100)#PCI(0000)', idType: 'vpci-location-path' },
      ],
    }),
  },
  'refuse-device-instance-id': { spec: base({}, { devices: [{ id: 'PCI\\VEN_10DE&DEV_1EB8\\4&1', idType: 'vpci-instance-id' }] }) },
  'refuse-device-class-not-a-guid': { spec: base({}, { devices: [{ id: 'gpu', idType: 'class' }] }) },
  'refuse-endpoints-without-namespace': { spec: base({}, { network: { endpointList: ['e1'] } }) },
  'refuse-cpu-settings-combined': { spec: base({}, { resources: { cpu: { count: 2, maximum: 5000 } } }) },
  'refuse-mount-without-source': { spec: base({ mounts: [{ source: '', destination: 'C:\\x' }] }) },
  'refuse-not-a-volume-path': { spec: base(), volumePath: 'C:\\rootfs' },
  'refuse-bad-annotation': { spec: base({ annotations: { 'io.microsoft.container.memory.sizeinmb': 'lots' } }) },
  'refuse-build-before-rs5': { spec: base(), build: 14393 },
};

interface ProcessCase {
  process: OciSpec['process'];
  stdio?: StdioFlags;
  annotations?: Record<string, string>;
}

const PROCESS_CASES: Record<string, ProcessCase> = {
  'process-args-escaped': { process: { args: ['C:\\Program Files\\app.exe', 'a b', 'say "hi"', '', 'C:\\dir\\', 'tail\\ \\'] } },
  'process-commandline-wins': { process: { commandLine: 'cmd /S /C "echo x"', args: ['ignored'] } },
  'process-env-empty-values-dropped': { process: { args: ['a'], env: ['A=1', 'EMPTY=', 'B=x=y', 'NOEQUALS', '=bad'] } },
  'process-user-and-cwd': { process: { args: ['a'], user: { username: 'ContainerAdministrator' }, cwd: 'C:\\work' } },
  'process-stdio-pipes': { process: { args: ['a'] }, stdio: { stdin: true, stdout: true, stderr: false, terminal: false } },
  'process-terminal-console-size': { process: { args: ['a'], terminal: true, consoleSize: { height: 40, width: 120 } }, stdio: { stdin: true, stdout: true, stderr: false, terminal: true } },
  'process-sandbox-cmd-kept-alive': { process: { args: ['c:\\windows\\system32\\cmd.exe'] }, annotations: { 'io.kubernetes.cri.container-type': 'sandbox' } },
  'refuse-process-terminal-with-stderr': { process: { args: ['a'] }, stdio: { stdin: false, stdout: true, stderr: true, terminal: true } },
  'refuse-process-empty': { process: { args: [] } },
  'refuse-process-missing': { process: undefined },
};

function outcome(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof ShimError)) throw err;
    return { error: { code: err.code, message: err.message } };
  }
}

function golden(name: string, actual: unknown): void {
  const file = path.join(GOLDEN, `${name}.json`);
  const text = `${JSON.stringify(actual, null, 2)}\n`;
  if (process.env['TSHIM_UPDATE_GOLDEN'] === '1' || !fs.existsSync(file)) {
    fs.mkdirSync(GOLDEN, { recursive: true });
    fs.writeFileSync(file, text);
  }
  expect(text).toBe(fs.readFileSync(file, 'utf8'));
}

describe('OCI → HCS container document (golden files)', () => {
  for (const [name, c] of Object.entries(DOCUMENT_CASES)) {
    it(name, () => {
      golden(
        name,
        outcome(() => {
          checkSupported(c.spec, c.build ?? 20348);
          return containerDocument({ spec: c.spec, volumePath: c.volumePath ?? VOLUME, layers: LAYERS, owner: 'containerd-shim-tshim-v2.exe', hostProcessors: c.hostProcessors ?? 16 });
        }),
      );
    });
  }
  it('every refusal is FailedPrecondition or InvalidArgument and names what is missing', () => {
    for (const [name, c] of Object.entries(DOCUMENT_CASES).filter(([n]) => n.startsWith('refuse-'))) {
      const r = outcome(() => {
        checkSupported(c.spec, c.build ?? 20348);
        return containerDocument({ spec: c.spec, volumePath: c.volumePath ?? VOLUME, layers: LAYERS, owner: 'x', hostProcessors: 4 });
      }) as { error?: { code: number; message: string } };
      expect(r.error, name).toBeDefined();
      expect([3, 9], name).toContain(r.error!.code);
    }
  });
});

describe('OCI process → HCS ProcessParameters (golden files)', () => {
  for (const [name, c] of Object.entries(PROCESS_CASES)) {
    it(name, () => {
      golden(name, outcome(() => processParameters(c.process, c.stdio ?? STDIO, c.annotations)));
    });
  }
});

describe('Windows argument escaping (Go syscall.EscapeArg)', () => {
  it.each([
    ['', '""'],
    ['plain', 'plain'],
    ['a b', '"a b"'],
    ['tab\there', '"tab\there"'],
    ['say "hi"', '"say \\"hi\\""'],
    ['C:\\dir\\', 'C:\\dir\\'],
    ['C:\\my dir\\', '"C:\\my dir\\\\"'],
    ['a\\"b', 'a\\\\\\"b'],
  ])('%j → %j', (input, expected) => {
    expect(escapeArg(input)).toBe(expected);
  });

  it('environment keeps the first = as the separator and drops empty values', () => {
    expect(environment(['A=1', 'B=', 'C=x=y'])).toEqual({ A: '1', C: 'x=y' });
  });
});

describe('signals and builds', () => {
  it('maps Kill signals as runhcs does on RS5+', () => {
    expect(signalAction(9)).toEqual({ kind: 'terminate' });
    expect(signalAction(15)).toEqual({ kind: 'signal', signal: 'CtrlShutdown' });
    expect(signalAction(6)).toEqual({ kind: 'signal', signal: 'CtrlShutdown' });
    expect(signalAction(0)).toEqual({ kind: 'signal', signal: 'CtrlC' });
    expect(signalAction(1)).toEqual({ kind: 'signal', signal: 'CtrlBreak' });
    expect(signalAction(2)).toEqual({ kind: 'signal', signal: 'CtrlClose' });
    expect(signalAction(5)).toEqual({ kind: 'signal', signal: 'CtrlLogOff' });
    expect(() => signalAction(10)).toThrow(expect.objectContaining({ code: 9 }));
  });

  it('reads the build from os.release()', () => {
    expect(windowsBuild('10.0.20348')).toBe(20348);
    expect(windowsBuild('6.1')).toBe(0);
  });
});

import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import {
  DEFAULT_OPTIONS,
  MAX_OPTIONS_FILE_BYTES,
  decodeOptions,
  fromOptionsJson,
  parseStartStdin,
  parseTomlOptions,
  toOptionsJson,
  type RuntimeOptions,
} from '../../src/common/options';
import { codec, packAny } from '../../src/common/proto';
import { decodeAny, encodeAny, encodeDeleteResponse, WireMessage } from '../../src/common/wire';

const anyCodec = codec<{ typeUrl: string; value: Buffer }>('google.protobuf.Any');

function expectShimError(fn: () => unknown, code: Code): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(code);
    return;
  }
  throw new Error('expected a ShimError');
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-options-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('decodeOptions', () => {
  it('returns a copy of the defaults for absent or empty options', async () => {
    expect(DEFAULT_OPTIONS.binaryName).toBe('runc');
    expect(DEFAULT_OPTIONS.root).toBe('/run/containerd/runc');
    expect(await decodeOptions(undefined)).toEqual(DEFAULT_OPTIONS);
    expect(await decodeOptions(null)).toEqual(DEFAULT_OPTIONS);
    expect(await decodeOptions({ typeUrl: '', value: Buffer.alloc(0) })).toEqual(DEFAULT_OPTIONS);
    // An Any with a known type but no value is all zero values: defaults stay.
    expect(await decodeOptions({ typeUrl: 'containerd.runc.v1.Options', value: Buffer.alloc(0) })).toEqual(
      DEFAULT_OPTIONS,
    );
    const copy = await decodeOptions(undefined);
    copy.binaryName = 'changed';
    expect(DEFAULT_OPTIONS.binaryName).toBe('runc');
  });

  it('decodes every field of containerd.runc.v1.Options', async () => {
    const any = packAny('containerd.runc.v1.Options', {
      noPivotRoot: true,
      noNewKeyring: true,
      shimCgroup: '/shims/a',
      ioUid: 4000000000,
      ioGid: 1001,
      binaryName: '/usr/sbin/crun',
      root: '/run/custom',
      criuPath: '/usr/sbin/criu',
      systemdCgroup: true,
      criuImagePath: '/img',
      criuWorkPath: '/work',
    });
    const expected: RuntimeOptions = {
      binaryName: '/usr/sbin/crun',
      root: '/run/custom',
      systemdCgroup: true,
      noPivotRoot: true,
      noNewKeyring: true,
      shimCgroup: '/shims/a',
      ioUid: 4000000000,
      ioGid: 1001,
      criuPath: '/usr/sbin/criu',
      criuImagePath: '/img',
      criuWorkPath: '/work',
      noSpareDaemon: false,
      shimGroup: '',
    };
    expect(await decodeOptions(any)).toEqual(expected);
  });

  it('matches the bytes containerd 1.6 was observed sending on start stdin', async () => {
    const stdin = Buffer.concat([
      Buffer.from([0x0a, 0x1a]),
      Buffer.from('containerd.runc.v1.Options'),
      Buffer.from([0x12, 0x10, 0x32, 0x0e]),
      Buffer.from('/usr/sbin/runc'),
    ]);
    const parsed = parseStartStdin(stdin, 't1');
    expect(parsed.bootstrap).toBeUndefined();
    expect(parsed.options?.typeUrl).toBe('containerd.runc.v1.Options');
    const opts = await decodeOptions(parsed.options);
    expect(opts).toEqual({ ...DEFAULT_OPTIONS, binaryName: '/usr/sbin/runc' });
  });

  it('overlays only set fields on the base and strips a type.googleapis.com prefix', async () => {
    const base: RuntimeOptions = { ...DEFAULT_OPTIONS, root: '/base/root', shimCgroup: '/base' };
    const any = packAny('containerd.runc.v1.Options', { systemdCgroup: true });
    const prefixed = { typeUrl: `type.googleapis.com/${any.typeUrl}`, value: any.value };
    expect(await decodeOptions(prefixed, base)).toEqual({ ...base, systemdCgroup: true });
  });

  it('maps legacy containerd.linux.runc.RuncOptions', async () => {
    const any = packAny('containerd.linux.runc.RuncOptions', {
      runtime: '/opt/runc',
      runtimeRoot: '/run/legacy',
      criuPath: '/opt/criu',
      systemdCgroup: true,
    });
    expect(await decodeOptions(any)).toEqual({
      ...DEFAULT_OPTIONS,
      binaryName: '/opt/runc',
      root: '/run/legacy',
      criuPath: '/opt/criu',
      systemdCgroup: true,
    });
  });

  it('maps legacy containerd.linux.runc.CreateOptions and ignores its checkpoint-only fields', async () => {
    const any = packAny('containerd.linux.runc.CreateOptions', {
      noPivotRoot: true,
      openTcp: true,
      terminal: true,
      emptyNamespaces: ['network'],
      cgroupsMode: 'soft',
      noNewKeyring: true,
      shimCgroup: '/legacy',
      ioUid: 7,
      ioGid: 8,
      criuWorkPath: '/cw',
      criuImagePath: '/ci',
    });
    expect(await decodeOptions(any)).toEqual({
      ...DEFAULT_OPTIONS,
      noPivotRoot: true,
      noNewKeyring: true,
      shimCgroup: '/legacy',
      ioUid: 7,
      ioGid: 8,
      criuWorkPath: '/cw',
      criuImagePath: '/ci',
    });
  });

  it('reads runtimeoptions.v1.Options config_body TOML', async () => {
    const any = packAny('runtimeoptions.v1.Options', {
      typeUrl: 'containerd.runc.v1.Options',
      configBody: Buffer.from('BinaryName = "/usr/bin/crun"\nSystemdCgroup = true\nIoUid = 10\n'),
    });
    expect(await decodeOptions(any)).toEqual({
      ...DEFAULT_OPTIONS,
      binaryName: '/usr/bin/crun',
      systemdCgroup: true,
      ioUid: 10,
    });
  });

  it('reads runtimeoptions.v1.Options config_path, which wins over config_body', async () => {
    const file = path.join(tmp, 'runtime.toml');
    fs.writeFileSync(file, '[options]\nRoot = "/run/from-file"\nNoPivotRoot = true\n');
    const any = packAny('runtimeoptions.v1.Options', {
      configPath: file,
      configBody: Buffer.from('Root = "/run/from-body"'),
    });
    expect(await decodeOptions(any)).toEqual({ ...DEFAULT_OPTIONS, root: '/run/from-file', noPivotRoot: true });
  });

  it('treats runtimeoptions.v1.Options with neither path nor body as defaults', async () => {
    const any = packAny('runtimeoptions.v1.Options', { typeUrl: 'x' });
    expect(await decodeOptions(any)).toEqual(DEFAULT_OPTIONS);
  });

  it('rejects an unreadable or invalid TOML file with InvalidArgument', async () => {
    const missing = packAny('runtimeoptions.v1.Options', { configPath: path.join(tmp, 'nope.toml') });
    await expect(decodeOptions(missing)).rejects.toMatchObject({ code: Code.InvalidArgument });
    const bad = path.join(tmp, 'bad.toml');
    fs.writeFileSync(bad, 'BinaryName = = "x"');
    const invalid = packAny('runtimeoptions.v1.Options', { configPath: bad });
    await expect(decodeOptions(invalid)).rejects.toBeInstanceOf(ShimError);
    await expect(decodeOptions(invalid)).rejects.toMatchObject({ code: Code.InvalidArgument });
  });

  // A ConfigPath naming something other than a small regular file (threat model: a hostile or
  // mistaken runtime options file). Before the fix a FIFO hung `start` and Create forever and
  // /dev/zero was read until memory ran out; now each is refused at once with InvalidArgument.
  it.each([
    ['a FIFO with no writer', () => {
      const fifo = path.join(tmp, 'opts.fifo');
      if (!fs.existsSync(fifo)) execFileSync('mkfifo', [fifo]);
      return fifo;
    }, /not a regular file/],
    ['a character device', () => '/dev/zero', /not a regular file/],
    ['a directory', () => tmp, /not a regular file/],
    ['a file over 1 MiB', () => {
      const big = path.join(tmp, 'big.toml');
      fs.writeFileSync(big, `# ${'x'.repeat(MAX_OPTIONS_FILE_BYTES)}\nRoot = "/r"\n`);
      return big;
    }, /larger than 1048576 bytes/],
  ])('refuses a config_path that is %s with InvalidArgument', async (_what, make, message) => {
    const any = packAny('runtimeoptions.v1.Options', { configPath: make() });
    await expect(decodeOptions(any)).rejects.toMatchObject({ code: Code.InvalidArgument, message: expect.stringMatching(message) });
  });

  it('reads a config_path file of exactly the cap', async () => {
    const file = path.join(tmp, 'exact.toml');
    const body = 'Root = "/r"\n';
    fs.writeFileSync(file, body + '#'.repeat(MAX_OPTIONS_FILE_BYTES - body.length));
    expect((await decodeOptions(packAny('runtimeoptions.v1.Options', { configPath: file }))).root).toBe('/r');
  });

  it('ignores unknown types and keeps the base', async () => {
    const base = { ...DEFAULT_OPTIONS, binaryName: '/b/runc' };
    const any = packAny('containerd.runc.v1.CheckpointOptions', { exit: true });
    expect(await decodeOptions(any, base)).toEqual(base);
    expect(await decodeOptions({ typeUrl: 'example.com/Whatever', value: Buffer.from([1, 2, 3]) })).toEqual(
      DEFAULT_OPTIONS,
    );
  });

  it('rejects a known type whose bytes are corrupt with InvalidArgument', async () => {
    const corrupt = { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from([0x32, 0x7f, 0x61]) };
    await expect(decodeOptions(corrupt)).rejects.toMatchObject({ code: Code.InvalidArgument });
  });
});

describe('parseTomlOptions', () => {
  it('reads every Go key at the top level', () => {
    const text = [
      'BinaryName = "crun"',
      'Root = "/r"',
      'SystemdCgroup = true',
      'NoPivotRoot = true',
      'NoNewKeyring = true',
      'ShimCgroup = "/s"',
      'IoUid = 1',
      'IoGid = 2',
      'CriuPath = "/c"',
      'CriuImagePath = "/ci"',
      'CriuWorkPath = "/cw"',
      'NoSpareDaemon = true',
    ].join('\n');
    expect(parseTomlOptions(text)).toEqual({
      binaryName: 'crun',
      root: '/r',
      systemdCgroup: true,
      noPivotRoot: true,
      noNewKeyring: true,
      shimCgroup: '/s',
      ioUid: 1,
      ioGid: 2,
      criuPath: '/c',
      criuImagePath: '/ci',
      criuWorkPath: '/cw',
      noSpareDaemon: true,
    });
  });

  it('reads an [options] table and ignores unknown keys and tables', () => {
    const text = [
      'runtime_type = "io.containerd.tshim.v2"',
      'Unrelated = 5',
      '[options]',
      'SystemdCgroup = true',
      'BinaryName = "/usr/sbin/runc"',
      'SomethingNew = "x"',
      '[other]',
      'Root = "/not/here"',
    ].join('\n');
    expect(parseTomlOptions(text)).toEqual({ systemdCgroup: true, binaryName: '/usr/sbin/runc' });
  });

  it('lets explicit false override', () => {
    expect(parseTomlOptions('SystemdCgroup = false')).toEqual({ systemdCgroup: false });
  });

  it('rejects invalid TOML and wrongly typed known keys with InvalidArgument', () => {
    expectShimError(() => parseTomlOptions('BinaryName = '), Code.InvalidArgument);
    expectShimError(() => parseTomlOptions('SystemdCgroup = "yes"'), Code.InvalidArgument);
    expectShimError(() => parseTomlOptions('IoUid = -1'), Code.InvalidArgument);
    expectShimError(() => parseTomlOptions('IoUid = 1.5'), Code.InvalidArgument);
  });

  it('returns nothing for an empty document', () => {
    expect(parseTomlOptions('')).toEqual({});
  });
});

describe('options.json', () => {
  it('round-trips with snake_case keys and omits zero values', () => {
    const o: RuntimeOptions = {
      ...DEFAULT_OPTIONS,
      binaryName: '/usr/bin/crun',
      systemdCgroup: true,
      ioUid: 5,
      criuWorkPath: '/cw',
    };
    const text = toOptionsJson(o);
    expect(JSON.parse(text)).toEqual({
      binary_name: '/usr/bin/crun',
      root: '/run/containerd/runc',
      systemd_cgroup: true,
      io_uid: 5,
      criu_work_path: '/cw',
    });
    expect(fromOptionsJson(text)).toEqual(o);
  });

  it('reads the Go runc shim options.json and fills defaults', () => {
    expect(fromOptionsJson('{"systemd_cgroup":true,"shim_cgroup":"/x"}')).toEqual({
      ...DEFAULT_OPTIONS,
      systemdCgroup: true,
      shimCgroup: '/x',
    });
    expect(fromOptionsJson('{}')).toEqual(DEFAULT_OPTIONS);
    expect(fromOptionsJson('{"binaryName":"crun"}').binaryName).toBe('crun');
  });

  it('rejects malformed JSON and wrong value types with InvalidArgument', () => {
    expectShimError(() => fromOptionsJson('{'), Code.InvalidArgument);
    expectShimError(() => fromOptionsJson('[]'), Code.InvalidArgument);
    expectShimError(() => fromOptionsJson('{"root":5}'), Code.InvalidArgument);
    expectShimError(() => fromOptionsJson('{"io_uid":-3}'), Code.InvalidArgument);
  });
});

describe('parseStartStdin', () => {
  const runcOptions = packAny('containerd.runc.v1.Options', { binaryName: 'crun', shimCgroup: '/pod' });

  it('returns nothing for empty stdin', () => {
    expect(parseStartStdin(Buffer.alloc(0), 'c1')).toEqual({});
  });

  it('reads a plain Any', () => {
    const parsed = parseStartStdin(anyCodec.encode(runcOptions), 'c1');
    expect(parsed).toEqual({ options: runcOptions });
  });

  it('does not mistake an Any for BootstrapParams when the id happens to look like a type', () => {
    const parsed = parseStartStdin(anyCodec.encode(runcOptions), 'some-other-id');
    expect(parsed.bootstrap).toBeUndefined();
    expect(parsed.options).toEqual(runcOptions);
  });

  it('detects containerd 2.3 BootstrapParams by instance_id and returns its options extension', async () => {
    const bytes = codec('containerd.runtime.bootstrap.v1.BootstrapParams').encode({
      instanceId: 'c1',
      namespace: 'k8s.io',
      logLevel: -4,
      containerdVersion: '2.3.0',
      containerdTtrpcAddress: '/run/containerd/containerd.sock.ttrpc',
      containerdGrpcAddress: '/run/containerd/containerd.sock',
      containerdBinary: '/usr/bin/containerd',
      extensions: [{ value: packAny('containerd.events.TaskOOM', { containerId: 'x' }) }, { value: runcOptions }],
      socketDir: '/run/custom/s',
    });
    const parsed = parseStartStdin(bytes, 'c1');
    expect(parsed.bootstrap).toEqual({
      namespace: 'k8s.io',
      logLevel: -4,
      containerdVersion: '2.3.0',
      ttrpcAddress: '/run/containerd/containerd.sock.ttrpc',
      grpcAddress: '/run/containerd/containerd.sock',
      containerdBinary: '/usr/bin/containerd',
      socketDir: '/run/custom/s',
    });
    expect(parsed.options).toEqual(runcOptions);
    expect((await decodeOptions(parsed.options)).binaryName).toBe('crun');
  });

  it('handles BootstrapParams without extensions or socket_dir', () => {
    const bytes = codec('containerd.runtime.bootstrap.v1.BootstrapParams').encode({
      instanceId: 'c2',
      namespace: 'default',
      logLevel: 0,
    });
    const parsed = parseStartStdin(bytes, 'c2');
    expect(parsed.options).toBeUndefined();
    expect(parsed.bootstrap?.socketDir).toBeUndefined();
    expect(parsed.bootstrap?.namespace).toBe('default');
    expect(parsed.bootstrap?.logLevel).toBe(0);
  });

  it('uses the first extension when none is a known options type', () => {
    const first = packAny('containerd.events.TaskOOM', { containerId: 'a' });
    const bytes = codec('containerd.runtime.bootstrap.v1.BootstrapParams').encode({
      instanceId: 'c3',
      extensions: [{ value: first }, { value: packAny('containerd.events.TaskOOM', { containerId: 'b' }) }],
    });
    expect(parseStartStdin(bytes, 'c3').options).toEqual(first);
  });

  it('rejects garbage with InvalidArgument', () => {
    expectShimError(() => parseStartStdin(Buffer.from([0x0a, 0xff]), 'c1'), Code.InvalidArgument);
  });
});

describe('wire helpers used on the start/delete paths', () => {
  it('encodes DeleteResponse exactly as the protobuf codec decodes it', () => {
    const exitedAt = new Date(Date.UTC(2026, 10, 28, 15, 50, 8, 654));
    const bytes = encodeDeleteResponse({ pid: 21913, exitStatus: 137, exitedAt });
    // Observed from the Go shim: 08 99ab01 10 8901 1a 0c <ts>
    expect(bytes.subarray(0, 9).toString('hex')).toBe('0899ab011089011a0c');
    const decoded = codec<{ pid: number; exitStatus: number; exitedAt: { seconds: number; nanos: number } }>(
      'containerd.task.v2.DeleteResponse',
    ).decode(bytes);
    expect(decoded).toEqual({
      pid: 21913,
      exitStatus: 137,
      exitedAt: { seconds: Math.floor(exitedAt.getTime() / 1000), nanos: 654_000_000 },
    });
  });

  it('keeps exited_at present when pid is 0', () => {
    const bytes = encodeDeleteResponse({ pid: 0, exitStatus: 137, exitedAt: new Date(1000) });
    expect(bytes.toString('hex')).toBe('1089011a020801');
  });

  it('round-trips Any and matches the protobuf codec', () => {
    const any = { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from([0x32, 0x01, 0x78]) };
    expect(encodeAny(any)).toEqual(anyCodec.encode(any));
    expect(decodeAny(encodeAny(any))).toEqual(any);
    expect(decodeAny(Buffer.alloc(0))).toEqual({ typeUrl: '', value: Buffer.alloc(0) });
  });

  it('reads negative int32 enums, skips fixed-width fields and keeps the last scalar', () => {
    const bytes = Buffer.concat([
      codec('containerd.runtime.bootstrap.v1.BootstrapParams').encode({ instanceId: 'a', logLevel: -8 }),
      Buffer.from([0x55, 1, 2, 3, 4]), // field 10, fixed32
      Buffer.from([0x0a, 0x01, 0x62]), // field 1 again: "b"
    ]);
    const m = new WireMessage(bytes);
    expect(m.int32(3)).toBe(-8);
    expect(m.string(1)).toBe('b');
    expect(m.has(10)).toBe(true);
  });

  it('rejects truncated input and wrong wire types with InvalidArgument', () => {
    expectShimError(() => new WireMessage(Buffer.from([0x0a, 0x05, 0x61])), Code.InvalidArgument);
    expectShimError(() => new WireMessage(Buffer.from([0x08, 0x80])), Code.InvalidArgument);
    expectShimError(() => new WireMessage(Buffer.from([0x0b])), Code.InvalidArgument);
    expectShimError(() => new WireMessage(Buffer.from([0x08, 0x01])).string(1), Code.InvalidArgument);
  });
});

import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Namespace, Root, Service, Type, type ReflectionObject } from 'protobufjs';
import { afterAll, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import {
  GO_ZERO_TIME,
  codec,
  fromTimestamp,
  hasType,
  packAny,
  protoRoot,
  toTimestamp,
  typeName,
  unpackAny,
  type AnyMessage,
  type Timestamp,
} from '../../src/common/proto';
import {
  EVENT_TOPICS,
  TASK_METHODS,
  TASK_SERVICE_V2,
  TaskStatus,
  TYPE_URLS,
  type BootstrapParams,
  type ConnectResponse,
  type DeleteResponse,
  type Empty,
  type RuncOptions,
  type RuntimeOptions,
  type StateResponse,
  type UpdateTaskRequest,
} from '../../src/common/types';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (...parts: (string | number[])[]): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('timestamps', () => {
  it("encodes Go's zero time as the observed 10-byte varint and nothing for nanos", () => {
    const encoded = codec<Timestamp>('google.protobuf.Timestamp').encode(GO_ZERO_TIME);
    expect(hex(encoded)).toBe('08' + '8092b8c398feffffff01');
  });

  it('maps undefined <-> Go zero time and keeps millisecond precision otherwise', () => {
    expect(toTimestamp(undefined)).toEqual({ seconds: -62135596800, nanos: 0 });
    expect(fromTimestamp(GO_ZERO_TIME)).toBeUndefined();
    expect(fromTimestamp(null)).toBeUndefined();
    expect(fromTimestamp(undefined)).toBeUndefined();

    const date = new Date('2024-03-01T12:34:56.789Z');
    const ts = toTimestamp(date);
    expect(ts).toEqual({ seconds: Math.floor(date.getTime() / 1000), nanos: 789_000_000 });
    expect(fromTimestamp(ts)?.toISOString()).toBe(date.toISOString());

    // Pre-epoch instants keep nanos non-negative, as protobuf requires.
    expect(toTimestamp(new Date(-1500))).toEqual({ seconds: -2, nanos: 500_000_000 });
    // 1970-01-01 is a real time, not "unset".
    expect(fromTimestamp({ seconds: 0, nanos: 0 })?.getTime()).toBe(0);
  });

  it('rejects an invalid Date instead of encoding NaN', () => {
    const err = thrown(() => toTimestamp(new Date('nope')));
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Internal);
  });
});

describe('codec', () => {
  it('round-trips a DeleteResponse with an exit time', () => {
    const exitedAt = toTimestamp(new Date('2023-05-06T07:08:09.123Z'));
    const c = codec<DeleteResponse>('containerd.task.v2.DeleteResponse');
    const encoded = c.encode({ pid: 21913, exitStatus: 137, exitedAt });
    expect(Buffer.isBuffer(encoded)).toBe(true);
    expect(c.decode(encoded)).toEqual({ pid: 21913, exitStatus: 137, exitedAt });
  });

  it('encodes and decodes the observed Connect reply bytes', () => {
    const c = codec<ConnectResponse>('containerd.task.v2.ConnectResponse');
    const observed = Buffer.from('0883ab011099ab01', 'hex');
    expect(c.decode(observed)).toEqual({ shimPid: 21891, taskPid: 21913, version: '' });
    expect(hex(c.encode({ shimPid: 21891, taskPid: 21913, version: '' }))).toBe(hex(observed));
  });

  it('omits proto3 zero values like Go and leaves the caller object untouched', () => {
    const c = codec<DeleteResponse>('containerd.task.v2.DeleteResponse');
    const message = { pid: 0, exitStatus: 0, exitedAt: { seconds: 0, nanos: 0 } };
    // Only the (present, empty) exited_at message remains: field 3, length 0.
    expect(hex(c.encode(message))).toBe('1a00');
    expect(message).toEqual({ pid: 0, exitStatus: 0, exitedAt: { seconds: 0, nanos: 0 } });
    const any = codec<AnyMessage>('google.protobuf.Any');
    expect(hex(any.encode({ typeUrl: 'x', value: Buffer.alloc(0) }))).toBe('0a0178');
  });

  it('encodes Empty to zero bytes and decodes zero bytes to {}', () => {
    const c = codec<Empty>('google.protobuf.Empty');
    expect(c.encode({}).length).toBe(0);
    expect(c.decode(new Uint8Array(0))).toEqual({});
  });

  it('fills proto3 defaults on decode: scalars, arrays, maps, null messages, numeric enums', () => {
    const state = codec<StateResponse>('containerd.task.v2.StateResponse').decode(new Uint8Array(0));
    expect(state).toEqual({
      id: '',
      bundle: '',
      pid: 0,
      status: TaskStatus.UNKNOWN,
      stdin: '',
      stdout: '',
      stderr: '',
      terminal: false,
      exitStatus: 0,
      exitedAt: null,
      execId: '',
    });
    const update = codec<UpdateTaskRequest>('containerd.task.v2.UpdateTaskRequest').decode(new Uint8Array(0));
    expect(update).toEqual({ id: '', resources: null, annotations: {} });
  });

  it('round-trips enums as numbers and map fields as objects', () => {
    const state = codec<StateResponse>('containerd.task.v2.StateResponse');
    const decoded = state.decode(
      state.encode({
        id: 'c1',
        bundle: '/b',
        pid: 7,
        status: TaskStatus.PAUSING,
        stdin: '',
        stdout: '/o',
        stderr: '',
        terminal: true,
        exitStatus: 0,
        exitedAt: GO_ZERO_TIME,
        execId: '',
      }),
    );
    expect(decoded.status).toBe(5);
    expect(decoded.exitedAt).toEqual(GO_ZERO_TIME);

    const update = codec<UpdateTaskRequest>('containerd.task.v2.UpdateTaskRequest');
    const req = { id: 'c1', resources: null, annotations: { a: '1', 'b.c/d': 'x y' } };
    expect(update.decode(update.encode(req))).toEqual(req);
  });

  it('decodes bytes fields as Buffers that do not alias the input', () => {
    const c = codec<RuntimeOptions>('runtimeoptions.v1.Options');
    const encoded = c.encode({ typeUrl: 't', configPath: '', configBody: Buffer.from('[a]\nb = 1\n') });
    const input = new Uint8Array(encoded); // plain Uint8Array, not a Buffer
    const decoded = c.decode(input);
    expect(Buffer.isBuffer(decoded.configBody)).toBe(true);
    expect(decoded.configBody.toString()).toBe('[a]\nb = 1\n');
    input.fill(0);
    expect(decoded.configBody.toString()).toBe('[a]\nb = 1\n');
  });

  it('encodes uint64 2^64-1 from a decimal string (cgroup v2 pids.max "max")', () => {
    const c = codec<{ pids: { current: number; limit: number | string } }>('io.containerd.cgroups.v2.Metrics');
    const encoded = c.encode({ pids: { current: 3, limit: '18446744073709551615' } });
    // Metrics.pids (field 1, 13 bytes) { current 3, limit = ten-byte varint of 2^64-1 }
    expect(hex(encoded)).toBe('0a0d' + '0803' + '10' + 'ffffffffffffffffff01');
    const decoded = c.decode(encoded);
    expect(decoded.pids.current).toBe(3);
    // Decoding yields a JS number; values beyond 2^53 are not expected as input, so the nearest
    // double is what we can hold.
    expect(decoded.pids.limit).toBe(2 ** 64);
  });

  it('encodes cgroup v1 metrics with numbers and strings mixed', () => {
    const c = codec<Record<string, unknown>>('io.containerd.cgroups.v1.Metrics');
    const decoded = c.decode(
      c.encode({
        memory: { usage: { limit: '9223372036854771712', usage: 1048576 }, totalRss: 4096 },
        cpu: { usage: { total: 123456789, perCpu: [1, '2', 3] } },
      }),
    ) as { memory: { usage: { limit: number; usage: number }; totalRss: number }; cpu: { usage: { perCpu: number[] } } };
    expect(decoded.memory.usage.limit).toBe(9223372036854771712);
    expect(decoded.memory.usage.usage).toBe(1048576);
    expect(decoded.memory.totalRss).toBe(4096);
    expect(decoded.cpu.usage.perCpu).toEqual([1, 2, 3]);
  });

  it('caches codecs per name', () => {
    expect(codec('containerd.task.v2.StartRequest')).toBe(codec('containerd.task.v2.StartRequest'));
    expect(codec('.containerd.task.v2.StartRequest')).toBe(codec('containerd.task.v2.StartRequest'));
  });

  it('throws ShimError Internal for unknown or inexact names', () => {
    for (const name of ['containerd.task.v2.Nope', 'Options', 'containerd.Options', 'containerd.task.v2.Task']) {
      const err = thrown(() => codec(name));
      expect(err, name).toBeInstanceOf(ShimError);
      expect((err as ShimError).code, name).toBe(Code.Internal);
    }
  });

  it('throws ShimError InvalidArgument for malformed input', () => {
    const err = thrown(() => codec('containerd.task.v2.CreateTaskRequest').decode(Buffer.from([0x0a, 0x10, 0x41])));
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.InvalidArgument);
  });

  it('throws ShimError Internal when an object cannot be encoded', () => {
    const err = thrown(() => codec<Record<string, unknown>>('containerd.task.v2.DeleteResponse').encode({ exitedAt: 5 }));
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Internal);
  });
});

describe('Any', () => {
  const OBSERVED_ANY = bytes(
    [0x0a, 0x1a],
    'containerd.runc.v1.Options',
    [0x12, 0x10, 0x32, 0x0e],
    '/usr/sbin/runc',
  );

  it('packs runc Options into the observed Any bytes and unpacks them', () => {
    const any = packAny<Partial<RuncOptions>>(TYPE_URLS.runcOptions, { binaryName: '/usr/sbin/runc' });
    expect(any.typeUrl).toBe('containerd.runc.v1.Options');
    expect(hex(codec<AnyMessage>('google.protobuf.Any').encode(any))).toBe(hex(OBSERVED_ANY));

    const wire = codec<AnyMessage>('google.protobuf.Any').decode(OBSERVED_ANY);
    expect(wire.typeUrl).toBe('containerd.runc.v1.Options');
    expect(Buffer.isBuffer(wire.value)).toBe(true);
    const unpacked = unpackAny<RuncOptions>(wire);
    expect(unpacked?.name).toBe('containerd.runc.v1.Options');
    expect(unpacked?.message.binaryName).toBe('/usr/sbin/runc');
    expect(unpacked?.message.systemdCgroup).toBe(false);
    expect(unpacked?.message.root).toBe('');
  });

  it('strips a type.googleapis.com/ (or any host) prefix', () => {
    const value = packAny('containerd.runc.v1.Options', { root: '/r' }).value;
    for (const typeUrl of ['type.googleapis.com/containerd.runc.v1.Options', 'example.org/x/containerd.runc.v1.Options']) {
      expect(typeName({ typeUrl, value })).toBe('containerd.runc.v1.Options');
      const unpacked = unpackAny<RuncOptions>({ typeUrl, value });
      expect(unpacked?.name).toBe('containerd.runc.v1.Options');
      expect(unpacked?.message.root).toBe('/r');
    }
  });

  it('returns undefined for absent or unknown types and decodes an empty value', () => {
    expect(unpackAny(null)).toBeUndefined();
    expect(unpackAny(undefined)).toBeUndefined();
    expect(unpackAny({ typeUrl: '', value: Buffer.alloc(0) })).toBeUndefined();
    expect(unpackAny({ typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from('{}') })).toBeUndefined();
    expect(unpackAny({ typeUrl: 'io.containerd.myshim.v1.Options', value: Buffer.alloc(0) })).toBeUndefined();
    const empty = unpackAny<RuncOptions>({ typeUrl: 'containerd.runc.v1.Options', value: Buffer.alloc(0) });
    expect(empty?.message.binaryName).toBe('');
  });

  it('round-trips BootstrapParams with a nested options extension and proto3 optional', () => {
    const c = codec<BootstrapParams>('containerd.runtime.bootstrap.v1.BootstrapParams');
    const opts = packAny(TYPE_URLS.runcOptions, { binaryName: 'crun' });
    const decoded = c.decode(
      c.encode({
        instanceId: 'c1',
        namespace: 'k8s.io',
        logLevel: -4,
        containerdVersion: '2.3.0',
        containerdTtrpcAddress: '/run/containerd/containerd.sock.ttrpc',
        containerdGrpcAddress: '',
        containerdBinary: '/usr/bin/containerd',
        extensions: [{ value: opts }],
      }),
    );
    expect(decoded.logLevel).toBe(-4);
    expect(decoded.socketDir).toBeUndefined();
    expect(unpackAny<RuncOptions>(decoded.extensions[0]?.value)?.message.binaryName).toBe('crun');
    const withDir = c.decode(c.encode({ ...decoded, socketDir: '' }));
    expect(withDir.socketDir).toBe('');
  });
});

describe('names', () => {
  it('knows exact full names only', () => {
    expect(hasType('containerd.runc.v1.Options')).toBe(true);
    expect(hasType('google.protobuf.Empty')).toBe(true);
    expect(hasType('containerd.services.events.ttrpc.v1.Envelope')).toBe(true);
    expect(hasType('containerd.services.events.v1.Envelope')).toBe(true);
    expect(hasType('Options')).toBe(false);
    expect(hasType('runc.v1.Options')).toBe(false);
    expect(hasType('containerd.v1.types.Status')).toBe(false); // an enum, not a message
  });

  it('TASK_METHODS matches the loaded Task service exactly', () => {
    const service = protoRoot().lookupService(TASK_SERVICE_V2);
    expect(service).toBeInstanceOf(Service);
    const fromProto = Object.fromEntries(
      Object.values(service.methods).map((m) => {
        m.resolve();
        return [m.name, { request: m.resolvedRequestType!.fullName.slice(1), response: m.resolvedResponseType!.fullName.slice(1) }];
      }),
    );
    expect(Object.keys(TASK_METHODS)).toHaveLength(17);
    expect(TASK_METHODS).toEqual(fromProto);
  });

  it('every EVENT_TOPICS message exists and there is no /tasks/io topic', () => {
    expect(Object.keys(EVENT_TOPICS)).toHaveLength(10);
    expect(Object.keys(EVENT_TOPICS)).not.toContain('/tasks/io');
    for (const name of Object.values(EVENT_TOPICS)) expect(hasType(name), name).toBe(true);
    for (const name of Object.values(TYPE_URLS)) expect(hasType(name), name).toBe(true);
  });
});

describe('scripts/build-proto-json.js', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-proto-json-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('writes a JSON root (with well-known types) that encodes like the parsed .proto files', () => {
    const out = path.join(tmp, 'proto.json');
    const script = path.resolve(__dirname, '..', '..', 'scripts', 'build-proto-json.js');
    execFileSync(process.execPath, [script, out], { stdio: 'pipe' });
    const root = Root.fromJSON(JSON.parse(fs.readFileSync(out, 'utf8')));
    root.resolveAll();
    for (const wk of ['Any', 'Timestamp', 'Empty']) {
      expect(root.lookup(`.google.protobuf.${wk}`), wk).toBeInstanceOf(Type);
    }

    const name = 'containerd.events.TaskExit';
    const event = { containerId: 'c1', id: 'e1', pid: 42, exitStatus: 137, exitedAt: toTimestamp(new Date(1_700_000_000_123)) };
    const fromJson = root.lookupType(`.${name}`);
    expect(hex(fromJson.encode(fromJson.fromObject(event)).finish())).toBe(hex(codec(name).encode(event)));

    const json = root.toJSON();
    const parsed = protoRoot().toJSON();
    expect(JSON.stringify(json)).toBe(JSON.stringify(parsed));

    // Field presence drives which zero values the codec omits; it must survive the JSON trip.
    const any = root.lookupType('.google.protobuf.Any');
    expect(Object.keys(any.fields).sort()).toEqual(['typeUrl', 'value']);
    const presence = (r: Root): string[] => {
      const out: string[] = [];
      const visit = (obj: ReflectionObject): void => {
        if (obj instanceof Type) for (const f of obj.fieldsArray) out.push(`${f.fullName}:${Boolean(f.hasPresence)}`);
        if (obj instanceof Namespace) obj.nestedArray.forEach(visit);
      };
      visit(r);
      return out.sort();
    };
    expect(presence(root)).toEqual(presence(protoRoot()));
    expect(presence(root)).toContain('.google.protobuf.Timestamp.nanos:false');
    expect(presence(root)).toContain('.google.protobuf.Any.typeUrl:false');
    expect(presence(root)).toContain('.containerd.task.v2.ConnectResponse.version:false');
    expect(presence(root)).toContain('.containerd.runtime.bootstrap.v1.BootstrapParams.socketDir:true');
  });
});

describe('warmCodecs (what a spare daemon compiles while idle)', () => {
  it('compiles every Task API and event type a daemon serves, and refuses a type it does not know', async () => {
    const { warmCodecs } = await import('../../src/common/proto');
    const { EVENT_TOPICS, TASK_METHODS } = await import('../../src/common/types');
    expect(() => warmCodecs([...Object.values(TASK_METHODS).flatMap((m) => [m.request, m.response]), ...Object.values(EVENT_TOPICS)])).not.toThrow();
    expect(() => warmCodecs(['containerd.task.v2.NoSuchMessage'])).toThrow(/unknown protobuf message type/);
  });

  it('compiles the message types inside them too (protobufjs generates a type\'s code on its own first use)', async () => {
    const { protoRoot, warmCodecs } = await import('../../src/common/proto');
    const generated = (name: string): boolean => Object.prototype.hasOwnProperty.call(protoRoot().lookupType(name), 'encode');
    // ForwardRequest > Envelope > Any, and the Timestamp in the Envelope
    const inner = ['containerd.services.events.ttrpc.v1.Envelope', 'google.protobuf.Any', 'google.protobuf.Timestamp'];
    const before = inner.filter(generated);
    warmCodecs(['containerd.services.events.ttrpc.v1.ForwardRequest']);
    expect(inner.filter(generated)).toEqual(inner);
    expect(before).not.toEqual(inner); // the test would prove nothing if they were already compiled
  });
});

/**
 * In-process fuzz targets: everything in the shim that parses bytes from outside. Each target
 * turns one seeded Rng into one input, feeds it, and checks the property that must hold for
 * every input (a finding is thrown as FuzzFinding and names the input's seed for replay).
 *
 * Properties, common to all: nothing throws anything but a ShimError (or, for the adoption line
 * and ttrpc envelopes, the parser's own typed error); input that cannot be decoded is
 * InvalidArgument; Internal never comes back for anything a peer sent; Unknown only for a
 * well-formed request the state machine refuses, never with a JavaScript runtime error's text.
 */
import { execFileSync } from 'node:child_process';
import { Duplex } from 'node:stream';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, ShimError } from '../../src/common/errors';
import type { EventSink } from '../../src/common/events';
import {
  DEFAULT_OPTIONS, decodeOptions, fromOptionsJson, parseStartStdin, parseTomlOptions, toOptionsJson, type RuntimeOptions,
} from '../../src/common/options';
import { codec } from '../../src/common/proto';
import { TaskService } from '../../src/common/service';
import { parseAdoptionRequest } from '../../src/common/spare';
import { taskHandlers, type ByteHandler } from '../../src/common/task-handlers';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { FrameDecoder, MessageType, encodeFrame, type DecodedItem } from '../../src/common/ttrpc/frame';
import { ProtoDecodeError, decodeRequest, decodeResponse, encodeRequest, encodeResponse } from '../../src/common/ttrpc/messages';
import { TtrpcServer } from '../../src/common/ttrpc/server';
import { TASK_METHODS, TASK_SERVICE_V2, TASK_SERVICE_V3 } from '../../src/common/types';
import { execProcessJson } from '../../src/linux/exec-process';
import { encodeAny } from '../../src/common/wire';
import { FakeBackend } from '../unit/fake-backend';
import { KNOWN_TYPE_URLS, Rng, encodeVarint, mutateBytes, mutateProto, randomMessage, randomString } from './gen';

export class FuzzFinding extends Error {
  constructor(readonly target: string, message: string, readonly input?: Buffer | string) {
    super(`${target}: ${message}`);
    this.name = 'FuzzFinding';
  }
}

export interface FuzzTarget {
  readonly name: string;
  setup?(): Promise<void> | void;
  /** One input. May be async; must settle (a target never waits on a peer that may not answer). */
  run(rng: Rng): Promise<void> | void;
  teardown?(): Promise<void> | void;
  /** Extra figures for the report. */
  stats?(): Record<string, number>;
}

const JS_RUNTIME_ERROR = /Cannot read propert|is not a function|is not iterable|undefined|Maximum call stack|Invalid array length|out of memory|Cannot convert|RangeError|TypeError/;

/** The property every status from a request peer must satisfy. */
export function checkStatus(target: string, code: number, message: string, decodable: boolean, input?: Buffer): void {
  if (code === Code.Internal || code === Code.DataLoss) throw new FuzzFinding(target, `code ${code} for peer input: ${message}`, input);
  if (!decodable && code !== Code.InvalidArgument) {
    throw new FuzzFinding(target, `undecodable request answered with code ${code}, not InvalidArgument: ${message}`, input);
  }
  if (code === Code.Unknown && JS_RUNTIME_ERROR.test(message)) {
    throw new FuzzFinding(target, `Unknown carrying a runtime error: ${message}`, input);
  }
}

function expectShimError(target: string, err: unknown, allowed: readonly Code[], input?: Buffer | string): ShimError {
  if (!(err instanceof ShimError)) {
    throw new FuzzFinding(target, `threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`, input);
  }
  if (!allowed.includes(err.code)) throw new FuzzFinding(target, `code ${err.code} (${err.message})`, input);
  return err;
}

function checkOptionsShape(target: string, o: RuntimeOptions, input?: Buffer | string): void {
  for (const [key, def] of Object.entries(DEFAULT_OPTIONS)) {
    const v = (o as unknown as Record<string, unknown>)[key];
    if (typeof v !== typeof def) throw new FuzzFinding(target, `option ${key} has type ${typeof v}`, input);
    if (typeof v === 'number' && (!Number.isInteger(v) || v < 0 || v > 0xffffffff)) {
      throw new FuzzFinding(target, `option ${key} = ${v} is not a uint32`, input);
    }
  }
  // What create persists must read back the same (the delete action relies on it).
  const again = fromOptionsJson(toOptionsJson(o));
  for (const key of ['binaryName', 'root', 'systemdCgroup', 'ioUid'] as const) {
    if (again[key] !== o[key] && !(o[key] === '' && again[key] === DEFAULT_OPTIONS[key])) {
      throw new FuzzFinding(target, `options.json round trip changed ${key}`, input);
    }
  }
}

// --- seeds: one valid request per Task method ---------------------------------------------------

const IDS = ['c1', 'c2', 'c3'];
const EXEC_IDS = ['', '', 'e1', 'e2'];

function processSpec(): Buffer {
  return Buffer.from(JSON.stringify({ args: ['/bin/sh', '-c', 'exit 3'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } }));
}

/** A valid request object for a method, pointed at the fuzz service's containers. */
export function validRequest(method: string, rng: Rng): Record<string, unknown> {
  const id = rng.pick(IDS);
  const execId = rng.pick(EXEC_IDS);
  switch (method) {
    case 'Create':
      return {
        id: rng.chance(0.5) ? id : `c${rng.int(6)}`,
        bundle: `/tmp/tshim-fuzz-nonexistent/${id}`,
        rootfs: rng.chance(0.5) ? [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/a', 'upperdir=/b'] }] : [],
        terminal: rng.chance(0.2),
        stdin: '',
        stdout: '/tmp/tshim-fuzz-nonexistent/out',
        stderr: '',
        options: { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from([0x32, 0x04, 0x72, 0x75, 0x6e, 0x63]) },
      };
    case 'Exec':
      return { id, execId: rng.pick(['e1', 'e2', 'e3']), terminal: rng.chance(0.2), stdout: '/tmp/x', spec: { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: processSpec() } };
    case 'Kill':
      return { id, execId, signal: rng.pick([9, 15, 0, 64, 65, 1000]), all: rng.chance(0.3) };
    case 'ResizePty':
      return { id, execId, width: 80, height: 24 };
    case 'CloseIO':
      return { id, execId, stdin: true };
    case 'Update':
      return { id, resources: { typeUrl: 'opencontainers.runtime-spec.1.LinuxResources', value: Buffer.from('{}') }, annotations: { a: 'b' } };
    case 'Checkpoint':
      return { id, path: '/tmp/tshim-fuzz-nonexistent/ckpt', options: null };
    case 'Shutdown':
      return { id, now: rng.chance(0.5) };
    case 'Pids':
    case 'Pause':
    case 'Resume':
    case 'Stats':
    case 'Connect':
      return { id };
    default: // State, Start, Delete, Wait
      return { id, execId };
  }
}

export const METHODS = Object.keys(TASK_METHODS);

const corpus = new Map<string, Buffer[]>();

/**
 * Seed corpus per method, built once from a fixed seed: valid requests and schema-random ones.
 * Inputs are mutations of these, which keeps generation cheap enough for 10^6 inputs.
 */
function corpusFor(method: string): Buffer[] {
  let entries = corpus.get(method);
  if (entries) return entries;
  const type = (TASK_METHODS as Record<string, { request: string }>)[method]!.request;
  const c = codec<object>(type);
  const rng = new Rng(method.length * 7919 + method.charCodeAt(0));
  entries = [];
  for (let i = 0; i < 24; i++) entries.push(c.encode(validRequest(method, rng)));
  const presets = { id: () => rng.pick(IDS), execId: () => rng.pick(EXEC_IDS) };
  for (let i = 0; i < 24; i++) {
    try {
      entries.push(c.encode(randomMessage(rng, type, 0, presets)));
    } catch {
      // a random value protobufjs refuses to encode: skip it
    }
  }
  corpus.set(method, entries);
  return entries;
}

/** A request payload: a corpus entry as is, mutated structurally or bytewise, or raw noise. */
export function requestPayload(method: string, rng: Rng): Buffer {
  const base = rng.pick(corpusFor(method));
  const roll = rng.int(10);
  if (roll < 2) return base;
  if (roll < 7) {
    let bytes = base;
    for (let i = 1 + rng.int(3); i > 0; i--) bytes = mutateProto(rng, bytes);
    return bytes;
  }
  if (roll < 9) return mutateBytes(rng, base);
  return rng.bytes(rng.int(40));
}

export function decodes(method: string, payload: Buffer): boolean {
  const type = (TASK_METHODS as Record<string, { request: string }>)[method]?.request;
  if (!type) return true;
  try {
    codec<object>(type).decode(payload);
    return true;
  } catch {
    return false;
  }
}

// --- a fake-backed Task service that is reset now and then ----------------------------------------

const NULL_SINK: EventSink = { publish: () => undefined };

class ServiceBed {
  handlers!: Record<string, ByteHandler>;
  private controller = new AbortController();
  private uses = 0;
  pending: Array<Promise<void>> = [];

  constructor() {
    this.reset();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Fresh service with three created containers (c1 running with exec e1, c2 created, c3 running). */
  reset(): void {
    this.controller.abort(new ShimError(Code.Unavailable, 'ttrpc: connection closed'));
    this.controller = new AbortController();
    this.uses = 0;
    const backend = new FakeBackend();
    const service = new TaskService(backend, NULL_SINK, 'fuzz', { requestShutdown: () => undefined });
    this.handlers = taskHandlers(service);
    const mk = (id: string) =>
      service.create({ id, bundle: `/b/${id}`, rootfs: [], terminal: false, stdin: '', stdout: '', stderr: '', checkpoint: '', parentCheckpoint: '', options: null } as never);
    void mk('c1').then(() => service.start({ id: 'c1', execId: '' } as never)).then(() =>
      service.exec({ id: 'c1', execId: 'e1', terminal: false, stdin: '', stdout: '', stderr: '', spec: null } as never),
    );
    void mk('c2');
    void mk('c3').then(() => service.start({ id: 'c3', execId: '' } as never));
  }

  tick(): void {
    if (++this.uses >= 400) this.reset();
  }
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Runs one handler call to completion or (Wait on a live process) until the next turn. */
async function settle<T>(p: Promise<T>): Promise<{ done: true; value?: T; err?: unknown } | { done: false; p: Promise<T> }> {
  let result: { done: true; value?: T; err?: unknown } | undefined;
  p.then(
    (value) => (result = { done: true, value }),
    (err: unknown) => (result = { done: true, err }),
  );
  for (let i = 0; i < 3 && !result; i++) await nextTurn();
  return result ?? { done: false, p };
}

// --- targets ------------------------------------------------------------------------------------

/** Every Task method, called through the same byte handlers both transports use. */
export function taskRequestsTarget(): FuzzTarget {
  const bed = new ServiceBed();
  const byMethod: Record<string, number> = {};
  return {
    name: 'task-requests',
    async run(rng) {
      const method = rng.pick(METHODS);
      const payload = requestPayload(method, rng);
      byMethod[method] = (byMethod[method] ?? 0) + 1;
      bed.tick();
      const decodable = decodes(method, payload);
      const outcome = await settle(bed.handlers[method]!(payload, { signal: bed.signal }));
      const check = (err: unknown): void => {
        if (err === undefined) {
          if (!decodable) throw new FuzzFinding('task-requests', `${method}: undecodable payload accepted`, payload);
          return;
        }
        const e = expectShimError('task-requests', err, Object.values(Code).filter((c): c is Code => typeof c === 'number'), payload);
        if (e.code === Code.Unavailable && decodable) return; // a Wait cut off by the reset
        checkStatus(`task-requests ${method}`, e.code, e.message, decodable, payload);
      };
      if (outcome.done) check(outcome.err);
      else bed.pending.push(outcome.p.then(() => check(undefined), check));
      if (bed.pending.length > 200) {
        bed.reset();
        const waits = bed.pending.splice(0);
        await Promise.all(waits);
      }
    },
    async teardown() {
      bed.reset();
      await Promise.all(bed.pending.splice(0));
    },
    stats: () => byMethod,
  };
}

export interface RequestClass {
  decodable: boolean;
  method: string;
  known: boolean;
}

/** What the server must make of a request body: decodable at both layers, a Task method or not. */
export function classifyBody(body: Buffer): RequestClass {
  let req: ReturnType<typeof decodeRequest>;
  try {
    req = decodeRequest(body);
  } catch {
    return { decodable: false, method: '?', known: false };
  }
  const known = (req.service === TASK_SERVICE_V2 || req.service === TASK_SERVICE_V3) && METHODS.includes(req.method);
  return { decodable: !known || decodes(req.method, Buffer.from(req.payload)), method: req.method, known };
}

/** A frame stream: mostly well-formed request frames around fuzzed bodies, sometimes raw noise. */
export function frameStream(rng: Rng, firstId = 1, classify = true): { bytes: Buffer; requests: Map<number, { decodable: boolean; method: string; known: boolean }>; lastId: number } {
  const parts: Buffer[] = [];
  const requests = new Map<number, { decodable: boolean; method: string; known: boolean }>();
  let id = firstId;
  const n = 1 + rng.int(6);
  for (let i = 0; i < n; i++) {
    const roll = rng.int(20);
    const method = rng.chance(0.9) ? rng.pick(METHODS) : randomString(rng);
    const service = rng.chance(0.9) ? rng.pick([TASK_SERVICE_V2, TASK_SERVICE_V3]) : randomString(rng);
    const payload = requestPayload(METHODS.includes(method) ? method : 'State', rng);
    let body = encodeRequest({
      service,
      method,
      payload,
      timeoutNano: rng.chance(0.1) ? BigInt(rng.pick([1, 1000, -1, 2 ** 40])) : 0n,
      metadata: rng.chance(0.1) ? [{ key: randomString(rng), value: randomString(rng) }] : [],
    });
    if (roll < 4) body = mutateProto(rng, body);
    else if (roll < 5) body = mutateBytes(rng, body);
    let type: number = MessageType.Request;
    if (roll === 5) type = rng.pick([0, 2, 3, 4, 255]);
    const flags = rng.chance(0.05) ? rng.u32() & 0xff : 0;
    let streamId = id;
    if (roll === 6) streamId = id + 1; // even
    else if (roll === 7) streamId = Math.max(1, id - 2); // re-used
    else id += 2;
    parts.push(encodeFrame(streamId, type, flags, body));
    if (!classify) continue;
    const { decodable, method: decodedMethod, known } = classifyBody(body);
    if (type === MessageType.Request && streamId % 2 === 1 && streamId >= firstId && !requests.has(streamId)) {
      requests.set(streamId, { decodable, method: decodedMethod, known });
    }
  }
  if (rng.chance(0.1)) {
    parts.push(mutateBytes(rng, encodeFrame(id, MessageType.Request, 0, Buffer.alloc(rng.int(8)))));
    id += 2;
  }
  return { bytes: Buffer.concat(parts), requests, lastId: id };
}

/** Splits bytes at random points (the decoder must not care how input is chunked). */
export function fragment(rng: Rng, bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const n = rng.chance(0.3) ? 1 + rng.int(3) : 1 + rng.int(bytes.length);
    out.push(bytes.subarray(pos, pos + n));
    pos += n;
  }
  return out;
}

function describeItems(items: DecodedItem[]): string {
  return items
    .map((i) => (i.kind === 'frame' ? `F${i.frame.streamId}:${i.frame.type}:${i.frame.flags}:${i.frame.payload.toString('hex')}` : i.kind === 'oversized' ? `O${i.header.length}` : 'V'))
    .join('|');
}

/** FrameDecoder: never throws, and the same bytes decode identically however they are chunked. */
export function frameDecoderTarget(): FuzzTarget {
  return {
    name: 'frame-decoder',
    run(rng) {
      let bytes: Buffer = frameStream(rng, 1, false).bytes;
      if (rng.chance(0.3)) bytes = mutateBytes(rng, bytes);
      // Small caps so "oversized" and "violation" paths are hit without megabytes of input.
      const opts = rng.chance(0.5) ? { maxMessageBytes: 64, maxDiscardBytes: 256 } : {};
      const whole = new FrameDecoder(opts).push(bytes);
      const pieces = new FrameDecoder(opts);
      const items: DecodedItem[] = [];
      for (const chunk of fragment(rng, bytes)) items.push(...pieces.push(chunk));
      if (describeItems(whole) !== describeItems(items)) throw new FuzzFinding('frame-decoder', 'chunking changed the decoded items', bytes);
    },
  };
}

/** A Duplex whose writes are captured and whose input the test pushes synchronously. */
class MemoryDuplex extends Duplex {
  readonly written: Buffer[] = [];
  constructor() {
    super({ read() {} });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.written.push(chunk);
    cb();
  }
  feed(chunk: Buffer): void {
    this.emit('data', chunk);
  }
}

/** The whole server stack (frames, stream ids, dispatch, deadlines) over an in-memory connection. */
export function ttrpcServerTarget(): FuzzTarget {
  const bed = new ServiceBed();
  let server: TtrpcServer;
  const reported: Error[] = [];
  let answered = 0;
  return {
    name: 'ttrpc-server',
    setup() {
      server = new TtrpcServer({ maxMessageBytes: 1 << 16, onError: (err) => reported.push(err) });
      const handlers: Record<string, (p: Buffer) => Promise<Uint8Array>> = {};
      for (const m of METHODS) handlers[m] = (p, ctx?: unknown) => bed.handlers[m]!(p, ctx as { signal: AbortSignal });
      server.register(TASK_SERVICE_V2, handlers);
      server.register(TASK_SERVICE_V3, handlers);
    },
    async run(rng) {
      bed.tick();
      const conn = new MemoryDuplex();
      server.serveConnection(conn);
      const { bytes, requests } = frameStream(rng);
      const input = rng.chance(0.2) ? mutateBytes(rng, bytes) : bytes;
      const fuzzedRaw = input !== bytes;
      for (const chunk of fragment(rng, input)) conn.feed(chunk);
      for (let i = 0; i < 3; i++) await nextTurn();
      for (const err of reported.splice(0)) {
        if (!/^ttrpc: closing connection: frame length/.test(err.message)) {
          throw new FuzzFinding('ttrpc-server', `reported ${err.message}`, input);
        }
      }
      const decoder = new FrameDecoder();
      for (const item of decoder.push(Buffer.concat(conn.written))) {
        if (item.kind !== 'frame') throw new FuzzFinding('ttrpc-server', `server wrote a broken frame (${item.kind})`, input);
        answered++;
        const { frame } = item;
        if (frame.type !== MessageType.Response) throw new FuzzFinding('ttrpc-server', `server wrote type ${frame.type}`, input);
        let res;
        try {
          res = decodeResponse(frame.payload);
        } catch (err) {
          throw new FuzzFinding('ttrpc-server', `server wrote an undecodable response: ${(err as Error).message}`, input);
        }
        if (!res.status || res.status.code === 0) continue;
        const req = fuzzedRaw ? undefined : requests.get(frame.streamId);
        // Raw-mutated streams: only the universal rules (no Internal, no runtime errors).
        checkStatus('ttrpc-server', res.status.code, res.status.message, req ? req.decodable : true, input);
        if (req && !req.known && req.decodable && res.status.code !== Code.Unimplemented && res.status.code !== Code.InvalidArgument && res.status.code !== Code.ResourceExhausted) {
          throw new FuzzFinding('ttrpc-server', `unknown method ${JSON.stringify(req.method)} answered ${res.status.code}`, input);
        }
      }
      conn.destroy();
    },
    async teardown() {
      bed.reset();
      await server.shutdown(100);
    },
    stats: () => ({ responses: answered }),
  };
}

/** The client side (what the shim's event publisher reads from containerd): hostile replies. */
export function ttrpcClientTarget(): FuzzTarget {
  return {
    name: 'ttrpc-client-replies',
    async run(rng) {
      const conn = new MemoryDuplex();
      const client = new TtrpcClient(conn, { maxMessageBytes: 1 << 12 });
      const calls = Array.from({ length: 1 + rng.int(3) }, () =>
        client.call('containerd.services.events.ttrpc.v1.Events', 'Forward', Buffer.from('x'), { timeoutMs: rng.chance(0.2) ? 1 : undefined }),
      );
      const outcomes = calls.map((c) => c.then(() => 'ok', (err: unknown) => err));
      const parts: Buffer[] = [];
      for (let i = 0; i < 1 + rng.int(4); i++) {
        const status = rng.chance(0.5) ? { code: rng.int(20), message: randomString(rng), details: [] } : undefined;
        let body = encodeResponse({ status, payload: rng.bytes(rng.int(10)) });
        if (rng.chance(0.5)) body = mutateProto(rng, body);
        parts.push(encodeFrame(rng.pick([1, 3, 5, 2, 7]), rng.chance(0.9) ? MessageType.Response : rng.int(256), 0, body));
      }
      let bytes: Buffer = Buffer.concat(parts);
      if (rng.chance(0.2)) bytes = mutateBytes(rng, bytes);
      for (const chunk of fragment(rng, bytes)) conn.feed(chunk);
      client.close();
      for (const o of await Promise.all(outcomes)) {
        if (o === 'ok') continue;
        if (!(o instanceof ShimError)) throw new FuzzFinding('ttrpc-client-replies', `call failed with ${String(o)}`, bytes);
      }
    },
  };
}

/** The four ttrpc envelope messages' own codec: typed errors only. */
export function envelopeCodecTarget(): FuzzTarget {
  const seeds = [
    encodeRequest({ service: TASK_SERVICE_V2, method: 'Connect', payload: Buffer.from([0x0a, 0x02, 0x74, 0x31]), timeoutNano: 5_000_000_000n, metadata: [{ key: 'containerd-namespace-ttrpc', value: 'default' }] }),
    encodeResponse({ status: { code: 5, message: 'not found', details: [{ typeUrl: 'x', value: Buffer.from('y') }] }, payload: Buffer.alloc(0) }),
  ];
  const envelope = codec<object>('containerd.services.events.ttrpc.v1.ForwardRequest');
  const envelopeSeed = envelope.encode({
    envelope: { timestamp: { seconds: 1, nanos: 2 }, namespace: 'default', topic: '/tasks/exit', event: { typeUrl: 'containerd.events.TaskExit', value: Buffer.from([0x0a, 0x02, 0x63, 0x31]) } },
  });
  return {
    name: 'envelopes',
    run(rng) {
      let bytes: Buffer = rng.chance(0.5) ? mutateProto(rng, rng.pick(seeds)) : mutateBytes(rng, rng.pick(seeds));
      for (const decode of [decodeRequest, decodeResponse]) {
        try {
          decode(bytes);
        } catch (err) {
          if (!(err instanceof ProtoDecodeError)) throw new FuzzFinding('envelopes', `threw ${(err as Error).name}: ${(err as Error).message}`, bytes);
        }
      }
      bytes = mutateProto(rng, envelopeSeed);
      try {
        const decoded = envelope.decode(bytes);
        // What decodes must encode again (the publisher re-sends queued envelopes).
        envelope.encode(decoded);
      } catch (err) {
        expectShimError('envelopes', err, [Code.InvalidArgument], bytes);
      }
    },
  };
}

// --- runtime options, start's stdin, TOML, options.json -----------------------------------------

const TOML_SEEDS = [
  'BinaryName = "/usr/sbin/runc"\nSystemdCgroup = false\n',
  '[options]\nBinaryName = "runc"\nRoot = "/run/containerd/runc"\nIoUid = 1000\nIoGid = 1000\nNoPivotRoot = true\n',
  'ShimCgroup = "/tshim"\nCriuPath = "/usr/sbin/criu"\nCriuImagePath = "/x"\nCriuWorkPath = "/y"\nNoNewKeyring = true\nNoSpareDaemon = true\n',
  '# comment\n[options]\n  BinaryName = \'\'\'multi\nline\'\'\'\n  IoUid = 0x10\n',
  'options = { BinaryName = "crun", SystemdCgroup = true }\nother = [1, 2, 3]\n',
];

const TOML_TOKENS = ['=', '"', "'", '[', ']', '[[', ']]', '{', '}', ',', '\n', '#', '.', 'true', 'false', '1e999', '-1', '4294967296', '0x', 'inf', 'nan', '1979-05-27T07:32:00Z', '"\\u0000"', '"""', 'options', 'BinaryName', 'IoUid', '\\', '\uFEFF', '\r'];

export function mutateToml(rng: Rng): string {
  let text = rng.pick(TOML_SEEDS);
  for (let i = 1 + rng.int(3); i > 0; i--) {
    const pos = rng.int(text.length + 1);
    switch (rng.int(4)) {
      case 0:
        text = text.slice(0, pos) + rng.pick(TOML_TOKENS) + text.slice(pos);
        break;
      case 1:
        text = text.slice(0, pos) + text.slice(pos + 1 + rng.int(6));
        break;
      case 2:
        text = mutateBytes(rng, Buffer.from(text)).toString('utf8');
        break;
      default:
        text += `\n${rng.pick(['BinaryName', 'Root', 'IoUid', 'IoGid', 'SystemdCgroup', 'options.BinaryName'])} = ${rng.pick(['"x"', '1', 'true', '[1]', '{}', '-5', '4294967295', '1.5', '"\\u00e9"'])}\n`;
    }
  }
  return text;
}

function runcOptionsSeed(rng: Rng): Buffer {
  return codec<object>('containerd.runc.v1.Options').encode(randomMessage(rng, 'containerd.runc.v1.Options'));
}

function lenField(no: number, bytes: Buffer): Buffer {
  return Buffer.concat([encodeVarint(BigInt((no << 3) | 2)), encodeVarint(BigInt(bytes.length)), bytes]);
}

/** runtimeoptions.v1.Options{type_url 1, config_path 2, config_body 3}. */
function criOptions(rng: Rng, files: string[]): Buffer {
  const parts = [lenField(1, Buffer.from('containerd.runc.v1.Options'))];
  if (rng.chance(0.3)) parts.push(lenField(2, Buffer.from(rng.pick(files))));
  else parts.push(lenField(3, Buffer.from(mutateToml(rng))));
  return Buffer.concat(parts);
}

/** An options Any of any of the accepted types, then mutated. */
export function optionsAny(rng: Rng, files: string[]): Buffer {
  const typeUrl = rng.pick(KNOWN_TYPE_URLS);
  let value: Buffer;
  if (typeUrl.endsWith('runtimeoptions.v1.Options')) value = criOptions(rng, files);
  else if (typeUrl.includes('RuncOptions')) value = codec<object>('containerd.linux.runc.RuncOptions').encode(randomMessage(rng, 'containerd.linux.runc.RuncOptions'));
  else if (typeUrl.includes('CreateOptions')) value = codec<object>('containerd.linux.runc.CreateOptions').encode(randomMessage(rng, 'containerd.linux.runc.CreateOptions'));
  else value = runcOptionsSeed(rng);
  let any = encodeAny({ typeUrl, value });
  if (rng.chance(0.6)) any = mutateProto(rng, any);
  return any;
}

/** Files a ConfigPath may name: fuzzed TOML, and the hostile kinds (FIFO, device, directory). */
export function optionFiles(dir: string, rng: Rng): string[] {
  const files: string[] = [];
  for (let i = 0; i < 8; i++) {
    const f = path.join(dir, `opts-${i}.toml`);
    fs.writeFileSync(f, mutateToml(rng));
    files.push(f);
  }
  const fifo = path.join(dir, 'opts.fifo');
  execFileSync('mkfifo', [fifo]);
  // A FIFO and /dev/zero hung or exhausted the reader before options.ts refused non-regular files.
  return [...files, dir, fifo, '/dev/zero', path.join(dir, 'missing.toml'), '/dev/null', '', 'relative.toml'];
}

export function optionsTarget(): FuzzTarget {
  let dir = '';
  let files: string[] = [];
  return {
    name: 'runtime-options',
    setup() {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-fuzz-opts-'));
      files = optionFiles(dir, new Rng(1));
    },
    async run(rng) {
      const bytes = optionsAny(rng, files);
      let any;
      try {
        any = (await import('../../src/common/wire')).decodeAny(bytes);
      } catch (err) {
        expectShimError('runtime-options', err, [Code.InvalidArgument], bytes);
        return;
      }
      try {
        checkOptionsShape('runtime-options', await decodeOptions(any), bytes);
      } catch (err) {
        if (err instanceof FuzzFinding) throw err;
        expectShimError('runtime-options', err, [Code.InvalidArgument], bytes);
      }
    },
    teardown() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function tomlTarget(): FuzzTarget {
  return {
    name: 'options-toml',
    run(rng) {
      const text = mutateToml(rng);
      try {
        const partial = parseTomlOptions(text);
        checkOptionsShape('options-toml', { ...DEFAULT_OPTIONS, ...partial }, text);
      } catch (err) {
        if (err instanceof FuzzFinding) throw err;
        expectShimError('options-toml', err, [Code.InvalidArgument], text);
      }
      const json = rng.chance(0.5) ? toOptionsJson({ ...DEFAULT_OPTIONS, ioUid: rng.int(5), binaryName: randomString(rng) }) : rng.pick(['{}', 'null', '[]', '1', '"x"', '{"io_uid":-1}', '{"root":5}', '{"binary_name":"x","ioUid":3.5}']);
      const mutated = rng.chance(0.7) ? mutateBytes(rng, Buffer.from(json)).toString('utf8') : json;
      try {
        checkOptionsShape('options-json', fromOptionsJson(mutated), mutated);
      } catch (err) {
        if (err instanceof FuzzFinding) throw err;
        expectShimError('options-json', err, [Code.InvalidArgument], mutated);
      }
    },
  };
}

/** start's stdin: an options Any or a containerd 2.3 BootstrapParams carrying one. */
export function startStdinTarget(): FuzzTarget {
  const id = 'fuzz-id';
  let dir = '';
  let files: string[] = [];
  return {
    name: 'start-stdin',
    setup() {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-fuzz-stdin-'));
      files = optionFiles(dir, new Rng(2));
    },
    async run(rng) {
      let bytes: Buffer;
      if (rng.chance(0.5)) {
        bytes = optionsAny(rng, files);
      } else {
        const bp = codec<object>('containerd.runtime.bootstrap.v1.BootstrapParams');
        const msg = randomMessage(rng, 'containerd.runtime.bootstrap.v1.BootstrapParams', 0, { instanceId: () => id });
        bytes = bp.encode(msg);
        // Extensions carrying a real options Any.
        if (rng.chance(0.7)) bytes = Buffer.concat([bytes, lenField(8, lenField(1, optionsAny(rng, files)))]);
        if (rng.chance(0.5)) bytes = mutateProto(rng, bytes);
      }
      try {
        const parsed = parseStartStdin(bytes, id);
        if (parsed.bootstrap) {
          for (const [k, v] of Object.entries(parsed.bootstrap)) {
            if (k === 'logLevel' ? !Number.isInteger(v) : typeof v !== 'string') throw new FuzzFinding('start-stdin', `bootstrap ${k} is ${typeof v}`, bytes);
          }
        }
        checkOptionsShape('start-stdin', await decodeOptions(parsed.options), bytes);
      } catch (err) {
        if (err instanceof FuzzFinding) throw err;
        expectShimError('start-stdin', err, [Code.InvalidArgument], bytes);
      }
    },
    teardown() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Exec's process spec JSON and a spare's adoption line: JSON from a peer. */
export function jsonInputsTarget(): FuzzTarget {
  const adoption = JSON.stringify({ v: 1, namespace: 'ns', id: 'c1', bundle: '/b', address: '/a', publishBinary: '', debug: false, socket: '/run/containerd/s/x', protocol: 'ttrpc', env: { A: 'b' } });
  return {
    name: 'json-inputs',
    run(rng) {
      const specText = rng.chance(0.2) ? rng.pick(['null', '[]', '1', '"x"', 'true', '{}', '{"args":null}']) : mutateBytes(rng, processSpec()).toString('utf8');
      try {
        const out = execProcessJson(Buffer.from(specText), rng.chance(0.5));
        if (JSON.parse(out) === null) throw new FuzzFinding('exec-spec', 'null spec accepted', specText);
      } catch (err) {
        if (err instanceof FuzzFinding) throw err;
        expectShimError('exec-spec', err, [Code.InvalidArgument], specText);
      }
      const line = rng.chance(0.2) ? rng.pick(['null', '[]', '1', '"x"', 'true', '{}', '{"v":1,"env":null}']) : mutateBytes(rng, Buffer.from(adoption)).toString('utf8');
      try {
        parseAdoptionRequest(line);
      } catch (err) {
        const e = err as Error;
        if (!(e instanceof SyntaxError) && !/^adoption request: /.test(e.message)) {
          throw new FuzzFinding('adoption-request', `threw ${e.name}: ${e.message}`, line);
        }
      }
    },
  };
}

export function inProcessTargets(): FuzzTarget[] {
  return [
    frameDecoderTarget(),
    ttrpcServerTarget(),
    ttrpcClientTarget(),
    envelopeCodecTarget(),
    taskRequestsTarget(),
    optionsTarget(),
    tomlTarget(),
    startStdinTarget(),
    jsonInputsTarget(),
  ];
}

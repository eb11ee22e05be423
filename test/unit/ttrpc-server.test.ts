import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError, notFound } from '../../src/common/errors';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { Frame, FrameDecoder, MessageType, encodeFrame } from '../../src/common/ttrpc/frame';
import { Request, decodeResponse, encodeRequest } from '../../src/common/ttrpc/messages';
import { CallContext, TtrpcServer, UnaryHandler } from '../../src/common/ttrpc/server';

const SERVICE = 'test.v1.Echo';
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

let dir: string;
let socketPath: string;
let netServer: net.Server;
let server: TtrpcServer;
let reported: Error[];
const cleanups: Array<() => void | Promise<void>> = [];

async function startServer(methods: Record<string, UnaryHandler>): Promise<void> {
  server = new TtrpcServer({ onError: (err) => reported.push(err) });
  server.register(SERVICE, methods);
  netServer = net.createServer();
  server.attach(netServer);
  await new Promise<void>((resolve, reject) => {
    netServer.once('error', reject);
    netServer.listen(socketPath, () => resolve());
  });
}

async function client(): Promise<TtrpcClient> {
  const c = await TtrpcClient.connect(socketPath);
  cleanups.push(() => c.close());
  return c;
}

/** A hand-driven peer for sending bytes the real client would never produce. */
class RawPeer {
  readonly socket: net.Socket;
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder();
  private readonly frames: Frame[] = [];
  private waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const item of this.decoder.push(chunk)) if (item.kind === 'frame') this.frames.push(item.frame);
      this.wake();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    void this.closed.then(() => this.wake());
  }

  static async connect(): Promise<RawPeer> {
    const socket = net.createConnection(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const peer = new RawPeer(socket);
    cleanups.push(() => {
      socket.destroy();
    });
    return peer;
  }

  send(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  request(streamId: number, req: Partial<Request>, type: number = MessageType.Request): void {
    this.send(encodeFrame(streamId, type, 0, encodeRequest(fullRequest(req))));
  }

  async next(timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.socket.destroyed) throw new Error('connection closed while waiting for a frame');
      if (Date.now() > deadline) throw new Error('timed out waiting for a frame');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 20);
      });
    }
    return this.frames.shift() as Frame;
  }

  /** Asserts nothing arrives for a while. */
  async expectSilence(ms: number): Promise<void> {
    await sleep(ms);
    expect(this.frames).toEqual([]);
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

function fullRequest(req: Partial<Request>): Request {
  return {
    service: SERVICE,
    method: 'Echo',
    payload: Buffer.alloc(0),
    timeoutNano: 0n,
    metadata: [],
    ...req,
  };
}

function statusOf(frame: Frame): { code: number; message: string } | undefined {
  expect(frame.type).toBe(MessageType.Response);
  const res = decodeResponse(frame.payload);
  return res.status && { code: res.status.code, message: res.status.message };
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await sleep(5);
  }
}

const echo: UnaryHandler = async (payload) => payload;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-ttrpc-'));
  socketPath = path.join(dir, 'ttrpc.sock');
  reported = [];
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await server?.shutdown(100);
  await new Promise<void>((resolve) => netServer?.close(() => resolve()));
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('TtrpcServer: calls', () => {
  it('round-trips a call and hands the handler its context', async () => {
    let seen: CallContext | undefined;
    await startServer({
      Echo: async (payload, ctx) => {
        seen = ctx;
        return Buffer.concat([Buffer.from('echo:'), payload]);
      },
    });
    const c = await client();
    const before = Date.now();
    const reply = await c.call(SERVICE, 'Echo', Buffer.from('hi'), {
      timeoutMs: 2000,
      metadata: { 'containerd-namespace-ttrpc': 'default' },
    });
    expect(reply.toString()).toBe('echo:hi');
    expect(seen?.service).toBe(SERVICE);
    expect(seen?.method).toBe('Echo');
    expect(seen?.metadata.get('containerd-namespace-ttrpc')).toEqual(['default']);
    expect(seen?.deadline).toBeGreaterThanOrEqual(before + 2000);
    expect(seen?.deadline).toBeLessThanOrEqual(Date.now() + 2000);
    expect(seen?.signal.aborted).toBe(false);

    const none = await c.call(SERVICE, 'Echo', Buffer.alloc(0));
    expect(none.toString()).toBe('echo:');
    expect(seen?.deadline).toBeUndefined();
    expect(reported).toEqual([]);
  });

  it('collects repeated metadata keys and answers an empty reply with a 0-length frame', async () => {
    let metadata: ReadonlyMap<string, readonly string[]> | undefined;
    await startServer({
      Echo: async (_payload, ctx) => {
        metadata = ctx.metadata;
        return new Uint8Array(0);
      },
    });
    const peer = await RawPeer.connect();
    peer.request(1, {
      metadata: [
        { key: 'a', value: '1' },
        { key: 'b', value: '' },
        { key: 'a', value: '2' },
      ],
    });
    const frame = await peer.next();
    expect(frame).toMatchObject({ streamId: 1, type: MessageType.Response, flags: 0, length: 0 });
    expect([...(metadata ?? [])]).toEqual([
      ['a', ['1', '2']],
      ['b', ['']],
    ]);
  });

  it('runs 50 calls concurrently and answers each as it completes', async () => {
    // Every handler waits until all 50 have started: a server that serialised calls would hang.
    interface Gate {
      entered: () => void;
      inside: Promise<void>;
      release: () => void;
      open: Promise<void>;
    }
    const gates: Gate[] = Array.from({ length: 10 }, () => {
      const gate = {} as Gate;
      gate.inside = new Promise<void>((resolve) => (gate.entered = resolve));
      gate.open = new Promise<void>((resolve) => (gate.release = resolve));
      return gate;
    });
    let started = 0;
    let allStarted: () => void = () => undefined;
    const barrier = new Promise<void>((resolve) => (allStarted = resolve));
    await startServer({
      Echo: async (payload) => {
        if (++started === 50) allStarted();
        await barrier;
        await sleep(Math.floor(Math.random() * 40));
        return Buffer.concat([payload, payload]);
      },
      // Completes when the test opens its gate: the test decides the completion order.
      Slow: async (payload) => {
        const gate = gates[payload[0] ?? 0] as Gate;
        gate.entered();
        await gate.open;
        return payload;
      },
    });
    const c = await client();
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) => c.call(SERVICE, 'Echo', Buffer.from(`#${i}`))),
    );
    expect(replies.map((r) => r.toString())).toEqual(Array.from({ length: 50 }, (_, i) => `#${i}#${i}`));
    expect(started).toBe(50);

    // The wire order follows completion, not request order: all ten calls are in their handlers,
    // then they are completed last-request-first and each reply must arrive before the next opens.
    const peer = await RawPeer.connect();
    peer.send(
      Buffer.concat(
        Array.from({ length: 10 }, (_, i) => {
          const req = fullRequest({ method: 'Slow', payload: Buffer.from([9 - i]) });
          return encodeFrame(2 * i + 1, MessageType.Request, 0, encodeRequest(req));
        }),
      ),
    );
    await Promise.all(gates.map((g) => g.inside));
    const order: number[] = [];
    // Payload p went out as stream 2(9-p)+1: opening gates 0..9 completes the last request first.
    for (let p = 0; p < 10; p++) {
      (gates[p] as Gate).release();
      order.push((await peer.next()).streamId);
    }
    expect(order).toEqual([19, 17, 15, 13, 11, 9, 7, 5, 3, 1]);
  });

  it('decodes requests split byte by byte and many requests coalesced in one write', async () => {
    await startServer({ Echo: echo });
    const peer = await RawPeer.connect();
    const frame = encodeFrame(1, MessageType.Request, 0, encodeRequest(fullRequest({ payload: Buffer.from('split') })));
    for (const byte of frame) {
      peer.send(Buffer.from([byte]));
      await sleep(1);
    }
    expect(decodeResponse((await peer.next()).payload).payload.toString()).toBe('split');

    const batch = Buffer.concat(
      [3, 5, 7, 9].map((id) =>
        encodeFrame(id, MessageType.Request, 0, encodeRequest(fullRequest({ payload: Buffer.from(`c${id}`) }))),
      ),
    );
    peer.send(batch);
    const got = new Map<number, string>();
    for (let i = 0; i < 4; i++) {
      const f = await peer.next();
      got.set(f.streamId, decodeResponse(f.payload).payload.toString());
    }
    expect([...got].sort((a, b) => a[0] - b[0])).toEqual([
      [3, 'c3'],
      [5, 'c5'],
      [7, 'c7'],
      [9, 'c9'],
    ]);
  });
});

describe('TtrpcServer: error statuses', () => {
  it('answers unknown services and methods with Unimplemented', async () => {
    await startServer({ Echo: echo });
    const c = await client();
    await expect(c.call('no.such.Service', 'Echo', Buffer.alloc(0))).rejects.toMatchObject({
      code: Code.Unimplemented,
      message: 'service no.such.Service',
    });
    await expect(c.call(SERVICE, 'Nope', Buffer.alloc(0))).rejects.toMatchObject({
      code: Code.Unimplemented,
      message: 'method Nope',
    });
    // Names inherited from Object.prototype are not methods.
    await expect(c.call(SERVICE, 'constructor', Buffer.alloc(0))).rejects.toMatchObject({
      code: Code.Unimplemented,
    });
  });

  it('rejects even and non-increasing stream ids', async () => {
    await startServer({ Echo: echo });
    const peer = await RawPeer.connect();
    peer.request(2, {});
    let f = await peer.next();
    expect(f.streamId).toBe(2);
    expect(statusOf(f)).toEqual({
      code: Code.InvalidArgument,
      message: 'StreamID must be odd for client initiated streams',
    });

    peer.request(5, { payload: Buffer.from('ok') });
    f = await peer.next();
    expect([f.streamId, statusOf(f)]).toEqual([5, undefined]);

    for (const reused of [5, 3]) {
      peer.request(reused, {});
      f = await peer.next();
      expect(f.streamId).toBe(reused);
      expect(statusOf(f)).toEqual({
        code: Code.InvalidArgument,
        message: 'StreamID cannot be re-used and must increment',
      });
    }
    peer.request(7, {});
    expect(statusOf(await peer.next())).toBeUndefined();
  });

  it('answers a malformed Request with InvalidArgument and keeps the connection', async () => {
    await startServer({ Echo: echo });
    const peer = await RawPeer.connect();
    peer.send(encodeFrame(1, MessageType.Request, 0, Buffer.from([0x0a, 0x09, 0x61])));
    const f = await peer.next();
    expect(f.streamId).toBe(1);
    expect(statusOf(f)?.code).toBe(Code.InvalidArgument);
    expect(statusOf(f)?.message).toMatch(/^unmarshal request error: /);
    peer.request(3, {});
    expect(statusOf(await peer.next())).toBeUndefined();
  });

  it('maps handler failures through toStatus', async () => {
    const enoent = Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT', errno: -2 });
    await startServer({
      Shim: async () => {
        throw notFound('container c1 not found');
      },
      Plain: async () => {
        throw new Error('boom');
      },
      NotAnError: async () => {
        throw 'just a string';
      },
      System: async () => {
        throw enoent;
      },
      Sync: (() => {
        throw new ShimError(Code.FailedPrecondition, 'thrown before any await');
      }) as UnaryHandler,
      BadResult: (async () => 'not bytes') as unknown as UnaryHandler,
    });
    const c = await client();
    const cases: Array<[string, Code, string]> = [
      ['Shim', Code.NotFound, 'container c1 not found'],
      ['Plain', Code.Unknown, 'boom'],
      ['NotAnError', Code.Unknown, 'just a string'],
      ['System', Code.Unknown, 'ENOENT: no such file'],
      ['Sync', Code.FailedPrecondition, 'thrown before any await'],
      ['BadResult', Code.Internal, 'handler returned a non-binary response'],
    ];
    for (const [method, code, message] of cases) {
      const err = await c.call(SERVICE, method, Buffer.alloc(0)).catch((e: unknown) => e);
      expect(err, method).toBeInstanceOf(ShimError);
      expect(err, method).toMatchObject({ code, message });
    }
  });

  it('replies DeadlineExceeded once when timeout_nano passes, aborts the handler and drops its late result', async () => {
    let signal: AbortSignal | undefined;
    let release: () => void = () => undefined;
    await startServer({
      Echo: echo,
      Hang: async (_payload, ctx) => {
        signal = ctx.signal;
        await new Promise<void>((resolve) => (release = resolve));
        return Buffer.from('too late');
      },
    });
    const peer = await RawPeer.connect();
    const started = Date.now();
    peer.request(1, { method: 'Hang', timeoutNano: 50_000_000n });
    const f = await peer.next();
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(f.streamId).toBe(1);
    expect(statusOf(f)).toEqual({ code: Code.DeadlineExceeded, message: 'context deadline exceeded' });
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toBeInstanceOf(ShimError);
    expect((signal?.reason as ShimError).code).toBe(Code.DeadlineExceeded);

    release();
    await peer.expectSilence(50);
    peer.request(3, { payload: Buffer.from('after') });
    const next = await peer.next();
    expect(next.streamId).toBe(3);
    expect(decodeResponse(next.payload).payload.toString()).toBe('after');
  });

  it('ignores non-positive timeouts and does not abort a completed call', async () => {
    let signal: AbortSignal | undefined;
    await startServer({
      Echo: async (payload, ctx) => {
        signal = ctx.signal;
        expect(ctx.deadline).toBeUndefined();
        await sleep(20);
        return payload;
      },
    });
    const peer = await RawPeer.connect();
    peer.request(1, { timeoutNano: -1n });
    expect(statusOf(await peer.next())).toBeUndefined();
    expect(signal?.aborted).toBe(false);
  });
});

describe('TtrpcServer: hostile and broken peers', () => {
  it('answers a 5 MiB request with ResourceExhausted and keeps serving the connection', async () => {
    await startServer({ Echo: echo });
    const peer = await RawPeer.connect();
    const body = Buffer.alloc(5 << 20, 0x61);
    peer.send(encodeFrame(1, MessageType.Request, 0, body));
    const f = await peer.next(20_000);
    expect(f.streamId).toBe(1);
    expect(statusOf(f)).toEqual({
      code: Code.ResourceExhausted,
      message: `message length ${5 << 20} exceeds maximum message size of ${4 << 20}`,
    });
    peer.request(3, { payload: Buffer.from('still here') });
    const g = await peer.next();
    expect(g.streamId).toBe(3);
    expect(decodeResponse(g.payload).payload.toString()).toBe('still here');
  });

  it('silently discards oversized non-request frames, unknown types and stray data frames', async () => {
    await startServer({ Echo: echo });
    const peer = await RawPeer.connect();
    peer.send(encodeFrame(1, MessageType.Response, 0, Buffer.alloc((4 << 20) + 1)));
    peer.send(encodeFrame(3, 0x7f, 0, Buffer.from('future frame type')));
    peer.send(encodeFrame(5, MessageType.Data, 0, Buffer.from('no such stream')));
    peer.send(encodeFrame(2, MessageType.Data, 0x04, Buffer.alloc(0)));
    peer.request(7, { payload: Buffer.from('answered') });
    const f = await peer.next(20_000);
    expect(f.streamId).toBe(7);
    expect(decodeResponse(f.payload).payload.toString()).toBe('answered');
    await peer.expectSilence(30);
  });

  it('closes a connection announcing a 100 MiB frame while other clients keep being served', async () => {
    await startServer({ Echo: echo });
    const good = await client();
    const bad = await RawPeer.connect();
    const header = Buffer.alloc(10);
    header.writeUInt32BE(100 << 20, 0);
    header.writeUInt32BE(1, 4);
    header[8] = MessageType.Request;
    bad.send(header);
    await bad.closed;
    expect((await good.call(SERVICE, 'Echo', Buffer.from('fine'))).toString()).toBe('fine');
    await waitFor(() => server.connectionCount === 1);
    expect(reported.map((e) => e.message).join('\n')).toMatch(/frame length 104857600/);
  });

  it('closes a connection that sends random garbage and keeps serving', async () => {
    await startServer({ Echo: echo });
    const good = await client();
    let seed = 12345;
    const garbage = Buffer.alloc(4096);
    for (let i = 0; i < garbage.length; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      garbage[i] = seed >>> 24;
    }
    const bad = await RawPeer.connect();
    bad.send(garbage);
    bad.socket.end();
    await bad.closed;
    await waitFor(() => server.connectionCount === 1);
    expect((await good.call(SERVICE, 'Echo', Buffer.from('ok'))).toString()).toBe('ok');
  });

  it('closes cleanly on a truncated frame followed by EOF', async () => {
    await startServer({ Echo: echo });
    const peer = await RawPeer.connect();
    await waitFor(() => server.connectionCount === 1);
    const frame = encodeFrame(1, MessageType.Request, 0, encodeRequest(fullRequest({ payload: Buffer.alloc(100) })));
    peer.send(frame.subarray(0, 40));
    peer.socket.end();
    await peer.closed;
    await waitFor(() => server.connectionCount === 0);
    await server.onIdle();
    expect(reported).toEqual([]);
  });

  it('aborts the handlers of a connection the client drops and discards their results', async () => {
    let signal: AbortSignal | undefined;
    let finish: () => void = () => undefined;
    await startServer({
      Hang: async (_payload, ctx) => {
        signal = ctx.signal;
        await new Promise<void>((resolve) => (finish = resolve));
        return Buffer.from('nobody listens');
      },
      Echo: echo,
    });
    const peer = await RawPeer.connect();
    peer.request(1, { method: 'Hang' });
    await waitFor(() => signal !== undefined);
    peer.socket.destroy();
    await waitFor(() => signal?.aborted === true);
    expect((signal?.reason as ShimError).code).toBe(Code.Unavailable);
    finish();
    await server.onIdle();
    const c = await client();
    expect((await c.call(SERVICE, 'Echo', Buffer.from('x'))).toString()).toBe('x');
    expect(reported).toEqual([]);
  });
});

describe('TtrpcServer: lifecycle', () => {
  it('rejects registering a service twice', async () => {
    await startServer({ Echo: echo });
    expect(() => server.register(SERVICE, { Echo: echo })).toThrow(ShimError);
  });

  it('fails pending client calls with Unavailable when the server goes away mid-call', async () => {
    let signal: AbortSignal | undefined;
    await startServer({
      Hang: async (_payload, ctx) => {
        signal = ctx.signal;
        return new Promise<Uint8Array>(() => undefined);
      },
    });
    const c = await client();
    const pending = c.call(SERVICE, 'Hang', Buffer.alloc(0));
    await waitFor(() => signal !== undefined);
    await server.shutdown(50);
    await expect(pending).rejects.toMatchObject({ code: Code.Unavailable });
    expect(signal?.aborted).toBe(true);
    expect(c.closed).toBe(true);
  });

  it('shuts down gracefully: waits for the in-flight call, then refuses new connections', async () => {
    // The handler signals that it runs and finishes only when the test says so: no sleep decides
    // whether the call is in flight when shutdown begins.
    let entered!: () => void;
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    await startServer({
      Slow: async () => {
        entered();
        await gate;
        return Buffer.from('done');
      },
    });
    const c = await client();
    const idle = await client();
    expect(server.connectionCount).toBe(2);
    const call = c.call(SERVICE, 'Slow', Buffer.alloc(0));
    await inHandler;
    let finished = false;
    const shutdown = server.shutdown(5000).then(() => {
      finished = true;
    });
    await sleep(100);
    expect(finished).toBe(false); // still waiting for the in-flight call
    release();
    await shutdown;
    // The reply was written before the connection was closed, so the call succeeds.
    expect((await call).toString()).toBe('done');
    expect(server.connectionCount).toBe(0);
    await waitFor(() => idle.closed && c.closed);
    await expect(TtrpcClient.connect(socketPath, { timeoutMs: 1000 })).rejects.toMatchObject({
      code: Code.Unavailable,
    });
  });

  it('serves a connection handed over directly and resolves onIdle when it closes', async () => {
    server = new TtrpcServer();
    server.register(SERVICE, { Echo: echo });
    netServer = net.createServer((socket) => server.serveConnection(socket));
    await new Promise<void>((resolve) => netServer.listen(socketPath, resolve));
    await server.onIdle();
    const c = await client();
    expect((await c.call(SERVICE, 'Echo', Buffer.from('direct'))).toString()).toBe('direct');
    const idle = server.onIdle();
    c.close();
    await idle;
    expect(server.connectionCount).toBe(0);
  });
});

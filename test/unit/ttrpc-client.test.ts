import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { Frame, FrameDecoder, MessageType, encodeFrame } from '../../src/common/ttrpc/frame';
import { Request, Response, decodeRequest, encodeResponse } from '../../src/common/ttrpc/messages';

/**
 * A hand-driven server so the client can be fed exactly the bytes a test needs, including
 * replies out of order, late, oversized or malformed.
 */
class RawServer {
  readonly requests: Array<{ frame: Frame; req: Request }> = [];
  sockets: net.Socket[] = [];
  private readonly server = net.createServer((socket) => this.onConnection(socket));
  private onRequest: (frame: Frame, req: Request, socket: net.Socket) => void = () => undefined;

  constructor(readonly socketPath: string) {}

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.socketPath, resolve));
  }

  handle(fn: (frame: Frame, req: Request, socket: net.Socket) => void): void {
    this.onRequest = fn;
  }

  reply(socket: net.Socket, streamId: number, res: Response): void {
    socket.write(encodeFrame(streamId, MessageType.Response, 0, encodeResponse(res)));
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(socket: net.Socket): void {
    this.sockets.push(socket);
    socket.on('error', () => undefined);
    const decoder = new FrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      for (const item of decoder.push(chunk)) {
        if (item.kind !== 'frame') continue;
        const req = decodeRequest(item.frame.payload);
        this.requests.push({ frame: item.frame, req });
        this.onRequest(item.frame, req, socket);
      }
    });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const ok = (payload: string): Response => ({ payload: Buffer.from(payload) });

let dir: string;
let raw: RawServer;
let clients: TtrpcClient[];

async function connect(): Promise<TtrpcClient> {
  const c = await TtrpcClient.connect(`unix://${raw.socketPath}`);
  clients.push(c);
  return c;
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-ttrpc-client-'));
  raw = new RawServer(path.join(dir, 's.sock'));
  clients = [];
  await raw.listen();
});

afterEach(async () => {
  for (const c of clients) c.close();
  await raw.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('TtrpcClient', () => {
  it('sends odd increasing stream ids with timeout_nano and metadata', async () => {
    raw.handle((frame, req, socket) => raw.reply(socket, frame.streamId, ok(`${req.method}:${req.payload}`)));
    const c = await connect();
    expect((await c.call('svc', 'A', Buffer.from('1'))).toString()).toBe('A:1');
    expect(
      (await c.call('svc', 'B', Buffer.from('2'), { timeoutMs: 1500, metadata: { k: 'v', ns: 'default' } })).toString(),
    ).toBe('B:2');
    expect((await c.call('svc', 'C', new Uint8Array([0x33]))).toString()).toBe('C:3');
    expect(raw.requests.map((r) => [r.frame.streamId, r.frame.type, r.frame.flags])).toEqual([
      [1, 1, 0],
      [3, 1, 0],
      [5, 1, 0],
    ]);
    expect(raw.requests[0]?.req.timeoutNano).toBe(0n);
    expect(raw.requests[1]?.req).toMatchObject({
      service: 'svc',
      method: 'B',
      timeoutNano: 1_500_000_000n,
      metadata: [
        { key: 'k', value: 'v' },
        { key: 'ns', value: 'default' },
      ],
    });
  });

  it('correlates concurrent calls answered out of order', async () => {
    const held: Array<[net.Socket, Frame, Request]> = [];
    raw.handle((frame, req, socket) => {
      held.push([socket, frame, req]);
      if (held.length === 20) {
        for (const [s, f, r] of held.reverse()) raw.reply(s, f.streamId, ok(`re:${r.payload}`));
      }
    });
    const c = await connect();
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => c.call('svc', 'M', Buffer.from(`${i}`))));
    expect(replies.map(String)).toEqual(Array.from({ length: 20 }, (_, i) => `re:${i}`));
  });

  it('turns an error status into a ShimError, with unknown codes as Unknown', async () => {
    raw.handle((frame, req, socket) => {
      const code = Number(req.method);
      const status = { code, message: `code ${code}`, details: [] };
      raw.reply(socket, frame.streamId, { status, payload: Buffer.alloc(0) });
    });
    const c = await connect();
    for (const [sent, expected] of [
      [5, Code.NotFound],
      [12, Code.Unimplemented],
      [99, Code.Unknown],
      [-3, Code.Unknown],
    ]) {
      const err = await c.call('svc', String(sent), Buffer.alloc(0)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ShimError);
      expect(err).toMatchObject({ code: expected, message: `code ${sent}` });
    }
    // A status present with code 0 is success.
    raw.handle((frame, _req, socket) =>
      raw.reply(socket, frame.streamId, { status: { code: 0, message: '', details: [] }, payload: Buffer.from('y') }),
    );
    expect((await c.call('svc', 'M', Buffer.alloc(0))).toString()).toBe('y');
  });

  it('rejects with DeadlineExceeded locally on timeout and ignores the late reply', async () => {
    const late: Array<() => void> = [];
    raw.handle((frame, req, socket) => {
      if (req.method === 'Slow') late.push(() => raw.reply(socket, frame.streamId, ok('late')));
      else raw.reply(socket, frame.streamId, ok('fast'));
    });
    const c = await connect();
    const started = Date.now();
    await expect(c.call('svc', 'Slow', Buffer.alloc(0), { timeoutMs: 50 })).rejects.toMatchObject({
      code: Code.DeadlineExceeded,
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    for (const send of late) send();
    expect((await c.call('svc', 'Fast', Buffer.alloc(0))).toString()).toBe('fast');
    expect(c.closed).toBe(false);
  });

  it('rejects with Canceled when the caller aborts, before or during the call', async () => {
    raw.handle(() => undefined);
    const c = await connect();
    await expect(c.call('svc', 'M', Buffer.alloc(0), { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: Code.Canceled,
    });
    const controller = new AbortController();
    const pending = c.call('svc', 'M', Buffer.alloc(0), { signal: controller.signal });
    await sleep(10);
    controller.abort();
    await expect(pending).rejects.toMatchObject({ code: Code.Canceled, message: 'context canceled' });
  });

  it('rejects pending and later calls with Unavailable when the server closes, and notifies once', async () => {
    raw.handle(() => undefined);
    const c = await connect();
    let notified = 0;
    c.onClose(() => notified++);
    const pending = [c.call('svc', 'A', Buffer.alloc(0)), c.call('svc', 'B', Buffer.alloc(0))];
    await sleep(10);
    for (const s of raw.sockets) s.destroy();
    for (const p of pending) await expect(p).rejects.toMatchObject({ code: Code.Unavailable });
    expect(c.closed).toBe(true);
    expect(notified).toBe(1);
    await expect(c.call('svc', 'C', Buffer.alloc(0))).rejects.toMatchObject({ code: Code.Unavailable });
    let lateListener = false;
    c.onClose(() => (lateListener = true));
    await sleep(0);
    expect(lateListener).toBe(true);
  });

  it('fails only the affected call on an oversized response', async () => {
    raw.handle((frame, req, socket) => {
      if (req.method === 'Big') {
        socket.write(encodeFrame(frame.streamId, MessageType.Response, 0, Buffer.alloc((4 << 20) + 1)));
      } else raw.reply(socket, frame.streamId, ok('small'));
    });
    const c = await connect();
    const big = c.call('svc', 'Big', Buffer.alloc(0));
    const small = c.call('svc', 'Small', Buffer.alloc(0));
    await expect(big).rejects.toMatchObject({ code: Code.ResourceExhausted });
    expect((await small).toString()).toBe('small');
    expect(c.closed).toBe(false);
  });

  it('refuses to send a request over the size limit', async () => {
    raw.handle((frame, _req, socket) => raw.reply(socket, frame.streamId, ok('x')));
    const c = await connect();
    await expect(c.call('svc', 'M', Buffer.alloc(5 << 20))).rejects.toMatchObject({ code: Code.ResourceExhausted });
    expect(raw.requests).toHaveLength(0);
    expect((await c.call('svc', 'M', Buffer.alloc(0))).toString()).toBe('x');
  });

  it('rejects a malformed response with Internal and closes on a protocol violation', async () => {
    raw.handle((frame, req, socket) => {
      if (req.method === 'Malformed') {
        socket.write(encodeFrame(frame.streamId, MessageType.Response, 0, Buffer.from([0x0a, 0x09])));
      } else socket.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'));
    });
    const c = await connect();
    await expect(c.call('svc', 'Malformed', Buffer.alloc(0))).rejects.toMatchObject({ code: Code.Internal });
    await expect(c.call('svc', 'Garbage', Buffer.alloc(0))).rejects.toMatchObject({ code: Code.Unavailable });
    expect(c.closed).toBe(true);
  });

  it('reports connection failures as Unavailable', async () => {
    await expect(TtrpcClient.connect(path.join(dir, 'missing.sock'))).rejects.toMatchObject({
      code: Code.Unavailable,
    });
    const c = await connect();
    c.close();
    expect(c.closed).toBe(true);
    await expect(c.call('svc', 'M', Buffer.alloc(0))).rejects.toMatchObject({ code: Code.Unavailable });
  });
});

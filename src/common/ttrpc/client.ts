/**
 * ttrpc client: unary calls multiplexed over one connection by odd, increasing stream ids.
 * Used for the shim → containerd event publisher and by tests; every failure surfaces as a
 * ShimError so callers can branch on the code the same way containerd does.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { Code, ShimError, deadlineExceeded, errnoCode, unavailable } from '../errors';
import { DecodedItem, DEFAULT_MAX_MESSAGE_BYTES, FrameDecoder, MessageType, encodeFrame } from './frame';
import { decodeResponse, encodeRequest, KeyValue, Response } from './messages';

export interface CallOptions {
  timeoutMs?: number;
  metadata?: Readonly<Record<string, string>>;
  signal?: AbortSignal;
}

interface PendingCall {
  resolve(payload: Buffer): void;
  reject(err: ShimError): void;
}

// Stream ids are uint32 on the wire; the last odd one.
const MAX_STREAM_ID = 0xffffffff;
// setTimeout fires after 1 ms for larger delays; such timeouts are only enforced by the server.
const MAX_TIMER_MS = 0x7fffffff;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export class TtrpcClient {
  private readonly decoder: FrameDecoder;
  private readonly maxMessageBytes: number;
  private readonly pending = new Map<number, PendingCall>();
  private readonly closeListeners: Array<() => void> = [];
  private nextStreamId = 1;
  private isClosed = false;

  constructor(
    private readonly conn: Duplex,
    options: { maxMessageBytes?: number } = {},
  ) {
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.decoder = new FrameDecoder({ maxMessageBytes: this.maxMessageBytes });
    conn.on('data', (chunk: Buffer) => this.onData(chunk));
    conn.on('end', () => this.shutdown('ttrpc: closed'));
    conn.on('error', (err: Error) => this.shutdown(`ttrpc: connection error: ${errnoCode(err) ?? err.message}`));
    conn.on('close', () => this.shutdown('ttrpc: closed'));
    if (conn.destroyed) this.shutdown('ttrpc: closed');
  }

  /** Dials a unix socket path (a `unix://` prefix is accepted) or, on Windows, a named pipe path. */
  static connect(socketPath: string, options: { timeoutMs?: number } = {}): Promise<TtrpcClient> {
    const path = socketPath.startsWith('unix://') ? socketPath.slice('unix://'.length) : socketPath;
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(deadlineExceeded(`ttrpc: timed out after ${timeoutMs} ms connecting to ${path}`));
      }, Math.min(Math.max(0, timeoutMs), MAX_TIMER_MS));
      const onError = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new ShimError(Code.Unavailable, `ttrpc: cannot connect to ${path}: ${err.message}`, { cause: err }));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(new TtrpcClient(socket));
      });
    });
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Runs once when the connection closes (immediately, on the next tick, if it already has). */
  onClose(listener: () => void): void {
    if (this.isClosed) queueMicrotask(() => runListener(listener));
    else this.closeListeners.push(listener);
  }

  close(): void {
    this.shutdown('ttrpc: client closed');
    this.conn.destroy();
  }

  /**
   * Resolves with the raw response payload; rejects with a ShimError carrying the status
   * code/message (Unavailable when the connection closes or cannot be used, DeadlineExceeded on
   * timeout, Canceled when `signal` aborts).
   */
  call(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Buffer> {
    if (this.isClosed) return Promise.reject(unavailable('ttrpc: closed'));
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(canceled(signal));
    if (this.nextStreamId > MAX_STREAM_ID) return Promise.reject(unavailable('ttrpc: stream ids exhausted'));

    const timeoutMs = options.timeoutMs !== undefined && options.timeoutMs > 0 ? options.timeoutMs : undefined;
    const metadata: KeyValue[] = Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value }));
    const body = encodeRequest({
      service,
      method,
      payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
      timeoutNano: timeoutMs === undefined ? 0n : BigInt(Math.ceil(timeoutMs * 1e6)),
      metadata,
    });
    if (body.length > this.maxMessageBytes) {
      return Promise.reject(
        new ShimError(
          Code.ResourceExhausted,
          `ttrpc: request message length ${body.length} exceeds maximum message size of ${this.maxMessageBytes}`,
        ),
      );
    }

    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return new Promise<Buffer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => settle(() => reject(canceled(signal)));
      const settle = (action: () => void): void => {
        // Whichever of reply, timeout, abort or close comes first wins; a late reply for this id
        // then finds no pending entry and is dropped.
        if (this.pending.get(id) !== entry) return;
        this.pending.delete(id);
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        action();
      };
      const entry: PendingCall = {
        resolve: (value) => settle(() => resolve(value)),
        reject: (err) => settle(() => reject(err)),
      };
      this.pending.set(id, entry);
      if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(() => entry.reject(deadlineExceeded('context deadline exceeded')), timeoutMs);
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.conn.write(encodeFrame(id, MessageType.Request, 0, body));
    });
  }

  private onData(chunk: Buffer): void {
    try {
      for (const item of this.decoder.push(chunk)) this.onItem(item);
    } catch (err) {
      // Only a bug can get here; fail the connection rather than throw from an event handler.
      this.shutdown(`ttrpc: internal error: ${err instanceof Error ? err.message : String(err)}`);
      this.conn.destroy();
    }
  }

  private onItem(item: DecodedItem): void {
    switch (item.kind) {
      case 'violation':
        this.shutdown(`ttrpc: protocol violation: ${item.reason}`);
        this.conn.destroy();
        return;
      case 'oversized':
        // Go's client also fails just the affected call and keeps the connection.
        this.pending
          .get(item.header.streamId)
          ?.reject(
            new ShimError(
              Code.ResourceExhausted,
              `message length ${item.header.length} exceeds maximum message size of ${item.maxMessageBytes}`,
            ),
          );
        return;
      case 'frame': {
        const { frame } = item;
        if (frame.type !== MessageType.Response) return;
        const call = this.pending.get(frame.streamId);
        if (!call) return;
        let response: Response;
        try {
          response = decodeResponse(frame.payload);
        } catch (err) {
          call.reject(new ShimError(Code.Internal, `ttrpc: malformed response: ${(err as Error).message}`));
          return;
        }
        const code = response.status?.code ?? Code.OK;
        if (code === Code.OK) call.resolve(response.payload);
        else call.reject(new ShimError(toCode(code), response.status?.message ?? ''));
        return;
      }
    }
  }

  private shutdown(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    const err = unavailable(reason);
    for (const call of [...this.pending.values()]) call.reject(err);
    for (const listener of this.closeListeners.splice(0)) runListener(listener);
  }
}

function runListener(listener: () => void): void {
  try {
    listener();
  } catch {
    /* a listener's failure must not stop the others or escape an event handler */
  }
}

function canceled(signal: AbortSignal | undefined): ShimError {
  const reason: unknown = signal?.reason;
  if (reason instanceof ShimError) return reason;
  return new ShimError(Code.Canceled, 'context canceled', { cause: reason });
}

/** gRPC treats codes it does not know as Unknown. */
function toCode(code: number): Code {
  return Number.isInteger(code) && code > 0 && code <= Code.Unauthenticated ? (code as Code) : Code.Unknown;
}

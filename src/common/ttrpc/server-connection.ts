/**
 * One accepted ttrpc connection on the server side: stream-id rules, concurrent dispatch,
 * deadlines, and teardown. Nothing here may throw out of a stream event handler — a misbehaving
 * peer costs at most its own connection.
 */
import type { Duplex } from 'node:stream';
import { Code, ShimError, deadlineExceeded, errnoCode, toStatus, unavailable } from '../errors';
import { DecodedItem, Frame, FrameDecoder, MessageType, encodeFrame } from './frame';
import type { CallContext, UnaryHandler } from './handler';
import { Request, decodeRequest, encodeResponse } from './messages';
import { stopReading } from '../upgrade/handles';
import type { ConnectionState, PendingCallState } from '../upgrade/state';

/** What a connection needs from the server that owns it. */
export interface ConnectionHost {
  readonly maxMessageBytes: number;
  /** Returns the handler, or a ShimError (Unimplemented) to send back. */
  resolve(service: string, method: string): UnaryHandler | ShimError;
  report(err: Error): void;
  closed(conn: ServerConnection): void;
}

interface ActiveCall {
  readonly controller: AbortController;
  timer: NodeJS.Timeout | undefined;
  readonly req: Request;
  readonly deadline: number | undefined;
}

/** Upgrade: where a connection taken over from an old image stood. */
export interface ConnectionResume {
  lastStreamId: number;
  /** bytes of a frame the old image had read only in part */
  buffered: Buffer;
}

type Outcome = { ok: true; payload: unknown } | { ok: false; err: unknown };

const EMPTY = Buffer.alloc(0);
// setTimeout silently fires after 1 ms for delays above this; longer deadlines get no timer.
const MAX_TIMER_MS = 0x7fffffff;
// A peer that resets or stops reading is ordinary churn, not something to log as a failure.
const ROUTINE_ERRNOS = new Set(['ECONNRESET', 'EPIPE', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

export class ServerConnection {
  private readonly decoder: FrameDecoder;
  private readonly active = new Map<number, ActiveCall>();
  private lastStreamId = 0;
  private isClosed = false;
  private draining = false;

  constructor(
    private readonly conn: Duplex,
    private readonly host: ConnectionHost,
    resume?: ConnectionResume,
  ) {
    this.decoder = new FrameDecoder({ maxMessageBytes: host.maxMessageBytes });
    if (resume) {
      this.lastStreamId = resume.lastStreamId;
      if (resume.buffered.length > 0) this.decoder.push(resume.buffered);
    }
    conn.on('data', (chunk: Buffer) => this.onData(chunk));
    // Like Go ttrpc, EOF from the client ends the connection; in-flight calls are abandoned.
    conn.on('end', () => this.destroy());
    conn.on('error', (err: Error) => {
      if (!ROUTINE_ERRNOS.has(errnoCode(err) ?? '')) this.host.report(err);
      this.destroy();
    });
    conn.on('close', () => this.markClosed());
    if (conn.destroyed) this.markClosed();
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Finish in-flight calls, then close. New requests that arrive meanwhile are still served. */
  drain(): void {
    this.draining = true;
    this.closeIfDrained();
  }

  /** Immediate close: in-flight handlers see their signal aborted and their results are dropped. */
  destroy(): void {
    this.markClosed();
    this.conn.destroy();
  }

  /** Upgrade: the underlying stream (its fd is handed over). */
  get stream(): Duplex {
    return this.conn;
  }

  /** Upgrade: stops reading; what was already read is still dispatched (it is in flight). */
  pauseReading(): void {
    for (const chunk of stopReading(this.conn)) this.onData(chunk);
  }

  resumeReading(): void {
    this.conn.resume();
  }

  /** Upgrade: the calls still running, as (stream id, method). */
  activeCalls(): Array<{ streamId: number; service: string; method: string }> {
    return [...this.active].map(([streamId, c]) => ({ streamId, service: c.req.service, method: c.req.method }));
  }

  /** Upgrade: nothing written is still queued in user space. */
  get flushed(): boolean {
    return this.conn.writableLength === 0;
  }

  /** Upgrade: where this connection stands, for the new image. */
  handover(fd: number): ConnectionState {
    return {
      fd,
      lastStreamId: this.lastStreamId,
      buffered: this.decoder.unconsumed().toString('base64'),
      pending: [...this.active].map(([streamId, c]) => {
        const p: PendingCallState = {
          streamId,
          service: c.req.service,
          method: c.req.method,
          payload: c.req.payload.toString('base64'),
          metadata: c.req.metadata.map((kv) => [kv.key, kv.value] as [string, string]),
        };
        if (c.deadline !== undefined) p.deadline = Math.ceil(c.deadline);
        return p;
      }),
    };
  }

  /**
   * Upgrade, new image: a call the old image had accepted and not answered, run again on its
   * stream id (Wait is idempotent). `extraMetadata` lets a handler know it is such a call.
   */
  resumeCall(p: PendingCallState, extraMetadata: Array<[string, string]> = []): void {
    const req: Request = {
      service: p.service,
      method: p.method,
      payload: Buffer.from(p.payload, 'base64'),
      timeoutNano: p.deadline === undefined ? 0n : BigInt(Math.max(1, p.deadline - Date.now())) * 1_000_000n,
      metadata: [...p.metadata, ...extraMetadata].map(([key, value]) => ({ key, value })),
    };
    const handler = this.host.resolve(req.service, req.method);
    if (handler instanceof ShimError) {
      this.sendStatus(p.streamId, handler.code, handler.message);
      return;
    }
    this.startCall(p.streamId, req, handler);
  }

  private onData(chunk: Buffer): void {
    try {
      for (const item of this.decoder.push(chunk)) {
        if (this.isClosed) return;
        this.onItem(item);
      }
    } catch (err) {
      // Only a bug can get here; losing one connection beats crashing the shim.
      this.host.report(err instanceof Error ? err : new Error(String(err)));
      this.destroy();
    }
  }

  private onItem(item: DecodedItem): void {
    switch (item.kind) {
      case 'violation':
        this.host.report(new Error(`ttrpc: closing connection: ${item.reason}`));
        this.destroy();
        return;
      case 'oversized':
        if (item.header.type === MessageType.Request) {
          this.sendStatus(
            item.header.streamId,
            Code.ResourceExhausted,
            `message length ${item.header.length} exceeds maximum message size of ${item.maxMessageBytes}`,
          );
        }
        return;
      case 'frame':
        // Data frames only belong to streaming calls, which no shim service has; other types are
        // reserved for future protocol versions. Both are ignored, as the spec requires.
        if (item.frame.type === MessageType.Request) this.onRequest(item.frame);
        return;
    }
  }

  private onRequest(frame: Frame): void {
    const id = frame.streamId;
    if (id % 2 !== 1) {
      this.sendStatus(id, Code.InvalidArgument, 'StreamID must be odd for client initiated streams');
      return;
    }
    if (id <= this.lastStreamId) {
      this.sendStatus(id, Code.InvalidArgument, 'StreamID cannot be re-used and must increment');
      return;
    }
    this.lastStreamId = id;

    let req: Request;
    try {
      req = decodeRequest(frame.payload);
    } catch (err) {
      this.sendStatus(id, Code.InvalidArgument, `unmarshal request error: ${toStatus(err).message}`);
      return;
    }
    const handler = this.host.resolve(req.service, req.method);
    if (handler instanceof ShimError) {
      this.sendStatus(id, handler.code, handler.message);
      return;
    }
    this.startCall(id, req, handler);
  }

  private startCall(id: number, req: Request, handler: UnaryHandler): void {
    // timeout_nano is relative; Go only applies it when positive.
    const deadline = req.timeoutNano > 0n ? Date.now() + Number(req.timeoutNano / 1000n) / 1000 : undefined;
    const call: ActiveCall = { controller: new AbortController(), timer: undefined, req, deadline };
    if (deadline !== undefined && deadline - Date.now() <= MAX_TIMER_MS) {
      call.timer = setTimeout(() => this.expire(id, call), Math.max(0, deadline - Date.now()));
    }
    const metadata = new Map<string, string[]>();
    for (const { key, value } of req.metadata) {
      const values = metadata.get(key);
      if (values) values.push(value);
      else metadata.set(key, [value]);
    }
    const ctx: CallContext = {
      service: req.service,
      method: req.method,
      metadata,
      deadline,
      signal: call.controller.signal,
    };
    this.active.set(id, call);

    let result: Promise<Uint8Array>;
    try {
      result = Promise.resolve(handler(req.payload, ctx));
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (payload) => this.complete(id, call, { ok: true, payload }),
      (err: unknown) => this.complete(id, call, { ok: false, err }),
    );
  }

  private complete(id: number, call: ActiveCall, outcome: Outcome): void {
    // Anything else means the deadline already answered this stream or the connection is gone.
    if (this.active.get(id) !== call) return;
    this.active.delete(id);
    if (call.timer) clearTimeout(call.timer);

    if (!outcome.ok) {
      const status = toStatus(outcome.err);
      this.sendStatus(id, status.code, status.message);
    } else if (!(outcome.payload instanceof Uint8Array)) {
      // Only reachable from untyped callers, but a reply must still go out.
      this.sendStatus(id, Code.Internal, 'handler returned a non-binary response');
    } else {
      const payload = outcome.payload;
      const body = encodeResponse({ payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) });
      if (body.length > this.host.maxMessageBytes) {
        this.sendStatus(
          id,
          Code.ResourceExhausted,
          `response message length ${body.length} exceeds maximum message size of ${this.host.maxMessageBytes}`,
        );
      } else {
        this.write(encodeFrame(id, MessageType.Response, 0, body));
      }
    }
    this.closeIfDrained();
  }

  private expire(id: number, call: ActiveCall): void {
    if (this.active.get(id) !== call) return;
    this.active.delete(id);
    call.timer = undefined;
    const err = deadlineExceeded('context deadline exceeded');
    call.controller.abort(err);
    this.sendStatus(id, err.code, err.message);
    this.closeIfDrained();
  }

  private sendStatus(id: number, code: Code, message: string): void {
    const body = encodeResponse({ status: { code, message, details: [] }, payload: EMPTY });
    this.write(encodeFrame(id, MessageType.Response, 0, body));
  }

  /**
   * Each frame is one write of one buffer, so frames can never interleave; ordering across
   * frames is whatever order calls complete in.
   */
  private write(frame: Buffer): void {
    if (this.isClosed || this.conn.writableEnded || this.conn.destroyed) return;
    this.conn.write(frame);
  }

  private closeIfDrained(): void {
    if (!this.draining || this.active.size > 0 || this.isClosed || this.conn.writableEnded) return;
    // end() first so queued responses are flushed; destroy once they are, in case the peer never
    // closes its side.
    this.conn.end(() => this.destroy());
  }

  private markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    const reason = unavailable('ttrpc: connection closed');
    for (const call of this.active.values()) {
      if (call.timer) clearTimeout(call.timer);
      call.controller.abort(reason);
    }
    this.active.clear();
    this.host.closed(this);
  }
}

/**
 * Task events to containerd: a strictly ordered queue, drained by one loop, over ttrpc
 * `Events/Forward` (containerd ≥ 1.3) or, lacking TTRPC_ADDRESS, the legacy `publish` binary.
 *
 * Consumers rely on order (start before exit, exec exits before the init exit, exit before
 * delete), so a failing event is retried in place at the head of the queue; nothing overtakes it.
 * Publishing never blocks or throws: callers are task RPC handlers that must not wait on
 * containerd's event service.
 */

import { spawn, type ChildProcess } from 'child_process';
import { Code, deadlineExceeded, ShimError, unavailable, unknown } from './errors';
import { logger } from './log';
import { codec, packAny, toTimestamp, type AnyMessage } from './proto';
import { TtrpcClient } from './ttrpc/client';
import { encodeAny } from './wire';
import type { EventState } from './upgrade/state';

export interface EventSink {
  /** eventType is the full proto name, e.g. 'containerd.events.TaskExit'. */
  publish(topic: string, eventType: string, event: object): void;
}

export interface EventEnvelope {
  timestamp: Date;
  namespace: string;
  topic: string;
  event: AnyMessage;
}

export interface ForwardTransport {
  /** Delivers one event; `signal` aborts the attempt (timeout or publisher closing). */
  forward(envelope: EventEnvelope, options?: { signal?: AbortSignal }): Promise<void>;
  /** Gets ready for the first event ahead of it (dials); a failure here is the first forward's to report. */
  prepare?(): void;
  close(): void;
}

export interface PublisherOptions {
  namespace: string;
  /** TTRPC_ADDRESS; a `unix://` prefix is optional. */
  ttrpcAddress?: string;
  publishBinary?: string;
  /** containerd's gRPC address (-address), used by the publish-binary fallback. */
  containerdAddress?: string;
  /** per attempt; default 5000, what containerd's own shims send as timeout_nano */
  forwardTimeoutMs?: number;
  /** attempts after the first one before an event is dropped; default 5 */
  maxRetries?: number;
  /** delay before retry number `attempt` (1-based); default attempt × 1 s, like the Go shim */
  retryDelayMs?: (attempt: number) => number;
  /** events waiting behind the one in flight; default 2048 */
  maxQueue?: number;
}

const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';
export const FORWARD_REQUEST = 'containerd.services.events.ttrpc.v1.ForwardRequest';
const NAMESPACE_METADATA = 'containerd-namespace-ttrpc';
const DEFAULT_FORWARD_TIMEOUT_MS = 5000;
const DEFAULT_CLOSE_TIMEOUT_MS = 5000;

function stripUnixScheme(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : address;
}

function abortError(signal: AbortSignal): ShimError {
  const reason: unknown = signal.reason;
  return reason instanceof ShimError ? reason : new ShimError(Code.Canceled, 'event forward canceled');
}

/** containerd.services.events.ttrpc.v1.Events/Forward over one lazily dialled connection. */
export class TtrpcForwardTransport implements ForwardTransport {
  private readonly path: string;
  private readonly timeoutMs: number;
  private client: TtrpcClient | undefined;
  private connecting: Promise<TtrpcClient> | undefined;
  private closed = false;

  constructor(address: string, options: { timeoutMs?: number } = {}) {
    this.path = stripUnixScheme(address);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
  }

  async forward(envelope: EventEnvelope, options: { signal?: AbortSignal } = {}): Promise<void> {
    const payload = codec<object>(FORWARD_REQUEST).encode({
      envelope: {
        timestamp: toTimestamp(envelope.timestamp),
        namespace: envelope.namespace,
        topic: envelope.topic,
        event: envelope.event,
      },
    });
    const send = async (client: TtrpcClient): Promise<void> => {
      await client.call(EVENTS_SERVICE, 'Forward', payload, {
        timeoutMs: this.timeoutMs,
        metadata: { [NAMESPACE_METADATA]: envelope.namespace },
        signal: options.signal,
      });
    };
    const client = await this.connection();
    try {
      await send(client);
    } catch (err) {
      // A connection that died under us (containerd restarted) is redialled once right away, as
      // the Go publisher does; other failures go back to the publisher's retry schedule.
      if (!(err instanceof ShimError) || err.code !== Code.Unavailable || !client.closed || this.closed) throw err;
      if (this.client === client) this.client = undefined;
      await send(await this.connection());
    }
  }

  /**
   * Dials now: the first event of a daemon is its container's TaskCreate, sent while containerd
   * waits for Create's reply, and dialling then put ~5 ms on that reply.
   */
  prepare(): void {
    this.connection().catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    this.client?.close();
    this.client = undefined;
  }

  private connection(): Promise<TtrpcClient> {
    if (this.closed) return Promise.reject(unavailable('event publisher is closed'));
    if (this.client && !this.client.closed) return Promise.resolve(this.client);
    this.connecting ??= TtrpcClient.connect(this.path, { timeoutMs: this.timeoutMs })
      .then((client) => {
        if (this.closed) {
          client.close();
          throw unavailable('event publisher is closed');
        }
        this.client = client;
        client.onClose(() => {
          if (this.client === client) this.client = undefined;
        });
        return client;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }
}

const MAX_STDERR_BYTES = 4096;

/**
 * The pre-ttrpc path: `<containerd> --address A publish --topic T --namespace N` with the event's
 * Any (not an Envelope) on stdin. containerd stamps the time itself.
 */
export class PublishBinaryTransport implements ForwardTransport {
  private readonly children = new Set<ChildProcess>();
  private readonly timeoutMs: number;

  constructor(
    private readonly binary: string,
    private readonly containerdAddress: string,
    options: { timeoutMs?: number } = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
  }

  forward(envelope: EventEnvelope, options: { signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const args = ['--address', this.containerdAddress, 'publish', '--topic', envelope.topic, '--namespace', envelope.namespace];
    return new Promise<void>((resolve, reject) => {
      const child = spawn(this.binary, args, { stdio: ['pipe', 'ignore', 'pipe'] });
      this.children.add(child);
      let stderr = '';
      let settled = false;
      const finish = (err?: ShimError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const kill = (err: ShimError): void => {
        child.kill('SIGKILL');
        finish(err);
      };
      const onAbort = (): void => kill(abortError(signal as AbortSignal));
      const timer = setTimeout(
        () => kill(deadlineExceeded(`${this.binary} publish timed out after ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      signal?.addEventListener('abort', onAbort, { once: true });

      child.stderr?.on('data', (chunk: Buffer) => {
        if (stderr.length < MAX_STDERR_BYTES) stderr += chunk.toString('utf8');
      });
      child.on('error', (err) => {
        this.children.delete(child);
        finish(unavailable(`cannot run publish binary ${this.binary}: ${err.message}`));
      });
      child.on('close', (code, sig) => {
        this.children.delete(child);
        if (code === 0) return finish();
        const how = code !== null ? `exit status ${code}` : `signal ${sig}`;
        finish(unknown(`${this.binary} publish failed (${how}): ${stderr.trim().slice(0, MAX_STDERR_BYTES)}`));
      });
      // A child that dies before reading stdin turns our write into EPIPE; its exit reports why.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(encodeAny(envelope.event));
    });
  }

  close(): void {
    for (const child of this.children) child.kill('SIGKILL');
    this.children.clear();
  }
}

interface QueuedEvent {
  timestamp: Date;
  topic: string;
  event: AnyMessage;
}

function selectTransport(o: PublisherOptions, timeoutMs: number): ForwardTransport | undefined {
  if (o.ttrpcAddress) return new TtrpcForwardTransport(o.ttrpcAddress, { timeoutMs });
  if (o.publishBinary) {
    if (o.containerdAddress) return new PublishBinaryTransport(o.publishBinary, o.containerdAddress, { timeoutMs });
    logger.warn('publish binary given without a containerd address; events will be discarded', {
      publish_binary: o.publishBinary,
    });
  }
  return undefined;
}

export class Publisher implements EventSink {
  private readonly namespace: string;
  private readonly transport: ForwardTransport | undefined;
  private readonly forwardTimeoutMs: number;
  private readonly maxRetries: number;
  private readonly retryDelayMs: (attempt: number) => number;
  private readonly maxQueue: number;

  /** Waiting events; the one being delivered is `inflight`, no longer in here. */
  private readonly queue: QueuedEvent[] = [];
  private inflight: QueuedEvent | undefined;
  private inflightAbort: AbortController | undefined;
  private draining: Promise<void> | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private wakeSleeper: (() => void) | undefined;
  private idleWaiters: Array<() => void> = [];
  /** upgrade: delivery stopped; events stay queued, in order */
  private suspended = false;

  constructor(options: PublisherOptions, transport?: ForwardTransport) {
    this.namespace = options.namespace;
    this.forwardTimeoutMs = options.forwardTimeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
    this.maxRetries = options.maxRetries ?? 5;
    this.retryDelayMs = options.retryDelayMs ?? ((attempt) => attempt * 1000);
    this.maxQueue = Math.max(1, options.maxQueue ?? 2048);
    this.transport = transport ?? selectTransport(options, this.forwardTimeoutMs);
  }

  /** Lets the transport get ready for the first event (a daemon calls it when it starts serving). */
  prepare(): void {
    if (!this.closed) this.transport?.prepare?.();
  }

  /** Events accepted but not yet delivered or dropped, including the one in flight. */
  get pending(): number {
    return this.queue.length + (this.inflight ? 1 : 0);
  }

  publish(topic: string, eventType: string, event: object): void {
    try {
      if (this.closed) {
        logger.warn('event publisher closed; event dropped', { topic });
        return;
      }
      if (!this.transport) {
        logger.info('no event transport; event discarded', { topic, type: eventType });
        return;
      }
      // Stamp and encode now: the envelope time is when it happened, and a caller mutating the
      // object afterwards cannot change what is sent.
      const queued: QueuedEvent = { timestamp: new Date(), topic, event: packAny(eventType, event) };
      if (this.queue.length >= this.maxQueue) {
        // Drop the oldest: after this many undelivered events containerd has been unreachable for
        // a long time and will resync task state through RPCs anyway; the newest events (latest
        // exits and deletes) describe the present and matter most to anyone still listening.
        const dropped = this.queue.shift() as QueuedEvent;
        logger.error('event queue full; dropping oldest event', { topic: dropped.topic, limit: this.maxQueue });
      }
      this.queue.push(queued);
      // drain() always awaits (the queue is non-empty here), so it cannot finish before this
      // assignment and leave a stale promise behind.
      if (!this.suspended) this.draining ??= this.drain();
    } catch (err) {
      logger.error('cannot publish event', { topic, type: eventType, error: err });
    }
  }

  /**
   * Upgrade: stops delivering after the event in flight; waits up to `graceMs` for the queue to
   * empty first. An event whose attempt is cut short goes back to the head of the queue (it may
   * then reach containerd twice, as any retried event may).
   */
  async suspend(graceMs: number): Promise<void> {
    if (this.pending > 0 && graceMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.suspended = true;
    this.wakeSleeper?.();
    this.inflightAbort?.abort(unavailable('event publisher suspended for an upgrade'));
    await this.draining;
  }

  /** Upgrade abandoned: delivers again. */
  resume(): void {
    this.suspended = false;
    if (this.queue.length > 0) this.draining ??= this.drain();
  }

  /** Upgrade: the undelivered events, oldest first. */
  handover(): EventState[] {
    return this.queue.map((e) => ({
      timestamp: e.timestamp.getTime(),
      topic: e.topic,
      typeUrl: e.event.typeUrl,
      value: e.event.value.toString('base64'),
    }));
  }

  /** Upgrade, new image: the old image's undelivered events go out first, with their own times. */
  restore(events: EventState[]): void {
    if (!this.transport || events.length === 0) return;
    const restored = events.map((e) => ({
      timestamp: new Date(e.timestamp),
      topic: e.topic,
      event: { typeUrl: e.typeUrl, value: Buffer.from(e.value, 'base64') },
    }));
    this.queue.unshift(...restored);
    this.draining ??= this.drain();
  }

  /** Waits until the queue is empty or timeoutMs passed, then drops the rest and closes connections. */
  close(timeoutMs = DEFAULT_CLOSE_TIMEOUT_MS): Promise<void> {
    this.closing ??= this.shutdown(timeoutMs);
    return this.closing;
  }

  private async shutdown(timeoutMs: number): Promise<void> {
    if (this.pending > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.closed = true;
    const undelivered = this.pending;
    if (undelivered > 0) logger.error('event publisher closed with undelivered events', { count: undelivered });
    this.queue.length = 0;
    this.wakeSleeper?.();
    this.inflightAbort?.abort(unavailable('event publisher is closed'));
    // The aborted attempt settles at once; wait for it so nothing is in flight after close.
    await this.draining;
    try {
      this.transport?.close();
    } catch (err) {
      logger.warn('closing event transport', { error: err });
    }
  }

  /** The single consumer: runs while events are queued, one at a time, in order. */
  private async drain(): Promise<void> {
    try {
      while (!this.closed && !this.suspended && this.queue.length > 0) {
        const item = this.queue.shift() as QueuedEvent;
        this.inflight = item;
        const delivered = await this.deliver(item);
        this.inflight = undefined;
        if (!delivered && this.suspended) this.queue.unshift(item);
      }
    } catch (err) {
      // deliver() handles its own failures; this only guards the loop against bugs.
      logger.error('event publisher loop failed', { error: err });
    } finally {
      this.inflight = undefined;
      this.draining = undefined;
      for (const waiter of this.idleWaiters.splice(0)) waiter();
    }
  }

  /** Tries one event until it is delivered or has used its retries; never throws. False: not delivered. */
  private async deliver(item: QueuedEvent): Promise<boolean> {
    const transport = this.transport as ForwardTransport;
    const envelope: EventEnvelope = { ...item, namespace: this.namespace };
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) await this.sleep(this.retryDelayMs(attempt));
      if (this.closed || this.suspended) return false;
      try {
        await this.attempt(transport, envelope);
        return true;
      } catch (err) {
        if (this.closed || this.suspended) return false;
        if (attempt >= this.maxRetries) {
          logger.error('dropping event after retries', { topic: item.topic, attempts: attempt + 1, error: err });
          return true;
        }
        logger.warn('forwarding event failed; will retry', { topic: item.topic, attempt: attempt + 1, error: err });
      }
    }
  }

  /** One forward bounded by the forward timeout, even if a transport ignores its signal. */
  private async attempt(transport: ForwardTransport, envelope: EventEnvelope): Promise<void> {
    const abort = new AbortController();
    this.inflightAbort = abort;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const err = deadlineExceeded(`forwarding ${envelope.topic} timed out after ${this.forwardTimeoutMs} ms`);
        abort.abort(err);
        reject(err);
      }, this.forwardTimeoutMs);
    });
    const aborted = new Promise<never>((_resolve, reject) => {
      abort.signal.addEventListener('abort', () => reject(abortError(abort.signal)), { once: true });
    });
    try {
      await Promise.race([transport.forward(envelope, { signal: abort.signal }), timedOut, aborted]);
    } finally {
      clearTimeout(timer);
      if (this.inflightAbort === abort) this.inflightAbort = undefined;
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.closed || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleeper = () => {
        this.wakeSleeper = undefined;
        done();
      };
    });
  }
}

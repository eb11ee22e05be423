/**
 * ttrpc server: a registry of unary services plus the set of live connections. Connections come
 * from a net.Server (unix socket today) or are handed in directly (an inherited fd, a Windows
 * named pipe), so the server never owns a listening socket itself beyond closing it on shutdown.
 */
import type { Server as NetServer } from 'node:net';
import type { Duplex } from 'node:stream';
import { ShimError, alreadyExists, invalidArgument, unimplemented } from '../errors';
import { settlesWithin } from '../settle';
import { DEFAULT_MAX_MESSAGE_BYTES } from './frame';
import type { UnaryHandler } from './handler';
import { ConnectionHost, ServerConnection, type ConnectionResume } from './server-connection';
export type { ServerConnection } from './server-connection';

export type { CallContext, UnaryHandler } from './handler';

export interface TtrpcServerOptions {
  /** default 4 MiB, the Go ttrpc limit */
  maxMessageBytes?: number;
  /** logging hook for protocol violations and unexpected connection errors */
  onError?: (err: Error) => void;
}

const DEFAULT_SHUTDOWN_TIMEOUT_MS = 5000;

export class TtrpcServer {
  private readonly services = new Map<string, ReadonlyMap<string, UnaryHandler>>();
  private readonly connections = new Set<ServerConnection>();
  private readonly listeners = new Set<NetServer>();
  private idleWaiters: Array<() => void> = [];
  private stopping = false;
  private readonly host: ConnectionHost;

  constructor(options: TtrpcServerOptions = {}) {
    const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (!Number.isInteger(maxMessageBytes) || maxMessageBytes <= 0) {
      throw invalidArgument(`maxMessageBytes must be a positive integer, got ${maxMessageBytes}`);
    }
    const onError = options.onError;
    this.host = {
      maxMessageBytes,
      resolve: (service, method) => this.resolve(service, method),
      report: (err) => {
        // A throwing logger must not turn a bad peer into a crashed shim.
        try {
          onError?.(err);
        } catch {
          /* the hook is best effort by contract */
        }
      },
      closed: (conn) => this.onConnectionClosed(conn),
    };
  }

  register(service: string, methods: Readonly<Record<string, UnaryHandler>>): void {
    if (this.services.has(service)) throw alreadyExists(`ttrpc service ${service} is already registered`);
    // Own enumerable keys only, copied into a Map: a request for "constructor" or "toString"
    // must be Unimplemented, not a call into Object.prototype.
    const table = new Map<string, UnaryHandler>();
    for (const [name, handler] of Object.entries(methods)) {
      if (typeof handler !== 'function') throw invalidArgument(`ttrpc method ${service}/${name} is not a function`);
      table.set(name, handler);
    }
    this.services.set(service, table);
  }

  /** Serve one already-connected duplex (unix socket now, Windows named pipe later). */
  serveConnection(conn: Duplex): void {
    if (this.stopping) {
      conn.destroy();
      return;
    }
    const connection = new ServerConnection(conn, this.host);
    if (!connection.closed) this.connections.add(connection);
  }

  /** Upgrade: the live connections. */
  get liveConnections(): readonly ServerConnection[] {
    return [...this.connections];
  }

  /** Upgrade, new image: a connection taken over from the old image, where it stood. */
  resumeConnection(conn: Duplex, resume: ConnectionResume): ServerConnection | undefined {
    const connection = new ServerConnection(conn, this.host, resume);
    if (connection.closed) return undefined;
    this.connections.add(connection);
    return connection;
  }

  /** Accept connections from a listening (or about to listen) net.Server. */
  attach(server: NetServer): void {
    this.listeners.add(server);
    server.on('connection', (socket: Duplex) => this.serveConnection(socket));
    server.once('close', () => this.listeners.delete(server));
    if (this.stopping) this.closeListener(server);
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Resolves when all connections are closed. */
  onIdle(): Promise<void> {
    if (this.connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Graceful: stop accepting, let in-flight calls finish (up to timeoutMs, default 5000), then close connections. */
  async shutdown(timeoutMs: number = DEFAULT_SHUTDOWN_TIMEOUT_MS): Promise<void> {
    this.stopping = true;
    for (const server of this.listeners) this.closeListener(server);
    for (const conn of this.connections) conn.drain();

    await settlesWithin(this.onIdle(), timeoutMs);
    // Whatever is still running past the grace period is cut off; handlers see their signal abort.
    for (const conn of [...this.connections]) conn.destroy();
    await this.onIdle();
  }

  private resolve(service: string, method: string): UnaryHandler | ShimError {
    const table = this.services.get(service);
    if (!table) return unimplemented(`service ${service}`);
    return table.get(method) ?? unimplemented(`method ${method}`);
  }

  private closeListener(server: NetServer): void {
    // close() reports "not running" through its callback for a server that never listened;
    // that is fine here, the goal is only that it stops accepting.
    server.close(() => undefined);
  }

  private onConnectionClosed(conn: ServerConnection): void {
    this.connections.delete(conn);
    if (this.connections.size > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

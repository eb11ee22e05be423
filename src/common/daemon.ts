/**
 * `serve`: wires the listener handed over by `start` (fd 3), a transport, the Task service, the
 * platform backend and the event publisher, then lives until Shutdown finds nothing left to serve.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Backend, Platform } from './backend';
import { protocolFromEnv, socketPath, type Protocol } from './bootstrap';
import type { ShimFlags } from './cli';
import { Publisher } from './events';
import { closeLogger, configureLogger, logger } from './log';
import { TaskService } from './service';
import { taskHandlers } from './task-handlers';
import { TtrpcServer } from './ttrpc/server';
import { TASK_SERVICE_V2, TASK_SERVICE_V3 } from './types';
import { RUNTIME_TYPE } from './version';

const SHUTDOWN_GRACE_MS = 5000;

export async function runDaemon(flags: ShimFlags, platform: Platform): Promise<void> {
  const bundle = flags.bundle || process.cwd();
  let logReady = false;
  const transport = platform.transport;
  const ensureLogger = (): void => {
    if (logReady) return;
    logReady = true;
    configureLogger({
      level: flags.debug ? 'debug' : 'info',
      ...(transport ? { stream: transport.logStream(flags, bundle) } : { fifoPath: path.join(bundle, 'log') }),
      fields: { namespace: flags.namespace, id: flags.id, runtime: RUNTIME_TYPE },
    });
  };
  // containerd's first Create waits for everything before the transport is attached; winston is
  // not needed to serve it, so at info level it loads right after, overlapping runc's own work.
  if (flags.debug) ensureLogger();
  guardProcess(ensureLogger);
  const protocol = protocolFromEnv();
  try {
    await serve(flags, bundle, protocol, platform);
  } catch (err) {
    ensureLogger();
    logger.error('shim failed to start', { error: err });
    await closeLogger();
    throw err;
  }
  setImmediate(() => {
    ensureLogger();
    logger.info('starting signal loop', { pid: process.pid, protocol });
  });
}

async function serve(flags: ShimFlags, bundle: string, protocol: Protocol, platform: Platform): Promise<void> {
  const publisher = new Publisher({
    namespace: flags.namespace,
    ttrpcAddress: process.env['TTRPC_ADDRESS'],
    publishBinary: flags.publishBinary,
    containerdAddress: flags.address,
  });
  const backend = await platform.loadBackend({ namespace: flags.namespace, debug: flags.debug });
  let stopping: Promise<void> | undefined;
  let listener: net.Server;
  let removeListener: () => void;
  if (platform.transport) {
    const opened = await platform.transport.listen(flags, bundle);
    listener = opened.server;
    removeListener = opened.remove;
  } else {
    listener = await openListener(flags);
    // Remembered now: in a group the address file may later be rewritten, and the socket is ours alone.
    const ownSocket = ownSocketPath(flags, bundle);
    removeListener = () => {
      if (ownSocket) fs.rmSync(ownSocket, { force: true });
    };
  }

  const service = new TaskService(backend, publisher, flags.namespace, {
    requestShutdown: () => {
      // Let the Shutdown reply leave before the transport closes.
      setImmediate(() => void (stopping ??= stop()));
    },
  });
  const handlers = taskHandlers(service);
  let closeTransport: () => Promise<void>;
  if (protocol === 'grpc') {
    const { createGrpcTaskServer } = await import('./grpc');
    const grpcServer = createGrpcTaskServer([TASK_SERVICE_V2, TASK_SERVICE_V3], handlers);
    listener.on('connection', (socket) => grpcServer.inject(socket));
    closeTransport = () => grpcServer.shutdown(SHUTDOWN_GRACE_MS);
  } else {
    const ttrpc = new TtrpcServer({ onError: (err) => logger.warn('ttrpc connection error', { error: err }) });
    ttrpc.register(TASK_SERVICE_V2, handlers);
    ttrpc.register(TASK_SERVICE_V3, handlers);
    ttrpc.attach(listener);
    closeTransport = () => ttrpc.shutdown(SHUTDOWN_GRACE_MS);
  }

  async function stop(): Promise<void> {
    logger.info('shim shutting down');
    listener.close();
    removeListener();
    await closeTransport().catch((err: unknown) => logger.warn('closing transport', { error: err }));
    await publisher.close(SHUTDOWN_GRACE_MS).catch(() => undefined);
    await closeBackend(backend);
    await closeLogger();
    process.exit(0);
  }

  platform.transport?.ready();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      logger.info('received signal', { signal: sig, containers: service.containerCount });
      stopping ??= stop();
    });
  }
}

async function openListener(flags: ShimFlags): Promise<net.Server> {
  const server = net.createServer({ pauseOnConnect: false });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (flags.socket) {
      const p = socketPath(flags.socket);
      fs.rmSync(p, { force: true });
      server.listen(p, () => resolve());
    } else {
      // `start` bound and listened already; fd 3 is that socket.
      server.listen({ fd: 3 }, () => resolve());
    }
  });
  server.on('error', (err) => logger.error('listener error', { error: err }));
  return server;
}

function ownSocketPath(flags: ShimFlags, bundle: string): string | undefined {
  if (flags.socket) return socketPath(flags.socket);
  try {
    const address = fs.readFileSync(path.join(bundle, 'address'), 'utf8').trim();
    return address.startsWith('unix://') ? socketPath(address) : undefined;
  } catch {
    return undefined; // no address file: nothing of ours to remove
  }
}

async function closeBackend(backend: Backend): Promise<void> {
  try {
    await backend.close();
  } catch (err) {
    logger.warn('closing backend', { error: err });
  }
}

/** The daemon must outlive any single bad request or native hiccup: log, never die. */
function guardProcess(ensureLogger: () => void): void {
  process.on('uncaughtException', (err) => {
    ensureLogger();
    logger.error('uncaught exception', { error: err });
  });
  process.on('unhandledRejection', (reason) => {
    ensureLogger();
    logger.error('unhandled rejection', { error: reason });
  });
  process.on('SIGPIPE', () => undefined);
  // Node's default for SIGUSR1 opens the inspector on localhost: never in a root daemon. Operators
  // send it for a stack dump, as to the Go shim, so that is what it does.
  process.on('SIGUSR1', () => {
    const report = process.report?.getReport() as { javascriptStack?: unknown; libuv?: unknown[] } | undefined;
    logger.info('SIGUSR1 dump', { stack: JSON.stringify(report?.javascriptStack), handles: report?.libuv?.length ?? 0 });
  });
}

/**
 * `serve`: wires the listener handed over by `start` (fd 3), a transport, the Task service, the
 * platform backend and the event publisher, then lives until Shutdown finds nothing left to serve.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Backend, Platform } from './backend';
import { listenPrivately, protocolFromEnv, socketPath, type Protocol } from './bootstrap';
import { daemonFlags, type ShimFlags } from './cli';
import { FORWARD_REQUEST, Publisher } from './events';
import { closeLogger, configureLogger, configureOnDemand, logger, preloadLogger } from './log';
import { TaskService } from './service';
import { taskHandlers } from './task-handlers';
import { TtrpcServer } from './ttrpc/server';
import { warmCodecs } from './proto';
import { EVENT_TOPICS, TASK_METHODS, TASK_SERVICE_V2, TASK_SERVICE_V3 } from './types';
import {
  DEFAULT_CONTAINERD_CHECK_MS, DEFAULT_SPARE_IDLE_MS, parseAdoptionRequest, readLine, secondsFromEnv,
  type AdoptionReply, type AdoptionRequest,
} from './spare';
import { RUNTIME_TYPE, shimVersion } from './version';
import {
  CONTROL_SERVICE, controlHandlers, handoverOf, isHoldingConnections, RESUMED_UPGRADE_METADATA, STATE_ENV, type HandoverHost,
} from './upgrade/handover';
import { decodeState, type DaemonIdentityState, type HandoverState } from './upgrade/state';

const SHUTDOWN_GRACE_MS = 5000;
/** How long a spare waits for the rest of an adoption request once `start` has connected. */
const ADOPTION_READ_MS = 5000;

/**
 * What a daemon serves and for whom: from argv/cwd/env at launch, from an adoption request, or from
 * an upgrade's state (which records the same fields; only ttrpc daemons are handed over).
 */
type DaemonIdentity = Omit<DaemonIdentityState, 'protocol'> & { protocol: Protocol };

/**
 * The daemon's logger is configured once it knows its bundle, and at info level only when needed.
 * Lines go to the bundle's `log` FIFO, or where the platform's transport says (Windows: a pipe).
 */
class DaemonLog {
  private ready = false;
  constructor(
    private identity?: DaemonIdentity,
    private readonly stream?: () => NodeJS.WritableStream | undefined,
  ) {
    if (identity) this.adopt(identity);
  }

  adopt(identity: DaemonIdentity): void {
    this.identity = identity;
    configureOnDemand(identity.debug ? 'debug' : 'info', this.ensure);
  }

  readonly ensure = (): void => {
    if (this.ready || !this.identity) return;
    this.ready = true;
    configureLogger({
      level: this.identity.debug ? 'debug' : 'info',
      ...(this.stream ? { stream: this.stream() } : { fifoPath: path.join(this.identity.bundle, 'log') }),
      fields: { namespace: this.identity.namespace, id: this.identity.id, runtime: RUNTIME_TYPE },
    });
  };
}

/** A unix-socket listener whose path (when there is one) is removed when the daemon stops. */
function socketListener(server: net.Server, ownSocket: string | undefined): DaemonListener {
  return { server, ownSocket, remove: () => ownSocket && fs.rmSync(ownSocket, { force: true }) };
}

/** Where a daemon listens, and what to remove from the filesystem when it stops. */
interface DaemonListener {
  server: net.Server;
  /** the unix socket path it owns, when it has one (handed over by an in-place upgrade) */
  ownSocket?: string | undefined;
  remove(): void;
}

export async function runDaemon(flags: ShimFlags, platform: Platform): Promise<void> {
  const identity: DaemonIdentity = {
    namespace: flags.namespace,
    id: flags.id,
    address: flags.address,
    publishBinary: flags.publishBinary,
    debug: flags.debug,
    bundle: flags.bundle || process.cwd(),
    ttrpcAddress: process.env['TTRPC_ADDRESS'],
    protocol: protocolFromEnv(),
  };
  const transport = platform.transport;
  const log = new DaemonLog(identity, transport ? () => transport.logStream(flags, identity.bundle) : undefined);
  const stateFile = process.env[STATE_ENV];
  if (stateFile) {
    delete process.env[STATE_ENV];
    await runRestoredDaemon(log, stateFile, platform);
    return;
  }
  // containerd's first Create waits for everything before the transport is attached, and winston
  // is not needed to serve it: at info level it loads for the first line worth writing (log.ts).
  if (flags.debug) log.ensure();
  guardProcess(log.ensure);
  try {
    const backend = await platform.loadBackend({ namespace: flags.namespace, debug: flags.debug });
    let listener: DaemonListener;
    if (transport) {
      listener = await transport.listen(flags, identity.bundle);
    } else {
      // Remembered now: in a group the address file may later be rewritten, and the socket is ours alone.
      const ownSocket = ownSocketPath(flags, identity.bundle);
      listener = socketListener(await openListener(flags), ownSocket);
    }
    await serve(identity, backend, listener, platform);
    transport?.ready();
  } catch (err) {
    await failedToStart(log, err);
    throw err;
  }
  // containerd on Windows dials the daemon's log pipe shortly after `start` and gives up if it is
  // not there: the pipe (and so the logger) must exist whether or not anything is logged. On Linux
  // the log is the bundle's FIFO, which containerd holds open anyway: the logger waits for a line.
  if (transport) setImmediate(log.ensure);
  announce(identity);
}

/**
 * The new image of an upgraded daemon (upgrade/handover.ts): same pid, same descriptors; the state
 * file says what they are. Nothing may be half-done here: the old image is gone.
 */
async function runRestoredDaemon(log: DaemonLog, stateFile: string, platform: Platform): Promise<void> {
  let state: HandoverState;
  try {
    state = decodeState(fs.readFileSync(stateFile, 'utf8'));
  } finally {
    fs.rmSync(stateFile, { force: true });
  }
  // Inherited without close-on-exec; runc and loggers must not inherit them in turn.
  const { setCloseOnExec } = await handoverOf(platform);
  for (const fd of state.fds) setCloseOnExec(fd, true);
  const identity: DaemonIdentity = { ...state.identity };
  log.adopt(identity);
  log.ensure();
  guardProcess(log.ensure);
  const backend = await platform.loadBackend({ namespace: identity.namespace, debug: identity.debug });
  backend.restoreReaper?.(state.strays);
  const listener = net.createServer({ pauseOnConnect: false });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen({ fd: state.listenerFd }, () => resolve());
  });
  await serve(
    identity,
    backend,
    socketListener(listener, state.ownSocket),
    platform,
    state,
  );
  logger.info('upgraded in place', { pid: process.pid, from: state.fromVersion, containers: state.containers.length });
}

async function failedToStart(log: DaemonLog, err: unknown): Promise<void> {
  log.ensure();
  logger.error('shim failed to start', { error: err });
  await closeLogger();
}

/**
 * The Go shim says this at info; here it is debug, so that a healthy daemon at info level has
 * nothing to write and never loads winston (log.ts: 2 MiB of private memory per daemon).
 */
function announce(identity: DaemonIdentity): void {
  setImmediate(() => logger.debug('starting signal loop', { pid: process.pid, protocol: identity.protocol }));
}

/**
 * What serving a first request costs beyond loading modules: protobufjs compiles each message
 * type's code on first use. A spare does it while idle, so adoption (which `start` waits for)
 * does not.
 */
function warmServe(): void {
  warmCodecs([
    ...Object.values(TASK_METHODS).flatMap((m) => [m.request, m.response]),
    ...Object.values(EVENT_TOPICS),
    FORWARD_REQUEST,
  ]);
}

/**
 * A spare daemon (spare.ts): everything a daemon loads is loaded now, then it idles on the socket
 * `start` handed it as fd 3 until a `start` asks it to serve a container, or until it retires:
 * idle too long, its containerd gone, or SIGTERM. Only its first successful adoption counts; after
 * that it is an ordinary daemon and its spare socket is gone.
 *
 * `warmed` runs once everything a first container needs is loaded (actions.ts).
 */
export async function runSpare(flags: ShimFlags, platform: Platform, warmed?: () => void): Promise<void> {
  if (platform.transport) throw new Error(`spare daemons are not used on ${platform.name}`);
  const log = new DaemonLog();
  guardProcess(log.ensure);
  await platform.warmUp?.();
  if (protocolFromEnv() === 'grpc') await import('./grpc');
  warmServe();
  // A daemon adopted with -debug logs from its first moment; one at info level may never load winston.
  if (flags.debug) preloadLogger();
  warmed?.();
  const spareListener = await openListener({ ...flags, socket: '' });
  spareListener.on('error', () => undefined); // accept errors (EMFILE) cost one adoption, not the spare

  const retire = (): void => {
    // A listener taken over as an fd is not unlinked by close(): the path is ours to remove.
    fs.rmSync(flags.spare, { force: true });
    process.exit(0);
  };
  const idle = setTimeout(retire, secondsFromEnv(process.env, 'TSHIM_SPARE_IDLE_SECONDS', DEFAULT_SPARE_IDLE_MS));
  const check = setInterval(() => {
    void containerdAnswers(flags.address).then((alive) => {
      if (!alive) retire();
    });
  }, secondsFromEnv(process.env, 'TSHIM_SPARE_CHECK_SECONDS', DEFAULT_CONTAINERD_CHECK_MS));
  process.on('SIGTERM', retire);
  process.on('SIGINT', retire);

  let adopting = false;
  const answer = (socket: net.Socket, reply: AdoptionReply): void => {
    if (!socket.destroyed) socket.end(`${JSON.stringify(reply)}\n`);
  };
  spareListener.on('connection', (socket: net.Socket) => {
    socket.on('error', () => undefined);
    void (async () => {
      let request: AdoptionRequest;
      try {
        request = parseAdoptionRequest(await readLine(socket, ADOPTION_READ_MS));
      } catch (err) {
        // a liveness probe (connect, hang up) lands here too
        answer(socket, { ok: false, code: 'INVALID', message: errorMessage(err) });
        return;
      }
      if (adopting) {
        answer(socket, { ok: false, code: 'BUSY', message: 'this spare is being adopted by another start' });
        return;
      }
      if (Date.now() > request.deadline) {
        // A spare still loading when start asked: start has given up (or is about to) and launches
        // a daemon of its own, which must not find this one on the container's socket.
        answer(socket, { ok: false, code: 'EXPIRED', message: 'adoption request arrived after its deadline' });
        return;
      }
      adopting = true;
      let listener: net.Server;
      try {
        listener = await listenPrivately(request.socket);
      } catch (err) {
        adopting = false;
        const code = (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ? 'EADDRINUSE' : 'FAILED';
        answer(socket, { ok: false, code, message: errorMessage(err) });
        return;
      }
      clearTimeout(idle);
      clearInterval(check);
      process.off('SIGTERM', retire);
      process.off('SIGINT', retire);
      // Nobody else may adopt this one; the next start makes a new spare on the same path. The path
      // goes first: once it is gone, nothing can connect, and a new spare's path is never ours to remove.
      fs.rmSync(flags.spare, { force: true });
      spareListener.close();
      const identity = takeIdentity(request, platform);
      log.adopt(identity);
      if (identity.debug) log.ensure();
      try {
        const backend = await platform.loadBackend({ namespace: identity.namespace, debug: identity.debug });
        await serve(identity, backend, socketListener(listener, request.socket), platform);
      } catch (err) {
        answer(socket, { ok: false, code: 'FAILED', message: errorMessage(err) });
        listener.close();
        await failedToStart(log, err);
        process.exit(1);
      }
      answer(socket, { ok: true, pid: process.pid });
      announce(identity);
    })();
  });
}

/**
 * Becomes, as far as anything can tell, the daemon `start` would have launched for `request`: its
 * environment, working directory (the bundle), stderr (the bundle's log FIFO) and, for `ps`, a
 * title with the flags a launched daemon has in its argv.
 */
function takeIdentity(request: AdoptionRequest, platform: Platform): DaemonIdentity {
  // Only what differs: the spare was started with this environment already, as a rule, and every
  // process.env write is a setenv/unsetenv (clearing and refilling it cost ~1 ms of adoption).
  for (const key of Object.keys(process.env)) if (!Object.prototype.hasOwnProperty.call(request.env, key)) delete process.env[key];
  for (const [key, value] of Object.entries(request.env)) if (process.env[key] !== value) process.env[key] = value;
  process.chdir(request.bundle);
  platform.redirectStderr?.(path.join(request.bundle, 'log'));
  try {
    // The argv a launched daemon has: tools that read /proc/PID/cmdline find the same words.
    const script = process.argv[1];
    const program = script && script !== process.execPath ? [process.execPath, script] : [process.execPath];
    process.title = [...program, ...daemonFlags(request)].join(' ');
  } catch {
    // a title is a courtesy
  }
  return {
    namespace: request.namespace,
    id: request.id,
    address: request.address,
    publishBinary: request.publishBinary,
    debug: request.debug,
    bundle: request.bundle,
    ttrpcAddress: request.env['TTRPC_ADDRESS'],
    protocol: request.protocol,
  };
}

/** False once containerd's socket is gone or refuses connections: a spare for it is useless. */
function containerdAnswers(address: string): Promise<boolean> {
  if (!address) return Promise.resolve(true);
  return new Promise((resolve) => {
    const socket = net.connect(socketPath(address));
    const done = (alive: boolean): void => {
      socket.destroy();
      resolve(alive);
    };
    socket.once('connect', () => done(true));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ENOENT' && err.code !== 'ECONNREFUSED'));
    socket.setTimeout(5000, () => done(true));
  });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function serve(
  identity: DaemonIdentity,
  backend: Backend,
  daemonListener: DaemonListener,
  platform: Platform,
  restored?: HandoverState,
): Promise<void> {
  const listener = daemonListener.server;
  const publisher = new Publisher({
    namespace: identity.namespace,
    ttrpcAddress: identity.ttrpcAddress,
    publishBinary: identity.publishBinary,
    containerdAddress: identity.address,
  });
  let stopping: Promise<void> | undefined;

  const service = new TaskService(backend, publisher, identity.namespace, {
    requestShutdown: () => {
      // No `start` may find this daemon from now on (group.ts: it would hand a container to a
      // daemon that is ending); connections already open keep being served.
      stopListening();
      // Let the Shutdown reply leave before the transport closes.
      setImmediate(() => void (stopping ??= stop()));
    },
  });
  if (restored) {
    await service.restoreContainers(restored.containers);
    publisher.restore(restored.events);
  }
  const handlers = taskHandlers(service);
  let closeTransport: () => Promise<void>;
  if (identity.protocol === 'grpc') {
    const { createGrpcTaskServer } = await import('./grpc');
    const grpcServer = createGrpcTaskServer([TASK_SERVICE_V2, TASK_SERVICE_V3], handlers);
    listener.on('connection', (socket) => grpcServer.inject(socket));
    closeTransport = () => grpcServer.shutdown(SHUTDOWN_GRACE_MS);
  } else {
    const ttrpc = new TtrpcServer({ onError: (err) => logger.warn('ttrpc connection error', { error: err }) });
    ttrpc.register(TASK_SERVICE_V2, handlers);
    ttrpc.register(TASK_SERVICE_V3, handlers);
    const host: HandoverHost = {
      identity: { ...identity, protocol: 'ttrpc' },
      listener,
      ownSocket: daemonListener.ownSocket,
      ttrpc,
      service,
      backend,
      publisher,
      launcher: launcherPath(),
      platform,
    };
    ttrpc.register(CONTROL_SERVICE, controlHandlers(host));
    if (restored) resumeConnections(ttrpc, host, restored);
    ttrpc.attach(listener);
    // During a hand-over a new connection is served but not read: the new image reads it.
    listener.prependListener('connection', () => {
      if (!isHoldingConnections()) return;
      setImmediate(() => {
        for (const c of ttrpc.liveConnections) c.pauseReading();
      });
    });
    closeTransport = () => ttrpc.shutdown(SHUTDOWN_GRACE_MS);
  }
  listener.on('error', (err) => logger.error('listener error', { error: err }));

  function stopListening(): void {
    if (listener.listening) listener.close();
    daemonListener.remove();
  }

  async function stop(): Promise<void> {
    logger.debug('shim shutting down');
    const since = Date.now();
    stopListening();
    await closeTransport().catch((err: unknown) => logger.warn('closing transport', { error: err }));
    await publisher.close(SHUTDOWN_GRACE_MS).catch(() => undefined);
    await closeBackend(backend);
    logger.debug('shim stopped', { ms: Date.now() - since });
    await closeLogger();
    process.exit(0);
  }

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      logger.info('received signal', { signal: sig, containers: service.containerCount });
      stopping ??= stop();
    });
  }
  publisher.prepare();
}

/** The launcher file this daemon runs from (what `start` spawned, or containerd for a spare). */
function launcherPath(): string {
  return path.resolve(process.argv[1] ?? '');
}

/** New image: the old image's connections where they stood, and the calls it left unanswered. */
function resumeConnections(ttrpc: TtrpcServer, host: HandoverHost, state: HandoverState): void {
  const pauseMicros = Number((process.hrtime.bigint() - BigInt(state.pausedAtNs)) / 1000n);
  host.resumed = {
    upgraded: true,
    pid: process.pid,
    oldVersion: state.fromVersion,
    newVersion: shimVersion(),
    message: '',
    pauseMicros,
    stateVersion: state.version,
    containers: state.containers.length,
    fds: state.fds.length,
  };
  for (const c of state.connections) {
    const socket = new net.Socket({ fd: c.fd, readable: true, writable: true });
    const conn = ttrpc.resumeConnection(socket, { lastStreamId: c.lastStreamId, buffered: Buffer.from(c.buffered, 'base64') });
    if (!conn) continue;
    for (const p of c.pending) {
      const resumedUpgrade = p.service === CONTROL_SERVICE && p.method === 'Upgrade';
      conn.resumeCall(p, resumedUpgrade ? [[RESUMED_UPGRADE_METADATA, '1']] : []);
    }
  }
  logger.info('hand-over done', { pauseMicros, connections: state.connections.length, containers: state.containers.length });
}

async function openListener(flags: ShimFlags): Promise<net.Server> {
  if (flags.socket) {
    const p = socketPath(flags.socket);
    fs.rmSync(p, { force: true });
    // 0600 whatever the umask: under umask 0 a plain listen made it 0777, open to every local user.
    return listenPrivately(p);
  }
  const server = net.createServer({ pauseOnConnect: false });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // `start` bound and listened already; fd 3 is that socket.
    server.listen({ fd: 3 }, () => resolve());
  });
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

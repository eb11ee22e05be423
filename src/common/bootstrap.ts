/**
 * The `start` action: pick the socket containerd's runc shim would pick, hand the listening socket
 * to a detached daemon as fd 3, write `address`, print it. It runs once per container and its
 * latency is what users feel, so it loads nothing the daemon alone needs.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { daemonFlags, type ShimFlags } from './cli';
import { groupingKey, groupPolicy, reserveDaemon } from './group';
import { sha256Hex } from './lazy-crypto';
import { forNodeStart } from './node-env';
import { fdOf } from './upgrade/handles';
import {
  ADOPTION_DEADLINE_MS, ADOPTION_VERSION, plainEnv, requestAdoption, spareEnabled, spareSocketPath, type AdoptionRequest,
} from './spare';

export const DEFAULT_SOCKET_DIR = '/run/containerd/s';
const UNIX_PATH_MAX = 106;

export type Protocol = 'ttrpc' | 'grpc';

export interface StartResult {
  /** what containerd reads on our stdout */
  output: string;
  address: string;
}

export function socketAddress(containerdAddress: string, namespace: string, key: string, dir = DEFAULT_SOCKET_DIR): string {
  const digest = sha256Hex(path.join(containerdAddress, namespace, key));
  return `unix://${path.join(dir, digest)}`;
}

export function socketPath(address: string): string {
  return address.replace(/^unix:\/\//, '');
}

export function protocolFromEnv(env: NodeJS.ProcessEnv = process.env): Protocol {
  return env['TSHIM_PROTOCOL'] === 'grpc' ? 'grpc' : 'ttrpc';
}

/**
 * containerd 1.6 only understands a bare address; the JSON form is for daemons that speak gRPC to
 * shims. containerd 2.x dials a gRPC shim by first connecting to the JSON `address` as a plain unix
 * socket path and then giving grpc-go `unix://` + address (core/runtime/v2/shim.go, grpcDialContext),
 * so the gRPC address must be the bare path; a ttrpc address keeps `unix://`, which its dialer strips.
 */
export function startOutput(address: string, protocol: Protocol): string {
  return protocol === 'grpc' ? JSON.stringify({ version: 3, address: socketPath(address), protocol: 'grpc' }) : address;
}

export interface StartInputs {
  flags: ShimFlags;
  /** the environment containerd gave us (default: process.env) */
  env?: NodeJS.ProcessEnv;
  bundle: string;
  /** raw stdin: an options Any, a 2.3 BootstrapParams, or nothing */
  stdin: Buffer;
  protocol: Protocol;
  /** argv to re-exec ourselves as the daemon */
  selfCommand: readonly string[];
}

export async function runStart(inputs: StartInputs): Promise<StartResult> {
  const { flags, bundle } = inputs;
  if (!flags.id) throw new Error('start: -id is required');
  if (!flags.namespace) throw new Error('start: -namespace is required');
  const { parseStartStdin, decodeOptions } = await import('./options');
  const parsed = parseStartStdin(inputs.stdin, flags.id);
  const { shimCgroup, noSpareDaemon, shimGroup } = await decodeOptions(parsed.options);
  const env = inputs.env ?? process.env;
  const dir = parsed.bootstrap?.socketDir || DEFAULT_SOCKET_DIR;
  const address = socketAddress(flags.address, flags.namespace, groupingKey(bundle, flags.id, groupPolicy(shimGroup, env)), dir);
  const sockPath = socketPath(address);
  if (Buffer.byteLength(sockPath) > UNIX_PATH_MAX) throw new Error(`socket path ${sockPath} is too long`);
  const spare = spareEnabled(env, !noSpareDaemon)
    ? spareSocketPath(dir, daemonCommand(inputs.selfCommand, env), flags.address, inputs.protocol)
    : undefined;

  fs.mkdirSync(path.dirname(sockPath), { recursive: true, mode: 0o700 });
  // A socket that exists is most likely a live daemon of the same pod: reuse it without asking a spare.
  const adopted = spare && !fs.existsSync(sockPath) ? await adoptSpare(inputs, spare, sockPath, env) : undefined;
  if (adopted !== undefined) {
    writeAddressFile(bundle, address);
    await placeOrKill(adopted, shimCgroup, sockPath);
    await spawnSpareQuietly(inputs, spare as string);
    return { output: startOutput(address, inputs.protocol), address };
  }
  const listener = await listenOrReserve(sockPath, flags.id, inputs.protocol);
  if (listener === 'reused') {
    writeAddressFile(bundle, address);
    return { output: startOutput(address, inputs.protocol), address };
  }
  try {
    writeAddressFile(bundle, address);
    const pid = spawnDaemon(inputs, listener);
    await placeOrKill(pid, shimCgroup, sockPath);
  } finally {
    // The daemon owns the socket now. Closing a Node unix server unlinks its path, so our copy
    // is only unref'd: it goes away with this process.
    listener.unref();
  }
  if (spare) await spawnSpareQuietly(inputs, spare);
  return { output: startOutput(address, inputs.protocol), address };
}

/**
 * V8 flags for the long-lived daemon (and spare); `start` and `delete` live too briefly to care.
 * A shim allocates little and briefly: a 1 MiB young generation instead of V8's default (up to
 * 16 MiB per semi-space) saves its pages without costing throughput we could measure (bench/).
 * TSHIM_DAEMON_NODE_FLAGS replaces them (empty: none).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

/** The command that runs a daemon: ourselves, with DAEMON_NODE_FLAGS when we are node + a script. */
export function daemonCommand(selfCommand: readonly string[], env: NodeJS.ProcessEnv): string[] {
  const override = env['TSHIM_DAEMON_NODE_FLAGS'];
  const flags = override === undefined ? DAEMON_NODE_FLAGS : override.split(/\s+/).filter((f) => f !== '');
  // A single executable has no script argument and takes no node flags on its command line.
  if (selfCommand.length < 2 || flags.length === 0) return [...selfCommand];
  return [selfCommand[0] as string, ...flags, ...selfCommand.slice(1)];
}

/** A daemon we cannot place must not live on: a retry would find it and reuse it unplaced. */
async function placeOrKill(pid: number, shimCgroup: string, sockPath: string): Promise<void> {
  try {
    await placeDaemon(pid, shimCgroup);
  } catch (err) {
    killQuietly(pid);
    fs.rmSync(sockPath, { force: true });
    throw err;
  }
}

/**
 * Hands the container to the spare daemon, if one is idle. Resolves with the adopted daemon's pid,
 * or undefined when `start` must launch a daemon itself (no spare, a busy or broken one, or a live
 * daemon already serving this socket, which the normal path then reuses).
 */
async function adoptSpare(inputs: StartInputs, spare: string, sockPath: string, env: NodeJS.ProcessEnv): Promise<number | undefined> {
  const { flags } = inputs;
  const request: AdoptionRequest = {
    v: ADOPTION_VERSION,
    namespace: flags.namespace,
    id: flags.id,
    bundle: path.resolve(inputs.bundle),
    address: flags.address,
    publishBinary: flags.publishBinary,
    debug: flags.debug,
    socket: sockPath,
    protocol: inputs.protocol,
    env: plainEnv({ ...env, TSHIM_PROTOCOL: inputs.protocol }),
    deadline: Date.now() + ADOPTION_DEADLINE_MS,
  };
  const reply = await requestAdoption(spare, request);
  return reply?.ok ? reply.pid : undefined;
}

/**
 * Starts the next spare. Never fails `start`: the spare is an optimisation, and when another start
 * is making one at the same moment, the socket is simply in use and this one is skipped.
 */
async function spawnSpareQuietly(inputs: StartInputs, spare: string): Promise<void> {
  let listener: net.Server | undefined;
  try {
    const taken = await listenOrReuse(spare);
    if (taken === 'reused') return; // another start made one a moment ago
    listener = taken;
    const { flags } = inputs;
    const [command, ...prefix] = daemonCommand(inputs.selfCommand, inputs.env ?? process.env);
    const args = [...prefix, '-spare', spare, '-address', flags.address, '-title-room', SPARE_TITLE_ROOM];
    // containerd at debug level passes -debug to every shim: the next container will want a logger.
    if (flags.debug) args.push('-debug');
    const child = spawn(command!, args, {
      cwd: '/',
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', listenerFd(listener)],
      env: forNodeStart({ ...(inputs.env ?? process.env), TSHIM_PROTOCOL: inputs.protocol }),
    });
    child.on('error', () => undefined);
    child.unref();
  } catch {
    // no spare this time; the next start tries again
  } finally {
    listener?.unref();
  }
}

/**
 * A spare's argv reserves room for the title it takes on adoption (`-namespace … -id …`), so `ps`
 * shows which container an adopted daemon serves, as it does for a daemon launched by `start`.
 */
const SPARE_TITLE_ROOM = '.'.repeat(200);

/** Listens on `sockPath`, or reports that a live shim already serves it (grouping). */
async function listenOrReuse(sockPath: string): Promise<net.Server | 'reused'> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await listenPrivately(sockPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      if (await isAlive(sockPath)) return 'reused';
      fs.rmSync(sockPath, { force: true });
    }
  }
  throw new Error(`socket ${sockPath} stays in use`);
}

/**
 * listenOrReuse for a container's own socket: a live daemon found there is reserved for the
 * container first (group.ts). One that is ending has unlinked its socket when it says so, and the
 * next attempt listens in its place. gRPC daemons do not serve tshim's ttrpc Control service and
 * are reused as they are.
 */
async function listenOrReserve(sockPath: string, id: string, protocol: Protocol): Promise<net.Server | 'reused'> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const listener = await listenOrReuse(sockPath);
    if (listener !== 'reused' || protocol === 'grpc') return listener;
    if ((await reserveDaemon(sockPath, id)) === 'reserved') return 'reused';
  }
  throw new Error(`socket ${sockPath}: its daemon neither takes container ${id} nor goes away`);
}

export function listenPrivately(sockPath: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    // The socket file is created 0600 from the start: no window where others may connect.
    const previous = process.umask(0o177);
    const restore = (): void => void process.umask(previous);
    server.once('error', (err) => {
      restore();
      reject(err);
    });
    server.listen({ path: sockPath, backlog: 128 }, () => {
      restore();
      resolve(server);
    });
  });
}

function isAlive(sockPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(sockPath);
    const done = (alive: boolean): void => {
      socket.destroy();
      resolve(alive);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.setTimeout(1000, () => done(false));
  });
}

export function writeAddressFile(bundle: string, address: string): void {
  const tmp = path.join(bundle, '.address');
  fs.writeFileSync(tmp, address, { mode: 0o644 });
  fs.renameSync(tmp, path.join(bundle, 'address'));
}

function listenerFd(server: net.Server): number {
  const fd = fdOf(server);
  if (fd < 0) throw new Error('listening socket has no fd');
  return fd;
}

/** Non-blocking, so no open ever waits on a reader; no reader (ENXIO) or no FIFO means no stderr. */
function openLogFifo(bundle: string): number | undefined {
  try {
    const file = path.join(bundle, 'log');
    if (!fs.statSync(file).isFIFO()) return undefined;
    return fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
}

function spawnDaemon(inputs: StartInputs, listener: net.Server): number {
  const { flags } = inputs;
  const [command, ...prefix] = daemonCommand(inputs.selfCommand, inputs.env ?? process.env);
  const args = [...prefix, ...daemonFlags(flags)];
  const logFd = openLogFifo(inputs.bundle);
  const child = spawn(command!, args, {
    cwd: inputs.bundle,
    detached: true, // own session: the daemon outlives `start` and containerd's process group
    // stderr goes to containerd's log FIFO (never our own pipe, which containerd reads to EOF), so
    // what the runtime itself prints when it dies (V8 out of memory, aborts) still reaches the log.
    stdio: ['ignore', 'ignore', logFd ?? 'ignore', listenerFd(listener)],
    env: forNodeStart({ ...process.env, TSHIM_PROTOCOL: inputs.protocol }),
  });
  if (logFd !== undefined) fs.closeSync(logFd);
  child.unref();
  if (child.pid === undefined) throw new Error('failed to spawn the shim daemon');
  return child.pid;
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** shim_cgroup and oom_score_adj, as the runc shim does; both best-effort where unprivileged. */
async function placeDaemon(pid: number, shimCgroup: string | undefined): Promise<void> {
  if (shimCgroup) {
    const { moveToCgroup } = await import('./shim-cgroup');
    moveToCgroup(pid, shimCgroup);
  }
  try {
    const parentScore = Number(fs.readFileSync(`/proc/${process.ppid}/oom_score_adj`, 'utf8').trim());
    const score = Math.max(-1000, Math.min(1000, parentScore + 1));
    fs.writeFileSync(`/proc/${pid}/oom_score_adj`, String(score));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ENOENT') throw err;
  }
}

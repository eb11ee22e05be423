/**
 * Helpers for driving the built shim binary the way containerd does, without containerd: run an
 * action with containerd 1.6's argv/env/cwd, find the daemon it left behind, poke its socket with
 * well-formed and hostile bytes, and clean up exactly what the tests created.
 *
 * Everything is scoped by a unique namespace and a private /tmp dir, and only pids found by that
 * namespace are ever signalled: other containerd daemons and shims may share the machine.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { codec } from '../../src/common/proto';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { FrameDecoder, MessageType, encodeFrame, type Frame } from '../../src/common/ttrpc/frame';
import { encodeRequest } from '../../src/common/ttrpc/messages';
import { TASK_SERVICE_V2, type ConnectRequest, type ConnectResponse } from '../../src/common/types';
import { processesMatching } from './fixtures/system';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const SHIM_BIN = path.join(REPO_ROOT, 'bin', 'containerd-shim-tshim-v2');
export const SOCKET_DIR = '/run/containerd/s';
export const PUBLISH_BINARY = '/usr/bin/containerd';

/** The options Any containerd 1.6 wrote on start's stdin for a runc-style runtime (spec §2.3). */
export const OBSERVED_OPTIONS_ANY = Buffer.concat([
  Buffer.from([0x0a, 0x1a]),
  Buffer.from('containerd.runc.v1.Options'),
  Buffer.from([0x12, 0x10, 0x32, 0x0e]),
  Buffer.from('/usr/sbin/runc'),
]);

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// --- one bundle per daemon ------------------------------------------------------------------------

/** A bundle dir plus the identity (namespace, id, fake containerd address) containerd would pass. */
export interface ShimBundle {
  readonly root: string;
  readonly dir: string;
  readonly namespace: string;
  readonly id: string;
  /** containerd's gRPC address as `-address`; nothing listens there, it only feeds the socket hash. */
  readonly address: string;
  /** `unix:///run/containerd/s/<sha256(join(address, namespace, id))>` */
  readonly expectedAddress: string;
  readonly socketPath: string;
}

export function makeBundle(tag: string, options: { withLogFifo?: boolean; address?: string } = {}): ShimBundle {
  const random = randomBytes(4).toString('hex');
  const root = fs.mkdtempSync(`/tmp/tshim-wire-${random}-`);
  const namespace = `tshim-wire-${tag}-${random}`;
  const id = `${tag}-${random}`;
  // containerd's layout ends in .../<ns>/<id>; `delete`'s default bundle is dirname(cwd)/<id>.
  const dir = path.join(root, namespace, id);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations: {} }));
  if (options.withLogFifo) mkfifo(path.join(dir, 'log'));
  const address = options.address ?? path.join(root, 'c.sock');
  const digest = createHash('sha256').update(path.join(address, namespace, id)).digest('hex');
  const socketPath = path.join(SOCKET_DIR, digest);
  return { root, dir, namespace, id, address, expectedAddress: `unix://${socketPath}`, socketPath };
}

function mkfifo(fifoPath: string): void {
  // Node has no mkfifo(2); coreutils does.
  execFileSync('mkfifo', ['-m', '0600', fifoPath]);
}

/** argv containerd 1.6 passes to `start` (spec §2.1). */
export function startArgs(b: ShimBundle, opts: { debug?: boolean } = {}): string[] {
  const args = ['-namespace', b.namespace, '-address', b.address, '-publish-binary', PUBLISH_BINARY, '-id', b.id];
  if (opts.debug) args.push('-debug');
  return [...args, 'start'];
}

/** argv containerd 1.6 passes to `delete` (spec §3). */
export function deleteArgs(b: ShimBundle): string[] {
  return ['-namespace', b.namespace, '-address', b.address, '-publish-binary', PUBLISH_BINARY, '-id', b.id, '-bundle', b.dir, 'delete'];
}

/** containerd 1.6's additions to a minimal service environment (spec §2.2). */
export function containerdEnv(b: ShimBundle, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    // The launcher is `#!/usr/bin/env node`: the node running the tests must be found first.
    PATH: `${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    GOMAXPROCS: '2',
    TTRPC_ADDRESS: `${b.address}.ttrpc`,
    // Nothing listens at a bundle's fake containerd address, so a spare would only idle until its
    // first check; spare-wire.test.ts switches them on where they are under test.
    TSHIM_SPARE: '0',
    ...extra,
  };
}

// --- running an action ------------------------------------------------------------------------------

export interface ShimRun {
  /** the action's own process (never the daemon it may leave behind) */
  pid: number;
  /** null when the run was killed for exceeding its timeout */
  code: number | null;
  stdout: Buffer;
  stderr: string;
  /** until both output pipes reached EOF, which is what containerd's CombinedOutput waits for */
  durationMs: number;
  timedOut: boolean;
}

export interface RunOptions {
  cwd: string;
  env: NodeJS.ProcessEnv;
  input?: Buffer;
  timeoutMs?: number;
}

/**
 * Execs the launcher itself (shebang and all, as containerd does) and waits for exit *and* EOF on
 * stdout/stderr: a daemon that inherited the pipes would keep them open and show up as a timeout.
 */
export function runShim(args: readonly string[], opts: RunOptions): Promise<ShimRun> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(SHIM_BIN, [...args], { cwd: opts.cwd, env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      // The pipes may be held open by a grandchild; stop waiting for their EOF.
      child.stdout.destroy();
      child.stderr.destroy();
    }, opts.timeoutMs ?? 10_000);
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({
        pid: child.pid ?? -1,
        code,
        stdout: Buffer.concat(stdout),
        stderr: Buffer.concat(stderr).toString('utf8'),
        durationMs: Date.now() - started,
        timedOut,
      });
    });
    child.stdin.on('error', () => undefined); // the shim may exit before reading stdin
    child.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}

// --- daemon processes ------------------------------------------------------------------------------

/** Daemons serving `namespace`: our binary, that namespace, and no action word. */
export async function daemonPids(namespace: string): Promise<number[]> {
  const found = await processesMatching(
    (argv) =>
      argv.includes(namespace) &&
      argv.some((a) => a.endsWith('containerd-shim-tshim-v2')) &&
      !argv.includes('start') &&
      !argv.includes('delete'),
  );
  return found.map((p) => p.pid).sort((a, b) => a - b);
}

/** Alive and not a zombie (an unreaped daemon must not count as serving). */
export function isAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X';
}

export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 25): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await delay(stepMs);
  }
}

// --- protocol helpers ---------------------------------------------------------------------------------

const connectRequest = codec<ConnectRequest>('containerd.task.v2.ConnectRequest');
const connectResponse = codec<ConnectResponse>('containerd.task.v2.ConnectResponse');

export function encodeConnect(id: string): Buffer {
  return connectRequest.encode({ id });
}

export function decodeConnect(payload: Uint8Array): ConnectResponse {
  return connectResponse.decode(payload);
}

/** A fresh, well-behaved client: Connect over a new connection, then close it. */
export async function connectOnce(socketPath: string, id: string, service = TASK_SERVICE_V2): Promise<ConnectResponse> {
  const client = await TtrpcClient.connect(socketPath, { timeoutMs: 3000 });
  try {
    return decodeConnect(await client.call(service, 'Connect', encodeConnect(id), { timeoutMs: 3000 }));
  } finally {
    client.close();
  }
}

/** A request frame body as a ttrpc client would encode it. */
export function requestBody(service: string, method: string, payload: Uint8Array): Buffer {
  return encodeRequest({ service, method, payload: Buffer.from(payload), timeoutNano: 0n, metadata: [] });
}

export function requestFrame(streamId: number, body: Uint8Array): Buffer {
  return encodeFrame(streamId, MessageType.Request, 0, body);
}

/**
 * A raw client connection for sending arbitrary bytes: collects whatever frames come back and
 * notices when the server closes its side.
 */
export class RawConnection {
  private readonly decoder = new FrameDecoder();
  private readonly frames: Frame[] = [];
  private readonly waiters: Array<() => void> = [];
  private serverClosed = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const item of this.decoder.push(chunk)) if (item.kind === 'frame') this.frames.push(item.frame);
      this.wake();
    });
    // A reset from the server is as much "closed" as a FIN.
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.serverClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  static open(socketPath: string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: socketPath });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawConnection(socket));
      });
    });
  }

  get isClosed(): boolean {
    return this.serverClosed;
  }

  /** Frames received and not yet taken by frameFor. */
  get unclaimedFrames(): number {
    return this.frames.length;
  }

  write(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(bytes, (err) => (err ? reject(err) : resolve())));
  }

  /** The next frame for `streamId`, or undefined if none arrives within timeoutMs or the server closes. */
  async frameFor(streamId: number, timeoutMs: number): Promise<Frame | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.frames.findIndex((f) => f.streamId === streamId);
      if (index >= 0) return this.frames.splice(index, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0 || this.serverClosed) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** True if the server closed the connection within timeoutMs. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([this.closed.then(() => true as const), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }
}

// --- cleanup ------------------------------------------------------------------------------------

/**
 * What the tests created: bundles (temp dirs, their namespace's daemons and sockets) and
 * readers. `cleanup()` SIGKILLs only daemons found by our unique namespaces.
 */
export class Scratch {
  private readonly bundles: ShimBundle[] = [];
  private readonly closers: Array<() => void> = [];

  bundle(tag: string, options: { withLogFifo?: boolean; address?: string } = {}): ShimBundle {
    const b = makeBundle(tag, options);
    this.bundles.push(b);
    return b;
  }

  onCleanup(close: () => void): void {
    this.closers.push(close);
  }

  /** Returns what had to be force-cleaned, so a test can tell a leak from a clean exit. */
  async cleanup(): Promise<string[]> {
    const forced: string[] = [];
    for (const close of this.closers.splice(0)) {
      try {
        close();
      } catch {
        // best effort
      }
    }
    for (const b of this.bundles.splice(0)) {
      for (const pid of await daemonPids(b.namespace)) {
        if (!isAlive(pid)) continue;
        forced.push(`killed daemon ${pid} (${b.namespace})`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      if (fs.existsSync(b.socketPath)) {
        forced.push(`removed socket ${b.socketPath}`);
        fs.rmSync(b.socketPath, { force: true });
      }
      fs.rmSync(b.root, { recursive: true, force: true });
      // `runc delete` (run by the delete action) creates its per-namespace root; ours is unique.
      try {
        fs.rmdirSync(path.join('/run/containerd/runc', b.namespace));
      } catch {
        // absent, or not empty (then it is not only ours to judge)
      }
    }
    return forced;
  }
}

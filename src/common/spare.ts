/**
 * Spare daemons: a daemon started ahead of need, idle on a root-only socket, that the next `start`
 * adopts instead of launching a fresh one. A Node daemon needs far longer to load than containerd
 * waits between `start` and its first Create, so without a spare that load is on every container's
 * critical path; with one, `start` only hands over the container's identity and prints the address.
 *
 * This module holds what both sides share and what `start` needs, so it loads nothing heavy: the
 * adoption request/reply (one JSON line each way over the spare's unix socket), the spare's socket
 * name, and when a spare may be used at all.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { sha256Hex } from './lazy-crypto';
import type { Protocol } from './bootstrap';

export const ADOPTION_VERSION = 1;
/** An idle spare exits after this long (TSHIM_SPARE_IDLE_SECONDS overrides). */
export const DEFAULT_SPARE_IDLE_MS = 10 * 60_000;
/** How often an idle spare checks that its containerd still answers. */
export const DEFAULT_CONTAINERD_CHECK_MS = 10_000;
/** A request or reply line is small (the environment dominates); anything bigger is hostile. */
export const MAX_ADOPTION_LINE = 1 << 20;
/** start gives a spare this long to answer before it launches a daemon of its own. */
const ADOPTION_TIMEOUT_MS = 3_000;
/** A spare accepts a request only this long after start sent it (the rest is room to answer). */
export const ADOPTION_DEADLINE_MS = 2_000;

/** Everything a daemon learns from containerd at launch: argv, environment and working directory. */
export interface AdoptionRequest {
  v: number;
  namespace: string;
  id: string;
  bundle: string;
  /** containerd's gRPC address (`-address`) */
  address: string;
  publishBinary: string;
  debug: boolean;
  /** the container's socket path the daemon is to listen on */
  socket: string;
  protocol: Protocol;
  /** the environment containerd gave `start`, which the daemon would have inherited */
  env: Record<string, string>;
  /**
   * ms since the epoch after which the spare must refuse: `start` stops waiting soon after, and a
   * spare that took the container once start has given up would serve a daemon nobody placed.
   */
  deadline: number;
}

export type AdoptionReply =
  | { ok: true; pid: number }
  | { ok: false; code: 'EADDRINUSE' | 'BUSY' | 'INVALID' | 'EXPIRED' | 'FAILED'; message: string };

/**
 * Whether `start` may use (and keep) a spare. Off with TSHIM_SPARE=0 or the runtime option
 * `SpareDaemon = false`; off for the debug socket flavour of start (`-socket`), which names its own.
 */
export function spareEnabled(env: NodeJS.ProcessEnv, optionValue: boolean | undefined): boolean {
  const flag = env['TSHIM_SPARE'];
  if (flag !== undefined && ['0', 'false', 'off', 'no'].includes(flag.toLowerCase())) return false;
  return optionValue !== false;
}

/** ms from an env var in seconds, or the default when unset or not a positive number. */
export function secondsFromEnv(env: NodeJS.ProcessEnv, name: string, defaultMs: number): number {
  const seconds = Number(env[name]);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : defaultMs;
}

/**
 * The identity of the code a spare runs: a spare started by another build (an upgrade installed in
 * place) must never be adopted, so the key covers this file's inode and mtime besides the command.
 */
function codeIdentity(): string {
  try {
    const st = fs.statSync(__filename);
    return `${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}`;
  } catch {
    return 'unknown';
  }
}

/**
 * One spare per (program, build, containerd, protocol, user): only a spare that would behave exactly
 * like a freshly launched daemon is ever adopted.
 */
export function spareSocketPath(dir: string, selfCommand: readonly string[], containerdAddress: string, protocol: Protocol): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  const key = sha256Hex([selfCommand.join('\0'), codeIdentity(), containerdAddress, protocol, String(uid)].join('\n'));
  return path.join(dir, `tshim-spare-${key.slice(0, 40)}`);
}

/** Reads one `\n`-terminated line (at most MAX_ADOPTION_LINE bytes) from `socket`. */
export function readLine(socket: net.Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const finish = (err: Error | undefined, line?: string): void => {
      clearTimeout(timer);
      socket.off('data', onData).off('end', onEnd).off('error', onError);
      if (err) reject(err);
      else resolve(line as string);
    };
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(0x0a);
      if (nl >= 0) finish(undefined, buffered.subarray(0, nl).toString('utf8'));
      else if (buffered.length > MAX_ADOPTION_LINE) finish(new Error('adoption line too long'));
    };
    const onEnd = (): void => finish(new Error('peer closed before a full line'));
    const onError = (err: Error): void => finish(err);
    const timer = setTimeout(() => finish(new Error(`no line within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData).on('end', onEnd).on('error', onError);
  });
}

/**
 * Asks the spare listening on `spareSocket` to become the daemon described by `request`. Resolves
 * with its reply, or undefined when there is no usable spare (none listening, it hung up, it did
 * not answer in time): the caller then launches a daemon itself.
 */
export function requestAdoption(spareSocket: string, request: AdoptionRequest): Promise<AdoptionReply | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(spareSocket);
    let settled = false;
    const done = (reply: AdoptionReply | undefined): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(reply);
    };
    socket.once('error', () => done(undefined));
    socket.once('connect', () => {
      socket.write(`${JSON.stringify(request)}\n`);
      readLine(socket, ADOPTION_TIMEOUT_MS).then(
        (line) => done(parseReply(line)),
        () => done(undefined),
      );
    });
  });
}

function parseReply(line: string): AdoptionReply | undefined {
  try {
    const reply = JSON.parse(line) as Partial<AdoptionReply> & { pid?: unknown; code?: unknown; message?: unknown };
    if (reply.ok === true && typeof reply.pid === 'number' && reply.pid > 0) return { ok: true, pid: reply.pid };
    if (reply.ok === false && typeof reply.code === 'string') {
      return { ok: false, code: reply.code as 'FAILED', message: String(reply.message ?? '') };
    }
  } catch {
    // not a reply at all
  }
  return undefined;
}

/** Checks a request from the wire; throws with what is wrong. */
export function parseAdoptionRequest(line: string): AdoptionRequest {
  const parsed = JSON.parse(line) as unknown;
  // `null`, an array or a scalar is valid JSON but no request: say so rather than fail on a property.
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('adoption request: not a JSON object');
  const raw = parsed as Record<string, unknown>;
  const str = (key: string, required: boolean): string => {
    const value = raw[key];
    if (typeof value !== 'string' || (required && value === '')) throw new Error(`adoption request: ${key} must be a string${required ? ' (non-empty)' : ''}`);
    return value;
  };
  if (raw['v'] !== ADOPTION_VERSION) throw new Error(`adoption request: version ${String(raw['v'])} is not ${ADOPTION_VERSION}`);
  const request: AdoptionRequest = {
    v: ADOPTION_VERSION,
    namespace: str('namespace', true),
    id: str('id', true),
    bundle: str('bundle', true),
    address: str('address', false),
    publishBinary: str('publishBinary', false),
    debug: raw['debug'] === true,
    socket: str('socket', true),
    protocol: raw['protocol'] === 'grpc' ? 'grpc' : 'ttrpc',
    env: {},
    deadline: typeof raw['deadline'] === 'number' ? raw['deadline'] : 0,
  };
  if (!path.isAbsolute(request.bundle) || !path.isAbsolute(request.socket)) {
    throw new Error('adoption request: bundle and socket must be absolute paths');
  }
  const env = raw['env'];
  if (typeof env !== 'object' || env === null || Array.isArray(env)) throw new Error('adoption request: env must be an object');
  for (const [key, value] of Object.entries(env)) {
    if (typeof value === 'string') request.env[key] = value;
  }
  return request;
}

/** The environment as the request carries it (only string values exist in a real environment). */
export function plainEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (value !== undefined) out[key] = value;
  return out;
}

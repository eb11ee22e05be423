/**
 * The shim's single logger. Lines use containerd's logrus text format so they read naturally in
 * containerd's own log, where the bundle's `log` FIFO is copied verbatim.
 *
 * `start` and `delete` must never write to stdout/stderr (containerd reads their combined output
 * as the result), so the logger is silent until `configureLogger` gives it somewhere to write.
 */

import * as fs from 'fs';
import * as net from 'net';
import { Writable } from 'stream';
import type * as winston from 'winston';
import type { Format, TransformableInfo } from 'logform';

const MESSAGE = Symbol.for('message');
const SPLAT = Symbol.for('splat');

// ---------------------------------------------------------------------------------------------
// Time: logrus prints RFC3339 with a fixed 9-digit fraction. Date has only milliseconds, so the
// fraction comes from the monotonic clock anchored to the wall clock, re-anchored whenever the two
// disagree by more than a millisecond (NTP steps, suspend) so timestamps never drift far.

let anchorWallNs = BigInt(Date.now()) * 1_000_000n;
let anchorMonoNs = process.hrtime.bigint();

export function nowNanos(): bigint {
  const mono = process.hrtime.bigint();
  const wallMs = BigInt(Date.now());
  const ns = anchorWallNs + (mono - anchorMonoNs);
  const driftMs = ns / 1_000_000n - wallMs;
  if (driftMs > 1n || driftMs < -1n) {
    anchorWallNs = wallMs * 1_000_000n;
    anchorMonoNs = mono;
    return anchorWallNs;
  }
  return ns;
}

/** `2026-11-28T15:50:08.654197247Z` for nanoseconds since the epoch. */
export function formatRfc3339Nano(epochNs: bigint): string {
  const ms = epochNs / 1_000_000n;
  const fraction = ((epochNs % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  return `${iso.slice(0, 19)}.${fraction.toString().padStart(9, '0')}Z`;
}

// ---------------------------------------------------------------------------------------------
// logrus text format

/** logrus leaves a value bare only when every character is in this set. */
const BARE_VALUE = /^[A-Za-z0-9\-._/@^+]+$/;

/** Go's %q escaping, which logrus applies to every value that needs quoting. */
function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c === 0x07) out += '\\a';
    else if (c === 0x08) out += '\\b';
    else if (c === 0x0c) out += '\\f';
    else if (c === 0x0b) out += '\\v';
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out + '"';
}

/** Empty values are quoted (logrus would print `key=`, which is easy to misread). */
function logrusValue(s: string): string {
  return BARE_VALUE.test(s) ? s : goQuote(s);
}

function stringify(value: unknown): string | undefined {
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.message;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
  if (value === null || typeof value !== 'object') return String(value);
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  } catch {
    return '[unserializable]';
  }
}

const LOGRUS_LEVEL: Record<string, string> = {
  error: 'error',
  warn: 'warning',
  info: 'info',
  http: 'info',
  verbose: 'debug',
  debug: 'debug',
  silly: 'trace',
};

/** Renders one line (without newline): time, level, msg, then the other fields sorted by key. */
export function formatLogrusLine(time: string, level: string, msg: string, fields: Record<string, unknown>): string {
  let line = `time=${goQuote(time)} level=${LOGRUS_LEVEL[level] ?? level} msg=${logrusValue(msg)}`;
  for (const key of Object.keys(fields).sort()) {
    const value = stringify(fields[key]);
    if (value !== undefined) line += ` ${key}=${logrusValue(value)}`;
  }
  return line;
}

const RESERVED_KEYS = new Set(['level', 'message', 'stack']);

/**
 * winston folds an Error passed as meta (`logger.warn('x', err)`) into the info object: its
 * message is appended to ours and its own properties are copied in. Undo that so the line keeps
 * the caller's message and the error becomes a single `error="..."` field, as logrus WithError does.
 */
function splitInfo(info: TransformableInfo): { msg: string; fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  for (const key of Object.keys(info)) {
    if (!RESERVED_KEYS.has(key)) fields[key] = info[key];
  }
  let msg = stringify(info.message) ?? '';
  const splat = info[SPLAT];
  const metaError = Array.isArray(splat) && splat[0] instanceof Error ? splat[0] : undefined;
  const error = metaError ?? (info instanceof Error ? info : undefined);
  if (error) {
    const own = error as unknown as Record<string, unknown>;
    for (const key of Object.keys(error)) {
      if (fields[key] === own[key]) delete fields[key];
    }
    delete fields.cause;
    delete fields.name;
    if (metaError) {
      if (metaError.message && msg.endsWith(` ${metaError.message}`)) {
        msg = msg.slice(0, -(metaError.message.length + 1));
      }
      fields.error = metaError.message;
    }
  }
  return { msg, fields };
}

/** The logform format used by every transport; `clock` is injectable so tests can use golden lines. */
export function logrusFormat(options: { clock?: () => bigint } = {}): Format {
  const clock = options.clock ?? nowNanos;
  const transform = (info: TransformableInfo): TransformableInfo => {
    const { msg, fields } = splitInfo(info);
    info[MESSAGE] = formatLogrusLine(formatRfc3339Nano(clock()), info.level, msg, fields);
    return info;
  };
  return { transform } as Format;
}

// ---------------------------------------------------------------------------------------------
// FIFO output

export interface FifoWriterOptions {
  /** Bytes queued for a slow reader before new lines are dropped. */
  maxBufferedBytes?: number;
  /** Delay before re-opening after "no reader" or a broken pipe. */
  reopenDelayMs?: number;
}

/**
 * Writes lines into the bundle's `log` FIFO without ever blocking or throwing.
 *
 * The FIFO is opened O_WRONLY|O_NONBLOCK: a blocking open would park a libuv threadpool thread
 * until a reader appears, and ENXIO ("no reader yet/any more") is simply retried later. The fd is
 * wrapped in a net.Socket so writes go through libuv's non-blocking pipe writer; EPIPE after
 * containerd exits surfaces as a socket error, which drops the socket until the next reopen.
 * containerd reopens the same FIFO when it restarts, so reopening by path picks it up again.
 */
export class FifoLineWriter extends Writable {
  /** Chunks discarded because there was no reader or the reader fell behind. */
  dropped = 0;
  private socket: net.Socket | null = null;
  private nextOpenAt = 0;
  private unreportedDrops = 0;
  private readonly maxBufferedBytes: number;
  private readonly reopenDelayMs: number;

  constructor(
    readonly path: string,
    options: FifoWriterOptions = {},
  ) {
    super({ decodeStrings: true });
    this.maxBufferedBytes = options.maxBufferedBytes ?? 1024 * 1024;
    this.reopenDelayMs = options.reopenDelayMs ?? 1000;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeChunk(chunk);
    // Always complete immediately: backpressure from the FIFO must never reach the logger.
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.dropSocket();
    callback(error);
  }

  /** Resolves once queued bytes reached the kernel (or timeoutMs passed). */
  flush(timeoutMs: number): Promise<void> {
    const socket = this.socket;
    if (!socket || socket.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      socket.once('drain', done);
      socket.once('close', done);
    });
  }

  private writeChunk(chunk: Buffer): void {
    const socket = this.openIfDue();
    if (!socket || socket.writableLength + chunk.length > this.maxBufferedBytes) {
      this.dropped++;
      this.unreportedDrops++;
      return;
    }
    if (this.unreportedDrops > 0) {
      const n = this.unreportedDrops;
      this.unreportedDrops = 0;
      const notice = formatLogrusLine(formatRfc3339Nano(nowNanos()), 'warn', 'log lines dropped', { count: n });
      socket.write(`${notice}\n`);
    }
    socket.write(chunk);
  }

  private openIfDue(): net.Socket | null {
    if (this.socket) return this.socket;
    if (this.destroyed || Date.now() < this.nextOpenAt) return null;
    let fd: number;
    try {
      fd = fs.openSync(this.path, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch {
      this.nextOpenAt = Date.now() + this.reopenDelayMs;
      return null;
    }
    try {
      const socket = new net.Socket({ fd, readable: false, writable: true });
      socket.on('error', () => this.dropSocket());
      socket.on('close', () => {
        if (this.socket === socket) this.dropSocket();
      });
      // The log must never keep the daemon alive on its own.
      socket.unref();
      this.socket = socket;
      return socket;
    } catch {
      // Not a FIFO/pipe (e.g. a regular file left at the path): nothing sensible to write to.
      fs.closeSync(fd);
      this.nextOpenAt = Date.now() + this.reopenDelayMs;
      return null;
    }
  }

  private dropSocket(): void {
    const socket = this.socket;
    this.socket = null;
    this.nextOpenAt = Date.now() + this.reopenDelayMs;
    if (socket && !socket.destroyed) socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// The logger

/*
 * Loading winston costs ~50 ms, which `start` (latency-critical, and silent anyway) should not
 * pay, and ~2 MiB of private memory, which a daemon at info level that never has anything to say
 * should not pay either. So `logger` is a proxy: until something needs the real object, a line
 * below the level a daemon asked for (configureOnDemand) is dropped without loading winston, and
 * the first line at or above it configures the logger, then goes out through it.
 */
let realLogger: winston.Logger | undefined;
let fifoWriter: FifoLineWriter | undefined;
let onDemand: { level: LogLevel; configure: () => void } | undefined;

function getRealLogger(): winston.Logger {
  if (!realLogger) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const w = require('winston') as typeof winston;
    realLogger = w.createLogger({ level: 'info', silent: true, format: logrusFormat(), exitOnError: false });
  }
  return realLogger;
}

/**
 * Loads winston and makes the logger now, still silent: for a spare whose containerd logs at debug
 * level, which would otherwise load it (~30 ms) after adoption, while `start` waits.
 */
export function preloadLogger(): void {
  getRealLogger();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  void (require('winston') as typeof winston).transports.Stream; // a lazy getter: loads the transport
}

/** winston's default (npm) levels, most severe first. */
const LEVELS = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 } as const;
type LogLevel = keyof typeof LEVELS;
const isLevel = (name: string): name is LogLevel => Object.prototype.hasOwnProperty.call(LEVELS, name);
/** `isDebugEnabled` → debug, and so on for every level. */
const ENABLED_QUERY = /^is(\w+)Enabled$/;

/**
 * The daemon's logger is configured by `configure` once a line at `level` or above is logged (or
 * anything else needs the real logger): until then none of winston is loaded.
 */
export function configureOnDemand(level: LogLevel, configure: () => void): void {
  onDemand = { level, configure };
}

function wouldLog(level: string): boolean {
  return onDemand !== undefined && isLevel(level) && LEVELS[level] <= LEVELS[onDemand.level];
}

export const logger: winston.Logger = new Proxy({} as winston.Logger, {
  get(_target, prop) {
    if (!realLogger && typeof prop === 'string') {
      const query = ENABLED_QUERY.exec(prop);
      if (query) return (level?: string) => wouldLog(level ?? (query[1] as string).toLowerCase());
      if (prop === 'log') {
        // log(level, message, meta) or log(info object)
        return (first: unknown, ...rest: unknown[]) => {
          const level = typeof first === 'string' ? first : (first as { level?: unknown } | undefined)?.level;
          return typeof level === 'string' && wouldLog(level) ? forward('log', first, ...rest) : logger;
        };
      }
      if (isLevel(prop)) return (...args: unknown[]) => (wouldLog(prop) ? forward(prop, ...args) : logger);
    }
    const real = getRealLogger();
    const value: unknown = Reflect.get(real, prop, real);
    return typeof value === 'function' ? value.bind(real) : value;
  },
  set(_target, prop, value) {
    return Reflect.set(getRealLogger(), prop, value);
  },
  has(_target, prop) {
    return Reflect.has(getRealLogger(), prop);
  },
});

/** The first line worth writing: configure the logger the daemon described, then log it. */
function forward(method: string, ...args: unknown[]): winston.Logger {
  onDemand?.configure();
  const real = getRealLogger();
  (Reflect.get(real, method, real) as (...a: unknown[]) => unknown).apply(real, args);
  return logger;
}

export interface LoggerConfig {
  level: 'debug' | 'info';
  /** The bundle's `log` FIFO, which containerd holds open for reading. */
  fifoPath?: string;
  stream?: NodeJS.WritableStream;
  /** Added to every line, e.g. namespace, id, runtime. */
  fields?: Record<string, string>;
}

/** (Re)points the logger; replaces any earlier configuration. No outputs → silent. */
export function configureLogger(o: LoggerConfig): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const w = require('winston') as typeof winston;
  const real = getRealLogger();
  real.clear();
  fifoWriter?.destroy();
  fifoWriter = undefined;

  real.level = o.level;
  real.defaultMeta = o.fields ? { ...o.fields } : undefined;
  if (o.fifoPath) {
    fifoWriter = new FifoLineWriter(o.fifoPath);
    real.add(new w.transports.Stream({ stream: fifoWriter, eol: '\n' }));
  }
  if (o.stream) {
    real.add(new w.transports.Stream({ stream: o.stream, eol: '\n' }));
  }
  real.silent = !o.fifoPath && !o.stream;
}

/** For shutdown: lets queued FIFO lines reach containerd (bounded wait), then releases the FIFO. */
export async function closeLogger(timeoutMs = 1000): Promise<void> {
  const writer = fifoWriter;
  if (!writer) return;
  // winston hands lines to transports on a later tick; give them a turn before measuring.
  await new Promise((resolve) => setImmediate(resolve));
  await writer.flush(timeoutMs);
  writer.destroy();
  if (fifoWriter === writer) fifoWriter = undefined;
  if (realLogger) {
    realLogger.clear();
    realLogger.silent = true;
  }
}

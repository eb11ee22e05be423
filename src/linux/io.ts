/**
 * Process stdio without a terminal (spec §9.1): real pipes between runc and the shim, copied to
 * containerd's FIFOs (or a file), or handed to a `binary://` logger. For terminal processes the pty
 * relay lives in console.ts; `openTerminalFifos` gives it the FIFO ends to relay to.
 *
 * No tail output may be lost: a copy runs until its pipe reports EOF, which needs every writer
 * gone — the container's and the shim's own copy (`closeAfterStart`) — and then ends the FIFO
 * writer only after all writes have landed.
 */
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { invalidArgument, ShimError, unknown } from '../common/errors';
import { settlesWithin } from '../common/settle';
import { pipe2 } from './libc';
import { startBinaryLogger, type BinaryLogger, type BinaryLoggerTarget } from './io-binary';
import { flushed, fdOf, stopReading } from '../common/upgrade/handles';
import type { IoState, SinkState, StdinState } from '../common/upgrade/state';
import {
  closeFd,
  endQuietly,
  growPipe,
  sinkFromState,
  stdinFifoFromFds,
  openFileSink,
  openOutputSink,
  openStdinFifo,
  shareSink,
  socketForFd,
  type Sink,
  type StdinFifo,
} from './io-fifo';

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface ProcessIO {
  /** fds to hand to runc create/exec as the container's stdin/stdout/stderr (pipe ends or /dev/null) */
  readonly runtimeStdio: [number, number, number];
  /** right after runc create/exec returned: closes the shim's copies of the container-side ends, so EOF can arrive */
  closeAfterStart(): void;
  /** closes the shim's stdin writer (CloseIO) */
  closeStdin(): void;
  /** resolves when stdout/stderr copying reached EOF and everything is flushed, or after timeoutMs */
  drain(timeoutMs: number): Promise<void>;
  /** tears down everything (also stops a binary logger: SIGTERM, wait ≤12 s, SIGKILL) */
  close(): Promise<void>;
  /** upgrade: stops reading, writes out what was read; what is unread stays in the kernel */
  suspend(): Promise<void>;
  /** upgrade abandoned: copy again */
  resume(): void;
  /** upgrade: the descriptors and their roles, once suspended */
  handover(): IoState;
}

export interface ProcessIOOptions {
  namespace: string;
  ioUid: number;
  ioGid: number;
}

export type StdioScheme =
  | { scheme: 'fifo'; stdout: string; stderr: string }
  | { scheme: 'file'; path: string }
  | { scheme: 'binary'; uri: URL };

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

/**
 * How stdout is to be delivered; the scheme of the stdout string decides for all streams, as in
 * the runc shim. A plain path (no scheme) is the common FIFO case.
 */
export function parseStdioScheme(paths: Pick<StdioPaths, 'stdout' | 'stderr'>): StdioScheme {
  const match = SCHEME.exec(paths.stdout);
  if (!match) return { scheme: 'fifo', stdout: paths.stdout, stderr: paths.stderr };
  const scheme = (match[1] as string).toLowerCase();
  let uri: URL;
  try {
    uri = new URL(paths.stdout);
  } catch {
    throw invalidArgument(`invalid STDIO URI ${JSON.stringify(paths.stdout)}`);
  }
  const uriPath = decodeURIComponent(uri.pathname);
  switch (scheme) {
    case 'fifo':
      return { scheme: 'fifo', stdout: uriPath, stderr: paths.stderr === paths.stdout ? uriPath : paths.stderr };
    case 'file':
      if (!path.isAbsolute(uriPath)) throw invalidArgument(`file STDIO path must be absolute: ${paths.stdout}`);
      return { scheme: 'file', path: uriPath };
    case 'binary':
      if (!path.isAbsolute(uriPath)) throw invalidArgument(`binary STDIO path must be absolute: ${paths.stdout}`);
      return { scheme: 'binary', uri };
    default:
      throw invalidArgument(`unknown STDIO scheme ${scheme}`);
  }
}

/**
 * Copies `source` into `sink` until EOF, then finishes the sink. If the sink breaks, the rest is
 * read and dropped so the container never blocks on a full pipe. Never rejects.
 */
function copyToSink(source: net.Socket, sink: Sink): Promise<void> {
  return new Promise<void>((resolve) => {
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      void sink.finish().then(resolve, resolve);
    };
    sink.stream.on('error', () => {
      source.unpipe(sink.stream);
      source.resume();
    });
    source.on('error', end);
    source.on('end', end);
    source.on('close', end);
    source.pipe(sink.stream, { end: false });
  });
}

/** Stdin FIFO → pipe: at FIFO EOF the container gets EOF; a container that stopped reading ends the copy. */
function copyStdin(fifo: StdinFifo, pipeWriter: net.Socket): void {
  const stop = (): void => {
    fifo.reader.unpipe(pipeWriter);
    fifo.reader.destroy();
    pipeWriter.destroy();
  };
  pipeWriter.on('error', stop); // EPIPE: the container closed its stdin or exited
  // the container sees EOF only once the descriptor itself is closed
  pipeWriter.on('finish', () => pipeWriter.destroy());
  fifo.reader.on('error', stop);
  fifo.reader.pipe(pipeWriter); // ends the pipe writer at FIFO EOF
}

interface Copy {
  source: net.Socket;
  sink: Sink;
  done: Promise<void>;
  ended: boolean;
  finished: boolean;
}

/** Everything a ProcessIO owns, released in one place. */
class PipeProcessIO implements ProcessIO {
  readonly runtimeStdio: [number, number, number];
  /** container-side ends (and /dev/null), closed once runc has passed them on */
  private containerFds: number[];
  private readonly copies: Promise<void>[] = [];
  private readonly copyList: Copy[] = [];
  private stdinWriter: net.Socket | undefined;
  private readonly sinks: Sink[] = [];
  private readonly sockets: net.Socket[] = [];
  private stdinFifo: StdinFifo | undefined;
  private logger: BinaryLogger | undefined;
  private closed = false;

  constructor(runtimeStdio: [number, number, number], containerFds: number[]) {
    this.runtimeStdio = runtimeStdio;
    this.containerFds = [...new Set(containerFds)];
  }

  /** Pipe read end → sink copy; `drain` waits for it. */
  addCopy(readFd: number, sink: Sink): void {
    const source = socketForFd(readFd, 'read');
    this.sockets.push(source);
    this.sinks.push(sink);
    const copy: Copy = { source, sink, done: Promise.resolve(), ended: false, finished: false };
    const markEnded = (): void => {
      copy.ended = true;
    };
    source.on('end', markEnded);
    source.on('close', markEnded);
    source.on('error', markEnded);
    copy.done = copyToSink(source, sink).then(() => {
      copy.finished = true;
    });
    this.copyList.push(copy);
    this.copies.push(copy.done);
  }

  addStdin(fifo: StdinFifo, pipeWriteFd: number): void {
    const writer = socketForFd(pipeWriteFd, 'write');
    this.sockets.push(writer);
    this.stdinFifo = fifo;
    this.stdinWriter = writer;
    copyStdin(fifo, writer);
  }

  async suspend(): Promise<void> {
    if (this.logger) throw new Error('a binary:// logger cannot be handed over');
    if (this.containerFds.length > 0) throw new Error('the process has not been started by the runtime yet');
    const waits: Promise<void>[] = [];
    for (const copy of this.copyList) {
      if (copy.ended) {
        waits.push(copy.done); // at EOF: let the sink finish
        continue;
      }
      copy.source.unpipe(copy.sink.stream);
      for (const chunk of stopReading(copy.source)) copy.sink.stream.write(chunk);
      waits.push(flushed(copy.sink.stream));
    }
    const fifo = this.stdinFifo;
    const writer = this.stdinWriter;
    if (fifo && writer && !fifo.reader.destroyed && !writer.destroyed) {
      fifo.reader.unpipe(writer);
      for (const chunk of stopReading(fifo.reader)) writer.write(chunk);
      waits.push(flushed(writer));
    }
    await Promise.all(waits);
  }

  resume(): void {
    for (const copy of this.copyList) {
      if (!copy.ended) copy.source.pipe(copy.sink.stream, { end: false });
    }
    const fifo = this.stdinFifo;
    const writer = this.stdinWriter;
    if (fifo && writer && !fifo.reader.destroyed && !writer.destroyed) fifo.reader.pipe(writer);
  }

  handover(): IoState {
    if (this.closed) return { kind: 'none' };
    const copies = this.copyList
      .filter((c) => !c.ended && !c.finished)
      .map((c) => ({ readFd: fdOf(c.source), sink: c.sink.handover() }));
    const fifo = this.stdinFifo;
    const writer = this.stdinWriter;
    const state: IoState = { kind: 'pipe', copies };
    if (fifo && writer && !fifo.reader.destroyed && !writer.destroyed) {
      state.stdin = { ...fifo.handover(), pipeWriterFd: fdOf(writer) };
    }
    return state;
  }

  setLogger(logger: BinaryLogger): void {
    this.logger = logger;
  }

  closeAfterStart(): void {
    this.containerFds.forEach(closeFd);
    this.containerFds = [];
    this.logger?.closeWriteEnds();
  }

  closeStdin(): void {
    this.stdinFifo?.releaseWriter();
  }

  async drain(timeoutMs: number): Promise<void> {
    await settlesWithin(Promise.all(this.copies), timeoutMs);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closeAfterStart();
    this.stdinFifo?.destroy();
    this.sockets.forEach((s) => s.destroy());
    this.sinks.forEach((s) => s.destroy());
    await this.logger?.terminate();
  }
}

/** What a half-finished setup has opened, so a failure can release it. */
interface SetupResources {
  devNull: number;
  owned: number[];
  sinks: Sink[];
}

function openDevNull(): number {
  // O_CLOEXEC (libuv's default): runc gets it through dup2, nothing else inherits it
  return fs.openSync('/dev/null', 'r+');
}

function ownPipe(o: ProcessIOOptions, containerEnd: 'read' | 'write'): [read: number, write: number] {
  const [r, w] = pipe2(true);
  try {
    growPipe(r);
    fs.fchownSync(containerEnd === 'read' ? r : w, o.ioUid, o.ioGid);
  } catch (err) {
    closeFd(r);
    closeFd(w);
    throw err;
  }
  return [r, w];
}

/** Pipes for the wanted streams, copied to FIFOs/files; unwanted streams get /dev/null. */
async function pipeIO(
  paths: StdioPaths,
  outputs: { stdout: string; stderr: string; fileMode: boolean },
  o: ProcessIOOptions,
  io: SetupResources,
): Promise<PipeProcessIO> {
  const stdio: [number, number, number] = [io.devNull, io.devNull, io.devNull];
  const pending: Array<{ readFd: number; target: string }> = [];
  let stdinPipe: [number, number] | undefined;

  if (paths.stdin) {
    stdinPipe = ownPipe(o, 'read');
    io.owned.push(...stdinPipe);
    stdio[0] = stdinPipe[0];
  }
  for (const [index, target] of [outputs.stdout, outputs.stderr].entries()) {
    if (!target) continue;
    const [r, w] = ownPipe(o, 'write');
    io.owned.push(r, w);
    stdio[index + 1] = w;
    pending.push({ readFd: r, target });
  }

  // stdout and stderr into the same regular file share one append handle
  const sinks: Sink[] = [];
  const first = pending[0];
  const second = pending[1];
  if (first && second && first.target === second.target && outputs.fileMode) {
    const shared = await openFileSink(first.target, true);
    io.sinks.push(shared);
    sinks.push(...shareSink(shared, 2));
  } else {
    for (const p of pending) {
      const sink = outputs.fileMode ? await openFileSink(p.target, true) : await openOutputSink(p.target);
      io.sinks.push(sink);
      sinks.push(sink);
    }
  }
  const stdinFifo = paths.stdin ? await openStdinFifo(paths.stdin) : undefined;

  const containerFds = [io.devNull, ...stdio];
  const result = new PipeProcessIO(stdio, containerFds);
  pending.forEach((p, i) => result.addCopy(p.readFd, sinks[i] as Sink));
  if (stdinFifo && stdinPipe) result.addStdin(stdinFifo, stdinPipe[1]);
  // every fd and sink now belongs to `result`
  io.owned.length = 0;
  io.sinks.length = 0;
  return result;
}

/**
 * Sets up a non-terminal process's stdio. Terminal processes get /dev/null here (runc hands the
 * pty to the console socket instead); relay them with `openTerminalFifos`.
 */
export async function createProcessIO(id: string, paths: StdioPaths, o: ProcessIOOptions): Promise<ProcessIO> {
  const devNull = openDevNull();
  const io: SetupResources = { devNull, owned: [], sinks: [] };
  try {
    if (paths.terminal || (!paths.stdin && !paths.stdout && !paths.stderr)) {
      return new PipeProcessIO([devNull, devNull, devNull], [devNull]);
    }
    const scheme = parseStdioScheme(paths);
    switch (scheme.scheme) {
      case 'fifo':
        return await pipeIO(paths, { stdout: scheme.stdout, stderr: scheme.stderr, fileMode: false }, o, io);
      case 'file': {
        await fsp.mkdir(path.dirname(scheme.path), { recursive: true, mode: 0o755 });
        const outputs = {
          stdout: paths.stdout ? scheme.path : '',
          stderr: paths.stderr ? scheme.path : '',
          fileMode: true,
        };
        return await pipeIO(paths, outputs, o, io);
      }
      case 'binary': {
        // the logger takes stdout/stderr; stdin stays /dev/null, as with the runc shim
        const logger = await startBinaryLogger(scheme.uri, { id, namespace: o.namespace }, o);
        const result = new PipeProcessIO([devNull, logger.stdoutWrite, logger.stderrWrite], [devNull]);
        result.setLogger(logger);
        return result;
      }
    }
  } catch (err) {
    io.sinks.forEach((sink) => sink.destroy());
    io.owned.forEach(closeFd);
    closeFd(devNull);
    if (err instanceof ShimError) throw err;
    throw unknown(`failed to set up IO for ${id}: ${err instanceof Error ? err.message : String(err)}`, err);
  }
}

export interface TerminalFifos {
  /** the stdin FIFO, to copy into the pty master */
  input?: NodeJS.ReadableStream;
  /** where the pty master's output goes: the stdout FIFO/file, or a binary logger's fd 3 */
  output?: NodeJS.WritableStream;
  /** releases the held stdin writer (CloseIO) */
  closeStdin(): void;
  /**
   * The terminal's output is exhausted: flushes and closes our write end (FIFO, file or logger pipe)
   * so the reader sees EOF now, not at Delete. Idempotent; never rejects.
   */
  endOutput(): Promise<void>;
  /** flushes output (≤2 s once it was ended), then releases everything */
  close(): Promise<void>;
  /** upgrade: the descriptors behind the stdin FIFO and the output */
  handover(): { stdin?: StdinState; output: SinkState; outputEnded: boolean };
}

/** How long `TerminalFifos.close` lets already written output reach the FIFO. */
const TERMINAL_FLUSH_MS = 2_000;

/**
 * For terminal processes: opens the stdin/stdout ends without blocking. A `binary://` stdout needs
 * `target` (CONTAINER_ID/CONTAINER_NAMESPACE for the logger).
 */
export async function openTerminalFifos(
  paths: StdioPaths,
  target?: BinaryLoggerTarget & Partial<Pick<ProcessIOOptions, 'ioUid' | 'ioGid'>>,
): Promise<TerminalFifos> {
  let stdin: StdinFifo | undefined;
  let sink: Sink | undefined;
  let logger: BinaryLogger | undefined;
  let loggerOut: net.Socket | undefined;
  const release = async (): Promise<void> => {
    stdin?.destroy();
    sink?.destroy();
    loggerOut?.destroy();
    await logger?.terminate();
  };
  try {
    if (paths.stdout) {
      const scheme = parseStdioScheme({ stdout: paths.stdout, stderr: '' });
      if (scheme.scheme === 'binary') {
        if (!target) throw invalidArgument('binary STDIO with a terminal needs the process id and namespace');
        logger = await startBinaryLogger(scheme.uri, target, { ioUid: target.ioUid ?? 0, ioGid: target.ioGid ?? 0 });
        // the shim writes the pty output into fd 3's pipe; the stderr pipe stays unused
        loggerOut = socketForFd(logger.takeStdoutWrite(), 'write');
      } else if (scheme.scheme === 'file') {
        await fsp.mkdir(path.dirname(scheme.path), { recursive: true, mode: 0o755 });
        sink = await openFileSink(scheme.path, true);
      } else {
        sink = await openOutputSink(scheme.stdout);
      }
    }
    if (paths.stdin) stdin = await openStdinFifo(paths.stdin);
  } catch (err) {
    await release();
    throw err;
  }

  return terminalFifosOf({ stdin, sink, logger, loggerOut, outputEnded: false, release });
}

/** The ends a terminal relays between, opened now or inherited; `release` frees all of them. */
function terminalFifosOf(parts: {
  stdin: StdinFifo | undefined;
  sink: Sink | undefined;
  logger?: BinaryLogger | undefined;
  loggerOut?: net.Socket | undefined;
  /** already ended before an upgrade */
  outputEnded: boolean;
  release(): Promise<void>;
}): TerminalFifos {
  const { stdin, sink, logger, loggerOut } = parts;
  const output = loggerOut ?? sink?.stream;
  let closed = false;
  let outputEnded: Promise<void> | undefined = parts.outputEnded ? Promise.resolve() : undefined;
  const finishOutput = async (): Promise<void> => {
    if (sink) return sink.finish();
    if (!loggerOut) return;
    await endQuietly(loggerOut);
    loggerOut.destroy();
  };
  const endOutput = (): Promise<void> => {
    outputEnded ??= finishOutput();
    return outputEnded;
  };
  const result: TerminalFifos = {
    closeStdin: () => stdin?.releaseWriter(),
    handover() {
      if (logger) throw new Error('a binary:// logger cannot be handed over');
      const ended = outputEnded !== undefined;
      const state: { stdin?: StdinState; output: SinkState; outputEnded: boolean } = {
        output: ended || !sink ? { kind: 'discard' } : sink.handover(),
        outputEnded: ended,
      };
      if (stdin && !stdin.reader.destroyed) state.stdin = stdin.handover();
      return state;
    },
    endOutput,
    async close() {
      if (closed) return;
      closed = true;
      if (outputEnded) await settlesWithin(outputEnded, TERMINAL_FLUSH_MS);
      await parts.release();
    },
  };
  if (stdin) result.input = stdin.reader;
  if (output) {
    // the relay decides when output ends; a broken FIFO or logger must not take the shim down
    output.on('error', () => undefined);
    result.output = output;
  }
  return result;
}

/** Rebuilds a non-terminal process's IO from its hand-over record (upgrade). */
export function restoreProcessIO(state: IoState): ProcessIO {
  const io = new PipeProcessIO([-1, -1, -1], []);
  if (state.kind !== 'pipe') return io;
  // stdout and stderr appended to one file share one handle, as when they were opened
  const files = new Map<number, Sink[]>();
  const fileUsers = new Map<number, number>();
  for (const c of state.copies) if (c.sink.kind === 'file') fileUsers.set(c.sink.fd, (fileUsers.get(c.sink.fd) ?? 0) + 1);
  for (const c of state.copies) {
    let sink: Sink;
    if (c.sink.kind === 'file' && (fileUsers.get(c.sink.fd) ?? 0) > 1) {
      let shares = files.get(c.sink.fd);
      if (!shares) {
        shares = shareSink(sinkFromState(c.sink), fileUsers.get(c.sink.fd) ?? 1);
        files.set(c.sink.fd, shares);
      }
      sink = shares.shift() as Sink;
    } else {
      sink = sinkFromState(c.sink);
    }
    io.addCopy(c.readFd, sink);
  }
  if (state.stdin) io.addStdin(stdinFifoFromFds(state.stdin.readerFd, state.stdin.heldWriterFd), state.stdin.pipeWriterFd);
  return io;
}

/** Rebuilds a terminal's FIFO ends from their hand-over record (upgrade). */
export function restoreTerminalFifos(state: { stdin?: StdinState; output: SinkState; outputEnded: boolean }): TerminalFifos {
  const stdin = state.stdin ? stdinFifoFromFds(state.stdin.readerFd, state.stdin.heldWriterFd) : undefined;
  const sink = state.outputEnded || state.output.kind === 'discard' ? undefined : sinkFromState(state.output);
  const release = async (): Promise<void> => {
    stdin?.destroy();
    sink?.destroy();
  };
  return terminalFifosOf({ stdin, sink, outputEnded: state.outputEnded, release });
}

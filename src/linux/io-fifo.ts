/**
 * Opening containerd's stdio FIFOs (or plain files standing in for them) without ever blocking.
 *
 * A blocking open(2) of a FIFO waits for the peer and would pin one of libuv's four threadpool
 * threads (spec §14), so every FIFO open here uses O_NONBLOCK and happens in an order that cannot
 * fail: our own reader first, then our writer (a non-blocking O_WRONLY open only fails with ENXIO
 * when nobody reads). Descriptors are wrapped in `net.Socket`, which drives pipes and FIFOs through
 * epoll instead of the threadpool.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import net from 'node:net';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { ShimError, unknown } from '../common/errors';
import { fdOf } from '../common/upgrade/handles';
import type { SinkState, StdinState } from '../common/upgrade/state';
import { setPipeSize } from './libc';

/** Where one output stream of a process ends up. */
export interface Sink {
  readonly stream: Writable;
  /** Ends the stream once everything written has landed, then releases all handles. Never rejects. */
  finish(): Promise<void>;
  /** Drops pending data and releases all handles now. */
  destroy(): void;
  /** The descriptors an upgrade hands to the new image (the sink must be idle). */
  handover(): SinkState;
}

function openFd(file: string, flags: number, mode?: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.open(file, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd)));
  });
}

/** Closes a descriptor no Node handle owns; an already closed one is not worth an error. */
export function closeFd(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // EBADF: nothing left to release
  }
}

/** A pipe or FIFO end as a stream; libuv makes it non-blocking and closes it on destroy. */
export function socketForFd(fd: number, direction: 'read' | 'write'): net.Socket {
  return new net.Socket({ fd, readable: direction === 'read', writable: direction === 'write' });
}

export async function isFifo(file: string): Promise<boolean> {
  return (await fsp.stat(file)).isFIFO();
}

function openFailure(file: string, err: unknown): ShimError {
  if (err instanceof ShimError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return unknown(`containerd-shim: opening ${JSON.stringify(file)} failed: ${reason}`, err);
}

/** Ends `stream` and waits for its 'finish' (or its death); the caller releases handles after. */
export async function endQuietly(stream: Writable): Promise<void> {
  if (stream.destroyed) return;
  stream.end();
  try {
    await finished(stream, { readable: false });
  } catch {
    // a broken destination has nothing more to flush
  }
}

/**
 * A 64 KiB pipe makes a container that writes fast and the shim that copies take turns by the
 * context switch; a bigger one lets each side move a megabyte per wake-up (pipes between runc and
 * the shim, and the FIFOs to containerd). Best effort: a lower pipe-max-size keeps the default.
 */
export const PIPE_SIZE = 1 << 20;

export function growPipe(fd: number): void {
  try {
    setPipeSize(fd, PIPE_SIZE);
  } catch {
    // EPERM above pipe-max-size for the unprivileged, EBUSY if it holds more: the default still works
  }
}

/**
 * A stdout/stderr FIFO: a non-blocking writer plus an extra reader that is never read from. The
 * extra reader keeps the FIFO open while containerd's reader is away (e.g. during a containerd
 * restart), so our writes never hit EPIPE; they just wait for buffer space.
 */
export async function openFifoSink(file: string): Promise<Sink> {
  let reader = -1;
  try {
    // Synchronous: a FIFO opened O_NONBLOCK never waits (the writer finds our reader), and a
    // threadpool round trip per open cost more than the opens (two per FIFO, per process).
    reader = fs.openSync(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
    const writer = fs.openSync(file, fsc.O_WRONLY | fsc.O_NONBLOCK);
    growPipe(writer);
    return fifoSinkFromFds(writer, reader);
  } catch (err) {
    if (reader >= 0) closeFd(reader);
    throw openFailure(file, err);
  }
}

/** A FIFO sink from descriptors already open (inherited by an upgraded image). */
export function fifoSinkFromFds(writer: number, readerFd: number): Sink {
  let reader = readerFd;
  {
    const stream = socketForFd(writer, 'write');
    const releaseReader = (): void => {
      if (reader >= 0) closeFd(reader);
      reader = -1;
    };
    return {
      stream,
      async finish() {
        await endQuietly(stream);
        stream.destroy();
        releaseReader();
      },
      destroy() {
        stream.destroy();
        releaseReader();
      },
      handover: () => ({ kind: 'fifo', writerFd: fdOf(stream), readerFd: reader }),
    };
  }
}

/** A regular file in place of a FIFO: appended to, as the runc shim does. */
export async function openFileSink(file: string, create: boolean): Promise<Sink> {
  let fd: number;
  try {
    const flags = fsc.O_WRONLY | fsc.O_APPEND | (create ? fsc.O_CREAT : 0);
    fd = await openFd(file, flags, 0o644);
  } catch (err) {
    throw openFailure(file, err);
  }
  return fileSinkFromFd(fd, file);
}

/** A file sink from a descriptor already open for appending. */
export function fileSinkFromFd(fd: number, file = `fd ${fd}`): Sink {
  const stream = fs.createWriteStream(file, { fd, autoClose: true });
  // errors (ENOSPC, EIO) surface on the copy; without a listener they would crash the shim
  stream.on('error', () => undefined);
  return {
    stream,
    async finish() {
      await endQuietly(stream);
      stream.destroy();
    },
    destroy() {
      stream.destroy();
    },
    handover: () => ({ kind: 'file', fd }),
  };
}

/** FIFO if it is one, else a file opened for appending (without creating it). */
export async function openOutputSink(file: string): Promise<Sink> {
  let fifo: boolean;
  try {
    fifo = await isFifo(file);
  } catch (err) {
    throw openFailure(file, err);
  }
  return fifo ? openFifoSink(file) : openFileSink(file, false);
}

/**
 * Lets several copies feed one sink (stdout and stderr appended to the same file); the sink is
 * finished when the last user finishes, and destroyed as soon as anyone destroys it.
 */
export function shareSink(sink: Sink, users: number): Sink[] {
  let remaining = users;
  let done: Promise<void> | undefined;
  const share: Sink = {
    stream: sink.stream,
    finish() {
      remaining -= 1;
      if (remaining > 0) return Promise.resolve();
      done ??= sink.finish();
      return done;
    },
    destroy() {
      sink.destroy();
    },
    handover: () => sink.handover(),
  };
  return Array.from({ length: users }, () => share);
}

/** The stdin FIFO: a reader for copying from, plus a write handle held until CloseIO. */
export interface StdinFifo {
  readonly reader: net.Socket;
  /** Closes the held write handle: once the client's writer is gone too, the reader sees EOF. */
  releaseWriter(): void;
  destroy(): void;
  handover(): StdinState;
}

export async function openStdinFifo(file: string): Promise<StdinFifo> {
  let readerFd = -1;
  let writerFd = -1;
  try {
    // synchronous, as openFifoSink's
    readerFd = fs.openSync(file, fsc.O_RDONLY | fsc.O_NONBLOCK);
    // Opened before anything reads: without a writer, a read would report EOF at once.
    writerFd = fs.openSync(file, fsc.O_WRONLY | fsc.O_NONBLOCK);
    return stdinFifoFromFds(readerFd, writerFd);
  } catch (err) {
    if (readerFd >= 0) closeFd(readerFd);
    if (writerFd >= 0) closeFd(writerFd);
    throw openFailure(file, err);
  }
}

/** The stdin FIFO from descriptors already open; heldWriter -1 when CloseIO already released it. */
export function stdinFifoFromFds(readerFd: number, heldWriter: number): StdinFifo {
  let writerFd = heldWriter;
  const reader = socketForFd(readerFd, 'read');
  const releaseWriter = (): void => {
    if (writerFd >= 0) closeFd(writerFd);
    writerFd = -1;
  };
  return {
    reader,
    releaseWriter,
    destroy() {
      reader.destroy();
      releaseWriter();
    },
    handover: () => ({ readerFd: fdOf(reader), heldWriterFd: writerFd }),
  };
}

/** Output nobody wants, written nowhere (a terminal whose stdout was not asked for). */
export function discardSink(): Sink {
  const stream = fs.createWriteStream('/dev/null');
  stream.on('error', () => undefined);
  return {
    stream,
    async finish() {
      await endQuietly(stream);
      stream.destroy();
    },
    destroy() {
      stream.destroy();
    },
    handover: () => ({ kind: 'discard' }),
  };
}

/** Rebuilds a sink from its hand-over record. */
export function sinkFromState(state: SinkState): Sink {
  switch (state.kind) {
    case 'fifo':
      return fifoSinkFromFds(state.writerFd, state.readerFd);
    case 'file':
      return fileSinkFromFd(state.fd);
    case 'discard':
      return discardSink();
  }
}

/**
 * What an upgrade needs from Node's stream objects: the kernel descriptor behind them, and a way
 * to stop libuv reading one (pause() alone only stops 'data' events; libuv keeps filling the
 * stream's buffer up to its high-water mark).
 */
import type { Readable, Writable } from 'node:stream';

interface UvHandle {
  fd?: unknown;
  reading?: boolean;
  readStop?: () => number;
}

function uvHandle(stream: unknown): UvHandle | undefined {
  return (stream as { _handle?: UvHandle } | undefined)?._handle ?? undefined;
}

/** The fd behind a net.Socket/net.Server/tty stream, or behind an fs stream; -1 when there is none. */
export function fdOf(stream: unknown): number {
  const fd = uvHandle(stream)?.fd ?? (stream as { fd?: unknown } | undefined)?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/**
 * Stops libuv reading `stream` now and returns what it had read but nobody consumed yet. Data
 * not read stays in the kernel (pipe, FIFO, socket), for whoever reads the descriptor next. The
 * stream resumes reading with `resume()`/`pipe()` as usual.
 */
export function stopReading(stream: Readable): Buffer[] {
  stream.pause();
  const handle = uvHandle(stream);
  if (handle?.readStop && handle.reading !== false) {
    handle.readStop();
    handle.reading = false;
  }
  const chunks: Buffer[] = [];
  for (;;) {
    const chunk = stream.read() as Buffer | string | null;
    if (chunk === null) break;
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }
  return chunks;
}

/** Resolves once everything written to `stream` has been handed to the kernel (or it died). */
export function flushed(stream: Writable): Promise<void> {
  if (stream.destroyed || stream.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const check = (): void => {
      if (stream.destroyed || stream.writableLength === 0) {
        stream.off('drain', check);
        stream.off('close', check);
        resolve();
      }
    };
    stream.on('drain', check);
    stream.on('close', check);
    // a zero-length write calls back once every earlier write has completed
    stream.write(Buffer.alloc(0), () => check());
  });
}

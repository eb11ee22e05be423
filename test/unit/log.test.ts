import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PassThrough } from 'stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ShimError, Code } from '../../src/common/errors';
import {
  closeLogger,
  configureLogger,
  FifoLineWriter,
  formatLogrusLine,
  formatRfc3339Nano,
  logger,
  logrusFormat,
  nowNanos,
} from '../../src/common/log';

const MESSAGE = Symbol.for('message');
const SPLAT = Symbol.for('splat');
const FIXED_NS = 1795881008654197247n; // 2026-11-28T15:50:08.654197247Z
const FIXED_TIME = '2026-11-28T15:50:08.654197247Z';

function render(info: Record<string | symbol, unknown>): string {
  const out = logrusFormat({ clock: () => FIXED_NS }).transform(info as never);
  return (out as Record<symbol, unknown>)[MESSAGE] as string;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-log-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});
afterEach(async () => {
  await closeLogger(100);
});

describe('before configuration', () => {
  // Must run before anything configures the shared logger.
  it('is silent and never touches stdout or stderr', () => {
    const writes: unknown[] = [];
    const out = process.stdout.write.bind(process.stdout);
    const err = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((chunk: unknown) => writes.push(chunk) > 0) as typeof process.stdout.write;
    process.stderr.write = ((chunk: unknown) => writes.push(chunk) > 0) as typeof process.stderr.write;
    try {
      logger.error('nobody hears this', { error: new Error('x') });
      logger.info('nor this');
      logger.debug('nor this');
    } finally {
      process.stdout.write = out;
      process.stderr.write = err;
    }
    expect(writes).toEqual([]);
  });
});

describe('logrus text format', () => {
  it('formats RFC3339 with nine fraction digits in UTC', () => {
    expect(formatRfc3339Nano(FIXED_NS)).toBe(FIXED_TIME);
    expect(formatRfc3339Nano(0n)).toBe('1970-01-01T00:00:00.000000000Z');
    expect(formatRfc3339Nano(1_000_000_001n)).toBe('1970-01-01T00:00:01.000000001Z');
  });

  it('keeps the nanosecond clock within a couple of ms of the wall clock and monotonic', () => {
    const a = nowNanos();
    const b = nowNanos();
    expect(b).toBeGreaterThanOrEqual(a);
    const wallNs = BigInt(Date.now()) * 1_000_000n;
    const diff = wallNs - b;
    expect(diff < 50_000_000n && diff > -3_000_000n).toBe(true);
  });

  it('renders the containerd golden line: fixed keys first, fields sorted, bare simple values', () => {
    const line = render({
      level: 'info',
      message: 'starting signal loop',
      runtime: 'io.containerd.tshim.v2',
      pid: 21891,
      namespace: 'default',
      path: '/run/containerd/io.containerd.runtime.v2.task/default/t1',
    });
    expect(line).toBe(
      `time="${FIXED_TIME}" level=info msg="starting signal loop" namespace=default ` +
        'path=/run/containerd/io.containerd.runtime.v2.task/default/t1 pid=21891 runtime=io.containerd.tshim.v2',
    );
  });

  it('quotes values with spaces, quotes, = or emptiness and escapes like Go %q', () => {
    const line = formatLogrusLine(FIXED_TIME, 'warn', 'say "hi"\nnow', {
      a: 'two words',
      b: 'x=y',
      c: '',
      d: 'back\\slash',
      e: 'tab\there',
      f: 'ctl\u0001',
      g: 'ünïcode',
      h: 'plain-._/@^+09',
      i: true,
      j: undefined,
    });
    expect(line).toBe(
      `time="${FIXED_TIME}" level=warning msg="say \\"hi\\"\\nnow" a="two words" b="x=y" c="" ` +
        'd="back\\\\slash" e="tab\\there" f="ctl\\x01" g="ünïcode" h=plain-._/@^+09 i=true',
    );
  });

  it('maps winston levels to logrus names', () => {
    expect(render({ level: 'error', message: 'm' })).toContain(' level=error ');
    expect(render({ level: 'warn', message: 'm' })).toContain(' level=warning ');
    expect(render({ level: 'debug', message: 'm' })).toContain(' level=debug ');
    expect(render({ level: 'silly', message: 'm' })).toContain(' level=trace ');
  });

  it('renders error objects as error="..." and other objects as JSON', () => {
    const err = new ShimError(Code.NotFound, 'process "p1" not found');
    expect(render({ level: 'error', message: 'kill failed', error: err, detail: { n: 1 } })).toBe(
      `time="${FIXED_TIME}" level=error msg="kill failed" detail="{\\"n\\":1}" error="process \\"p1\\" not found"`,
    );
  });

  it('undoes winston folding an Error passed as meta into the message', () => {
    const err = new ShimError(Code.Unknown, 'boom');
    // What winston builds for logger.warn('publish failed', err) with defaultMeta {id: 'c1'}.
    const info = Object.assign<Record<string | symbol, unknown>, ShimError, object>({ id: 'c1' }, err, {
      level: 'warn',
      message: 'publish failed boom',
      stack: err.stack,
      [SPLAT]: [err],
    });
    expect(render(info)).toBe(`time="${FIXED_TIME}" level=warning msg="publish failed" error=boom id=c1`);
  });

  it('writes through the logger with fields and suppresses debug at info level', async () => {
    const stream = new PassThrough();
    const chunks: string[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c.toString()));
    configureLogger({ level: 'info', stream, fields: { namespace: 'default', id: 'c1' } });
    logger.debug('hidden');
    logger.info('shown', { pid: 42 });
    logger.warn('with error', new Error('bad thing'));
    await waitFor(() => chunks.join('').includes('bad thing'));
    const lines = chunks.join('').split('\n').filter(Boolean);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      /^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z" level=info msg=shown id=c1 namespace=default pid=42$/,
    );
    expect(lines[1]).toMatch(/ level=warning msg="with error" error="bad thing" id=c1 namespace=default$/);

    configureLogger({ level: 'debug', stream });
    logger.debug('now visible');
    await waitFor(() => chunks.join('').includes('now visible'));
    expect(chunks.join('')).toContain('level=debug msg="now visible"');
  });
});

function makeFifo(name: string): string {
  const p = path.join(tmp, name);
  execFileSync('mkfifo', [p]);
  return p;
}

/**
 * A reader in a separate process that opens the FIFO O_RDWR like containerd does (so the open
 * never waits for a writer); resolves once it has the FIFO open.
 */
async function startReader(fifo: string): Promise<{ output: () => string; kill: () => Promise<void> }> {
  const child = spawn('sh', ['-c', 'exec cat 0<>"$1"', 'sh', fifo], { stdio: ['ignore', 'pipe', 'ignore'] });
  let data = '';
  child.stdout.on('data', (c: Buffer) => (data += c.toString()));
  const hasOpened = (): boolean => {
    try {
      return fs.readdirSync(`/proc/${child.pid}/fd`).some((fd) => {
        try {
          return fs.readlinkSync(`/proc/${child.pid}/fd/${fd}`) === fifo;
        } catch {
          return false;
        }
      });
    } catch {
      return false;
    }
  };
  await waitFor(hasOpened, 10_000);
  return {
    output: () => data,
    kill: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGKILL');
      }),
  };
}

async function waitFor(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(10);
  }
}

describe('log FIFO', () => {
  it('writes lines into a real FIFO that another process reads', async () => {
    const fifo = makeFifo('log-a');
    const reader = await startReader(fifo);
    configureLogger({ level: 'info', fifoPath: fifo, fields: { runtime: 'io.containerd.tshim.v2' } });
    logger.info('starting signal loop', { pid: process.pid });
    logger.info('second');
    await waitFor(() => reader.output().split('\n').length >= 3);
    const lines = reader.output().trim().split('\n');
    expect(lines[0]).toMatch(/ level=info msg="starting signal loop" pid=\d+ runtime=io.containerd.tshim.v2$/);
    expect(lines[1]).toMatch(/ msg=second runtime=io.containerd.tshim.v2$/);
    await reader.kill();
  });

  it('drops lines while nobody reads and starts writing once a reader appears', async () => {
    const fifo = makeFifo('log-b');
    const writer = new FifoLineWriter(fifo, { reopenDelayMs: 50 });
    writer.write('lost\n');
    expect(writer.dropped).toBe(1);
    const reader = await startReader(fifo);
    await sleep(60); // past reopenDelayMs
    writer.write('kept\n');
    await waitFor(() => reader.output().includes('kept'));
    expect(reader.output()).toMatch(/level=warning msg="log lines dropped" count=1\nkept\n$/);
    writer.destroy();
    await reader.kill();
  });

  it('survives the reader going away (EPIPE) and reconnects to a new reader', async () => {
    const fifo = makeFifo('log-c');
    const first = await startReader(fifo);
    const writer = new FifoLineWriter(fifo, { reopenDelayMs: 50 });
    let errors = 0;
    writer.on('error', () => errors++);
    writer.write('one\n');
    await waitFor(() => first.output().includes('one'));
    await first.kill();
    for (let i = 0; i < 50; i++) {
      writer.write(`while-down-${i}\n`);
      await sleep(2);
    }
    await sleep(100);
    const second = await startReader(fifo);
    await sleep(60); // past reopenDelayMs
    writer.write('after\n');
    await waitFor(() => second.output().includes('after'));
    expect(writer.dropped).toBeGreaterThan(0);
    expect(errors).toBe(0);
    writer.destroy();
    await second.kill();
  });

  it('bounds the buffer when the reader is stalled instead of growing without limit', async () => {
    const fifo = makeFifo('log-d');
    // A reader that holds the FIFO open but never reads: the pipe (64 KiB) fills up.
    const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const writer = new FifoLineWriter(fifo, { maxBufferedBytes: 16 * 1024 });
    const line = `${'x'.repeat(1023)}\n`;
    for (let i = 0; i < 200; i++) writer.write(line);
    await sleep(50);
    expect(writer.dropped).toBeGreaterThan(100);
    writer.destroy();
    fs.closeSync(fd);
  });

  it('drops lines when the path is missing or not a FIFO, without throwing', async () => {
    const plain = path.join(tmp, 'plain-file');
    fs.writeFileSync(plain, '');
    const missing = new FifoLineWriter(path.join(tmp, 'missing'));
    const regular = new FifoLineWriter(plain);
    missing.write('into the void\n');
    regular.write('into a regular file\n');
    await sleep(20);
    expect(missing.dropped).toBe(1);
    expect(regular.dropped).toBe(1);
    expect(fs.readFileSync(plain, 'utf8')).toBe('');
    missing.destroy();
    regular.destroy();

    configureLogger({ level: 'info', fifoPath: path.join(tmp, 'missing') });
    expect(() => logger.info('still fine')).not.toThrow();
  });
});

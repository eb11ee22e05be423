import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { ConsoleSocket, PtyRelay } from '../../src/linux/console';
import { run } from '../../src/linux/spawn';

/**
 * Plays runc's part: opens a real pty, sends the master over the console socket exactly like runc
 * (payload = name, one SCM_RIGHTS fd), then acts as the container process on the slave side.
 */
const FAKE_RUNC = `
import fcntl, os, socket, struct, sys, termios, tty
path, blob = sys.argv[1], int(sys.argv[2])
master, slave = os.openpty()
tty.setraw(slave)  # no echo, no CR/LF translation: the bytes the test sees are the bytes written
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
socket.send_fds(s, [b'/dev/ptmx'], [master])
s.close()
os.close(master)
os.write(slave, b'ready\\n')
line = b''
while not line.endswith(b'\\n'):
    line += os.read(slave, 100)
rows, cols = struct.unpack('HHHH', fcntl.ioctl(slave, termios.TIOCGWINSZ, b'\\0' * 8))[:2]
os.write(slave, b'got ' + line.strip() + b' size %dx%d\\n' % (rows, cols))
data = bytes(i % 251 for i in range(blob))
sent = 0
while sent < len(data):
    sent += os.write(slave, data[sent:])
os.write(slave, b'\\nbye\\n')
os.close(slave)
`;

class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  constructor(private readonly delayMs = 0) {
    super({ highWaterMark: 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    if (this.delayMs > 0) setTimeout(cb, this.delayMs);
    else cb();
  }
  text(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function expectedBlob(size: number): Buffer {
  return Buffer.from(Array.from({ length: size }, (_, i) => i % 251));
}

async function untilText(output: Collector, text: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!output.text().includes(text)) {
    if (Date.now() > deadline) throw new Error(`output never contained ${JSON.stringify(text)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ConsoleSocket + PtyRelay', () => {
  it('receives a real pty master, relays both ways, resizes and drains everything', async () => {
    const socket = await ConsoleSocket.create();
    expect(socket.path).toMatch(/\/pty[^/]*\/pty\.sock$/);
    const dir = dirname(socket.path);
    const blob = 300_000;
    const runc = run('python3', ['-c', FAKE_RUNC, socket.path, String(blob)]);

    const master = await socket.receiveMaster();
    expect(master).toBeGreaterThan(2);
    await socket.close();
    expect(existsSync(dir)).toBe(false);

    const relay = new PtyRelay(master);
    relay.resize(100, 40);
    const input = new PassThrough();
    const output = new Collector(1); // a slow consumer exercises backpressure on the master
    const done = relay.start(input, output);
    await untilText(output, 'ready\n');
    input.write('ping\n');
    await done;
    relay.close();

    const result = await runc;
    expect(result.stderr.toString()).toBe('');
    expect(result.code).toBe(0);
    const text = output.text();
    const header = Buffer.from('ready\ngot ping size 40x100\n');
    expect(text.subarray(0, header.length).toString()).toBe(header.toString());
    // The whole blob arrives even though the process closed the slave right after writing it.
    expect(text.subarray(header.length, header.length + blob).equals(expectedBlob(blob))).toBe(true);
    expect(text.subarray(header.length + blob).toString()).toBe('\nbye\n');
  });

  it('keeps draining the master when the output breaks, then rejects', async () => {
    const socket = await ConsoleSocket.create();
    const runc = run('python3', ['-c', FAKE_RUNC, socket.path, '200000']);
    const master = await socket.receiveMaster();
    await socket.close();
    const relay = new PtyRelay(master);
    const input = new PassThrough();
    input.write('ping\n'); // queued before start: the relay picks it up once flowing
    const broken = new Writable({
      highWaterMark: 16,
      write: (_chunk, _enc, cb) => cb(new Error('reader went away')),
    });
    const err = await relay.start(input, broken).catch((e: unknown) => e);
    relay.close();
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).message).toMatch(/reader went away/);
    // The "container" was never blocked on a full terminal: it wrote everything and exited.
    expect((await runc).code).toBe(0);
  });

  it('close() makes a pending receiveMaster reject with Canceled and removes the dir', async () => {
    const socket = await ConsoleSocket.create();
    const pending = socket.receiveMaster();
    expect(socket.receiveMaster()).toBe(pending);
    const outcome = pending.catch((e: unknown) => e);
    await socket.close();
    await socket.close();
    const err = await outcome;
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Canceled);
    expect(existsSync(dirname(socket.path))).toBe(false);
  });

  it('an aborted signal cancels the wait', async () => {
    const socket = await ConsoleSocket.create();
    const abort = new AbortController();
    const pending = socket.receiveMaster(abort.signal);
    abort.abort();
    await expect(pending).rejects.toMatchObject({ code: Code.Canceled });
    await socket.close();
  });

  it('rejects when the peer hangs up without sending a descriptor', async () => {
    const socket = await ConsoleSocket.create();
    const outcome = socket.receiveMaster().catch((e: unknown) => e);
    const peer = await run('python3', [
      '-c',
      'import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.close()',
      socket.path,
    ]);
    expect(peer.code).toBe(0);
    const err = await outcome;
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Unknown);
    expect((err as ShimError).message).toMatch(/ENOMSG/);
    await socket.close();
  });

  it('places the socket under $XDG_RUNTIME_DIR when set', async () => {
    const previous = process.env.XDG_RUNTIME_DIR;
    const base = await import('node:fs/promises').then((fs) => fs.mkdtemp('/tmp/tshim-xdg-'));
    process.env.XDG_RUNTIME_DIR = base;
    try {
      const socket = await ConsoleSocket.create();
      expect(socket.path.startsWith(`${base}/pty`)).toBe(true);
      expect(readFileSync('/proc/net/unix', 'utf8')).toContain(socket.path);
      await socket.close();
    } finally {
      if (previous === undefined) delete process.env.XDG_RUNTIME_DIR;
      else process.env.XDG_RUNTIME_DIR = previous;
      await import('node:fs/promises').then((fs) => fs.rm(base, { recursive: true, force: true }));
    }
  });

  it('close() ends a running relay and later calls are refused', async () => {
    const socket = await ConsoleSocket.create();
    // This "container" keeps the slave open until it is killed.
    const holder = run('python3', [
      '-c',
      `
import os, socket, sys, time
master, slave = os.openpty()
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
socket.send_fds(s, [b'/dev/ptmx'], [master])
os.close(master)
time.sleep(1.5)
`,
      socket.path,
    ]);
    const master = await socket.receiveMaster();
    await socket.close();
    const relay = new PtyRelay(master);
    const done = relay.start(undefined, new Collector());
    relay.close();
    await done;
    expect(() => relay.resize(10, 10)).toThrow(ShimError);
    await expect(relay.start(undefined, new Collector())).rejects.toMatchObject({ code: Code.FailedPrecondition });
    await holder;
  });
});

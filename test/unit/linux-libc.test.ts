import { closeSync, mkdirSync, mkdtempSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  ErrnoError,
  MS_NODEV,
  MS_NOSUID,
  O_CLOEXEC,
  O_NONBLOCK,
  decodeWaitStatus,
  dup,
  eventfd,
  isChildSubreaper,
  mount,
  pageSize,
  pipe2,
  pipeSize,
  recvFd,
  setPipeSize,
  setChildSubreaper,
  setNonBlocking,
  setWinsize,
  umount2,
  waitpidNoHang,
} from '../../src/linux/libc';
import { run } from '../../src/linux/spawn';
import { growPipe, PIPE_SIZE } from '../../src/linux/io-fifo';

/** The `flags:` line of /proc/self/fdinfo/<fd>, in octal like the kernel prints it. */
function fdFlags(fd: number): number {
  const line = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('flags:'));
  return Number.parseInt((line ?? '').split(/\s+/)[1] ?? '', 8);
}

function thrown(fn: () => unknown): ErrnoError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ErrnoError);
    return err as ErrnoError;
  }
  throw new Error('expected a throw');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tshim-libc-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('pipe2 / dup / setNonBlocking', () => {
  it('creates a close-on-exec pipe that carries data', () => {
    const [r, w] = pipe2();
    try {
      expect(fdFlags(r) & O_CLOEXEC).toBe(O_CLOEXEC);
      expect(fdFlags(w) & O_CLOEXEC).toBe(O_CLOEXEC);
      writeSync(w, 'through the pipe');
      const buf = Buffer.alloc(64);
      expect(buf.subarray(0, readSync(r, buf)).toString()).toBe('through the pipe');
    } finally {
      closeSync(r);
      closeSync(w);
    }
  });

  it('creates an inheritable pipe when asked', () => {
    const [r, w] = pipe2(false);
    expect(fdFlags(r) & O_CLOEXEC).toBe(0);
    closeSync(r);
    closeSync(w);
  });

  it('toggles O_NONBLOCK and dup shares the open file description', () => {
    const [r, w] = pipe2();
    const r2 = dup(r);
    try {
      expect(r2).not.toBe(r);
      expect(fdFlags(r2) & O_CLOEXEC).toBe(O_CLOEXEC);
      setNonBlocking(r, true);
      expect(fdFlags(r) & O_NONBLOCK).toBe(O_NONBLOCK);
      expect(fdFlags(r2) & O_NONBLOCK).toBe(O_NONBLOCK);
      expect(() => readSync(r2, Buffer.alloc(1))).toThrow(/EAGAIN/);
      setNonBlocking(r, false);
      expect(fdFlags(r2) & O_NONBLOCK).toBe(0);
      writeSync(w, 'x');
      expect(readSync(r2, Buffer.alloc(1))).toBe(1);
    } finally {
      for (const fd of [r, r2, w]) closeSync(fd);
    }
  });

  it('throws errno-coded errors for bad descriptors', () => {
    const err = thrown(() => setNonBlocking(987654, true));
    expect(err.code).toBe('EBADF');
    expect(err.errno).toBe(9);
    expect(err.syscall).toBe('fcntl');
  });
});

describe('pipe size', () => {
  it('grows a pipe to 1 MiB (we are root) and reads the size back', () => {
    const [r, w] = pipe2(true);
    try {
      expect(pipeSize(r)).toBe(65536);
      growPipe(r);
      expect(pipeSize(w)).toBe(PIPE_SIZE);
      expect(setPipeSize(w, 5000)).toBe(pageSize() * 2); // rounded up to a power of two of pages
    } finally {
      closeSync(r);
      closeSync(w);
    }
  });

  it('growPipe is best effort on what is not a pipe', () => {
    expect(() => growPipe(987654)).not.toThrow();
    expect(thrown(() => setPipeSize(987654, PIPE_SIZE)).code).toBe('EBADF');
  });
});

describe('eventfd', () => {
  it('counts writes and reports EAGAIN when empty', () => {
    const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      expect(fdFlags(fd) & O_NONBLOCK).toBe(O_NONBLOCK);
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(3n);
      writeSync(fd, one);
      writeSync(fd, one);
      const out = Buffer.alloc(8);
      expect(readSync(fd, out)).toBe(8);
      expect(out.readBigUInt64LE()).toBe(6n);
      expect(() => readSync(fd, out)).toThrow(/EAGAIN/);
    } finally {
      closeSync(fd);
    }
  });
});

describe('wait status and waitpid', () => {
  it('decodes exit codes and signals the containerd way', () => {
    expect(decodeWaitStatus(10, 7 << 8)).toEqual({ pid: 10, status: 7, signaled: false });
    expect(decodeWaitStatus(10, 0)).toEqual({ pid: 10, status: 0, signaled: false });
    expect(decodeWaitStatus(10, 9)).toEqual({ pid: 10, status: 137, signaled: true, signal: 9 });
    expect(decodeWaitStatus(10, 15 | 0x80)).toEqual({ pid: 10, status: 143, signaled: true, signal: 15 });
  });

  it('refuses to wait for any child', () => {
    expect(thrown(() => waitpidNoHang(-1)).code).toBe('EINVAL');
    expect(thrown(() => waitpidNoHang(0)).code).toBe('EINVAL');
  });

  it('reports ECHILD for a process that is not our child', () => {
    const err = thrown(() => waitpidNoHang(1));
    expect(err.code).toBe('ECHILD');
    expect(err.errno).toBe(10);
  });

  it('becomes subreaper and waits for an orphan re-parented to us', async () => {
    setChildSubreaper();
    expect(isChildSubreaper()).toBe(true);
    // The subshell outlives the sh that started it and is re-parented to this process.
    const out = await run('sh', ['-c', '(sleep 0.3; exit 42) >/dev/null 2>&1 & echo $!']);
    const pid = Number(out.stdout.toString().trim());
    expect(pid).toBeGreaterThan(0);
    expect(waitpidNoHang(pid)).toBeUndefined();
    let result = waitpidNoHang(pid);
    for (let i = 0; i < 100 && !result; i++) {
      await sleep(20);
      result = waitpidNoHang(pid);
    }
    expect(result).toEqual({ pid, status: 42, signaled: false });
    expect(thrown(() => waitpidNoHang(pid)).code).toBe('ECHILD');
  });
});

describe('ioctl / mount', () => {
  it('setWinsize fails with ENOTTY on a pipe', () => {
    const [r, w] = pipe2();
    try {
      expect(thrown(() => setWinsize(r, 24, 80)).code).toBe('ENOTTY');
    } finally {
      closeSync(r);
      closeSync(w);
    }
  });

  it('reports a sane page size', () => {
    expect([4096, 16384, 65536]).toContain(pageSize());
  });

  it('mounts and unmounts a tmpfs, with errno errors naming the path', () => {
    const target = join(dir, 'mnt');
    mkdirSync(target);
    mount('tmpfs', target, 'tmpfs', MS_NOSUID | MS_NODEV, 'size=1m,mode=0700');
    try {
      const line = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .find((l) => l.split(' ')[4] === target);
      expect(line).toMatch(/ rw,nosuid,nodev[, ]/);
      expect(line).toMatch(/ - tmpfs tmpfs .*size=1024k/);
    } finally {
      umount2(target, 0);
    }
    const err = thrown(() => umount2(target, 0));
    expect(err.code).toBe('EINVAL');
    expect(err.path).toBe(target);
    expect(err.message).toContain(target);
    expect(thrown(() => mount('none', join(dir, 'missing'), 'tmpfs', 0, null)).code).toBe('ENOENT');
  });
});

describe('recvFd', () => {
  const sender = (socketPath: string, mode: string): Promise<unknown> =>
    run('python3', [
      '-c',
      `
import os, socket, sys, time
path, mode, payload = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
time.sleep(0.2)  # let the receiver see EAGAIN first
if mode == 'one':
    fd = os.open(payload, os.O_RDONLY)
    socket.send_fds(s, [b'/the/name'], [fd])
elif mode == 'two':
    socket.send_fds(s, [b'x'], [0, 1])
time.sleep(0.2)
s.close()
`,
      socketPath,
      mode,
      join(dir, 'payload'),
    ]);

  async function accept(mode: string): Promise<{ fd: () => number; done: Promise<unknown>; close: () => void }> {
    const path = join(dir, `${mode}.sock`);
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((r) => server.listen(path, r));
    const connected = new Promise<net.Socket>((r) => server.once('connection', r));
    const done = sender(path, mode);
    const socket = await connected;
    return {
      fd: () => (socket as unknown as { _handle: { fd: number } })._handle.fd,
      done,
      close: () => {
        socket.destroy();
        server.close();
      },
    };
  }

  async function receive(fd: number): Promise<{ fd: number; name: string }> {
    for (let i = 0; i < 200; i++) {
      const got = recvFd(fd);
      if (got) return got;
      await sleep(10);
    }
    throw new Error('nothing received');
  }

  it('receives one descriptor and its name, undefined while nothing is queued', async () => {
    const payload = join(dir, 'payload');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(payload, 'payload through SCM_RIGHTS');
    const conn = await accept('one');
    try {
      expect(recvFd(conn.fd())).toBeUndefined();
      const got = await receive(conn.fd());
      expect(got.name).toBe('/the/name');
      expect(fdFlags(got.fd) & O_CLOEXEC).toBe(O_CLOEXEC);
      const buf = Buffer.alloc(64);
      expect(buf.subarray(0, readSync(got.fd, buf, 0, 64, 0)).toString()).toBe('payload through SCM_RIGHTS');
      closeSync(got.fd);
    } finally {
      conn.close();
      await conn.done;
    }
  });

  it('rejects a message with two descriptors (EMSGSIZE)', async () => {
    const conn = await accept('two');
    try {
      let err: unknown;
      for (let i = 0; i < 200 && !err; i++) {
        try {
          if (recvFd(conn.fd())) throw new Error('unexpected fd');
        } catch (e) {
          err = e;
        }
        await sleep(10);
      }
      expect((err as ErrnoError).code).toBe('EMSGSIZE');
    } finally {
      conn.close();
      await conn.done;
    }
  });

  it('reports ENOMSG when the peer closes without sending', async () => {
    const conn = await accept('none');
    try {
      let err: unknown;
      for (let i = 0; i < 200 && !err; i++) {
        try {
          recvFd(conn.fd());
        } catch (e) {
          err = e;
        }
        await sleep(10);
      }
      expect((err as ErrnoError).code).toBe('ENOMSG');
    } finally {
      conn.close();
      await conn.done;
    }
  });
});

import { closeSync, readSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { pipe2 } from '../../src/linux/libc';
import { isNodeChild, run, spawnTracked } from '../../src/linux/spawn';

describe('run', () => {
  it('collects stdout and stderr and reports the exit code', async () => {
    const r = await run('sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(r).toEqual({ code: 3, signal: null, stdout: Buffer.from('out\n'), stderr: Buffer.from('err\n') });
  });

  it('passes arguments verbatim, without a shell', async () => {
    const r = await run('printf', ['%s|', 'a b', '$HOME', ';echo x']);
    expect(r.stdout.toString()).toBe('a b|$HOME|;echo x|');
  });

  it('feeds input to stdin and honours cwd and env', async () => {
    const r = await run('sh', ['-c', 'cat; pwd; echo "$TSHIM_TEST"'], {
      input: 'from stdin\n',
      cwd: '/tmp',
      env: { PATH: process.env.PATH, TSHIM_TEST: 'env value' },
    });
    expect(r.stdout.toString()).toBe('from stdin\n/tmp\nenv value\n');
  });

  it('reports a signal death', async () => {
    const r = await run('sh', ['-c', 'kill -TERM $$']);
    expect(r.code).toBeNull();
    expect(r.signal).toBe('SIGTERM');
  });

  it('hands given fds to the child as stdio and as fd 3+', async () => {
    const [r, w] = pipe2();
    try {
      const res = await run('sh', ['-c', 'echo to-stdout; echo to-fd3 >&3'], { stdio: ['ignore', w, 'pipe'], extraFds: [w] });
      expect(res.code).toBe(0);
      const buf = Buffer.alloc(100);
      expect(buf.subarray(0, readSync(r, buf)).toString()).toBe('to-stdout\nto-fd3\n');
    } finally {
      closeSync(r);
      closeSync(w);
    }
  });

  it('rejects with Unknown when the program cannot be started', async () => {
    const err = await run('/nonexistent/tshim-binary', []).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Unknown);
    expect((err as ShimError).message).toMatch(/ENOENT/);
  });

  it('rejects input without a stdin pipe', async () => {
    await expect(run('true', [], { input: 'x', stdio: ['ignore', 'pipe', 'pipe'] })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
  });

  it('kills the child and rejects with DeadlineExceeded on timeout', async () => {
    const started = Date.now();
    await expect(run('sleep', ['60'], { timeoutMs: 200 })).rejects.toMatchObject({ code: Code.DeadlineExceeded });
    expect(Date.now() - started).toBeLessThan(30_000); // killed at its timeout, not after sleep's 60 s
  });

  it('does not wait for a grandchild that inherited the output pipe', async () => {
    const started = Date.now();
    const r = await run('sh', ['-c', 'sleep 60 & echo $!']);
    process.kill(Number(r.stdout.toString().trim()), 'SIGKILL');
    expect(r.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(30_000); // not the grandchild's 60 s
  });
});

describe('spawnTracked / isNodeChild', () => {
  it('tracks a child exactly until libuv has reaped it', async () => {
    const child = spawnTracked('sh', ['-c', 'exit 4'], { stdio: 'ignore' });
    const pid = child.pid as number;
    expect(isNodeChild(pid)).toBe(true);
    const code = await new Promise((r) => child.once('exit', r));
    expect(code).toBe(4);
    expect(isNodeChild(pid)).toBe(false);
  });
});

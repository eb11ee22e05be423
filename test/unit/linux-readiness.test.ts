/**
 * The daemon's epoll set (src/linux/readiness.ts): an eventfd's signal reaches its handler with
 * no timer running, removal stops the parked wait, and a process that exits while the wait is
 * parked on a threadpool thread still exits (libuv joins its threadpool at exit).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EFD_CLOEXEC, EFD_NONBLOCK, eventfd } from '../../src/linux/libc';
import { ReadinessSet } from '../../src/linux/readiness';

const signal = (fd: number): void => {
  const one = Buffer.alloc(8);
  one.writeBigUInt64LE(1n);
  fs.writeSync(fd, one);
};

describe('ReadinessSet (epoll on a threadpool thread)', () => {
  it('calls the handler of the fd that became readable, for each signal it consumed', async () => {
    const set = new ReadinessSet();
    const a = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const b = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const seen: string[] = [];
    let next: (() => void) | undefined;
    const watch = (name: string, fd: number) => ({
      ready: () => {
        fs.readSync(fd, Buffer.alloc(8), 0, 8, null); // level-triggered: consume
        seen.push(name);
        next?.();
      },
      lost: () => seen.push(`${name} lost`),
    });
    try {
      expect(set.add(a, watch('a', a))).toBe(true);
      expect(set.add(b, watch('b', b))).toBe(true);
      expect(set.watching).toBe(2);
      await new Promise<void>((resolve) => {
        next = resolve;
        signal(b);
      });
      await new Promise<void>((resolve) => {
        next = resolve;
        signal(a);
      });
      expect(seen).toEqual(['b', 'a']);
    } finally {
      set.remove(a);
      set.remove(b);
      fs.closeSync(a);
      fs.closeSync(b);
    }
    expect(set.watching).toBe(0);
  });

  it('a process exiting while the wait is parked exits at once', () => {
    const script = `
      const { EFD_CLOEXEC, EFD_NONBLOCK, eventfd } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/linux/libc.js'))});
      const { readiness } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/linux/readiness.js'))});
      const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      readiness().add(fd, { ready() {}, lost() {} });
      setImmediate(() => process.exit(0));
    `;
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 20_000, encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  });
});

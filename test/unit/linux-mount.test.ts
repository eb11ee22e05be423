import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { MNT_DETACH, MS_BIND, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, mount, pageSize, umount2 } from '../../src/linux/libc';
import { compactLowerdirs, mountAll, parseMountOptions, secureJoin, unmountAll } from '../../src/linux/mount';
import { mountStuckFuse, threadsWaitingOnFuse } from '../fixtures/stuck-fuse';
import { until } from '../fixtures/until';

function mountsUnder(dir: string): { target: string; fsType: string; options: string }[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f.length > 5 && (f[4] === dir || (f[4] ?? '').startsWith(`${dir}/`)))
    .map((f) => ({ target: f[4] as string, fsType: f[f.indexOf('-') + 1] as string, options: f[5] as string }));
}

let dir: string;
let rootfs: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tshim-mount-'));
  rootfs = join(dir, 'rootfs');
  mkdirSync(rootfs);
});

afterEach(() => {
  // Whatever a test left behind: lazily detach, deepest first, then remove the tree.
  for (const m of mountsUnder(dir).reverse()) {
    try {
      umount2(m.target, MNT_DETACH);
    } catch {
      // a parent's detach already took it
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('parseMountOptions', () => {
  it('maps flags, negations, propagation and passes the rest as data', () => {
    const parsed = parseMountOptions(['rbind', 'ro', 'nosuid', 'rprivate', 'index=off', 'mode=755']);
    expect(parsed.flags).toBe(MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID);
    expect(parsed.propagation).toBe(MS_PRIVATE | MS_REC);
    expect(parsed.data).toEqual(['index=off', 'mode=755']);
    expect(parsed.needsRemountReadonly).toBe(true);
    expect(parsed.loop).toBe(false);
  });

  it('lets later options override earlier ones', () => {
    expect(parseMountOptions(['ro', 'rw']).flags).toBe(0);
    expect(parseMountOptions(['nosuid', 'suid', 'defaults']).flags).toBe(0);
    expect(parseMountOptions(['bind', 'rw']).needsRemountReadonly).toBe(false);
    expect(parseMountOptions(['bind', 'ro', 'remount']).needsRemountReadonly).toBe(false);
    expect(parseMountOptions(['remount', 'ro']).flags).toBe(MS_REMOUNT | MS_RDONLY);
    expect(parseMountOptions(['loop', 'ro']).loop).toBe(true);
    expect(parseMountOptions(['bind']).propagation).toBeUndefined();
  });
});

describe('compactLowerdirs / secureJoin', () => {
  it('rewrites lowerdirs relative to their common parent', () => {
    const compact = compactLowerdirs(['index=off', 'lowerdir=/s/snapshots/3/fs:/s/snapshots/12/fs', 'workdir=/w']);
    expect(compact).toEqual({ cwd: '/s/snapshots', options: ['index=off', 'lowerdir=3/fs:12/fs', 'workdir=/w'] });
    expect(compactLowerdirs(['lowerdir=/a/x:/b/y']).cwd).toBeUndefined();
  });

  it('resolves symlinks inside the root and never escapes it', async () => {
    mkdirSync(join(rootfs, 'real'));
    symlinkSync('/real', join(rootfs, 'abs'));
    symlinkSync('../../../../etc', join(rootfs, 'up'));
    expect(await secureJoin(rootfs, '/abs/sub')).toBe(join(rootfs, 'real/sub'));
    expect(await secureJoin(rootfs, 'up/passwd')).toBe(join(rootfs, 'etc/passwd'));
    expect(await secureJoin(rootfs, '/../../x')).toBe(join(rootfs, 'x'));
    expect(await secureJoin(rootfs, '/')).toBe(rootfs);
  });
});

describe('mountAll / unmountAll (real mounts)', () => {
  it('mounts a tmpfs with flags and data', async () => {
    await mountAll([{ type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=2m'] }], rootfs);
    const [m] = mountsUnder(rootfs);
    expect(m).toMatchObject({ target: rootfs, fsType: 'tmpfs' });
    expect(m?.options).toMatch(/^rw,nosuid,nodev/);
    writeFileSync(join(rootfs, 'file'), 'x');
    await unmountAll(rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  it('bind-mounts a directory read-write', async () => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'hello'), 'from the snapshot');
    await mountAll([{ type: 'bind', source: src, options: ['rbind', 'rw'] }], rootfs);
    expect(readFileSync(join(rootfs, 'hello'), 'utf8')).toBe('from the snapshot');
    writeFileSync(join(rootfs, 'new'), 'written through the bind');
    expect(readFileSync(join(src, 'new'), 'utf8')).toBe('written through the bind');
    await unmountAll(rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  it('makes a read-only bind really read-only (EROFS)', async () => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'hello'), 'ro');
    await mountAll([{ type: 'bind', source: src, options: ['rbind', 'ro'] }], rootfs);
    expect(readFileSync(join(rootfs, 'hello'), 'utf8')).toBe('ro');
    expect(() => writeFileSync(join(rootfs, 'new'), 'x')).toThrow(expect.objectContaining({ code: 'EROFS' }));
    expect(mountsUnder(rootfs)[0]?.options).toMatch(/^ro[,]?/);
    writeFileSync(join(src, 'still-writable'), 'the source is not affected');
    await unmountAll(rootfs);
  });

  it('mounts an overlay with two lowerdirs, upperdir and workdir', async () => {
    const lower1 = join(dir, 'l1');
    const lower2 = join(dir, 'l2');
    const upper = join(dir, 'upper');
    const work = join(dir, 'work');
    for (const d of [lower1, lower2, upper, work]) mkdirSync(d);
    writeFileSync(join(lower1, 'shadowed'), 'top layer');
    writeFileSync(join(lower2, 'shadowed'), 'bottom layer');
    writeFileSync(join(lower2, 'only-bottom'), 'bottom');
    await mountAll(
      [
        {
          type: 'overlay',
          source: 'overlay',
          options: ['index=off', `workdir=${work}`, `upperdir=${upper}`, `lowerdir=${lower1}:${lower2}`],
        },
      ],
      rootfs,
    );
    expect(readFileSync(join(rootfs, 'shadowed'), 'utf8')).toBe('top layer');
    expect(readFileSync(join(rootfs, 'only-bottom'), 'utf8')).toBe('bottom');
    writeFileSync(join(rootfs, 'created'), 'copy-up');
    expect(readFileSync(join(upper, 'created'), 'utf8')).toBe('copy-up');
    expect(() => readFileSync(join(lower1, 'created'))).toThrow();
    await unmountAll(rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  it('mounts an overlay whose lowerdir list exceeds a page, via relative lowerdirs', async () => {
    const layers = join(dir, 'a-rather-long-snapshot-directory-name', 'io.containerd.snapshotter.v1.overlayfs');
    const lowers: string[] = [];
    for (let i = 0; lowers.join(':').length < pageSize() - 400; i++) {
      const layer = join(layers, 'snapshots', String(1000 + i), 'fs');
      mkdirSync(layer, { recursive: true });
      writeFileSync(join(layer, `layer-${i}`), String(i));
      lowers.push(layer);
    }
    const upper = join(dir, 'upper');
    const work = join(dir, 'work');
    mkdirSync(upper);
    mkdirSync(work);
    const options = ['index=off', `workdir=${work}`, `upperdir=${upper}`, `lowerdir=${lowers.join(':')}`];
    expect(options.join(',').length).toBeGreaterThan(pageSize() - 512);
    await mountAll([{ type: 'overlay', source: 'overlay', options }], rootfs);
    expect(readFileSync(join(rootfs, 'layer-0'), 'utf8')).toBe('0');
    expect(readFileSync(join(rootfs, `layer-${lowers.length - 1}`), 'utf8')).toBe(String(lowers.length - 1));
    await unmountAll(rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  it('mounts at targets inside the rootfs and unmounts nested mounts first', async () => {
    const src = join(dir, 'src');
    mkdirSync(src);
    await mountAll(
      [
        { type: 'tmpfs', source: 'tmpfs', options: [] },
        { type: 'bind', source: src, target: '/', options: ['bind'] },
      ],
      rootfs,
    );
    mkdirSync(join(rootfs, 'data'));
    await mountAll([{ type: 'tmpfs', source: 'tmpfs', target: '/data', options: ['size=1m'] }], rootfs);
    expect(mountsUnder(rootfs).map((m) => m.target)).toEqual([rootfs, rootfs, join(rootfs, 'data')]);
    await unmountAll(rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  it('unmountAll peels stacked mounts', async () => {
    for (let i = 0; i < 3; i++) mount('tmpfs', rootfs, 'tmpfs', 0, 'size=1m');
    expect(mountsUnder(rootfs)).toHaveLength(3);
    await unmountAll(rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
    await unmountAll(rootfs); // idempotent on a plain directory
  });

  it('unmountAll retries a busy mount, then reports EBUSY and leaves it mounted', async () => {
    mount('tmpfs', rootfs, 'tmpfs', 0, 'size=1m');
    // A process whose working directory is inside the mount keeps it busy for the whole retry budget.
    const holder = spawn('sleep', ['60'], { cwd: rootfs, stdio: 'ignore' });
    await new Promise<void>((resolve, reject) => {
      holder.once('spawn', resolve);
      holder.once('error', reject);
    });
    try {
      const err = await unmountAll(rootfs).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ShimError);
      // EBUSY as a rule; errno is read back in JavaScript, where it can be clobbered (see peel).
      expect((err as ShimError).message).toMatch(new RegExp(`^unmount ${rootfs}: E[A-Z]+: .*, umount2 '${rootfs}'$`));
      expect(mountsUnder(rootfs)).toHaveLength(1);
    } finally {
      holder.kill('SIGKILL');
      await new Promise((resolve) => holder.once('exit', resolve));
    }
    await unmountAll(rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  it('unmountAll on a missing directory succeeds', async () => {
    await expect(unmountAll(join(dir, 'does-not-exist'))).resolves.toBeUndefined();
  });

  it('undoes earlier mounts when a later one fails', async () => {
    const err = await mountAll(
      [
        { type: 'tmpfs', source: 'tmpfs', options: [] },
        { type: 'no-such-fs', source: 'x', options: [] },
      ],
      rootfs,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Unknown);
    expect((err as ShimError).message).toMatch(/ENODEV/);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  it('creates a missing rootfs and mounts nothing for an empty list', async () => {
    const fresh = join(dir, 'fresh', 'rootfs');
    await mountAll([{ type: 'tmpfs', source: 'tmpfs', options: [] }], fresh);
    expect(mountsUnder(fresh)).toHaveLength(1);
    await unmountAll(fresh);
    await mountAll([], rootfs);
    expect(mountsUnder(rootfs)).toEqual([]);
  });

  describe('a filesystem that does not answer', () => {
    // If a mount or unmount waited on the event loop, `until` below could never run again; the
    // FUSE holder's own deadline would then end the wait and the test fail, not hang.

    it('mountAll waits for it off the event loop and fails with ENOTCONN once it is gone, leaving nothing mounted', async () => {
      const fuse = await mountStuckFuse(join(tmpdir(), `tshim-stuck-${process.pid}-m`));
      try {
        const pending = mountAll(
          [
            { type: 'tmpfs', source: 'tmpfs', options: [] },
            { type: 'bind', source: join(fuse.path, 'lower'), options: ['rbind', 'ro'] },
          ],
          rootfs,
        ).catch((e: unknown) => e);
        let settled = false;
        void pending.then(() => (settled = true));
        await until('the bind mount to wait on FUSE', async () => (threadsWaitingOnFuse(process.pid) > 0 ? true : undefined));
        // The loop still turns: timers, file I/O.
        await new Promise((resolve) => setTimeout(resolve, 10));
        expect(mountsUnder(rootfs)).not.toEqual([]);
        expect(settled).toBe(false);

        await fuse.abort();
        const err = await pending;
        expect(err).toBeInstanceOf(ShimError);
        expect((err as ShimError).code).toBe(Code.Unknown);
        expect((err as ShimError).message).toBe(`mount bind ${fuse.path}/lower on ${rootfs}: ENOTCONN: Transport endpoint is not connected, mount '${rootfs}'`);
        expect(mountsUnder(rootfs)).toEqual([]);
      } finally {
        await fuse.cleanup();
      }
    });

    it('unmountAll unmounts a rootfs that is such a filesystem without waiting for it', async () => {
      // Resolving the rootfs must not stat it: stat waits for the answer (realpathSync did).
      const fuse = await mountStuckFuse(join(dir, 'stuck-rootfs'));
      try {
        await unmountAll(fuse.path);
        expect(mountsUnder(fuse.path)).toEqual([]);
      } finally {
        await fuse.cleanup();
      }
    });
  });
});

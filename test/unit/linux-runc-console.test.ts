/**
 * The native pieces together against the real runc: console socket + SCM_RIGHTS from runc itself,
 * TIOCSWINSZ, pty draining, and the reaper collecting the re-parented container init's exit status.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsoleSocket, PtyRelay } from '../../src/linux/console';
import { Reaper } from '../../src/linux/reaper';
import { run } from '../../src/linux/spawn';

const BUSYBOX = '/usr/bin/busybox';
const haveRunc = existsSync('/usr/sbin/runc') && existsSync(BUSYBOX) && process.getuid?.() === 0;

let dir: string;
let bundle: string;
let root: string;
const id = `tshim-console-${process.pid}`;

function config(args: string[]): object {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: true,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin', 'TERM=xterm'],
      cwd: '/',
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'tshim',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
    },
  };
}

beforeAll(() => {
  if (!haveRunc) return;
  dir = mkdtempSync(join(tmpdir(), 'tshim-runc-console-'));
  bundle = join(dir, 'bundle');
  root = join(dir, 'runc-root');
  mkdirSync(join(bundle, 'rootfs', 'bin'), { recursive: true });
  copyFileSync(BUSYBOX, join(bundle, 'rootfs', 'bin', 'busybox'));
  for (const d of ['proc', 'dev']) mkdirSync(join(bundle, 'rootfs', d));
});

afterAll(async () => {
  if (!haveRunc) return;
  await run('runc', ['--root', root, 'delete', '--force', id]).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe.runIf(haveRunc)('real runc', () => {
  it('hands the pty master over the console socket and the reaper gets the init exit', async () => {
    const script = 'stty size; echo hello-from-runc; i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; exit 3';
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(config(['/bin/busybox', 'sh', '-c', script])));
    const reaper = new Reaper();
    reaper.start();
    const socket = await ConsoleSocket.create();
    try {
      const master = socket.receiveMaster();
      const create = await run('runc', [
        '--root', root, 'create', '--bundle', bundle, '--pid-file', join(bundle, 'init.pid'),
        '--console-socket', socket.path, id,
      ]);
      expect(create.stderr.toString()).toBe('');
      expect(create.code).toBe(0);
      const pid = Number(readFileSync(join(bundle, 'init.pid'), 'utf8'));
      const exit = reaper.watch(pid);

      const relay = new PtyRelay(await master);
      relay.resize(132, 43);
      const chunks: Buffer[] = [];
      const output = new Writable({
        write: (chunk: Buffer, _enc, cb) => {
          chunks.push(chunk);
          cb();
        },
      });
      const relayed = relay.start(undefined, output);
      const start = await run('runc', ['--root', root, 'start', id]);
      expect(start.code).toBe(0);

      expect(await exit).toEqual({ pid, status: 3, signaled: false });
      await relayed;
      relay.close();
      const text = Buffer.concat(chunks).toString().replace(/\r\n/g, '\n');
      expect(text.startsWith('43 132\nhello-from-runc\nline-0\n')).toBe(true);
      expect(text.endsWith('line-1998\nline-1999\n')).toBe(true);
    } finally {
      await socket.close();
      reaper.stop();
    }
  });
});

/**
 * Issue #10, point 1: what only the single executable (out/linux-x64, `npm run package`) has to
 * prove. The lifecycle suites themselves (run.test.ts, tasks.test.ts) run against it in the
 * `e2e-sea` vitest project, whose globalSetup builds it; this file runs only in that project.
 *
 * - it is one program: `-v` says so and carries the package's version and the build's revision
 *   (SEA assets), and its daemon is the executable itself, never node plus a script;
 * - containerd's PATH needs no node: `start` and the daemon it launches work with PATH=/nonexistent;
 * - koffi's native module is loaded from beside the executable (the daemon maps tshim-koffi.node);
 * - a copy without tshim-koffi.node fails `start` with one line naming the file.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs, readFileSync, realpathSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLeftovers, removeContainer, shimProcesses, startContainerd, uniqueId, waitForTaskStatus, type Containerd } from './harness';
import { importBusyboxImage } from './image';
import { SEA_BIN, SEA_DIR, SEA_KOFFI } from './fixtures/sea-build';
import { Scratch, connectOnce, daemonPids, isAlive, startArgs, waitUntil } from './shim-wire-helpers';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { codec } from '../../src/common/proto';
import { TASK_SERVICE_V2, type ShutdownRequest } from '../../src/common/types';

const REPO = path.resolve(__dirname, '..', '..');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    // stdin /dev/null, as containerd gives `start` when there are no options
    const child = spawn(file, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
}

const scratch = new Scratch();
afterAll(async () => {
  const forced = await scratch.cleanup();
  if (forced.length > 0) console.warn(`sea cleanup had to force: ${forced.join('; ')}`);
});

describe('the single executable', () => {
  it('says it is one, with the package version and the revision of the build', async () => {
    const r = await run(SEA_BIN, ['-v']);
    const version = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    const revision = readFileSync(path.join(REPO, 'dist', 'revision.txt'), 'utf8').trim();
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(new RegExp(`Version:\\s+${version.replace(/\./g, '\\.')}\\n`));
    expect(r.stdout).toContain(`Revision: ${revision}\n`);
    expect(r.stdout).toContain('Form:     single executable\n');
  });

  it('starts a daemon that serves the Task API with no node on PATH', async () => {
    const b = scratch.bundle('sea');
    const env = { PATH: '/nonexistent', TTRPC_ADDRESS: `${b.address}.ttrpc`, GOMAXPROCS: '2', TSHIM_SPARE: '0' };
    const r = await run(SEA_BIN, startArgs(b), { cwd: b.dir, env });
    expect(r).toEqual({ code: 0, stdout: b.expectedAddress, stderr: '' });
    expect(await waitUntil(async () => (await daemonPids(b.namespace)).length === 1, 10_000)).toBe(true);
    const [pid] = await daemonPids(b.namespace);
    // The daemon is the executable itself, re-run with the daemon's flags.
    expect(realpathSync(`/proc/${pid}/exe`)).toBe(realpathSync(SEA_BIN));
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv.slice(1, 7)).toEqual(['-namespace', b.namespace, '-id', b.id, '-address', b.address]);
    expect((await connectOnce(b.socketPath, b.id)).shimPid).toBe(pid);
    const client = await TtrpcClient.connect(b.socketPath, { timeoutMs: 3000 });
    try {
      const shutdown = codec<ShutdownRequest>('containerd.task.v2.ShutdownRequest');
      await client.call(TASK_SERVICE_V2, 'Shutdown', shutdown.encode({ id: b.id, now: true }), { timeoutMs: 3000 }).catch(() => undefined);
    } finally {
      client.close();
    }
    expect(await waitUntil(() => !isAlive(pid!), 10_000)).toBe(true);
  });

  it('refuses to start, in one line, when copied without tshim-koffi.node', async () => {
    const b = scratch.bundle('sea-lone');
    const lone = path.join(b.root, 'lone');
    await fs.mkdir(lone);
    await fs.copyFile(SEA_BIN, path.join(lone, 'containerd-shim-tshim-v2'));
    await fs.chmod(path.join(lone, 'containerd-shim-tshim-v2'), 0o755);
    const r = await run(path.join(lone, 'containerd-shim-tshim-v2'), startArgs(b), { cwd: b.dir, env: { PATH: '/usr/bin:/bin', TSHIM_SPARE: '0' } });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(r.stderr).toContain(path.join(lone, 'tshim-koffi.node'));
    expect(await daemonPids(b.namespace)).toEqual([]);
  });
});

describe('the single executable under containerd', () => {
  let cd: Containerd | undefined;
  let image = '';
  beforeAll(async () => {
    cd = await startContainerd({ shimDir: SEA_DIR });
    image = await importBusyboxImage(cd);
  });
  afterAll(async () => {
    const problems = cd ? await cd.stop() : [];
    if (problems.length > 0) throw new Error(`teardown:\n${problems.join('\n')}`);
  });

  it('is the daemon containerd runs, with koffi loaded from beside it', async () => {
    const c = cd!;
    const id = uniqueId(`sea-${randomBytes(2).toString('hex')}`);
    await c.ctr(['run', '-d', '--runtime', 'io.containerd.tshim.v2', image, id, 'sleep', '600']);
    try {
      await waitForTaskStatus(c, id, 'RUNNING');
      const shims = await shimProcesses(c, id);
      expect(shims).toHaveLength(1);
      const pid = shims[0]!.pid;
      expect(realpathSync(`/proc/${pid}/exe`)).toBe(realpathSync(SEA_BIN));
      const maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
      expect(maps).toContain(realpathSync(SEA_KOFFI));
      expect(maps).not.toMatch(/node_modules\/koffi/);
      const exec = await c.ctr(['task', 'exec', '--exec-id', 'e1', id, 'echo', 'from an exec']);
      expect(exec).toMatchObject({ code: 0, stdout: 'from an exec\n' });
    } finally {
      await removeContainer(c, id);
    }
    expect(await findLeftovers(c, id)).toEqual([]);
  });
});

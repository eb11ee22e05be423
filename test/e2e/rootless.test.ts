/**
 * Rootless containerd (issue #9 §2, spec §16): containerd run by an unprivileged user inside
 * rootlesskit, with tshim and Debian's runc shim side by side. Every case runs on both and tshim
 * must end as runc-v2 does: run, exec with its status, a TTY exec, kill, stats (whatever cgroup
 * v1 lets a rootless runtime have: the outcome must match runc-v2's, never a crash), delete.
 *
 * Set-up (spec §16): a throw-away user with subordinate ids; `rootlesskit --net=host --copy-up=/etc
 * --copy-up=/run`, whose child replaces the copied-up links /run/containerd and /run/runc with
 * directories of its own, then execs containerd with root, state and socket under the user's
 * home; clients enter the namespaces as that user (`nsenter -U --preserve-credentials -m`).
 * Containers use a spec without linux.cgroupsPath/resources (`ctr oci spec`, edited, `ctr run
 * --config`, which takes the whole spec from the file: rootfs a busybox dir the user owns), the
 * one cgroup v1 lets a rootless runtime create.
 *
 * Skipped, with the reason, where the host cannot do this (no rootlesskit/newuidmap, not root,
 * user namespaces off). Everything made here is removed: the user (and its subordinate ids), its
 * home, and its processes (found by the user's uid, which nothing else has).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBusyboxRootfs } from './image';

const execFileAsync = promisify(execFile);
const REPO_ROOT = path.resolve(__dirname, '..', '..');
const RUNTIMES = ['io.containerd.runc.v2', 'io.containerd.tshim.v2'];

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to create a test user';
  for (const bin of ['/usr/bin/rootlesskit', '/usr/bin/newuidmap', '/usr/bin/newgidmap', '/usr/sbin/useradd', '/usr/bin/nsenter', '/usr/bin/setpriv']) {
    if (!fs.existsSync(bin)) return `${bin} is missing (Debian packages rootlesskit, uidmap, util-linux, passwd)`;
  }
  try {
    if (fs.readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim() === '0') return 'user namespaces are disabled';
  } catch {
    return 'no /proc/sys/user/max_user_namespaces';
  }
  return undefined;
}

const skipReason = missingPrerequisite();

interface Bed {
  user: string;
  uid: number;
  gid: number;
  dir: string;
  home: string;
  address: string;
  stateDir: string;
  fifoDir: string;
  rootlesskit: ChildProcess;
  childPid: number;
  log: string;
}

let bed: Bed | undefined;
let baseSpec: Record<string, unknown> = {};
/** ctr's default spec as is: with linux.cgroupsPath and resources, which cgroup v1 refuses here. */
let cgroupSpec: Record<string, unknown> = {};

/** The edited default spec running `args`, written where the user can read it; returns its path. */
function specFor(b: Bed, id: string, args: string[], withCgroup = false): string {
  const spec = JSON.parse(JSON.stringify(withCgroup ? cgroupSpec : baseSpec)) as { process: Record<string, unknown>; linux?: Record<string, unknown> };
  if (withCgroup && spec.linux) spec.linux['cgroupsPath'] = `/tshim-rootless/${id}`;
  spec.process = { ...spec.process, args, terminal: false, env: ['PATH=/bin:/usr/bin:/sbin:/usr/sbin', 'TERM=xterm'], cwd: '/' };
  const file = path.join(b.home, `spec-${id}.json`);
  fs.writeFileSync(file, JSON.stringify(spec));
  fs.chownSync(file, b.uid, b.gid);
  return file;
}

const run = async (cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> => {
  try {
    const r = await execFileAsync(cmd, args, { env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 16 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
};

function userEnv(b: Pick<Bed, 'home'>): NodeJS.ProcessEnv {
  return {
    HOME: b.home,
    XDG_RUNTIME_DIR: path.join(b.home, 'run'),
    PATH: `${path.join(REPO_ROOT, 'bin')}:${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
  };
}

/** argv prefix running a command as the test user inside rootlesskit's user and mount namespaces. */
function asUserInside(b: Bed): string[] {
  return ['setpriv', `--reuid=${b.uid}`, `--regid=${b.gid}`, '--init-groups', '--', 'nsenter', '-U', '--preserve-credentials', '-m', '-t', String(b.childPid)];
}

function ctr(b: Bed, args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = [...asUserInside(b), 'ctr', '--address', b.address, '--namespace', 'rl', ...args];
  return run(argv[0]!, argv.slice(1), { env: userEnv(b), timeoutMs });
}

/** ctr on a pseudo-terminal (script(1)), for -t. */
function ctrTty(b: Bed, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const quoted = [...asUserInside(b), 'ctr', '--address', b.address, '--namespace', 'rl', ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return run('script', ['-qec', quoted, '/dev/null'], { env: { ...userEnv(b), TERM: 'xterm' } });
}

async function processesOf(uid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const status = fs.readFileSync(`/proc/${e}/status`, 'utf8');
      const real = /^Uid:\s+(\d+)/m.exec(status)?.[1];
      if (Number(real) === uid) pids.push(Number(e));
    } catch {
      // gone
    }
  }
  return pids;
}

async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) return undefined;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function setUp(): Promise<Bed> {
  const tag = randomBytes(3).toString('hex');
  const user = `tsrl${tag}`;
  const dir = fs.mkdtempSync('/tmp/tsrl-');
  fs.chmodSync(dir, 0o755);
  const home = path.join(dir, 'h');
  const created = await run('useradd', ['--create-home', '--home-dir', home, '--shell', '/bin/sh', '--user-group', user]);
  if (created.code !== 0) throw new Error(`useradd: ${created.stderr}`);
  const uid = Number((await run('id', ['-u', user])).stdout.trim());
  const gid = Number((await run('id', ['-g', user])).stdout.trim());
  // useradd gives subordinate ids from login.defs when it manages /etc/subuid; add them if not.
  if (!fs.readFileSync('/etc/subuid', 'utf8').split('\n').some((l) => l.startsWith(`${user}:`))) {
    const used = fs.readFileSync('/etc/subuid', 'utf8').split('\n').map((l) => Number(l.split(':')[1] ?? 0) + Number(l.split(':')[2] ?? 0));
    const base = Math.max(100000, ...used);
    await run('usermod', ['--add-subuids', `${base}-${base + 65535}`, '--add-subgids', `${base}-${base + 65535}`, user]);
  }
  const b: Omit<Bed, 'rootlesskit' | 'childPid'> = {
    user, uid, gid, dir, home,
    address: path.join(home, 'c.sock'),
    stateDir: path.join(home, 'rk'),
    fifoDir: path.join(home, 'fifo'),
    log: path.join(home, 'containerd.log'),
  };
  for (const d of ['run', 'fifo']) fs.mkdirSync(path.join(home, d), { recursive: true });
  const config = [
    'version = 2',
    `root = "${home}/root"`,
    `state = "${home}/state"`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",',
    '  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.restart",',
    '  "io.containerd.tracing.processor.v1.otlp"]',
    '[grpc]',
    `  address = "${b.address}"`,
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = "${home}/opt"`,
    '[plugins."io.containerd.service.v1.diff-service"]',
    '  default = ["walking"]',
    '',
  ].join('\n');
  fs.writeFileSync(path.join(home, 'config.toml'), config);
  await run('chown', ['-R', `${uid}:${gid}`, home]);

  // The child runs inside rootlesskit as (mapped) root: fresh /run/containerd and /run/runc, then containerd.
  const child = `rm -rf /run/containerd /run/runc && mkdir -p /run/containerd /run/runc && exec containerd --config ${home}/config.toml --log-level debug >>${b.log} 2>&1`;
  const rootlesskit = spawn('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', 'rootlesskit', '--net=host', '--copy-up=/etc', '--copy-up=/run',
    `--state-dir=${b.stateDir}`, 'sh', '-c', child], { env: { ...userEnv(b), TSHIM_SPARE_CHECK_SECONDS: '1' }, stdio: ['ignore', 'ignore', 'pipe'], cwd: home });
  let stderr = '';
  rootlesskit.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const childPid = await waitFor(() => {
    if (rootlesskit.exitCode !== null) return -1;
    try {
      const p = Number(fs.readFileSync(path.join(b.stateDir, 'child_pid'), 'utf8'));
      return p > 0 ? p : undefined;
    } catch {
      return undefined;
    }
  }, 60_000);
  if (!childPid || childPid < 0) throw new Error(`rootlesskit did not start: ${stderr}`);
  const full: Bed = { ...b, rootlesskit, childPid };
  const up = await waitFor(async () => ((await ctr(full, ['version'], 10_000)).code === 0 ? true : undefined), 60_000);
  if (!up) throw new Error(`rootless containerd did not answer: ${stderr}\n${fs.existsSync(b.log) ? fs.readFileSync(b.log, 'utf8').slice(-3000) : ''}`);

  // A busybox rootfs the user owns: with `ctr run --config`, ctr takes the whole spec from the
  // file (no image, no snapshot), so the spec's root.path points here.
  const rootfs = path.join(home, 'rootfs');
  await makeBusyboxRootfs(rootfs);
  await run('chown', ['-R', `${uid}:${gid}`, rootfs]);
  // ctr's default spec minus linux.cgroupsPath and linux.resources (spec §16).
  const spec = await ctr(full, ['oci', 'spec']);
  if (spec.code !== 0) throw new Error(`ctr oci spec: ${spec.stderr}`);
  const parsed = JSON.parse(spec.stdout) as { linux?: Record<string, unknown>; root?: Record<string, unknown> };
  parsed.root = { path: rootfs, readonly: true };
  cgroupSpec = JSON.parse(JSON.stringify(parsed)) as Record<string, unknown>;
  delete parsed.linux?.['cgroupsPath'];
  delete parsed.linux?.['resources'];
  baseSpec = parsed;
  return full;
}

async function tearDown(b: Bed): Promise<string[]> {
  const problems: string[] = [];
  await ctr(b, ['tasks', 'ls', '-q']).then(async (r) => {
    for (const id of r.stdout.split('\n').filter(Boolean)) await ctr(b, ['tasks', 'rm', '-f', id]);
  });
  await ctr(b, ['containers', 'ls', '-q']).then(async (r) => {
    for (const id of r.stdout.split('\n').filter(Boolean)) await ctr(b, ['containers', 'rm', id]);
  });
  b.rootlesskit.kill('SIGTERM');
  await waitFor(() => (b.rootlesskit.exitCode !== null || b.rootlesskit.signalCode !== null ? true : undefined), 20_000);
  // Shims and spares outlive containerd by design; they belong to this user alone.
  const left = await waitFor(async () => ((await processesOf(b.uid)).length === 0 ? true : undefined), 15_000);
  if (!left) {
    for (const pid of await processesOf(b.uid)) {
      problems.push(`process ${pid} of ${b.user} still running; killed`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  await waitFor(async () => ((await processesOf(b.uid)).length === 0 ? true : undefined), 10_000);
  const del = await run('userdel', ['--remove', b.user]);
  if (del.code !== 0) problems.push(`userdel: ${del.stderr}`);
  for (const f of ['/etc/subuid', '/etc/subgid']) {
    const text = fs.readFileSync(f, 'utf8');
    const kept = text.split('\n').filter((l) => !l.startsWith(`${b.user}:`)).join('\n');
    if (kept !== text) fs.writeFileSync(f, kept);
  }
  fs.rmSync(b.dir, { recursive: true, force: true });
  return problems;
}

describe.skipIf(skipReason !== undefined)(`rootless containerd (rootlesskit) with tshim and runc-v2${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  beforeAll(async () => {
    bed = await setUp();
  }, 300_000);
  afterAll(async () => {
    if (!bed) return;
    const problems = await tearDown(bed);
    expect(problems).toEqual([]);
  }, 120_000);

  const common = (runtime: string, id: string, args: string[]) => ['--runtime', runtime, '--fifo-dir', bed!.fifoDir, '--config', specFor(bed!, id, args), id];
  const tag = (runtime: string) => runtime.split('.')[2]!;

  it.each(RUNTIMES)('%s: run prints the process output (uid 0 inside, as the runc shim)', async (runtime) => {
    const id = `${tag(runtime)}-run`;
    const r = await ctr(bed!, ['run', '--rm', ...common(runtime, id, ['id'])]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/uid=0\(root\) gid=0\(root\)|uid=0 gid=0/);
  });

  it.each(RUNTIMES)('%s: exec with its status, a TTY exec, kill, stats as runc-v2 reports them, delete', async (runtime) => {
    const b = bed!;
    const id = `${tag(runtime)}-life`;
    const started = await ctr(b, ['run', '-d', ...common(runtime, id, ['sleep', '100000'])]);
    expect(started.code, started.stderr).toBe(0);
    try {
      const exec = await ctr(b, ['task', 'exec', '--fifo-dir', b.fifoDir, '--exec-id', 'e1', id, 'sh', '-c', 'exit 3']);
      expect(exec.code).toBe(3);
      const tty = await ctrTty(b, ['task', 'exec', '-t', '--fifo-dir', b.fifoDir, '--exec-id', 't1', id, 'tty']);
      expect(tty.code, tty.stderr).toBe(0);
      expect(tty.stdout).toMatch(/\/dev\/pts\/\d+/);
      const stats = await ctr(b, ['task', 'metrics', id]);
      statsOutcome.set(runtime, stats.code === 0 ? 'ok' : `error: ${stats.stderr.trim()}`);
      const kill = await ctr(b, ['task', 'kill', '-s', 'SIGKILL', id]);
      expect(kill.code, kill.stderr).toBe(0);
      const stopped = await waitFor(async () => {
        const ls = await ctr(b, ['task', 'ls']);
        return new RegExp(`^${id}\\s+\\d+\\s+STOPPED`, 'm').test(ls.stdout) ? true : undefined;
      }, 30_000);
      expect(stopped).toBe(true);
      const del = await ctr(b, ['task', 'rm', id]);
      expect(del.code, del.stderr).toBe(0);
    } finally {
      await ctr(b, ['task', 'rm', '-f', id]);
      await ctr(b, ['container', 'rm', id]);
    }
  });

  it.each(RUNTIMES)('%s: a spec with linux.cgroupsPath fails as cgroup v1 makes it fail for runc-v2, and the runtime keeps working', async (runtime) => {
    const b = bed!;
    const id = `${tag(runtime)}-cg`;
    const r = await ctr(b, ['run', '--rm', '--runtime', runtime, '--fifo-dir', b.fifoDir, '--config', specFor(b, id, ['true'], true), id]);
    cgroupOutcome.set(runtime, r.code === 0 ? 'ok' : r.stderr);
    await ctr(b, ['container', 'rm', id]);
    // Whatever happened, the next container of that runtime runs.
    const after = `${tag(runtime)}-cg-after`;
    const ok = await ctr(b, ['run', '--rm', ...common(runtime, after, ['true'])]);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('cgroups: tshim reports what cgroup v1 refuses a rootless runtime exactly as runc-v2 does', () => {
    const runc = cgroupOutcome.get('io.containerd.runc.v2');
    const tshim = cgroupOutcome.get('io.containerd.tshim.v2');
    console.log(`rootless cgroupsPath: runc-v2 ${runc?.trim()}; tshim ${tshim?.trim()}`);
    expect(runc).toBeDefined();
    expect(tshim).toBeDefined();
    if (runc === 'ok') {
      expect(tshim).toBe('ok');
      return;
    }
    // Same runc error, through the same containerd wording: ctr's own line (the last). tshim's
    // container stderr may carry runc's message as well (runc prints it on the stderr it was
    // given, which is the container's); containerd's error is what callers branch on.
    const gist = (s: string): string => (s.trim().split('\n').filter((l) => l.startsWith('ctr: ')).pop() ?? s).replace(/\s+/g, ' ').trim();
    expect(gist(tshim!)).toBe(gist(runc!));
    expect(tshim).toMatch(/permission denied|cgroup/);
  });

  it('stats: tshim ends as runc-v2 does (both work, or both refuse), and never crashes', () => {
    const runc = statsOutcome.get('io.containerd.runc.v2');
    const tshim = statsOutcome.get('io.containerd.tshim.v2');
    expect(runc).toBeDefined();
    expect(tshim).toBeDefined();
    console.log(`rootless stats: runc-v2 ${runc}; tshim ${tshim}`);
    expect(tshim!.startsWith('error') ? 'error' : 'ok').toBe(runc!.startsWith('error') ? 'error' : 'ok');
  });
});

const statsOutcome = new Map<string, string>();
const cgroupOutcome = new Map<string, string>();

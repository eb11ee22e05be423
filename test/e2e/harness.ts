/**
 * A private containerd 1.6 per test file: own root/state/socket in a short /tmp dir, the repo's
 * bin/ (or the shim dir a test names) first on its PATH, so it resolves containerd-shim-tshim-v2
 * there, a unique namespace, and a `ctr` wrapper bound to both. Other containerd daemons may share
 * the machine, so everything here is scoped by the temp dir, the namespace and pids this harness
 * started — never by process name.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  background, runCollecting, type BackgroundCtr, type CtrOptions, type CtrResult, type StdinMode, type TerminalOptions,
} from './fixtures/spawn';
import { delay, listMountsUnder, processesMatching, shellQuote, unmountAll, type ProcessInfo } from './fixtures/system';

export type { BackgroundCtr, CtrOptions, CtrResult, TerminalOptions } from './fixtures/spawn';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const CONTAINERD_BIN = '/usr/bin/containerd';
export const CTR_BIN = '/usr/bin/ctr';

/** Runtimes the suites are parameterised over; the reference runc shim validates every test. */
export const RUNTIMES = (process.env.TSHIM_E2E_RUNTIMES ?? 'io.containerd.runc.v2,io.containerd.tshim.v2')
  .split(',')
  .map((r) => r.trim())
  .filter((r) => r !== '');

export interface Containerd {
  readonly dir: string;
  readonly address: string;
  readonly namespace: string;
  /** The current daemon's pid (changes on restart()). */
  readonly pid: number;
  /** `ctr --address <address> --namespace <namespace> ...args`, as an argv for shells. */
  ctrArgv(args: string[]): string[];
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  ctrBackground(args: string[], opts?: { stdin?: boolean }): BackgroundCtr;
  /** Runs ctr on a pseudo-terminal (`script`), sized rows×cols, for `-t` commands. */
  ctrInTerminal(args: string[], opts?: TerminalOptions): Promise<CtrResult>;
  logText(): string;
  /**
   * Stops the daemon with SIGTERM (shims keep running, as on a real host) and starts it again on
   * the same config, root, state and socket; resolves once `ctr version` answers again.
   */
  restart(): Promise<void>;
  /** Removes everything created in the namespace, stops the daemon, returns what it could not clean. */
  stop(): Promise<string[]>;
}

export interface ContainerdOptions {
  /** The namespace ctr works in; default a unique `tshim-e2e-<hex>`. CRI always uses `k8s.io`. */
  namespace?: string;
  /** Loads the CRI plugin (disabled by default: it only slows start-up for the ctr suites). */
  enableCri?: boolean;
  /**
   * More TOML appended to the config (e.g. the `[plugins."io.containerd.grpc.v1.cri"]` section),
   * made from the daemon's temp dir; runs before the daemon starts, so it may write files there.
   */
  extraConfig?: (dir: string) => string | Promise<string>;
  /**
   * The directory put first on containerd's PATH for shim lookup; default TSHIM_E2E_SHIM_DIR, else
   * the repo's bin/ (the `e2e-sea` project points it at the single executable's out/linux-x64).
   */
  shimDir?: string;
  /** Added to containerd's environment, which its shims inherit (e.g. TSHIM_SPARE=0). */
  env?: NodeJS.ProcessEnv;
}

/** Where containerd finds containerd-shim-tshim-v2 unless a test names a dir: see shimDir. */
export function defaultShimDir(): string {
  const dir = process.env.TSHIM_E2E_SHIM_DIR;
  return dir ? path.resolve(REPO_ROOT, dir) : path.join(REPO_ROOT, 'bin');
}

const randomHex = (bytes: number): string => randomBytes(bytes).toString('hex');

/** Container ids unique across files, runtimes and reruns: `<tag>-<random>`. */
export const uniqueId = (tag: string): string => `${tag}-${randomHex(4)}`;

/** `io.containerd.runc.v2` → `runc`: short enough to prefix container ids with. */
export const runtimeTag = (runtime: string): string => runtime.split('.').slice(-2, -1)[0] ?? runtime;

function configToml(dir: string, address: string, enableCri: boolean): string {
  return [
    'version = 2',
    `root = "${dir}/root"`,
    `state = "${dir}/state"`,
    // Only the task/image/snapshot path is exercised; everything else only slows startup. The
    // v1 linux runtime stays: 1.6's tasks service refuses to load without it.
    'disabled_plugins = [',
    ...(enableCri ? [] : ['  "io.containerd.grpc.v1.cri",']),
    '  "io.containerd.snapshotter.v1.aufs",',
    '  "io.containerd.snapshotter.v1.btrfs",',
    '  "io.containerd.snapshotter.v1.devmapper",',
    '  "io.containerd.snapshotter.v1.zfs",',
    '  "io.containerd.internal.v1.restart",',
    '  "io.containerd.tracing.processor.v1.otlp",',
    ']',
    '',
    '[grpc]',
    `  address = "${address}"`,
    '',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = "${dir}/opt"`,
    '',
    '[plugins."io.containerd.service.v1.diff-service"]',
    '  default = ["walking"]',
    '',
  ].join('\n');
}

/**
 * Spares (src/common/spare.ts) check every second that their containerd still answers, so every
 * file's teardown also proves that a spare never outlives its containerd for long.
 */
const SHIM_ENV: NodeJS.ProcessEnv = { TSHIM_SPARE_CHECK_SECONDS: '1' };
/** A spare checks once a second; this leaves room for a machine that is very busy. */
const SPARE_RETIRE_MS = 15_000;

/** Starts a private containerd and waits until `ctr version` answers on its socket. */
export async function startContainerd(options: ContainerdOptions = {}): Promise<Containerd> {
  // Short on purpose: `<dir>/c.sock.ttrpc` must stay well under the 108-byte sun_path limit.
  const dir = await fs.mkdtemp('/tmp/tse-');
  const address = `${dir}/c.sock`;
  const ownNamespace = options.namespace === undefined;
  const namespace = options.namespace ?? `tshim-e2e-${randomHex(4)}`;
  const configPath = path.join(dir, 'config.toml');
  const logPath = path.join(dir, 'containerd.log');
  try {
    const extra = options.extraConfig ? await options.extraConfig(dir) : '';
    await fs.writeFile(configPath, `${configToml(dir, address, options.enableCri === true)}${extra}\n`);
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }

  interface Daemon {
    pid: number;
    exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    exited: Promise<void>;
  }
  const launch = (): Daemon => {
    const logFd = openSync(logPath, 'a');
    const child = spawn(CONTAINERD_BIN, ['--config', configPath, '--log-level', 'debug'], {
      // cwd matters: containerd stats `<cwd>/containerd-shim-*-v2` before searching PATH.
      cwd: dir,
      env: {
        ...process.env,
        ...SHIM_ENV,
        ...options.env,
        PATH: `${options.shimDir ?? defaultShimDir()}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
      },
      stdio: ['ignore', logFd, logFd],
    });
    closeSync(logFd);
    if (child.pid === undefined) throw new Error('failed to spawn containerd');
    const d: Daemon = { pid: child.pid, exit: undefined, exited: Promise.resolve() };
    d.exited = new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        d.exit = { code, signal };
        resolve();
      });
    });
    return d;
  };
  let daemon = launch();

  const logText = (): string => {
    try {
      return readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };
  const ctrArgv = (args: string[]): string[] => ['--address', address, '--namespace', namespace, ...args];
  const ctr = (args: string[], opts: CtrOptions = {}): Promise<CtrResult> =>
    runCollecting(CTR_BIN, ctrArgv(args), opts, `ctr ${args.join(' ')}`);

  const abandon = async (reason: string): Promise<never> => {
    const log = logText();
    if (!daemon.exit) {
      process.kill(daemon.pid, 'SIGKILL');
      await daemon.exited;
    }
    await unmountAll(dir);
    await fs.rm(dir, { recursive: true, force: true });
    throw new Error(`${reason}\n${log}`);
  };
  /** Polls `ctr version` until the daemon answers; on failure returns why. */
  const waitReady = async (): Promise<string | undefined> => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (daemon.exit) return `containerd exited early (${JSON.stringify(daemon.exit)})`;
      const probe = await runCollecting(CTR_BIN, ['--address', address, '--connect-timeout', '1s', 'version'], { allowFail: true, timeoutMs: 5_000 }, 'ctr version');
      if (probe.code === 0) return undefined;
      if (Date.now() > deadline) return `containerd did not answer within 15 s: ${probe.stderr}`;
      await delay(50);
    }
  };
  const notReady = await waitReady();
  if (notReady !== undefined) await abandon(notReady);

  const cd: Containerd = {
    dir,
    address,
    namespace,
    get pid() {
      return daemon.pid;
    },
    ctrArgv,
    ctr,
    ctrBackground: (args, opts = {}) => background(CTR_BIN, ctrArgv(args), opts.stdin === true),
    ctrInTerminal(args, opts = {}) {
      const size = `stty rows ${opts.rows ?? 24} cols ${opts.cols ?? 80}`;
      const command = `${size} && exec ${[CTR_BIN, ...ctrArgv(args)].map(shellQuote).join(' ')}`;
      // script(1) gives ctr the controlling tty it insists on for -t; -e propagates ctr's exit code.
      const stdin: StdinMode = opts.input ?? 'hold';
      return runCollecting('script', ['-qfec', command, '/dev/null'], { ...opts, stdin }, `ctr (tty) ${args.join(' ')}`);
    },
    logText,
    async restart() {
      if (!daemon.exit) {
        process.kill(daemon.pid, 'SIGTERM');
        const stopped = await Promise.race([daemon.exited.then(() => true), delay(10_000).then(() => false)]);
        if (!stopped) {
          process.kill(daemon.pid, 'SIGKILL');
          await daemon.exited;
        }
      }
      daemon = launch();
      const why = await waitReady();
      if (why !== undefined) throw new Error(`restart: ${why}\n${logText()}`);
    },
    async stop() {
      const problems: string[] = [];
      if (!daemon.exit) await removeEverything(cd, problems);
      const shims = await waitForShimsGone(cd, 5_000);
      for (const shim of shims) {
        problems.push(`shim ${shim.pid} still running at stop: ${shim.cmdline.join(' ')}`);
        // Started by this containerd for this namespace, hence ours to end.
        try {
          process.kill(shim.pid, 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
      if (!daemon.exit) {
        process.kill(daemon.pid, 'SIGTERM');
        const stopped = await Promise.race([daemon.exited.then(() => true), delay(10_000).then(() => false)]);
        if (!stopped) {
          problems.push('containerd ignored SIGTERM for 10 s; killed');
          process.kill(daemon.pid, 'SIGKILL');
          await daemon.exited;
        }
      }
      // With containerd gone, its idle spare must retire by itself at its next check.
      for (const spare of await waitForSparesGone(cd, SPARE_RETIRE_MS)) {
        problems.push(`spare ${spare.pid} outlived its containerd: ${spare.cmdline.join(' ')}`);
        try {
          process.kill(spare.pid, 'SIGKILL');
        } catch {
          // retired meanwhile
        }
      }
      problems.push(...(await unmountAll(dir)));
      try {
        await fs.rm(dir, { recursive: true, force: true });
      } catch (err) {
        problems.push(`removing ${dir}: ${String(err)}`);
      }
      // runc keeps one state dir per namespace; it is empty once every container is deleted. Only
      // for a namespace of our own making: a given one (k8s.io) may be another daemon's too.
      if (ownNamespace) await fs.rmdir(`/run/containerd/runc/${namespace}`).catch(() => undefined);
      return problems;
    },
  };
  return cd;
}

/** Best-effort teardown of tasks, containers, images and snapshots in the namespace via ctr. */
async function removeEverything(cd: Containerd, problems: string[]): Promise<void> {
  const lines = async (args: string[]): Promise<string[]> => {
    const r = await cd.ctr(args, { allowFail: true });
    return r.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  };
  const attempt = async (args: string[]): Promise<void> => {
    const r = await cd.ctr(args, { allowFail: true, timeoutMs: 20_000 }).catch((err: unknown) => ({
      code: -1, stdout: '', stderr: String(err),
    }));
    if (r.code !== 0) problems.push(`ctr ${args.join(' ')}: ${r.stderr.trim()}`);
  };
  for (const id of await lines(['tasks', 'ls', '-q'])) await attempt(['tasks', 'rm', '-f', id]);
  for (const id of await lines(['containers', 'ls', '-q'])) await attempt(['containers', 'rm', id]);
  const images = await lines(['images', 'ls', '-q']);
  if (images.length > 0) await attempt(['images', 'rm', '--sync', ...images]);
  // Snapshots form chains; removing leaves first takes as many passes as the chain is long.
  for (let pass = 0; pass < 10; pass++) {
    const snapshots = (await lines(['snapshots', 'ls'])).slice(1).map((l) => l.split(/\s+/)[0] ?? '');
    if (snapshots.length === 0) break;
    for (const key of snapshots) await cd.ctr(['snapshots', 'rm', key], { allowFail: true });
    if (pass === 9) problems.push(`snapshots left: ${snapshots.join(', ')}`);
  }
  await cd.ctr(['namespaces', 'rm', cd.namespace], { allowFail: true });
}

export interface TaskRow {
  id: string;
  pid: number;
  status: string;
}

/** Parses `ctr task ls` (TASK PID STATUS). */
export async function listTasks(cd: Containerd): Promise<TaskRow[]> {
  const r = await cd.ctr(['tasks', 'ls']);
  return r.stdout
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3)
    .map(([id, pid, status]) => ({ id: id ?? '', pid: Number(pid), status: status ?? '' }));
}

/** Polls `ctr task ls` until task `id` reports `status` (RUNNING, PAUSED, STOPPED, CREATED). */
export async function waitForTaskStatus(cd: Containerd, id: string, status: string, timeoutMs = 10_000): Promise<TaskRow> {
  const deadline = Date.now() + timeoutMs;
  let last: TaskRow | undefined;
  for (;;) {
    last = (await listTasks(cd)).find((t) => t.id === id);
    if (last?.status === status) return last;
    if (Date.now() > deadline) throw new Error(`task ${id} is ${last?.status ?? 'absent'}, wanted ${status}`);
    await delay(50);
  }
}

/** Whether `argv` is a shim process started for containerd `cd` (it carries `-address <our socket>`). */
function isShimOf(cd: Pick<Containerd, 'address'>, argv: string[]): boolean {
  const at = argv.indexOf('-address');
  return at >= 0 && argv[at + 1] === cd.address;
}

/**
 * Shim daemons serving containers of this containerd. An idle tshim spare (`-spare`, no container
 * yet) is not one: it is started ahead of need and belongs to the containerd, see spareProcesses.
 */
export async function shimProcesses(cd: Containerd, idPrefix = ''): Promise<ProcessInfo[]> {
  return processesMatching((argv) => {
    if (!isShimOf(cd, argv) || argv.includes('-spare')) return false;
    const idAt = argv.indexOf('-id');
    return idPrefix === '' || (idAt >= 0 && (argv[idAt + 1] ?? '').startsWith(idPrefix));
  });
}

/** Idle tshim spare daemons of this containerd (src/common/spare.ts). */
export async function spareProcesses(cd: Pick<Containerd, 'address'>): Promise<ProcessInfo[]> {
  return processesMatching((argv) => isShimOf(cd, argv) && argv.includes('-spare'));
}

async function waitForSparesGone(cd: Pick<Containerd, 'address'>, timeoutMs: number): Promise<ProcessInfo[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = await spareProcesses(cd);
    if (left.length === 0 || Date.now() > deadline) return left;
    await delay(100);
  }
}

async function waitForShimsGone(cd: Containerd, timeoutMs: number, idPrefix = ''): Promise<ProcessInfo[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = await shimProcesses(cd, idPrefix);
    if (left.length === 0 || Date.now() > deadline) return left;
    await delay(100);
  }
}

/**
 * Everything a finished test may have left behind, restricted to ids starting with `idPrefix`:
 * tasks, containers, mounts under the temp dir and shim processes. Polls up to `timeoutMs`
 * because a shim exits asynchronously after containerd's Shutdown; returns [] when clean.
 */
export async function findLeftovers(cd: Containerd, idPrefix = '', timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found: string[] = [];
    const mine = (id: string): boolean => id.startsWith(idPrefix);
    for (const t of await listTasks(cd)) if (mine(t.id)) found.push(`task ${t.id} (${t.status})`);
    const containers = await cd.ctr(['containers', 'ls', '-q']);
    for (const id of containers.stdout.split('\n').filter((l) => l !== '' && mine(l))) found.push(`container ${id}`);
    const bundles = `${cd.dir}/state/io.containerd.runtime.v2.task/${cd.namespace}/`;
    for (const m of await listMountsUnder(cd.dir)) {
      // Rootfs mounts live in the bundle, named by container id; any other mount here is stray.
      const bundleId = m.startsWith(bundles) ? m.slice(bundles.length).split('/')[0] ?? '' : undefined;
      if (bundleId === undefined || mine(bundleId)) found.push(`mount ${m}`);
    }
    const shims = await shimProcesses(cd, idPrefix);
    for (const p of shims) found.push(`shim pid ${p.pid}: ${p.cmdline.join(' ')}`);
    if (found.length === 0) return found;
    if (Date.now() > deadline) {
      // Why a shim is still there is in its own log lines (containerd copies them into its log):
      // what it was asked last, whether it saw Shutdown with containers or reservations left.
      if (shims.length > 0) found.push(`tshim's last lines in containerd's log:\n${shimLogTail(cd)}`);
      return found;
    }
    await delay(200);
  }
}

/**
 * The last tshim lines in this containerd's log, for a failure message (one test file's containerd
 * runs only its own shims; a shim's lines name the container they are about, not always the one
 * the daemon started for).
 */
function shimLogTail(cd: Containerd): string {
  const lines = cd.logText().split('\n').filter((l) => l.includes('runtime=io.containerd.tshim.v2'));
  return lines.slice(-40).join('\n') || '(no lines)';
}

/** Force-removes a test's container and its task; used in `finally` blocks, never fails. */
export async function removeContainer(cd: Containerd, id: string): Promise<void> {
  await cd.ctr(['tasks', 'rm', '-f', id], { allowFail: true, timeoutMs: 20_000 }).catch(() => undefined);
  await cd.ctr(['containers', 'rm', id], { allowFail: true, timeoutMs: 20_000 }).catch(() => undefined);
}

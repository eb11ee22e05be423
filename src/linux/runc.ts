/**
 * Drives an OCI runtime CLI (runc, crun, or whatever BinaryName names) the way go-runc does for the
 * Go shim: same global prefix, same argv per operation (spec §10), errors taken from runc's JSON log.
 *
 * Log attribution: runc appends to `<bundle>/log.json` across calls. We remember the log's size before
 * each call and read only what was appended after it. That keeps argv byte-identical to the Go shim
 * (`--log <bundle>/log.json`, which wrappers and people reading `ps` expect) and, unlike the Go shim's
 * "last error line in the whole file", never reports a stale error from an earlier call. The one blind
 * spot is two *failing* calls on the same container overlapping in time, where either may report the
 * other's line; a per-call log file would avoid that but changes the observable argv and leaves stray
 * files behind when the shim dies mid-call.
 */
import { existsSync, promises as fsp, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUint48 } from '../common/lazy-crypto';
import {
  classifyRuncError,
  isContainerMissing,
  runtimeMessage,
  spawnFailure,
  type RuncExit,
  type RuncOp,
} from './runc-errors';
import { run } from './spawn';

export interface RuntimeConfig {
  /** runtime binary; 'runc' (looked up in PATH) unless BinaryName says otherwise */
  binary: string;
  /** already `<root>/<namespace>` */
  root: string;
  systemdCgroup: boolean;
  criuPath?: string;
  /** `<bundle>/log.json` */
  logPath: string;
  /**
   * Where the runtime runs: the container's bundle, as under a daemon of its own. A daemon shared
   * by a namespace sits in the bundle of whichever container it started for, which is removed
   * with that container; a process started with a removed working directory (a container's `sh`
   * without a cwd of its own) fails getcwd(). `/` once the bundle is gone.
   */
  cwd?: string;
}

/** `runc state` output. */
export interface RuncState {
  ociVersion: string;
  id: string;
  pid: number;
  status: string;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations?: Record<string, string>;
}

export type Stdio3 = [number, number, number];

export interface CreateOptions {
  bundle: string;
  pidFile: string;
  consoleSocket?: string;
  noPivot?: boolean;
  noNewKeyring?: boolean;
  /** fds for the container's stdin/stdout/stderr */
  stdio: Stdio3;
}

export interface ExecOptions {
  pidFile: string;
  consoleSocket?: string;
  stdio: Stdio3;
}

export interface CheckpointOptions {
  imagePath: string;
  workPath: string;
  leaveRunning: boolean;
  tcpEstablished?: boolean;
  extUnixSockets?: boolean;
  shellJob?: boolean;
  fileLocks?: boolean;
  emptyNamespaces?: string[];
  cgroupsMode?: string;
}

export interface RestoreOptions {
  bundle: string;
  imagePath: string;
  workPath: string;
  parentPath?: string;
  pidFile: string;
  consoleSocket?: string;
  noPivot?: boolean;
  stdio: Stdio3;
}

/** One runtime invocation, described without side effects so argv can be checked in isolation. */
export type RuncCommand =
  | ({ op: 'create'; id: string } & Omit<CreateOptions, 'stdio'>)
  | { op: 'start'; id: string }
  | { op: 'exec'; id: string; processFile: string; pidFile: string; consoleSocket?: string }
  | { op: 'kill'; id: string; signal: number; all: boolean }
  | { op: 'delete'; id: string; force: boolean }
  | { op: 'state'; id: string }
  | { op: 'ps'; id: string }
  | { op: 'pause'; id: string }
  | { op: 'resume'; id: string }
  | { op: 'update'; id: string }
  | ({ op: 'checkpoint'; id: string } & CheckpointOptions)
  | ({ op: 'restore'; id: string } & Omit<RestoreOptions, 'stdio'>)
  | { op: 'stats'; id: string }
  | { op: 'features' }
  | { op: 'version' };

/** `--root R --log L --log-format json [--criu P] [--systemd-cgroup]`, go-runc's order. */
export function globalArgs(config: RuntimeConfig): string[] {
  const args = ['--root', config.root, '--log', config.logPath, '--log-format', 'json'];
  if (config.criuPath) args.push('--criu', config.criuPath);
  if (config.systemdCgroup) args.push('--systemd-cgroup');
  return args;
}

/** The CRIU options shared by checkpoint and restore, in go-runc's CheckpointOpts order. */
function criuArgs(o: {
  imagePath: string;
  workPath: string;
  parentPath?: string;
  tcpEstablished?: boolean;
  extUnixSockets?: boolean;
  shellJob?: boolean;
  cgroupsMode?: string;
  fileLocks?: boolean;
  emptyNamespaces?: string[];
}): string[] {
  const args: string[] = [];
  if (o.imagePath) args.push('--image-path', o.imagePath);
  if (o.workPath) args.push('--work-path', o.workPath);
  if (o.parentPath) args.push('--parent-path', o.parentPath);
  if (o.tcpEstablished) args.push('--tcp-established');
  if (o.extUnixSockets) args.push('--ext-unix-sk');
  if (o.shellJob) args.push('--shell-job');
  if (o.cgroupsMode) args.push('--manage-cgroups-mode', o.cgroupsMode);
  if (o.fileLocks) args.push('--file-locks');
  for (const ns of o.emptyNamespaces ?? []) args.push('--empty-ns', ns);
  return args;
}

/** Subcommand argv (after the global prefix) for one operation. */
export function commandArgs(cmd: RuncCommand): string[] {
  switch (cmd.op) {
    case 'create': {
      const args = ['create', '--bundle', cmd.bundle, '--pid-file', path.resolve(cmd.pidFile)];
      if (cmd.consoleSocket) args.push('--console-socket', cmd.consoleSocket);
      if (cmd.noPivot) args.push('--no-pivot');
      if (cmd.noNewKeyring) args.push('--no-new-keyring');
      // no --detach: create always detaches, and runc returns once the container is created
      return [...args, cmd.id];
    }
    case 'exec': {
      const args = ['exec', '--process', cmd.processFile];
      if (cmd.consoleSocket) args.push('--console-socket', cmd.consoleSocket);
      return [...args, '--detach', '--pid-file', path.resolve(cmd.pidFile), cmd.id];
    }
    case 'kill':
      return ['kill', ...(cmd.all ? ['--all'] : []), cmd.id, String(cmd.signal)];
    case 'delete':
      return ['delete', ...(cmd.force ? ['--force'] : []), cmd.id];
    case 'ps':
      return ['ps', '--format', 'json', cmd.id];
    case 'update':
      return ['update', '--resources', '-', cmd.id];
    case 'checkpoint': {
      const args = ['checkpoint', ...criuArgs(cmd)];
      if (cmd.leaveRunning) args.push('--leave-running');
      return [...args, cmd.id];
    }
    case 'restore': {
      const args = ['restore', ...criuArgs(cmd), '--detach', '--pid-file', path.resolve(cmd.pidFile)];
      if (cmd.consoleSocket) args.push('--console-socket', cmd.consoleSocket);
      if (cmd.noPivot) args.push('--no-pivot');
      // single dash on purpose: go-runc spells it that way and runc's flag parser accepts both
      args.push('-no-subreaper', '--bundle', cmd.bundle);
      return [...args, cmd.id];
    }
    case 'stats':
      return ['events', '--stats', cmd.id];
    case 'features':
      return ['features'];
    case 'version':
      return ['--version'];
    case 'start':
    case 'state':
    case 'pause':
    case 'resume':
      return [cmd.op, cmd.id];
  }
}

/** Full argv (without the binary itself) for one operation. */
export function buildArgs(config: RuntimeConfig, cmd: RuncCommand): string[] {
  return [...globalArgs(config), ...commandArgs(cmd)];
}

/** The shim's environment minus NOTIFY_SOCKET, which would make runc talk to systemd on our behalf. */
export function runtimeEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(base)) {
    if (key !== 'NOTIFY_SOCKET' && value !== undefined) env[key] = value;
  }
  return env;
}

type StdioEntry = number | 'pipe' | 'ignore';

interface CallOptions {
  stdio?: [StdioEntry, StdioEntry, StdioEntry];
  input?: string | Buffer;
}

type CallResult = { ok: true; exit: RuncExit } | { ok: false; exit: RuncExit; message: string };

function isRuncState(value: unknown): value is RuncState {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.id === 'string' && typeof v.pid === 'number' && typeof v.status === 'string';
}

export class Runc {
  private readonly config: RuntimeConfig;

  constructor(config: RuntimeConfig) {
    this.config = { ...config, binary: config.binary || 'runc' };
  }

  /**
   * Whether the runtime still keeps state for `id`: runc, crun and youki hold one directory per
   * container under --root. Lets teardown skip a runtime start-up when there is nothing to delete.
   */
  async hasState(id: string): Promise<boolean> {
    return fsp.access(path.join(this.config.root, id)).then(
      () => true,
      () => false,
    );
  }

  async create(id: string, o: CreateOptions): Promise<void> {
    const { stdio, ...rest } = o;
    await this.must({ op: 'create', id, ...rest }, { stdio });
  }

  async start(id: string): Promise<void> {
    await this.must({ op: 'start', id });
  }

  /** The Process JSON goes through a private temp file because runc reads `--process` by path. */
  async exec(id: string, processJson: string | Buffer, o: ExecOptions): Promise<void> {
    const dir = process.env.XDG_RUNTIME_DIR || os.tmpdir();
    const processFile = path.join(dir, `runc-process${randomUint48()}`);
    try {
      writeFileSync(processFile, processJson, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      throw spawnFailure('exec', this.config.binary, err);
    }
    try {
      const cmd: RuncCommand = { op: 'exec', id, processFile, pidFile: o.pidFile };
      if (o.consoleSocket) cmd.consoleSocket = o.consoleSocket;
      await this.must(cmd, { stdio: o.stdio });
    } finally {
      rmSync(processFile, { force: true });
    }
  }

  async kill(id: string, signal: number, all: boolean): Promise<void> {
    await this.must({ op: 'kill', id, signal, all });
  }

  /** A container runc has no state for counts as deleted: checkpoint and crashes leave that behind. */
  async delete(id: string, force: boolean): Promise<void> {
    const result = await this.call({ op: 'delete', id, force });
    if (!result.ok && !isContainerMissing(result.message)) throw classifyRuncError('delete', result.message);
  }

  async state(id: string): Promise<RuncState> {
    const exit = await this.must({ op: 'state', id });
    const parsed = this.parseJson('state', exit.stdout);
    if (!isRuncState(parsed)) throw classifyRuncError('state', `unexpected output: ${exit.stdout.toString()}`);
    return parsed;
  }

  async ps(id: string): Promise<number[]> {
    const exit = await this.must({ op: 'ps', id });
    const parsed = this.parseJson('ps', exit.stdout);
    // runc prints `null` (a nil Go slice) when the container has no processes
    if (parsed === null) return [];
    if (!Array.isArray(parsed) || !parsed.every((p): p is number => Number.isInteger(p))) {
      throw classifyRuncError('ps', `unexpected output: ${exit.stdout.toString()}`);
    }
    return parsed;
  }

  async pause(id: string): Promise<void> {
    await this.must({ op: 'pause', id });
  }

  async resume(id: string): Promise<void> {
    await this.must({ op: 'resume', id });
  }

  async update(id: string, resourcesJson: string | Buffer): Promise<void> {
    await this.must({ op: 'update', id }, { stdio: ['pipe', 'pipe', 'pipe'], input: resourcesJson });
  }

  async checkpoint(id: string, o: CheckpointOptions): Promise<void> {
    await this.must({ op: 'checkpoint', id, ...o });
  }

  async restore(id: string, o: RestoreOptions): Promise<void> {
    const { stdio, ...rest } = o;
    await this.must({ op: 'restore', id, ...rest }, { stdio });
  }

  /** The `data` member of `runc events --stats` (what go-runc's Stats returns). */
  async stats(id: string): Promise<unknown> {
    const exit = await this.must({ op: 'stats', id });
    const parsed = this.parseJson('stats', exit.stdout);
    if (typeof parsed !== 'object' || parsed === null || !('data' in parsed)) {
      throw classifyRuncError('stats', `unexpected output: ${exit.stdout.toString()}`);
    }
    return (parsed as { data: unknown }).data;
  }

  /** `runc features` JSON; undefined when this runtime has no such subcommand (runc < 1.1, old crun). */
  async features(): Promise<unknown | undefined> {
    const result = await this.call({ op: 'features' });
    if (!result.ok) return undefined;
    try {
      return JSON.parse(result.exit.stdout.toString('utf8')) as unknown;
    } catch {
      return undefined;
    }
  }

  /** The version number from the first line (`runc version 1.1.5` → `1.1.5`), else that line. */
  async version(): Promise<string> {
    const exit = await this.must({ op: 'version' });
    const firstLine = exit.stdout.toString('utf8').split('\n')[0]?.trim() ?? '';
    const match = /\bversion\s+(\S+)/.exec(firstLine);
    return match?.[1] ?? firstLine;
  }

  private parseJson(op: RuncOp, stdout: Buffer): unknown {
    try {
      return JSON.parse(stdout.toString('utf8')) as unknown;
    } catch {
      throw classifyRuncError(op, `invalid JSON output: ${stdout.toString('utf8').trim()}`);
    }
  }

  /** Runs the command and turns any failure into the operation's ShimError. */
  private async must(cmd: RuncCommand, opts: CallOptions = {}): Promise<RuncExit> {
    const result = await this.call(cmd, opts);
    if (!result.ok) throw classifyRuncError(cmd.op, result.message);
    return result.exit;
  }

  private async call(cmd: RuncCommand, opts: CallOptions = {}): Promise<CallResult> {
    const logStart = this.logSize();
    let exit: RuncExit;
    try {
      const runOptions: Parameters<typeof run>[2] = {
        env: runtimeEnv(),
        stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'],
      };
      if (this.config.cwd !== undefined) runOptions.cwd = existsSync(this.config.cwd) ? this.config.cwd : '/';
      if (opts.input !== undefined) runOptions.input = opts.input;
      exit = await run(this.config.binary, buildArgs(this.config, cmd), runOptions);
    } catch (err) {
      // run() rejects only when the runtime could not be started at all
      throw spawnFailure(cmd.op, this.config.binary, err);
    }
    if (exit.code === 0 && exit.signal === null) return { ok: true, exit };
    const logText = await this.readLogSince(logStart);
    return { ok: false, exit, message: runtimeMessage(logText, exit) };
  }

  /**
   * Synchronous, like the process file and the pid file: small local files (the bundle, the temp
   * dir) whose every threadpool round trip costs an exec more than the call itself.
   */
  private logSize(): number {
    try {
      return statSync(this.config.logPath).size;
    } catch {
      return 0;
    }
  }

  /** What this invocation appended; from the start if someone truncated the file meanwhile. */
  private async readLogSince(offset: number): Promise<string> {
    let handle: fsp.FileHandle | undefined;
    try {
      handle = await fsp.open(this.config.logPath, 'r');
      const { size } = await handle.stat();
      const from = size < offset ? 0 : offset;
      const buf = Buffer.alloc(size - from);
      const { bytesRead } = await handle.read(buf, 0, buf.length, from);
      return buf.subarray(0, bytesRead).toString('utf8');
    } catch {
      return '';
    } finally {
      await handle?.close();
    }
  }
}

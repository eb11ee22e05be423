/** An exec: nothing runs until Start, which runs `runc exec --detach` with the Process JSON. */
import { invalidArgument } from '../common/errors';
import type { StdioSpec } from '../common/backend';
import { bundleFiles } from './bundle';
import { LinuxProcess, removeQuietly } from './process';
import type { Reaper } from './reaper';
import type { Runc } from './runc';
import { openStdio, type ProcessStdio, type StdioOwner } from './stdio';

export interface ExecParams {
  containerId: string;
  execId: string;
  bundle: string;
  runc: Runc;
  reaper: Reaper;
  owner: StdioOwner;
  stdioSpec: StdioSpec;
  /** OCI Process JSON with `terminal` already set from the request */
  processJson: string;
}

/** The request's `terminal` wins over the spec's, as containerd expects. */
export function execProcessJson(specValue: Buffer | undefined, terminal: boolean): string {
  if (!specValue || specValue.length === 0) throw invalidArgument('exec: process spec is missing');
  let spec: Record<string, unknown>;
  try {
    spec = JSON.parse(specValue.toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw invalidArgument(`exec: process spec is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw invalidArgument('exec: process spec must be a JSON object');
  }
  spec['terminal'] = terminal;
  return JSON.stringify(spec);
}

export class LinuxExec extends LinuxProcess {
  constructor(private readonly params: ExecParams) {
    super(params.reaper, undefined);
  }

  get processJson(): string {
    return this.params.processJson;
  }

  /** Upgrade, new image: an exec the old image started, with the stdio it had. */
  static restore(params: ExecParams, stdio: ProcessStdio | undefined, pid: number, running: boolean): LinuxExec {
    const exec = new LinuxExec(params);
    exec.stdio = stdio;
    if (pid > 0) exec.restorePid(pid, running);
    return exec;
  }

  async start(): Promise<number> {
    const { containerId, execId, bundle, runc, owner, stdioSpec, processJson } = this.params;
    const pidFile = bundleFiles.execPid(bundle, execId);
    this.stdio = await openStdio(execId, stdioSpec, owner);
    try {
      await runc.exec(containerId, processJson, {
        pidFile,
        consoleSocket: this.stdio.consoleSocket,
        stdio: this.stdio.runtimeStdio,
      });
    } catch (err) {
      await this.closeStdio();
      throw err;
    }
    let pid: number;
    try {
      pid = await this.readPid(pidFile);
      await this.stdio.started();
    } catch (err) {
      // It runs but its IO cannot be wired: do not leave it running untracked.
      await this.kill(9).catch(() => undefined);
      await this.closeStdio();
      throw err;
    }
    return pid;
  }

  async kill(signal: number): Promise<void> {
    this.signalPid(signal);
  }

  protected async deleteRuntimeState(): Promise<void> {
    removeQuietly(bundleFiles.execPid(this.params.bundle, this.params.execId));
  }
}

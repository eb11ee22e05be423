/** Files in the OCI bundle that the backend reads or writes beside containerd's. */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { internal, invalidArgument } from '../common/errors';
import type { RuntimeOptions } from '../common/options';
import { Runc } from './runc';

export const bundleFiles = {
  config: (bundle: string) => path.join(bundle, 'config.json'),
  rootfs: (bundle: string) => path.join(bundle, 'rootfs'),
  initPid: (bundle: string) => path.join(bundle, 'init.pid'),
  execPid: (bundle: string, execId: string) => path.join(bundle, `${execId}.pid`),
  runtimeLog: (bundle: string) => path.join(bundle, 'log.json'),
  options: (bundle: string) => path.join(bundle, 'options.json'),
  runtime: (bundle: string) => path.join(bundle, 'runtime'),
  work: (bundle: string) => path.join(bundle, 'work'),
};

export async function readPidFile(file: string): Promise<number> {
  // synchronous: a few bytes in the bundle, read right after the runtime wrote them (see runc.ts logSize)
  const text = readFileSync(file, 'utf8');
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0) throw internal(`pid file ${file} holds ${JSON.stringify(text)}`);
  return pid;
}

interface OciSpecSubset {
  linux?: { namespaces?: Array<{ type?: string; path?: string }> };
}

/**
 * True when the container has no pid namespace of its own (absent, or joined by path). Then its
 * processes outlive the init and must be killed when it exits, as the runc shim does. An
 * unreadable spec counts as shared, the safe side.
 */
export async function sharesPidNamespace(bundle: string): Promise<boolean> {
  try {
    // synchronous: a file in containerd's state dir, read as the init exits (before its exit event)
    const spec = JSON.parse(readFileSync(bundleFiles.config(bundle), 'utf8')) as OciSpecSubset;
    const pidNs = spec.linux?.namespaces?.find((ns) => ns.type === 'pid');
    return !pidNs || !!pidNs.path;
  } catch {
    return true;
  }
}

/** Bundle and exec ids end up in file names: refuse anything that could step outside. */
export function assertSafeName(kind: string, name: string): void {
  if (!name || name.includes('/') || name === '.' || name === '..' || name.includes('\0')) {
    throw invalidArgument(`${kind} ${JSON.stringify(name)} is not a safe file name`);
  }
}

/** The runtime driver for a bundle, as its options say (BinaryName, Root/<ns>, SystemdCgroup, CriuPath). */
export function runtimeFor(options: RuntimeOptions, namespace: string, bundle: string): Runc {
  return new Runc({
    binary: options.binaryName,
    root: path.join(options.root, namespace),
    systemdCgroup: options.systemdCgroup,
    criuPath: options.criuPath || undefined,
    logPath: bundleFiles.runtimeLog(bundle),
    cwd: bundle,
  });
}

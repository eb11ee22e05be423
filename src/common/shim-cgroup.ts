/**
 * Moves the daemon into the operator's `ShimCgroup`: the one unified hierarchy on cgroup v2, every
 * v1 hierarchy that has that path otherwise (the runc shim's static-path semantics).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const CGROUP_ROOT = '/sys/fs/cgroup';

function isUnified(root: string): boolean {
  return fs.existsSync(path.join(root, 'cgroup.controllers'));
}

export function moveToCgroup(pid: number, cgroupPath: string, root = CGROUP_ROOT): void {
  const relative = path.posix.normalize('/' + cgroupPath).slice(1);
  if (isUnified(root)) {
    fs.writeFileSync(path.join(root, relative, 'cgroup.procs'), String(pid));
    return;
  }
  let joined = 0;
  const failures: string[] = [];
  for (const hierarchy of fs.readdirSync(root)) {
    const procs = path.join(root, hierarchy, relative, 'cgroup.procs');
    if (!fs.existsSync(procs)) continue;
    try {
      fs.writeFileSync(procs, String(pid));
      joined++;
    } catch (err) {
      failures.push(`${procs}: ${(err as Error).message}`);
    }
  }
  if (joined === 0) {
    throw new Error(`failed to join shim cgroup ${cgroupPath}: ${failures.join('; ') || 'no hierarchy has it'}`);
  }
}

/**
 * Which cgroup hierarchy the host uses and where a process's cgroup lives in it.
 */
import * as fs from 'fs';
import * as path from 'path';
import { errnoCode, invalidArgument, notFound, unknown } from '../../common/errors';

export type CgroupMode = 'v1' | 'v2';

export interface CgroupRef {
  mode: CgroupMode;
  /**
   * v1: controller name → absolute directory (memory → /sys/fs/cgroup/memory/default/c1);
   * controllers co-mounted in one hierarchy (cpu,cpuacct) map to the same directory.
   * v2: the one directory of the unified hierarchy.
   */
  paths: ReadonlyMap<string, string> | string;
}

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';

const CGROUP2_SUPER_MAGIC = 0x63677270;

let cachedMode: CgroupMode | undefined;

/**
 * v2 only when /sys/fs/cgroup itself is cgroup2fs. A hybrid host (v1 controllers plus a v2 mount at
 * /sys/fs/cgroup/unified) is v1, which is what containerd reports for it too. The answer cannot
 * change while the shim runs, so it is computed once.
 */
export function cgroupMode(): CgroupMode {
  if (cachedMode === undefined) cachedMode = detectMode(DEFAULT_CGROUP_ROOT);
  return cachedMode;
}

function detectMode(root: string): CgroupMode {
  try {
    return fs.statfsSync(root).type === CGROUP2_SUPER_MAGIC ? 'v2' : 'v1';
  } catch {
    // statfs can fail in odd sandboxes; /proc/mounts names the filesystem type as well.
    try {
      const mounts = fs.readFileSync('/proc/mounts', 'utf8');
      return mounts.split('\n').some((line) => {
        const f = line.split(' ');
        return f[1] === root && f[2] === 'cgroup2';
      })
        ? 'v2'
        : 'v1';
    } catch {
      return 'v1';
    }
  }
}

/**
 * Parses /proc/<pid>/cgroup text. v1 lines are "<id>:<controller,...>:<path>"; each controller of a
 * line maps to the hierarchy's mount directory, which is named after the whole controller list
 * (cpu,cpuacct), joined with the path. Named hierarchies (name=systemd) and, in v1 mode, the unified
 * "0::" line carry no stats and are left out. v2 has the single line "0::<path>".
 */
export function parseProcCgroup(text: string, mode: CgroupMode, mountRoot: string): CgroupRef {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (mode === 'v2') {
    for (const line of lines) {
      const entry = splitLine(line);
      if (entry.id === '0' && entry.controllers === '') {
        checkNotDeleted(entry.cgPath);
        return { mode, paths: path.join(mountRoot, entry.cgPath) };
      }
    }
    throw invalidArgument('no unified (0::) entry in /proc/<pid>/cgroup');
  }
  const paths = new Map<string, string>();
  for (const h of v1Hierarchies(lines)) {
    const dir = path.join(mountRoot, h.mountName, h.cgPath);
    for (const c of h.controllers) paths.set(c, dir);
  }
  if (paths.size === 0) throw invalidArgument('no v1 controller entries in /proc/<pid>/cgroup');
  return { mode, paths };
}

interface V1Hierarchy {
  /** directory the hierarchy is conventionally mounted at, below the cgroup root */
  mountName: string;
  controllers: string[];
  cgPath: string;
}

function v1Hierarchies(lines: readonly string[]): V1Hierarchy[] {
  const out: V1Hierarchy[] = [];
  for (const line of lines) {
    const entry = splitLine(line);
    if (entry.controllers === '') continue;
    const controllers = entry.controllers.split(',').filter((c) => c !== '' && !c.startsWith('name='));
    if (controllers.length === 0) continue;
    checkNotDeleted(entry.cgPath);
    out.push({ mountName: entry.controllers, controllers, cgPath: entry.cgPath });
  }
  return out;
}

interface ProcCgroupLine {
  id: string;
  controllers: string;
  cgPath: string;
}

function splitLine(line: string): ProcCgroupLine {
  // The path may itself contain ':' so only the first two separators count.
  const first = line.indexOf(':');
  const second = first < 0 ? -1 : line.indexOf(':', first + 1);
  if (second < 0) throw invalidArgument(`invalid cgroup entry: ${JSON.stringify(line)}`);
  return { id: line.slice(0, first), controllers: line.slice(first + 1, second), cgPath: line.slice(second + 1) };
}

/** The kernel appends " (deleted)" for a process whose cgroup was removed (a zombie's, typically). */
function checkNotDeleted(cgPath: string): void {
  if (cgPath.endsWith(' (deleted)')) throw notFound('cgroup does not exist');
}

/**
 * The cgroup of a live process. A v1 hierarchy whose directory is not named after its full
 * controller list (mounted by hand as /sys/fs/cgroup/cpu rather than cpu,cpuacct) is found through
 * the per-controller name instead.
 */
export async function cgroupOfPid(pid: number, root: string = DEFAULT_CGROUP_ROOT): Promise<CgroupRef> {
  if (!Number.isInteger(pid) || pid <= 0) throw invalidArgument(`invalid pid ${pid}`);
  let text: string;
  try {
    // procfs and cgroupfs are the kernel's: synchronous reads never wait on a device, and a v1
    // lookup is a dozen of them (a threadpool round trip each, when asynchronous)
    text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ESRCH') throw notFound('cgroup does not exist');
    throw unknown(`read /proc/${pid}/cgroup: ${(err as Error).message}`, err);
  }
  const mode = root === DEFAULT_CGROUP_ROOT ? cgroupMode() : detectMode(root);
  if (mode === 'v2') {
    const ref = parseProcCgroup(text, mode, root);
    if (typeof ref.paths !== 'string' || !isDir(ref.paths)) throw notFound('cgroup does not exist');
    return ref;
  }
  const resolved = new Map<string, string>();
  for (const h of v1Hierarchies(text.split('\n').filter((l) => l.trim() !== ''))) {
    const combined = path.join(root, h.mountName, h.cgPath);
    const combinedExists = isDir(combined);
    for (const c of h.controllers) {
      const dir = combinedExists ? combined : path.join(root, c, h.cgPath);
      if (combinedExists || isDir(dir)) resolved.set(c, dir);
    }
  }
  if (resolved.size === 0) throw notFound('cgroup does not exist');
  return { mode, paths: resolved };
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

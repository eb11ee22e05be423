/**
 * Rootfs mounts (spec §11): the snapshot mounts containerd passes in CreateTaskRequest.rootfs, mounted
 * onto `<bundle>/rootfs` in order, and their teardown.
 *
 * Most mounts are a direct mount(2), made on a threadpool thread (libc.ts, mountOffLoop): a mount
 * may wait on its filesystem, and the daemon serving other containers must not wait with it.
 * Three cases go through mount(8) via spawn.ts instead, because they
 * need something only a separate process (or util-linux) provides:
 *  - overlay data longer than pagesize−512: the lowerdirs must be passed relative to their common parent,
 *    which needs that directory as the cwd of the mounting process. `process.chdir` would change the cwd
 *    of the whole server under every other in-flight request, so a short-lived mount(8) with `cwd` does it;
 *  - `loop`: mount(8) attaches a loop device with autoclear, so it goes away with the mount;
 *  - `fuse.*` / `fuse3.*`: mount(8) runs the mount.fuse helper that starts the filesystem daemon.
 */
import { readFileSync } from 'node:fs';
import { lstat, mkdir, readlink, realpath } from 'node:fs/promises';
import { join, posix, relative, resolve, sep } from 'node:path';
import { ShimError, errnoCode, invalidArgument, unknown } from '../common/errors';
import {
  MNT_DETACH,
  MS_BIND,
  MS_DIRSYNC,
  MS_MANDLOCK,
  MS_NOATIME,
  MS_NODEV,
  MS_NODIRATIME,
  MS_NOEXEC,
  MS_NOSUID,
  MS_PRIVATE,
  MS_RDONLY,
  MS_REC,
  MS_RELATIME,
  MS_REMOUNT,
  MS_SHARED,
  MS_SLAVE,
  MS_STRICTATIME,
  MS_SYNCHRONOUS,
  MS_UNBINDABLE,
  mountOffLoop,
  pageSize,
  umount2OffLoop,
} from './libc';
import { run } from './spawn';

export interface MountSpec {
  type: string;
  source: string;
  /** Mount point inside the rootfs (containerd ≥1.7); absent = the rootfs itself. */
  target?: string;
  options: string[];
}

export interface ParsedMountOptions {
  /** mount(2) flags for the mount call itself (propagation excluded). */
  flags: number;
  /** Everything that is not a flag, passed on comma-joined as the data string. */
  data: string[];
  /** MS_SHARED/MS_PRIVATE/MS_SLAVE/MS_UNBINDABLE (| MS_REC), applied by a second call after mounting. */
  propagation?: number;
  /** A read-only bind: the kernel ignores MS_RDONLY on the bind itself, a remount must follow. */
  needsRemountReadonly: boolean;
  /** `loop`: the source is a file to attach to a loop device. */
  loop: boolean;
}

/** [clear?, flag]: options that set a flag, and their negations that clear it (containerd's table). */
const FLAG_OPTIONS: Readonly<Record<string, readonly [clear: boolean, flag: number]>> = {
  defaults: [false, 0],
  ro: [false, MS_RDONLY],
  rw: [true, MS_RDONLY],
  nosuid: [false, MS_NOSUID],
  suid: [true, MS_NOSUID],
  nodev: [false, MS_NODEV],
  dev: [true, MS_NODEV],
  noexec: [false, MS_NOEXEC],
  exec: [true, MS_NOEXEC],
  sync: [false, MS_SYNCHRONOUS],
  async: [true, MS_SYNCHRONOUS],
  dirsync: [false, MS_DIRSYNC],
  remount: [false, MS_REMOUNT],
  mand: [false, MS_MANDLOCK],
  nomand: [true, MS_MANDLOCK],
  noatime: [false, MS_NOATIME],
  atime: [true, MS_NOATIME],
  nodiratime: [false, MS_NODIRATIME],
  diratime: [true, MS_NODIRATIME],
  bind: [false, MS_BIND],
  rbind: [false, MS_BIND | MS_REC],
  relatime: [false, MS_RELATIME],
  norelatime: [true, MS_RELATIME],
  strictatime: [false, MS_STRICTATIME],
  nostrictatime: [true, MS_STRICTATIME],
};

const PROPAGATION_OPTIONS: Readonly<Record<string, number>> = {
  shared: MS_SHARED,
  rshared: MS_SHARED | MS_REC,
  private: MS_PRIVATE,
  rprivate: MS_PRIVATE | MS_REC,
  slave: MS_SLAVE,
  rslave: MS_SLAVE | MS_REC,
  unbindable: MS_UNBINDABLE,
  runbindable: MS_UNBINDABLE | MS_REC,
};

const UNMOUNT_BUSY_RETRIES = 50;
const UNMOUNT_BUSY_DELAY_MS = 50;
/** A rootfs with more stacked mounts than this is not ours to peel; stop instead of looping forever. */
const MAX_STACKED_MOUNTS = 256;
const MAX_SYMLINKS = 255;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function parseMountOptions(options: readonly string[]): ParsedMountOptions {
  let flags = 0;
  let propagation: number | undefined;
  let loop = false;
  const data: string[] = [];
  for (const option of options) {
    const flag = FLAG_OPTIONS[option];
    if (flag) {
      const [clear, bits] = flag;
      flags = clear ? flags & ~bits : flags | bits;
    } else if (option in PROPAGATION_OPTIONS) {
      propagation = PROPAGATION_OPTIONS[option];
    } else if (option === 'loop') {
      loop = true;
    } else {
      data.push(option);
    }
  }
  const needsRemountReadonly =
    (flags & (MS_BIND | MS_RDONLY)) === (MS_BIND | MS_RDONLY) && (flags & MS_REMOUNT) === 0;
  return propagation === undefined
    ? { flags, data, needsRemountReadonly, loop }
    : { flags, data, propagation, needsRemountReadonly, loop };
}

/**
 * Mounts each spec in order; when one fails, the ones already mounted are unmounted again (newest
 * first) before the error is thrown, so a failed Create leaves no mounts behind.
 */
export async function mountAll(mounts: readonly MountSpec[], rootfs: string): Promise<void> {
  if (mounts.length === 0) return;
  try {
    await mkdir(rootfs, { recursive: true, mode: 0o711 });
  } catch (err) {
    throw unknown(`create rootfs ${rootfs}: ${message(err)}`, err);
  }
  const mounted: string[] = [];
  try {
    for (const spec of mounts) {
      const target = spec.target ? await secureJoin(rootfs, spec.target) : rootfs;
      await mountOne(spec, target);
      mounted.push(target);
    }
  } catch (err) {
    for (const target of mounted.reverse()) await undoMount(target);
    throw err instanceof ShimError ? err : unknown(message(err), err);
  }
}

async function mountOne(spec: MountSpec, target: string): Promise<void> {
  const parsed = parseMountOptions(spec.options);
  const isFuse = spec.type.startsWith('fuse.') || spec.type.startsWith('fuse3.');
  if (isFuse || parsed.loop) {
    await mountWithHelper(spec.type, spec.source, target, spec.options);
    return;
  }

  const data = parsed.data.join(',');
  if (spec.type === 'overlay' && data.length > pageSize() - 512) {
    const compact = compactLowerdirs(spec.options);
    const compactData = parseMountOptions(compact.options).data.join(',');
    if (compact.cwd === undefined || compactData.length > pageSize()) {
      throw invalidArgument(`overlay mount options too long (${data.length} bytes) for ${target}`);
    }
    await mountWithHelper(spec.type, spec.source, target, compact.options, compact.cwd);
    return;
  }

  const describe = `mount ${spec.type} ${spec.source} on ${target}`;
  try {
    await mountOffLoop(spec.source, target, spec.type, parsed.flags, data === '' ? null : data);
  } catch (err) {
    throw unknown(`${describe}: ${message(err)}`, err);
  }
  try {
    if (parsed.propagation !== undefined) await mountOffLoop(null, target, null, parsed.propagation, null);
    if (parsed.needsRemountReadonly) await mountOffLoop(null, target, null, parsed.flags | MS_REMOUNT, null);
  } catch (err) {
    await undoMount(target);
    throw unknown(`${describe}: ${message(err)}`, err);
  }
}

/** Runs mount(8); `options` are passed as given (mount(8) understands the same names). */
async function mountWithHelper(
  type: string,
  source: string,
  target: string,
  options: readonly string[],
  cwd?: string,
): Promise<void> {
  const args = ['-t', type];
  if (options.length > 0) args.push('-o', options.join(','));
  args.push(source, target);
  const result = await run('mount', args, cwd === undefined ? {} : { cwd });
  if (result.code !== 0) {
    const output = result.stderr.toString().trim() || result.stdout.toString().trim();
    throw unknown(`mount ${args.join(' ')}: ${output || `exit status ${result.code ?? result.signal}`}`);
  }
}

/**
 * Rewrites `lowerdir=` relative to the lowerdirs' longest common parent (containerd's
 * compactLowerdirOption). The mount must then run with that parent as its cwd.
 */
export function compactLowerdirs(options: readonly string[]): { options: string[]; cwd?: string } {
  const index = options.findIndex((o) => o.startsWith('lowerdir='));
  if (index < 0) return { options: [...options] };
  const dirs = (options[index] as string).slice('lowerdir='.length).split(':');
  const common = commonParent(dirs);
  if (common === undefined || common === '/') return { options: [...options] };
  const compacted = [...options];
  compacted[index] = `lowerdir=${dirs.map((d) => relative(common, d) || '.').join(':')}`;
  return { options: compacted, cwd: common };
}

function commonParent(dirs: readonly string[]): string | undefined {
  if (dirs.length === 0 || !dirs.every((d) => d.startsWith('/'))) return undefined;
  const split = dirs.map((d) => posix.normalize(d).split('/').filter(Boolean));
  const first = split[0] as string[];
  let length = 0;
  // A lowerdir must stay a descendant of the parent, hence at most (shortest length − 1) components.
  const limit = Math.min(...split.map((parts) => parts.length)) - 1;
  while (length < limit && split.every((parts) => parts[length] === first[length])) length++;
  return `/${first.slice(0, length).join('/')}`;
}

/** Best-effort unmount used to roll back; a lazy detach is better than a leaked busy mount. */
async function undoMount(target: string): Promise<void> {
  try {
    await umount2OffLoop(target, 0);
  } catch {
    try {
      await umount2OffLoop(target, MNT_DETACH);
    } catch {
      // nothing mounted there any more
    }
  }
}

/**
 * Unmounts everything at and below `rootfs`: mounts nested inside it first (newest first), then
 * `umount2(rootfs)` repeatedly until EINVAL (not a mount point), peeling stacked mounts. EBUSY is retried
 * 50×50 ms. A missing directory is fine: Delete must be idempotent.
 */
export async function unmountAll(rootfs: string): Promise<void> {
  let root: string;
  try {
    // Off the loop: resolving the rootfs stats what is mounted there, which may be a filesystem
    // that does not answer.
    root = await realpath(rootfs);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    // A filesystem that fails (ENOTCONN from an aborted FUSE connection): the mount table still
    // names it by the path as given, which is how the shim built it.
    root = resolve(rootfs);
  }
  const info = readMountInfo();
  // Nothing mounted there (e.g. `ctr run --rootfs`, or a second cleanup): no syscall, no FFI load.
  if (!info.some((m) => m.mountPoint === root || m.mountPoint.startsWith(`${root}/`))) return;
  const nested = info
    .filter((m) => m.mountPoint.startsWith(root === '/' ? '/' : `${root}/`) && m.mountPoint !== root)
    .map((m) => m.mountPoint)
    .reverse();
  // The table read once says what is stacked where: peel needs no second look while that holds.
  const stackAt = (point: string): string[] => info.filter((m) => m.mountPoint === point).map((m) => m.fsType);
  for (const point of new Set(nested)) await peel(point, stackAt(point));
  await peel(root, stackAt(root));
}

/** `known`: the filesystem types stacked at `target`, oldest first, as the mount table showed them. */
async function peel(target: string, known: string[]): Promise<void> {
  let busy = 0;
  for (let stacked = 0; stacked < MAX_STACKED_MOUNTS; ) {
    // Past what the table showed (something mounted since), it is read again.
    const top = known.length > 0 ? known[known.length - 1] : topFsType(target);
    if (top !== undefined && isFuseType(top) && (await unmountFuse(target))) {
      known.pop();
      stacked++;
      continue;
    }
    try {
      await umount2OffLoop(target, 0);
      known.pop();
      stacked++;
      busy = 0;
      continue;
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'EINVAL' || code === 'ENOENT') return;
      if (code === 'EBUSY' && busy < UNMOUNT_BUSY_RETRIES) {
        busy++;
        await new Promise((resolve) => setTimeout(resolve, UNMOUNT_BUSY_DELAY_MS));
        continue;
      }
      // errno is read after the call returns to JavaScript, and V8 may have run (and set errno) in
      // between: an unmount reported as ENOMEM was seen here. The mount table has the last word.
      if (!isMountPoint(target)) return;
      throw unknown(`unmount ${target}: ${message(err)}`, err);
    }
  }
  throw unknown(`unmount ${target}: more than ${MAX_STACKED_MOUNTS} stacked mounts`);
}

function topFsType(target: string): string | undefined {
  return readMountInfo().filter((m) => m.mountPoint === target).pop()?.fsType;
}

function isFuseType(fsType: string): boolean {
  return fsType === 'fuse' || fsType.startsWith('fuse.') || fsType.startsWith('fuse3.');
}

/** FUSE mounts are released with fusermount, as the FUSE daemon expects; false when it could not. */
async function unmountFuse(target: string): Promise<boolean> {
  for (const helper of ['fusermount3', 'fusermount']) {
    try {
      const result = await run(helper, ['-u', target]);
      if (result.code === 0) return true;
    } catch {
      // helper not installed: try the next one, then plain umount2
    }
  }
  return false;
}

interface MountInfoEntry {
  mountPoint: string;
  fsType: string;
}

function isMountPoint(target: string): boolean {
  return readMountInfo().some((m) => m.mountPoint === target);
}

/** Synchronous: procfs, generated by the kernel (the parse is ours either way). */
function readMountInfo(): MountInfoEntry[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch (err) {
    throw unknown(`read /proc/self/mountinfo: ${message(err)}`, err);
  }
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    if (fields.length < 5 || separator < 0) continue;
    entries.push({ mountPoint: unescapeMountInfo(fields[4] as string), fsType: fields[separator + 1] ?? '' });
  }
  return entries;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountInfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/**
 * Joins `unsafePath` onto `root` resolving symlinks as if `root` were `/`, so a hostile image cannot
 * point a mount target outside the rootfs (the semantics of filepath-securejoin / containerd's RootPath).
 */
export async function secureJoin(root: string, unsafePath: string): Promise<string> {
  let resolved = '';
  const pending = unsafePath.split('/').filter((p) => p !== '' && p !== '.');
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === '..') {
      resolved = posix.dirname(`/${resolved}`).slice(1);
      continue;
    }
    const candidate = resolved === '' ? part : `${resolved}/${part}`;
    let isLink = false;
    try {
      isLink = (await lstat(join(root, candidate))).isSymbolicLink();
    } catch {
      // does not exist (yet): keep it lexically
    }
    if (!isLink) {
      resolved = candidate;
      continue;
    }
    if (++links > MAX_SYMLINKS) throw invalidArgument(`too many symlinks resolving ${unsafePath} in ${root}`);
    const link = await readlink(join(root, candidate));
    if (link.startsWith('/')) resolved = '';
    pending.unshift(...link.split('/').filter((p) => p !== '' && p !== '.'));
  }
  return resolved === '' ? root : `${root.replace(/\/+$/, '')}${sep}${resolved}`;
}

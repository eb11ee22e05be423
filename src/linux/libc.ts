/**
 * The one FFI binding to glibc. Node has no API for subreaping, per-pid waitpid, SCM_RIGHTS, TIOCSWINSZ,
 * mount(2) or eventfd (spec §14), so these few calls go through koffi. The library is loaded on first use
 * so that importing this module (e.g. from code shared with Windows builds or unit tests that never call
 * into libc) costs nothing and cannot fail.
 *
 * Failures throw a Node-style `ErrnoError` (`code` = errno name such as 'ESRCH', `errno` = the positive
 * errno value, `syscall`), never a ShimError: callers in this layer decide which gRPC code a failure means.
 *
 * Layouts below are the glibc LP64 ones, identical on x86_64 and aarch64; the numeric constants are the
 * asm-generic values shared by both.
 */
import type * as Koffi from 'koffi';
import { constants as osConstants } from 'node:os';
// koffi itself is loaded on first use too: `delete` and `start` runs that never call libc skip it
import { koffi as ffi } from '../common/koffi';

// mount(2) flags, <sys/mount.h>
export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_SYNCHRONOUS = 0x10;
export const MS_REMOUNT = 0x20;
export const MS_MANDLOCK = 0x40;
export const MS_DIRSYNC = 0x80;
export const MS_NOSYMFOLLOW = 0x100;
export const MS_NOATIME = 0x400;
export const MS_NODIRATIME = 0x800;
export const MS_BIND = 0x1000;
export const MS_MOVE = 0x2000;
export const MS_REC = 0x4000;
export const MS_SILENT = 0x8000;
export const MS_UNBINDABLE = 0x20000;
export const MS_PRIVATE = 0x40000;
export const MS_SLAVE = 0x80000;
export const MS_SHARED = 0x100000;
export const MS_RELATIME = 0x200000;
export const MS_STRICTATIME = 0x1000000;
export const MS_LAZYTIME = 0x2000000;
// umount2(2) flags
export const MNT_FORCE = 0x1;
export const MNT_DETACH = 0x2;
export const MNT_EXPIRE = 0x4;
export const UMOUNT_NOFOLLOW = 0x8;
// open(2)/fcntl(2) flags
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
// eventfd(2) flags are defined as the matching O_* values
export const EFD_SEMAPHORE = 0x1;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
// waitpid(2)
export const WNOHANG = 0x1;

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const F_GETFL = 3;
const F_SETFL = 4;
const F_DUPFD_CLOEXEC = 1030;
const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;
const PR_SET_CHILD_SUBREAPER = 36;
const PR_GET_CHILD_SUBREAPER = 37;
const TIOCSWINSZ = 0x5414;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_CTRUNC = 0x8;
const MSG_DONTWAIT = 0x40;
const MSG_CMSG_CLOEXEC = 0x40000000;
/** runc sends the master's path (`/dev/ptmx`) as the payload; 4096 is PATH_MAX, the most it can send. */
const MAX_FD_NAME = 4096;
const { EAGAIN, EINTR, EINVAL, EMSGSIZE, ENOMSG } = osConstants.errno;

/** A failed libc call, shaped like Node's own system errors so `errnoCode()` and logs treat it alike. */
export class ErrnoError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  readonly path?: string;

  constructor(errno: number, syscall: string, path?: string, message?: string) {
    const code = errnoName(errno);
    const detail = message ?? describeErrno(errno);
    super(`${code}: ${detail}, ${syscall}${path === undefined ? '' : ` '${path}'`}`);
    this.name = 'Error';
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
    if (path !== undefined) this.path = path;
  }
}

export interface WaitResult {
  pid: number;
  /** Exit code, or 128 + signal number when the process was killed (the containerd convention). */
  status: number;
  signaled: boolean;
  signal?: number;
}

type Fn = (...args: unknown[]) => number;
/** A binding that can also run on a libuv threadpool thread (koffi's async mode). */
type AsyncFn = Fn & { async: (...args: unknown[]) => void };

interface Bindings {
  prctl: Fn;
  waitpid: Fn;
  pipe2: Fn;
  ioctl: Fn;
  mount: AsyncFn;
  umount2: AsyncFn;
  eventfd: Fn;
  fcntl: Fn;
  recvmsg: Fn;
  close: Fn;
  dup3: Fn;
  getpgid: Fn;
  setsid: Fn;
  getpagesize: Fn;
  execve: Fn;
  epoll_create1: Fn;
  epoll_ctl: Fn;
  epoll_wait: AsyncFn;
  strerror: (errnum: number) => string;
  winsize: Koffi.IKoffiCType;
  cmsghdr: Koffi.IKoffiCType;
}

let bindings: Bindings | undefined;

function libc(): Bindings {
  if (bindings) return bindings;
  const koffi = ffi();
  const lib = koffi.load('libc.so.6');
  // struct winsize { unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel; };
  const winsize = koffi.struct('tshim_winsize', {
    ws_row: 'unsigned short',
    ws_col: 'unsigned short',
    ws_xpixel: 'unsigned short',
    ws_ypixel: 'unsigned short',
  });
  // struct iovec { void *iov_base; size_t iov_len; };
  const iovec = koffi.struct('tshim_iovec', { iov_base: 'void *', iov_len: 'size_t' });
  // struct msghdr { void *msg_name; socklen_t msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
  //                 void *msg_control; size_t msg_controllen; int msg_flags; };
  const msghdr = koffi.struct('tshim_msghdr', {
    msg_name: 'void *',
    msg_namelen: 'uint32_t',
    msg_iov: koffi.pointer(iovec),
    msg_iovlen: 'size_t',
    msg_control: 'void *',
    msg_controllen: 'size_t',
    msg_flags: 'int',
  });
  // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; /* unsigned char data[]; */ };
  const cmsghdr = koffi.struct('tshim_cmsghdr', { cmsg_len: 'size_t', cmsg_level: 'int', cmsg_type: 'int' });
  bindings = {
    // int prctl(int option, ...);
    prctl: lib.func('int prctl(int option, ...)'),
    // pid_t waitpid(pid_t pid, int *wstatus, int options);
    waitpid: lib.func('int waitpid(int pid, _Out_ int *wstatus, int options)'),
    // int pipe2(int pipefd[2], int flags);
    pipe2: lib.func('int pipe2(_Out_ int *pipefd, int flags)'),
    // int ioctl(int fd, unsigned long request, ...);
    ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
    // int mount(const char *source, const char *target, const char *filesystemtype,
    //           unsigned long mountflags, const void *data);
    // Also called in async mode (mountOffLoop).
    mount: lib.func(
      'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)',
    ) as AsyncFn,
    // int umount2(const char *target, int flags);
    // Also called in async mode (umount2OffLoop).
    umount2: lib.func('int umount2(const char *target, int flags)') as AsyncFn,
    // int eventfd(unsigned int initval, int flags);
    eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
    // int fcntl(int fd, int cmd, ...);
    fcntl: lib.func('int fcntl(int fd, int cmd, ...)'),
    // ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags);
    recvmsg: lib.func('recvmsg', 'intptr_t', ['int', koffi.inout(koffi.pointer(msghdr)), 'int']),
    // int close(int fd);
    close: lib.func('int close(int fd)'),
    // int dup3(int oldfd, int newfd, int flags);
    dup3: lib.func('int dup3(int oldfd, int newfd, int flags)'),
    // pid_t getpgid(pid_t pid);
    getpgid: lib.func('int getpgid(int pid)'),
    // pid_t setsid(void);
    setsid: lib.func('int setsid(void)'),
    // int getpagesize(void);
    getpagesize: lib.func('int getpagesize(void)'),
    // int execve(const char *pathname, char *const argv[], char *const envp[]);
    // Both arrays end with a NULL pointer (the trailing null of the JS arrays passed in).
    execve: lib.func('int execve(const char *pathname, const char **argv, const char **envp)'),
    // int epoll_create1(int flags);
    epoll_create1: lib.func('int epoll_create1(int flags)'),
    // int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
    // struct epoll_event { uint32_t events; epoll_data_t data; } is packed on x86-64 (12 bytes),
    // naturally aligned elsewhere (16): passed as bytes laid out by epollEventLayout().
    epoll_ctl: lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
    // int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
    // Called in koffi's async mode: it blocks on a libuv threadpool thread, not the event loop.
    epoll_wait: lib.func('int epoll_wait(int epfd, _Out_ void *events, int maxevents, int timeout)') as AsyncFn,
    // char *strerror(int errnum);
    strerror: lib.func('const char *strerror(int errnum)') as (errnum: number) => string,
    winsize,
    cmsghdr,
  };
  return bindings;
}

/** errno value → name. libuv's own table lacks some (ECHILD, ENOMSG), so build it from os.constants. */
let errnoNames: Map<number, string> | undefined;

function errnoName(errno: number): string {
  if (!errnoNames) {
    errnoNames = new Map();
    // First name wins for aliases: EAGAIN before EWOULDBLOCK, EDEADLK before EDEADLOCK.
    for (const [name, value] of Object.entries(osConstants.errno)) {
      if (!errnoNames.has(value)) errnoNames.set(value, name);
    }
  }
  return errnoNames.get(errno) ?? `E${errno}`;
}

function describeErrno(errno: number): string {
  try {
    return libc().strerror(errno);
  } catch {
    return `errno ${errno}`;
  }
}

/** Reads errno right after a failed call: nothing else may run in between, or errno could be clobbered. */
function fail(syscall: string, path?: string): never {
  throw new ErrnoError(ffi().errno(), syscall, path);
}

function sizeTAligned(n: number): number {
  // CMSG_ALIGN: control messages are padded to sizeof(size_t), 8 on both LP64 targets.
  const align = ffi().sizeof('size_t');
  return (n + align - 1) & ~(align - 1);
}

/** prctl(PR_SET_CHILD_SUBREAPER, 1): orphans of our descendants are re-parented to us, not to init. */
export function setChildSubreaper(): void {
  const { prctl } = libc();
  if (prctl(PR_SET_CHILD_SUBREAPER, 'unsigned long', 1, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0) < 0) {
    fail('prctl');
  }
}

/** prctl(PR_GET_CHILD_SUBREAPER, &flag) */
export function isChildSubreaper(): boolean {
  const { prctl } = libc();
  const flag = Buffer.alloc(4);
  if (prctl(PR_GET_CHILD_SUBREAPER, 'void *', flag, 'unsigned long', 0, 'unsigned long', 0, 'unsigned long', 0) < 0) {
    fail('prctl');
  }
  return flag.readInt32LE(0) !== 0;
}

/** Decodes a wait(2) status word the way containerd reports it: exit code, or 128 + signal. */
export function decodeWaitStatus(pid: number, raw: number): WaitResult {
  const termsig = raw & 0x7f;
  if (termsig === 0) return { pid, status: (raw >> 8) & 0xff, signaled: false };
  return { pid, status: 128 + termsig, signaled: true, signal: termsig };
}

/**
 * waitpid(pid, &status, WNOHANG) for one specific pid. Returns undefined while the process still runs;
 * throws ECHILD when it is not (or no longer) our child. pid <= 0 would wait for *any* child and steal
 * exits that belong to libuv, so it is refused outright.
 */
export function waitpidNoHang(pid: number): WaitResult | undefined {
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new ErrnoError(EINVAL, 'waitpid', undefined, `refusing to wait for pid ${pid}`);
  }
  const { waitpid } = libc();
  const status = [0];
  for (;;) {
    const r = waitpid(pid, status, WNOHANG);
    if (r > 0) return decodeWaitStatus(r, status[0] ?? 0);
    if (r === 0) return undefined;
    if (ffi().errno() !== EINTR) fail('waitpid');
  }
}

/** pipe2(2): a real kernel pipe (Node only offers socketpairs), O_CLOEXEC unless told otherwise. */
export function pipe2(cloexec = true): [readFd: number, writeFd: number] {
  const { pipe2: pipe2Fn } = libc();
  const fds = [-1, -1];
  if (pipe2Fn(fds, cloexec ? O_CLOEXEC : 0) < 0) fail('pipe2');
  return [fds[0] as number, fds[1] as number];
}

/** ioctl(fd, TIOCSWINSZ, &(struct winsize){rows, cols, 0, 0}) */
export function setWinsize(fd: number, rows: number, cols: number): void {
  const { ioctl, winsize } = libc();
  const ws = { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
  if (ioctl(fd, TIOCSWINSZ, ffi().pointer(winsize), ws) < 0) fail('ioctl');
}

export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  if (libc().mount(source, target, fstype, flags, data) < 0) fail('mount', target);
}

export function umount2(target: string, flags: number): void {
  if (libc().umount2(target, flags) < 0) fail('umount2', target);
}

/**
 * mount(2) and umount2(2) off the event loop, on a libuv threadpool thread: either can wait on the
 * filesystem for as long as it likes (a FUSE daemon that does not answer, a block device that
 * hangs), and a daemon serving a whole namespace must go on serving the other containers meanwhile.
 *
 * errno belongs to the thread that made the call and is lost with it, so a call that failed there is
 * made once more here to learn why. A failed mount or unmount changed nothing, so the repeat fails
 * the same way, or succeeds, which is what was asked for. The repeat runs on the loop: a failure
 * the kernel took long to reach (a lookup that timed out) blocks the loop once for as long. A FUSE
 * connection that was hung and is then aborted fails the repeat at once (ENOTCONN).
 */
export function mountOffLoop(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): Promise<void> {
  return offLoop(libc().mount, [source, target, fstype, flags, data], () => mount(source, target, fstype, flags, data));
}

/** umount2(2) off the event loop; see mountOffLoop. */
export function umount2OffLoop(target: string, flags: number): Promise<void> {
  return offLoop(libc().umount2, [target, flags], () => umount2(target, flags));
}

function offLoop(fn: AsyncFn, args: unknown[], repeatHere: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, result: number) => {
      if (err) return reject(err instanceof Error ? err : new Error(String(err)));
      if (result >= 0) return resolve();
      try {
        repeatHere();
        resolve();
      } catch (failure) {
        reject(failure);
      }
    });
  });
}

export function eventfd(initval: number, flags: number): number {
  const fd = libc().eventfd(initval, flags);
  if (fd < 0) fail('eventfd');
  return fd;
}

export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLLIN = 0x1;

/** Size of struct epoll_event and where its data member sits (see the epoll_ctl binding). */
function epollEventLayout(): { size: number; dataOffset: number } {
  return process.arch === 'x64' ? { size: 12, dataOffset: 4 } : { size: 16, dataOffset: 8 };
}

/** epoll_create1(EPOLL_CLOEXEC, which is O_CLOEXEC) */
export function epollCreate(): number {
  const fd = libc().epoll_create1(O_CLOEXEC);
  if (fd < 0) fail('epoll_create1');
  return fd;
}

/** epoll_ctl(epfd, op, fd, {events, data.fd = fd}) */
export function epollCtl(epfd: number, op: number, fd: number, events: number): void {
  const { size, dataOffset } = epollEventLayout();
  const event = Buffer.alloc(size);
  event.writeUInt32LE(events, 0);
  event.writeInt32LE(fd, dataOffset);
  if (libc().epoll_ctl(epfd, op, fd, event) < 0) fail('epoll_ctl');
}

/**
 * epoll_wait(epfd, …, maxEvents, -1) on a threadpool thread: resolves with the fds (data.fd) that
 * are ready, or null when the call failed (EINTR from a signal taken by that thread, mostly: errno
 * belongs to the worker thread and cannot be read here).
 */
export function epollWait(epfd: number, maxEvents: number): Promise<number[] | null> {
  const { size, dataOffset } = epollEventLayout();
  const events = Buffer.alloc(size * maxEvents);
  return new Promise((resolve, reject) => {
    libc().epoll_wait.async(epfd, events, maxEvents, -1, (err: unknown, n: number) => {
      if (err) return reject(err instanceof Error ? err : new Error(String(err)));
      if (n < 0) return resolve(null);
      const ready: number[] = [];
      for (let i = 0; i < n; i++) ready.push(events.readInt32LE(i * size + dataOffset));
      resolve(ready);
    });
  });
}

/** fcntl(F_GETFL) + fcntl(F_SETFL) toggling O_NONBLOCK. Affects every fd sharing the open file description. */
export function setNonBlocking(fd: number, on: boolean): void {
  const { fcntl } = libc();
  const current = fcntl(fd, F_GETFL);
  if (current < 0) fail('fcntl');
  const next = on ? current | O_NONBLOCK : current & ~O_NONBLOCK;
  if (next !== current && fcntl(fd, F_SETFL, 'int', next) < 0) fail('fcntl');
}

/**
 * fcntl(fd, F_SETPIPE_SZ, bytes) for a pipe or FIFO; returns the size the kernel granted (it rounds
 * up to a power of two of pages and caps unprivileged callers at /proc/sys/fs/pipe-max-size).
 */
export function setPipeSize(fd: number, bytes: number): number {
  const r = libc().fcntl(fd, F_SETPIPE_SZ, 'int', bytes);
  if (r < 0) fail('fcntl');
  return r;
}

/** fcntl(fd, F_GETPIPE_SZ): the capacity of a pipe or FIFO in bytes. */
export function pipeSize(fd: number): number {
  const r = libc().fcntl(fd, F_GETPIPE_SZ);
  if (r < 0) fail('fcntl');
  return r;
}

/** fcntl(fd, F_DUPFD_CLOEXEC, 0): a second descriptor for the same open file description. */
export function dup(fd: number): number {
  const r = libc().fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0);
  if (r < 0) fail('fcntl');
  return r;
}

/**
 * dup3(oldfd, newfd, 0): makes `newfd` (e.g. 2, stderr) refer to `oldfd`'s open file, atomically
 * replacing what `newfd` was. Without O_CLOEXEC, as stdio must be.
 */
export function dup2(oldfd: number, newfd: number): void {
  if (libc().dup3(oldfd, newfd, 0) < 0) fail('dup3');
}

/** Loads koffi and binds libc now, so a later first call does not pay for it (spare daemons). */
export function loadLibc(): void {
  libc();
}

/** close(2) for descriptors that no Node handle owns (e.g. one received with recvFd). */
export function close(fd: number): void {
  if (libc().close(fd) < 0) fail('close');
}

export function getpgid(pid: number): number {
  const r = libc().getpgid(pid);
  if (r < 0) fail('getpgid');
  return r;
}

export function setsid(): number {
  const r = libc().setsid();
  if (r < 0) fail('setsid');
  return r;
}

/** getpagesize(): bounds the data string mount(2) copies from user space. */
export function pageSize(): number {
  return libc().getpagesize();
}

/**
 * recvmsg(sockFd, &msg, MSG_DONTWAIT|MSG_CMSG_CLOEXEC) expecting one SCM_RIGHTS descriptor, the way runc
 * sends a pty master over `--console-socket`. The payload is the descriptor's name (e.g. "/dev/ptmx").
 * Returns undefined when nothing is queued yet (EAGAIN). Throws ENOMSG when the peer closed or sent no
 * descriptor, EMSGSIZE when more than one descriptor arrived (any received descriptors are closed).
 */
export function recvFd(sockFd: number): { fd: number; name: string } | undefined {
  const { recvmsg, cmsghdr } = libc();
  const headerSpace = sizeTAligned(ffi().sizeof(cmsghdr));
  const intSize = 4;
  const nameBuf = Buffer.alloc(MAX_FD_NAME);
  const control = Buffer.alloc(headerSpace + sizeTAligned(intSize)); // CMSG_SPACE(sizeof(int))
  const msg = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: [{ iov_base: nameBuf, iov_len: nameBuf.length }],
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control.length,
    msg_flags: 0,
  };
  let n: number;
  for (;;) {
    n = recvmsg(sockFd, msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    const errno = ffi().errno();
    if (errno === EAGAIN) return undefined;
    if (errno !== EINTR) fail('recvmsg');
  }

  const fds: number[] = [];
  let offset = 0;
  while (offset + headerSpace <= msg.msg_controllen) {
    const header = ffi().decode(control, offset, cmsghdr) as { cmsg_len: number; cmsg_level: number; cmsg_type: number };
    if (header.cmsg_len < headerSpace) break;
    if (header.cmsg_level === SOL_SOCKET && header.cmsg_type === SCM_RIGHTS) {
      const count = Math.floor((header.cmsg_len - headerSpace) / intSize);
      for (let i = 0; i < count; i++) fds.push(control.readInt32LE(offset + headerSpace + i * intSize));
    }
    offset += sizeTAligned(header.cmsg_len);
  }

  const truncated = (msg.msg_flags & MSG_CTRUNC) !== 0;
  if (fds.length === 1 && !truncated) {
    return { fd: fds[0] as number, name: nameBuf.subarray(0, n).toString('utf8') };
  }
  for (const fd of fds) libc().close(fd);
  if (truncated || fds.length > 1) {
    throw new ErrnoError(EMSGSIZE, 'recvmsg', undefined, 'expected exactly one file descriptor');
  }
  throw new ErrnoError(
    ENOMSG,
    'recvmsg',
    undefined,
    n === 0 ? 'peer closed without sending a file descriptor' : 'message carried no file descriptor',
  );
}

/**
 * fcntl(fd, F_SETFD, on ? FD_CLOEXEC : 0). libuv opens everything close-on-exec; a shim handing
 * itself over to a new image (upgrade) clears the flag on exactly the descriptors it passes on.
 */
export function setCloseOnExec(fd: number, on: boolean): void {
  const { fcntl } = libc();
  const current = fcntl(fd, F_GETFD);
  if (current < 0) fail('fcntl');
  const next = on ? current | FD_CLOEXEC : current & ~FD_CLOEXEC;
  if (next !== current && fcntl(fd, F_SETFD, 'int', next) < 0) fail('fcntl');
}

/**
 * execve(2): replaces this process's image in place (same pid, children, subreaper setting and
 * every descriptor without FD_CLOEXEC). Returns only on failure, by throwing.
 */
export function execve(file: string, argv: readonly string[], env: NodeJS.ProcessEnv): never {
  const envp = Object.entries(env)
    .filter((e): e is [string, string] => typeof e[1] === 'string')
    .map(([k, v]) => `${k}=${v}`);
  libc().execve(file, [...argv, null], [...envp, null]);
  fail('execve', file);
}

/**
 * The hand-over state of an in-place upgrade (README, "Upgrading running shims"): everything a
 * daemon's new image needs to carry on where the old image stopped, beside the descriptors it
 * inherits through execve. Pure data and pure functions: written by the old image after it
 * quiesced, checked by `<new launcher> -upgrade-check <file>` before execve, read by the new image.
 *
 * The format is versioned. An image reads every version listed in READABLE_STATE_VERSIONS and
 * refuses anything else, so an old image never hands itself to a new one that cannot read it: the
 * check runs first and the old image keeps serving when it fails.
 *
 * Descriptors are plain fd numbers, valid in the new image because the old one cleared
 * FD_CLOEXEC on exactly these (`fds`) before execve.
 */
import type { StdioSpec } from '../backend';
import type { StateName } from '../process/state';

export const STATE_FORMAT = 'tshim-handover';
/** The version this image writes. */
export const STATE_VERSION = 1;
/** The versions this image can restore from. */
export const READABLE_STATE_VERSIONS: readonly number[] = [1];

export interface DaemonIdentityState {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  debug: boolean;
  bundle: string;
  ttrpcAddress: string | undefined;
  protocol: 'ttrpc';
}

/** A request that was still running when the old image stopped: the new image answers it. */
export interface PendingCallState {
  streamId: number;
  service: string;
  method: string;
  /** base64 request payload */
  payload: string;
  metadata: Array<[string, string]>;
  /** absolute deadline (ms since epoch), if the caller gave one */
  deadline?: number;
}

export interface ConnectionState {
  fd: number;
  lastStreamId: number;
  /** base64: bytes of a frame read only in part (usually empty) */
  buffered: string;
  pending: PendingCallState[];
}

export interface EventState {
  /** ms since epoch: when it happened, not when it is sent */
  timestamp: number;
  topic: string;
  typeUrl: string;
  /** base64 */
  value: string;
}

export type SinkState =
  /** a stdout/stderr FIFO: our writer plus the extra reader that keeps it from breaking */
  | { kind: 'fifo'; writerFd: number; readerFd: number }
  /** a regular file appended to (file://, or a plain file given as a FIFO path) */
  | { kind: 'file'; fd: number }
  /** output nobody wants (a terminal without stdout) */
  | { kind: 'discard' };

export interface StdinState {
  /** our reader of the stdin FIFO */
  readerFd: number;
  /** the write handle held until CloseIO; -1 once released */
  heldWriterFd: number;
}

export type IoState =
  | { kind: 'none' }
  | {
      kind: 'pipe';
      /** pipe read end → sink, one per wanted output stream still being copied */
      copies: Array<{ readFd: number; sink: SinkState }>;
      /** stdin FIFO → the container's stdin pipe */
      stdin?: StdinState & { pipeWriterFd: number };
    }
  | {
      kind: 'pty';
      masterFd: number;
      stdin?: StdinState;
      output: SinkState;
      /** the terminal's output already ended (process gone, output flushed and closed) */
      outputEnded: boolean;
    };

export interface ExitState {
  status: number;
  /** ms since epoch */
  exitedAt: number;
}

export interface ProcessStateRecord {
  /** '' for the init */
  execId: string;
  stdio: StdioSpec;
  state: StateName;
  pid: number;
  exit?: ExitState;
  /** exec only: the OCI Process JSON runc exec gets */
  processJson?: string;
  io: IoState;
}

export interface ContainerStateRecord {
  id: string;
  bundle: string;
  namespace: string;
  stdio: StdioSpec;
  /** mounts we made on <bundle>/rootfs and must undo at delete */
  mountedRootfs: boolean;
  init: ProcessStateRecord;
  execs: ProcessStateRecord[];
}

export interface HandoverState {
  format: typeof STATE_FORMAT;
  version: number;
  /** ms since epoch: when the old image stopped taking requests (the pause starts here) */
  pausedAt: number;
  /** high-resolution: process.hrtime.bigint() of the same moment, as a decimal string */
  pausedAtNs: string;
  fromVersion: string;
  pid: number;
  identity: DaemonIdentityState;
  /** the socket path this daemon removes at shutdown */
  ownSocket: string | undefined;
  listenerFd: number;
  connections: ConnectionState[];
  /** the undelivered event queue, oldest first (the one in flight included, at the head) */
  events: EventState[];
  containers: ContainerStateRecord[];
  /** pids the reaper collects exits of (running container processes), for the record */
  watchedPids: number[];
  /** exits reaped without a watcher and kept for a late watch */
  strays: Array<{ pid: number; status: number; at: number }>;
  /** every descriptor the new image inherits; it owns them all */
  fds: number[];
}

export class StateError extends Error {
  override readonly name = 'StateError';
}

const STATE_NAMES: readonly StateName[] = ['created', 'createdCheckpoint', 'running', 'paused', 'stopped', 'deleted'];

export function encodeState(state: HandoverState): string {
  return `${JSON.stringify(state)}\n`;
}

/** Parses and checks a state file's text: a StateError names the first thing wrong. */
export function decodeState(text: string): HandoverState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new StateError(`hand-over state is not JSON: ${(err as Error).message}`);
  }
  checkVersion(raw);
  validate(raw as HandoverState);
  return raw as HandoverState;
}

/** Only the header: format and version. */
export function checkVersion(raw: unknown): void {
  if (!isObject(raw) || raw['format'] !== STATE_FORMAT) throw new StateError('not a tshim hand-over state');
  const version = raw['version'];
  if (typeof version !== 'number' || !READABLE_STATE_VERSIONS.includes(version)) {
    throw new StateError(
      `hand-over state version ${String(version)} is not readable by this build (reads ${READABLE_STATE_VERSIONS.join(', ')})`,
    );
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function validate(s: HandoverState): void {
  const where: string[] = [];
  const fail = (what: string): never => {
    throw new StateError(`hand-over state: ${[...where, what].join(': ')}`);
  };
  const need = (ok: boolean, what: string): void => {
    if (!ok) fail(what);
  };
  const int = (v: unknown, what: string, min = 0): number => {
    need(typeof v === 'number' && Number.isInteger(v) && v >= min, `${what} must be an integer >= ${min}`);
    return v as number;
  };
  const str = (v: unknown, what: string): string => {
    need(typeof v === 'string', `${what} must be a string`);
    return v as string;
  };
  const b64 = (v: unknown, what: string): void => {
    need(typeof v === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(v), `${what} must be base64`);
  };
  const fds = new Set<number>();
  if (!Array.isArray(s.fds)) fail('fds must be an array');
  for (const fd of s.fds) {
    int(fd, 'fd', 3);
    need(!fds.has(fd), `fd ${fd} listed twice`);
    fds.add(fd);
  }
  const used = new Set<number>();
  const fd = (v: unknown, what: string): void => {
    int(v, what, 3);
    need(fds.has(v as number), `${what} ${String(v)} is not among the inherited fds`);
    used.add(v as number);
  };

  int(s.pid, 'pid', 1);
  int(s.pausedAt, 'pausedAt', 0);
  str(s.pausedAtNs, 'pausedAtNs');
  str(s.fromVersion, 'fromVersion');
  need(isObject(s.identity), 'identity must be an object');
  for (const key of ['namespace', 'id', 'address', 'publishBinary', 'bundle'] as const) str(s.identity[key], `identity.${key}`);
  need(s.identity.protocol === 'ttrpc', 'identity.protocol must be ttrpc');
  fd(s.listenerFd, 'listenerFd');

  need(Array.isArray(s.connections), 'connections must be an array');
  for (const [i, c] of s.connections.entries()) {
    where.push(`connection ${i}`);
    fd(c.fd, 'fd');
    int(c.lastStreamId, 'lastStreamId');
    b64(c.buffered, 'buffered');
    need(Array.isArray(c.pending), 'pending must be an array');
    for (const p of c.pending) {
      const id = int(p.streamId, 'streamId', 1);
      need(id % 2 === 1 && id <= c.lastStreamId, `stream ${id} is not a client stream of this connection`);
      str(p.service, 'service');
      str(p.method, 'method');
      b64(p.payload, 'payload');
      need(Array.isArray(p.metadata), 'metadata must be an array');
      if (p.deadline !== undefined) int(p.deadline, 'deadline');
    }
    where.pop();
  }

  need(Array.isArray(s.events), 'events must be an array');
  for (const e of s.events) {
    int(e.timestamp, 'event timestamp');
    str(e.topic, 'event topic');
    str(e.typeUrl, 'event typeUrl');
    b64(e.value, 'event value');
  }

  const sink = (k: SinkState): void => {
    if (k.kind === 'fifo') {
      fd(k.writerFd, 'sink writerFd');
      fd(k.readerFd, 'sink readerFd');
    } else if (k.kind === 'file') {
      fd(k.fd, 'sink fd');
    } else need(k.kind === 'discard', `unknown sink kind ${String((k as { kind: unknown }).kind)}`);
  };
  const stdin = (k: StdinState): void => {
    fd(k.readerFd, 'stdin readerFd');
    if (k.heldWriterFd !== -1) fd(k.heldWriterFd, 'stdin heldWriterFd');
  };
  const io = (k: IoState): void => {
    need(isObject(k), 'io must be an object');
    if (k.kind === 'none') return;
    if (k.kind === 'pipe') {
      need(Array.isArray(k.copies), 'io copies must be an array');
      for (const c of k.copies) {
        fd(c.readFd, 'copy readFd');
        sink(c.sink);
      }
      if (k.stdin) {
        stdin(k.stdin);
        fd(k.stdin.pipeWriterFd, 'stdin pipeWriterFd');
      }
      return;
    }
    if (k.kind === 'pty') {
      fd(k.masterFd, 'pty masterFd');
      if (k.stdin) stdin(k.stdin);
      sink(k.output);
      need(typeof k.outputEnded === 'boolean', 'outputEnded must be a boolean');
      return;
    }
    fail(`unknown io kind ${String((k as { kind: unknown }).kind)}`);
  };
  const stdioSpec = (v: StdioSpec): void => {
    need(isObject(v), 'stdio must be an object');
    for (const key of ['stdin', 'stdout', 'stderr'] as const) str(v[key], `stdio.${key}`);
    need(typeof v.terminal === 'boolean', 'stdio.terminal must be a boolean');
  };
  const proc = (p: ProcessStateRecord, init: boolean): void => {
    need(init ? p.execId === '' : typeof p.execId === 'string' && p.execId !== '', 'execId');
    stdioSpec(p.stdio);
    need(STATE_NAMES.includes(p.state), `unknown state ${String(p.state)}`);
    need(init || p.state !== 'paused', 'an exec cannot be paused');
    int(p.pid, 'pid');
    need(!['running', 'paused'].includes(p.state) || p.pid > 0, `a ${p.state} process needs a pid`);
    if (p.exit) {
      int(p.exit.status, 'exit status');
      int(p.exit.exitedAt, 'exitedAt');
    }
    need(p.state !== 'stopped' || p.exit !== undefined, 'a stopped process needs its exit');
    if (!init) str(p.processJson, 'processJson');
    io(p.io);
  };
  need(Array.isArray(s.containers), 'containers must be an array');
  const ids = new Set<string>();
  for (const c of s.containers) {
    where.push(`container ${String(c.id)}`);
    str(c.id, 'id');
    need(!ids.has(c.id), 'listed twice');
    ids.add(c.id);
    str(c.bundle, 'bundle');
    str(c.namespace, 'namespace');
    stdioSpec(c.stdio);
    need(typeof c.mountedRootfs === 'boolean', 'mountedRootfs must be a boolean');
    where.push('init');
    proc(c.init, true);
    where.pop();
    need(Array.isArray(c.execs), 'execs must be an array');
    const execIds = new Set<string>();
    for (const e of c.execs) {
      where.push(`exec ${String(e.execId)}`);
      proc(e, false);
      need(!execIds.has(e.execId), 'listed twice');
      execIds.add(e.execId);
      where.pop();
    }
    where.pop();
  }
  need(Array.isArray(s.watchedPids), 'watchedPids must be an array');
  for (const pid of s.watchedPids) int(pid, 'watched pid', 1);
  need(Array.isArray(s.strays), 'strays must be an array');
  for (const st of s.strays) {
    int(st.pid, 'stray pid', 1);
    int(st.status, 'stray status');
    int(st.at, 'stray time');
  }
  for (const f of fds) need(used.has(f), `fd ${f} is inherited but used by nothing`);
}

/**
 * In-place upgrade, daemon side (README, "Upgrading running shims"): the `tshim.v1.Control`
 * service and the hand-over itself.
 *
 * Old image, on Control/Upgrade:
 *  1. stops reading every connection (requests already read still run) and holds new ones;
 *  2. waits until the only calls left are Waits (and this Upgrade), no Create/Exec is being
 *     prepared and no exit is being handled; then stops collecting exits (an exit from now on
 *     stays a zombie: we remain the parent and subreaper, so the new image reaps it);
 *  3. stops delivering events (the undelivered ones are part of the state) and relaying IO (what
 *     was read is written out; what was not stays in the kernel's pipe/FIFO/pty buffers);
 *  0. (before 1, so that the new build's start-up is not part of the pause) writes a preview of the
 *     state, same version and shape, to a root-only file and runs `<launcher> -upgrade-check
 *     <file>`: the new build must read it and answer OK, or nothing happens;
 *  4. writes the versioned state to a root-only file;
 *  5. clears FD_CLOEXEC on exactly the descriptors listed in the state and execve()s the launcher
 *     with the daemon's own flags and TSHIM_UPGRADE_STATE=<file>.
 * Any failure before execve undoes 1-5 and the old image answers Upgrade with upgraded=false.
 *
 * New image (restoreFromState): rebuilds containers, processes, IO relays, the reaper, the event
 * queue and every ttrpc connection where it stood, re-runs the Waits it inherited on their stream
 * ids, and answers the inherited Upgrade call itself.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { Code, ShimError } from '../errors';
import type { Backend, HandoverPlatform, Platform } from '../backend';
import type { Publisher } from '../events';
import { failedPrecondition, invalidArgument, unavailable } from '../errors';
import { logger } from '../log';
import { forNodeStart } from '../node-env';
import { daemonFlags } from '../cli';
import { within } from '../settle';
import { codec } from '../proto';
import type { TaskService } from '../service';
import type { TtrpcServer, UnaryHandler } from '../ttrpc/server';
import { gitRevision, shimVersion } from '../version';
import { fdOf } from './handles';
import {
  decodeState, encodeState, READABLE_STATE_VERSIONS, STATE_FORMAT, STATE_VERSION, type DaemonIdentityState, type HandoverState,
} from './state';

import { CONTROL_SERVICE } from '../group';
export { CONTROL_SERVICE };
/** Set on the inherited Upgrade call when the new image runs it again: answer, do not upgrade. */
export const RESUMED_UPGRADE_METADATA = 'tshim-resumed-upgrade';
export const STATE_ENV = 'TSHIM_UPGRADE_STATE';
/** Root-only: the state names containers, FIFOs and sockets. */
export const DEFAULT_STATE_DIR = '/run/tshim/upgrade';
const DEFAULT_QUIESCE_MS = 10_000;
const CHECK_TIMEOUT_MS = 60_000;
/** Calls that may stay open across the hand-over: the new image answers them. */
const LONG_LIVED = new Set(['Wait', 'Upgrade']);

export interface UpgradeResult {
  upgraded: boolean;
  pid: number;
  oldVersion: string;
  newVersion: string;
  message: string;
  pauseMicros: number;
  stateVersion: number;
  containers: number;
  fds: number;
}

export interface HandoverHost {
  identity: DaemonIdentityState;
  listener: net.Server;
  ownSocket: string | undefined;
  ttrpc: TtrpcServer;
  service: TaskService;
  backend: Backend;
  publisher: Publisher;
  /** the launcher to exec: the file containerd (or `start`) ran */
  launcher: string;
  /** where execve and close-on-exec come from */
  platform: Platform;
  /** set by the new image: what the hand-over that created it achieved */
  resumed?: UpgradeResult;
}

/** The platform's hand-over calls, or Unimplemented where there are none. */
export async function handoverOf(platform: Platform): Promise<HandoverPlatform> {
  if (!platform.handover) throw new ShimError(Code.Unimplemented, `in-place upgrade is not supported on ${platform.name}`);
  return platform.handover();
}

export function stateDir(): string {
  return process.env['TSHIM_UPGRADE_DIR'] || DEFAULT_STATE_DIR;
}

/** The Control service handlers for one daemon. */
export function controlHandlers(host: HandoverHost): Record<string, UnaryHandler> {
  let upgrading = false;
  return {
    Info: async () =>
      codec<object>('tshim.v1.InfoResponse').encode({
        pid: process.pid,
        version: shimVersion(),
        revision: gitRevision(),
        address: host.identity.address,
        namespace: host.identity.namespace,
        stateVersion: STATE_VERSION,
        readableStateVersions: [...READABLE_STATE_VERSIONS],
        containers: host.service.containerIds,
        launcher: host.launcher,
        protocol: host.identity.protocol,
      }),
    Reserve: async (payload) => {
      const { id } = codec<{ id: string }>('tshim.v1.ReserveRequest').decode(payload);
      if (!id) throw invalidArgument('Reserve: id is empty');
      // also while an upgrade is under way: refusing would make `start` give up on a daemon that is not ending
      return codec<object>('tshim.v1.ReserveResponse').encode({ reserved: host.service.reserve(id) });
    },
    Upgrade: async (payload, ctx) => {
      const encode = (r: UpgradeResult): Uint8Array => codec<object>('tshim.v1.UpgradeResponse').encode(r);
      if (ctx.metadata.has(RESUMED_UPGRADE_METADATA)) {
        return encode(host.resumed ?? failedResult('the hand-over record is missing'));
      }
      if (upgrading) throw failedPrecondition('an upgrade of this shim is already in progress');
      const request = codec<{ launcher: string; quiesceTimeoutMs: number }>('tshim.v1.UpgradeRequest').decode(payload);
      upgrading = true;
      try {
        return encode(await handOver(host, request.launcher || host.launcher, request.quiesceTimeoutMs || DEFAULT_QUIESCE_MS));
      } finally {
        upgrading = false;
      }
    },
  };
}

function failedResult(message: string): UpgradeResult {
  return {
    upgraded: false, pid: process.pid, oldVersion: shimVersion(), newVersion: '', message,
    pauseMicros: 0, stateVersion: STATE_VERSION, containers: 0, fds: 0,
  };
}

/** Connections that arrive while the hand-over runs: held, unread, and handed over too. */
let holdingConnections = false;
export function isHoldingConnections(): boolean {
  return holdingConnections;
}

async function handOver(host: HandoverHost, launcher: string, quiesceMs: number): Promise<UpgradeResult> {
  const { ttrpc, service, backend, publisher } = host;
  if (host.identity.protocol !== 'ttrpc') return failedResult('only ttrpc daemons can be upgraded in place');
  if (!backend.suspendExits || !backend.resumeExits || !backend.handoverReaper || !backend.restoreContainer) {
    return failedResult('this platform cannot hand its containers over');
  }
  // The new build reads a preview of the state (same version and shape, taken without pausing)
  // before anything stops: its start-up is not part of the pause.
  const dir = stateDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const preview = path.join(dir, `${process.pid}-${Date.now()}-preview.json`);
  let check: { ok: boolean; message: string };
  try {
    fs.writeFileSync(preview, encodeState(collectState(host, Date.now(), process.hrtime.bigint())), { mode: 0o600 });
    check = await runCheck(launcher, preview);
  } catch (err) {
    check = { ok: false, message: err instanceof Error ? err.message : String(err) };
  } finally {
    fs.rmSync(preview, { force: true });
  }
  if (!check.ok) return failedResult(`the new shim refused the hand-over: ${check.message}`);

  const pausedAtNs = process.hrtime.bigint();
  const pausedAt = Date.now();
  const deadline = pausedAt + quiesceMs;
  const undo: Array<() => void> = [];
  const rollback = (): void => {
    for (const step of undo.reverse()) {
      try {
        step();
      } catch (err) {
        logger.warn('undoing an upgrade attempt', { error: err });
      }
    }
  };
  let stateFile: string | undefined;
  try {
    // 1. no new requests
    holdingConnections = true;
    undo.push(() => {
      holdingConnections = false;
    });
    for (const c of ttrpc.liveConnections) c.pauseReading();
    undo.push(() => {
      for (const c of ttrpc.liveConnections) c.resumeReading();
    });

    // 2. in-flight requests and exit handling finish; then exits stay zombies
    for (;;) {
      await until(deadline, 'in-flight requests to finish', () =>
        !service.busy && ttrpc.liveConnections.every((c) => c.activeCalls().every((a) => LONG_LIVED.has(a.method))),
      );
      backend.suspendExits();
      // whatever the reaper resolved before it stopped reaches its handler now
      await new Promise((resolve) => setImmediate(resolve));
      if (!service.busy) break;
      backend.resumeExits();
    }
    undo.push(() => backend.resumeExits?.());

    // 3. events and IO stand still
    await publisher.suspend(Math.max(0, Math.min(1000, deadline - Date.now())));
    undo.push(() => publisher.resume());
    undo.push(() => service.resumeIo());
    await within(service.suspendIo(), deadline - Date.now(), () => unavailable('timed out waiting for container output to be written out'));
    await until(deadline, 'replies to be sent', () => ttrpc.liveConnections.every((c) => c.flushed));

    // 4. the state (checked against this build's own reader; the new build read its preview)
    const state = collectState(host, pausedAt, pausedAtNs);
    stateFile = path.join(dir, `${process.pid}-${Date.now()}.json`);
    fs.writeFileSync(stateFile, encodeState(state), { mode: 0o600 });
    const file = stateFile;
    undo.push(() => fs.rmSync(file, { force: true }));
    if (!fs.existsSync(launcher)) throw new Error(`${launcher} is gone`);

    // 5. hand over
    const { execve, setCloseOnExec } = await handoverOf(host.platform);
    for (const fd of state.fds) setCloseOnExec(fd, false);
    undo.push(() => {
      for (const fd of state.fds) setCloseOnExec(fd, true);
    });
    logger.info('handing over to a new shim image', { launcher, to: check.message, containers: state.containers.length });
    const argv = [launcher, ...daemonFlags(host.identity)];
    execve(launcher, argv, forNodeStart({ ...process.env, [STATE_ENV]: stateFile }));
    throw new Error('execve returned');
  } catch (err) {
    rollback();
    const message = err instanceof Error ? err.message : String(err);
    logger.warn('upgrade not done; this image keeps serving', { error: message });
    return failedResult(message);
  }
}

function collectState(host: HandoverHost, pausedAt: number, pausedAtNs: bigint): HandoverState {
  const listenerFd = fdOf(host.listener);
  if (listenerFd < 0) throw new Error('the listening socket has no descriptor');
  const connections = host.ttrpc.liveConnections.map((c) => {
    const fd = fdOf(c.stream);
    if (fd < 0) throw new Error('a connection has no descriptor');
    return c.handover(fd);
  });
  const containers = host.service.handoverContainers();
  const reaper = host.backend.handoverReaper?.() ?? { watchedPids: [], strays: [] };
  const fds = new Set<number>([listenerFd, ...connections.map((c) => c.fd)]);
  const addFd = (fd: number): void => {
    if (fd < 3) throw new Error(`descriptor ${fd} cannot be handed over`);
    fds.add(fd);
  };
  for (const c of containers) {
    for (const p of [c.init, ...c.execs]) {
      const io = p.io;
      if (io.kind === 'pipe') {
        for (const copy of io.copies) {
          addFd(copy.readFd);
          if (copy.sink.kind === 'fifo') {
            addFd(copy.sink.writerFd);
            addFd(copy.sink.readerFd);
          } else if (copy.sink.kind === 'file') addFd(copy.sink.fd);
        }
        if (io.stdin) {
          addFd(io.stdin.readerFd);
          addFd(io.stdin.pipeWriterFd);
          if (io.stdin.heldWriterFd !== -1) addFd(io.stdin.heldWriterFd);
        }
      } else if (io.kind === 'pty') {
        addFd(io.masterFd);
        if (io.stdin) {
          addFd(io.stdin.readerFd);
          if (io.stdin.heldWriterFd !== -1) addFd(io.stdin.heldWriterFd);
        }
        if (io.output.kind === 'fifo') {
          addFd(io.output.writerFd);
          addFd(io.output.readerFd);
        } else if (io.output.kind === 'file') addFd(io.output.fd);
      }
    }
  }
  const state: HandoverState = {
    format: STATE_FORMAT,
    version: STATE_VERSION,
    pausedAt,
    pausedAtNs: pausedAtNs.toString(),
    fromVersion: shimVersion(),
    pid: process.pid,
    identity: host.identity,
    ownSocket: host.ownSocket,
    listenerFd,
    connections,
    events: host.publisher.handover(),
    containers,
    watchedPids: reaper.watchedPids,
    strays: reaper.strays,
    fds: [...fds].sort((a, b) => a - b),
  };
  // What the new image will check, checked here first: a bad state never leaves this image.
  return decodeState(encodeState(state));
}

/** `<launcher> -upgrade-check <file>`: the new build reads the state and answers `OK <version>`. */
function runCheck(launcher: string, file: string): Promise<{ ok: boolean; message: string }> {
  return new Promise((resolve) => {
    execFile(launcher, ['-upgrade-check', file], { timeout: CHECK_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      const out = `${stdout}`.trim();
      if (!err && out.startsWith('OK ')) resolve({ ok: true, message: out.slice(3) });
      else resolve({ ok: false, message: (`${stderr}`.trim() || out || (err ? err.message : 'no answer')).split('\n').slice(0, 3).join('; ') });
    });
  });
}

async function until(deadline: number, what: string, ready: () => boolean): Promise<void> {
  while (!ready()) {
    if (Date.now() > deadline) throw unavailable(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** `-upgrade-check <file>`: run by the old image with the new build; exit 0 and `OK …` when it can take over. */
export async function runUpgradeCheck(file: string, platform: Platform): Promise<{ ok: boolean; text: string }> {
  try {
    const state = decodeState(fs.readFileSync(file, 'utf8'));
    // the code the new image needs to carry on, loaded now so a broken build fails here
    codec('tshim.v1.UpgradeResponse');
    codec('containerd.task.v2.WaitRequest');
    // a platform without hand-over calls fails here; otherwise the code a restored daemon runs must load
    await handoverOf(platform);
    await platform.warmUp?.();
    return { ok: true, text: `OK ${shimVersion()} state-version=${state.version} containers=${state.containers.length}\n` };
  } catch (err) {
    return { ok: false, text: `upgrade check failed: ${err instanceof Error ? err.message : String(err)}\n` };
  }
}

// @ts-check
'use strict';
/**
 * Drives a shim binary the way containerd 1.6 does, without containerd in between: `start` in a
 * bundle dir, then the ttrpc `Connect` + `Shutdown` containerd sends to a shim with no task, then
 * the `delete` action containerd runs once the connection closes. Both shims speak the same ttrpc
 * protocol, so this repo's client serves for the Go reference shim too.
 */
const fs = require('node:fs');
const path = require('node:path');
const { processesMatching, runChecked, runTimed, waitGoneOrKill } = require('./proc');

const TASK_SERVICE = 'containerd.task.v2.Task';

/** A failed cycle, tagged with the step that failed so it is counted against the right row. */
class StepError extends Error {
  /**
   * @param {'start' | 'delete'} step
   * @param {string} message
   */
  constructor(step, message) {
    super(message);
    this.step = step;
  }
}

/**
 * Just enough protobuf for ConnectRequest/ShutdownRequest {id = 1 string, now = 3 bool} and
 * ConnectResponse {shim_pid = 1 uint32}.
 * @param {string} id
 */
function encodeIdRequest(id) {
  const bytes = Buffer.from(id, 'utf8');
  if (bytes.length > 127) throw new RangeError('id longer than a one-byte length prefix');
  return Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
}

/**
 * Field 1 (varint) of a message, 0 when absent.
 * @param {Buffer} buf
 */
function decodeShimPid(buf) {
  let i = 0;
  const varint = () => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = /** @type {number} */ (buf[i++]);
      if (b === undefined) throw new Error('truncated varint');
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      const v = varint();
      if (field === 1) return v;
    } else if (wire === 2) {
      // Not `i += varint()`: that reads i before varint() has moved it past the length.
      const length = varint();
      i += length;
    } else if (wire === 1) {
      i += 8;
    } else if (wire === 5) {
      i += 4;
    } else {
      throw new Error(`unexpected wire type ${wire}`);
    }
  }
  return 0;
}

/**
 * What containerd leaves in a bundle before `start`: config.json, an empty rootfs and the `log`
 * FIFO, which containerd holds open read-write (the reference daemon exits at once without it).
 * The reference shim's `delete` also reads the `runtime` file its daemon writes at Create; since
 * no Create happens here, it is written up front (to the value it would get, "runc"), so `delete`
 * does its real work (runc delete --force, unmount, read init.pid) on both shims.
 * @param {string} bundle
 * @returns {Promise<number>} the fd holding the log FIFO open; the caller closes it
 */
async function writeBundle(bundle) {
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true, mode: 0o711 });
  fs.chmodSync(bundle, 0o700);
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({
    ociVersion: '1.0.2-dev',
    process: { user: { uid: 0, gid: 0 }, args: ['true'], env: ['PATH=/bin'], cwd: '/' },
    root: { path: 'rootfs' },
    hostname: 'bench',
    linux: { namespaces: [{ type: 'pid' }, { type: 'mount' }] },
  }));
  fs.writeFileSync(path.join(bundle, 'runtime'), 'runc');
  const log = path.join(bundle, 'log');
  await runChecked('mkfifo', ['-m', '0700', log]);
  // Never read: at containerd's default log level a healthy shim writes nothing there, and a
  // few warnings fit in the pipe buffer.
  return fs.openSync(log, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
}

/**
 * @typedef {object} DirectShim
 * @property {string} binary absolute path of the shim executable
 * @property {string} namespace
 * @property {string} containerdAddress containerd's gRPC socket path (passed as -address)
 * @property {NodeJS.ProcessEnv} env containerd's environment
 */

/**
 * @typedef {object} DirectCycle
 * @property {number} startMs
 * @property {number} deleteMs
 * @property {string[]} warnings non-fatal oddities (daemon had to be killed, leftover socket)
 */

/**
 * One start → Connect → Shutdown → delete cycle for container `id` in `bundleParent/<id>`.
 * Throws when a step fails; the daemon it started is always ended before returning.
 * @param {DirectShim} shim
 * @param {string} bundleParent
 * @param {string} id
 * @param {typeof import('../../src/common/ttrpc/client').TtrpcClient} Client
 * @param {{ beforeDelete?: () => Promise<void> }} [hooks] beforeDelete runs untimed between the
 *   daemon's exit and `delete` (the bench waits there for a spare `start` launched to finish loading)
 * @returns {Promise<DirectCycle>}
 */
async function directCycle(shim, bundleParent, id, Client, hooks = {}) {
  const bundle = path.join(bundleParent, id);
  const logFd = await writeBundle(bundle);
  /** @type {string[]} */
  const warnings = [];
  const common = ['-namespace', shim.namespace, '-address', shim.containerdAddress, '-publish-binary', '/usr/bin/containerd', '-id', id];
  // containerd 1.6 adds exactly these two to its own environment.
  const env = { ...shim.env, TTRPC_ADDRESS: `${shim.containerdAddress}.ttrpc`, GOMAXPROCS: '2' };
  let socketPath = '';
  let daemonPid = 0;
  try {
    const start = await runTimed(shim.binary, [...common, 'start'], { cwd: bundle, env, timeoutMs: 30_000 });
    const address = start.stdout.toString('utf8').trim();
    if (start.code !== 0 || !/^unix:\/\/\S+$/.test(address)) {
      throw new StepError('start', `start exited ${start.code}: ${address} ${start.stderr.trim()}`.trim());
    }
    socketPath = address.slice('unix://'.length);

    const client = await Client.connect(socketPath, { timeoutMs: 10_000 });
    try {
      daemonPid = decodeShimPid(await client.call(TASK_SERVICE, 'Connect', encodeIdRequest(id), { timeoutMs: 10_000 }));
      if (daemonPid <= 0) throw new Error('Connect returned no shim pid');
      // The daemon may exit before its reply is flushed; the pid check below is what counts.
      await client.call(TASK_SERVICE, 'Shutdown', encodeIdRequest(id), { timeoutMs: 10_000 }).catch(() => undefined);
    } finally {
      client.close();
    }
    if (!(await waitGoneOrKill(daemonPid, 10_000))) warnings.push(`daemon ${daemonPid} ignored Shutdown for 10 s; killed`);
    daemonPid = 0;
    if (hooks.beforeDelete) await hooks.beforeDelete();

    const del = await runTimed(shim.binary, [...common, '-bundle', bundle, 'delete'], { cwd: bundle, env, timeoutMs: 30_000 });
    // A DeleteResponse always carries exited_at, so an empty stdout is a broken delete too.
    if (del.code !== 0 || del.stdout.length === 0) throw new StepError('delete', `delete exited ${del.code} with ${del.stdout.length} bytes of output: ${del.stderr.trim()}`);
    return { startMs: start.ms, deleteMs: del.ms, warnings };
  } finally {
    if (daemonPid > 0) await waitGoneOrKill(daemonPid, 0);
    // A step failed before the daemon named itself: find it by its argv, which carries our
    // private containerd address and this run's unique id.
    const strays = processesMatching((a) => a.includes(shim.containerdAddress) && a[a.indexOf('-id') + 1] === id);
    for (const stray of strays) {
      warnings.push(`daemon ${stray.pid} still running after a failed cycle; killed`);
      await waitGoneOrKill(stray.pid, 0);
    }
    // The socket name is hashed from our private containerd address, so it is ours to remove.
    if (socketPath !== '' && fs.existsSync(socketPath)) {
      warnings.push(`socket ${socketPath} left behind`);
      fs.rmSync(socketPath, { force: true });
    }
    fs.closeSync(logFd);
    fs.rmSync(bundle, { recursive: true, force: true });
  }
}

module.exports = { directCycle, encodeIdRequest, decodeShimPid, StepError, TASK_SERVICE };

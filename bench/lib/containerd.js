// @ts-check
'use strict';
/**
 * A private containerd 1.6 for one benchmark run: own root, state, socket and namespace under a
 * short temp dir, the repo's bin/ first on PATH so `io.containerd.tshim.v2` resolves to this
 * checkout. Other daemons may share the machine, so teardown is scoped by that dir, that socket
 * and pids started here, never by process name.
 */
const { spawn } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { delay, runTimed, runChecked, processesMatching, waitGoneOrKill, mountsUnder } = require('./proc');
const { retireSpares } = require('./spare');

const CONTAINERD_BIN = '/usr/bin/containerd';
const CTR_BIN = '/usr/bin/ctr';

/**
 * @param {string} dir
 * @param {string} address
 * @param {string} [cri] the CRI plugin's TOML sections; CRI stays disabled without them
 */
function configToml(dir, address, cri) {
  // CRI and the exotic snapshotters only add startup time; the v1 linux runtime must stay because
  // 1.6's tasks service refuses to load without it.
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = [${cri === undefined ? '\n  "io.containerd.grpc.v1.cri",' : ''}
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.restart",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "${address}"

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/opt"

[plugins."io.containerd.service.v1.diff-service"]
  default = ["walking"]
${cri ?? ''}`;
}

/**
 * The shim sockets of every bundle in the namespace, from the `address` file each shim writes.
 * They live under /run/containerd/s with names hashed from our private containerd address, so
 * any of them still present once the shims are gone is this run's leftover.
 * @param {string} dir
 * @param {string} namespace
 * @returns {string[]}
 */
function shimSockets(dir, namespace) {
  const bundles = path.join(dir, 'state', 'io.containerd.runtime.v2.task', namespace);
  /** @type {string[]} */
  const sockets = [];
  let ids;
  try {
    ids = fs.readdirSync(bundles);
  } catch {
    return sockets;
  }
  for (const id of ids) {
    try {
      const address = fs.readFileSync(path.join(bundles, id, 'address'), 'utf8').trim();
      if (address.startsWith('unix:///run/containerd/s/')) sockets.push(address.slice('unix://'.length));
    } catch {
      // no shim was started for this bundle yet
    }
  }
  return [...new Set(sockets)];
}

/**
 * @typedef {import('./proc').RunResult} RunResult
 * @typedef {object} Containerd
 * @property {string} dir
 * @property {string} address containerd's gRPC socket path (no scheme), as shims get it in -address
 * @property {string} namespace
 * @property {number} pid
 * @property {NodeJS.ProcessEnv} env what containerd itself runs with (PATH has the repo's bin/ first)
 * @property {(args: readonly string[], timeoutMs?: number) => Promise<RunResult>} ctr throws on non-zero exit
 * @property {(args: readonly string[], timeoutMs?: number) => Promise<RunResult>} ctrUnchecked
 * @property {() => import('./proc').ProcInfo[]} shimProcesses shim daemons serving this containerd
 * @property {() => boolean} isAlive false once the containerd process has exited
 * @property {() => Promise<string[]>} stop removes everything, returns what it could not clean
 */

/**
 * What containerd runs with: a system service's environment (systemd gives a unit PATH and little
 * else; here the caller's PATH, where the tools live), with the repo's bin/ first on it and the
 * caller's TSHIM_* settings. Not the caller's
 * whole session: a shell can carry anything, and this machine's sets NODE_EXTRA_CA_CERTS, which
 * node loads at start-up, 50 ms of every node process (shims park it for their own daemons, but
 * `start` and `delete` are exec'd by containerd with its environment as it is).
 * @param {string} repoRoot
 * @returns {NodeJS.ProcessEnv}
 */
function serviceEnv(repoRoot) {
  /** @type {NodeJS.ProcessEnv} */
  const env = { PATH: `${path.join(repoRoot, 'bin')}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
  for (const [key, value] of Object.entries(process.env)) if (key.startsWith('TSHIM_')) env[key] = value;
  return env;
}

/**
 * @param {string} repoRoot
 * @param {{ cri?: (dir: string) => string }} [opts] `cri`: enables the CRI plugin with the sections
 *   it returns (given the temp dir, which it may write files into); ctr then works in `k8s.io`
 * @returns {Promise<Containerd>}
 */
async function startContainerd(repoRoot, opts = {}) {
  // Short on purpose: `<dir>/c.sock.ttrpc` must stay well under the 108-byte sun_path limit.
  const dir = fs.mkdtempSync('/tmp/tsb-');
  const address = `${dir}/c.sock`;
  const ownNamespace = opts.cri === undefined;
  const namespace = ownNamespace ? `tshim-bench-${randomBytes(4).toString('hex')}` : 'k8s.io';
  const configPath = path.join(dir, 'config.toml');
  const logPath = path.join(dir, 'containerd.log');
  fs.writeFileSync(configPath, configToml(dir, address, opts.cri?.(dir)));
  const env = serviceEnv(repoRoot);

  const logFd = fs.openSync(logPath, 'a');
  // cwd matters: containerd stats `<cwd>/containerd-shim-*-v2` before searching PATH.
  const daemon = spawn(CONTAINERD_BIN, ['--config', configPath, '--log-level', 'info'], {
    cwd: dir,
    env,
    stdio: ['ignore', logFd, logFd],
  });
  fs.closeSync(logFd);
  const pid = daemon.pid;
  if (pid === undefined) throw new Error('failed to spawn containerd');
  /** @type {{ code: number | null, signal: NodeJS.Signals | null } | undefined} */
  let exit;
  const exited = new Promise((resolve) => {
    daemon.on('exit', (code, signal) => {
      exit = { code, signal };
      resolve(undefined);
    });
  });
  const logText = () => {
    try {
      return fs.readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };

  /** @param {readonly string[]} args */
  const argv = (args) => ['--address', address, '--namespace', namespace, ...args];
  /** @type {Containerd['ctr']} */
  const ctr = (args, timeoutMs = 60_000) => runChecked(CTR_BIN, argv(args), { timeoutMs });
  /** @type {Containerd['ctrUnchecked']} */
  const ctrUnchecked = (args, timeoutMs = 60_000) => runTimed(CTR_BIN, argv(args), { timeoutMs });

  const deadline = Date.now() + 15_000;
  for (;;) {
    /** @type {string | undefined} */
    let failure;
    if (exit) failure = `containerd exited early (${JSON.stringify(exit)})`;
    const probe = failure ? undefined : await runTimed(CTR_BIN, ['--address', address, '--connect-timeout', '1s', 'version'], { timeoutMs: 5_000 });
    if (probe?.code === 0) break;
    if (!failure && Date.now() > deadline) {
      failure = `containerd did not answer within 15 s: ${probe?.stderr.trim()}`;
      process.kill(pid, 'SIGKILL');
      await exited;
    }
    if (failure) {
      // Nothing ran in it yet, so the log is all there is to keep; the dir goes.
      const log = logText();
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`${failure}\n${log}`);
    }
    await delay(50);
  }

  // Every shim containerd starts gets `-address <our socket>`; the socket lives in our temp dir.
  // An idle tshim spare (`-spare`) carries it too but serves no container: it is left out here,
  // since it lives until containerd goes (see spare.js) and would hold every "all shims gone" wait.
  const shimProcesses = () =>
    processesMatching((a) => {
      const at = a.indexOf('-address');
      return at >= 0 && a[at + 1] === address && !a.includes('-spare');
    });

  return {
    dir,
    address,
    namespace,
    pid,
    env,
    ctr,
    ctrUnchecked,
    shimProcesses,
    isAlive: () => exit === undefined,
    async stop() {
      /** @type {string[]} */
      const problems = [];
      // Read before anything is removed: a shim that has to be killed cannot unlink its socket.
      const sockets = shimSockets(dir, namespace);
      if (!exit) {
        const list = async (/** @type {string[]} */ args) =>
          (await ctrUnchecked(args)).stdout.toString('utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '');
        for (const id of await list(['tasks', 'ls', '-q'])) {
          const r = await ctrUnchecked(['tasks', 'rm', '-f', id], 20_000);
          if (r.code !== 0) problems.push(`ctr tasks rm -f ${id}: ${r.stderr.trim()}`);
        }
        for (const id of await list(['containers', 'ls', '-q'])) {
          const r = await ctrUnchecked(['containers', 'rm', id], 20_000);
          if (r.code !== 0) problems.push(`ctr containers rm ${id}: ${r.stderr.trim()}`);
        }
      }
      // Shims exit on their own after containerd's Shutdown; whatever stays was started for
      // this containerd (its -address is our private socket), hence ours to end.
      const deadline = Date.now() + 5_000;
      while (shimProcesses().length > 0 && Date.now() < deadline) await delay(100);
      for (const shim of shimProcesses()) {
        problems.push(`shim ${shim.pid} still running at teardown; killed`);
        await waitGoneOrKill(shim.pid, 0);
      }
      if (!exit) {
        process.kill(pid, 'SIGTERM');
        /** @type {NodeJS.Timeout | undefined} */
        let timer;
        const timeout = new Promise((resolve) => {
          timer = setTimeout(() => resolve(false), 10_000);
        });
        // The timer is cleared either way: a pending one would keep this process alive.
        const stopped = await Promise.race([exited.then(() => true), timeout]);
        clearTimeout(timer);
        if (!stopped) {
          problems.push('containerd ignored SIGTERM for 10 s; killed');
          process.kill(pid, 'SIGKILL');
          await exited;
        }
      }
      // containerd is gone: its idle spare would retire at its next check (every 10 s); SIGTERM
      // is the same retirement now. It carries our private socket in its argv, hence ours.
      const killedSpares = await retireSpares(address, 5_000);
      if (killedSpares > 0) problems.push(`${killedSpares} spare daemon(s) ignored SIGTERM; killed`);
      for (const socket of sockets) {
        if (!fs.existsSync(socket)) continue;
        problems.push(`shim socket ${socket} left behind; removed`);
        fs.rmSync(socket, { force: true });
      }
      for (const point of mountsUnder(dir)) {
        const r = await runTimed('umount', [point]);
        if (r.code !== 0) await runTimed('umount', ['-l', point]);
      }
      for (const left of mountsUnder(dir)) problems.push(`mount still present: ${left}`);
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch (err) {
        problems.push(`removing ${dir}: ${String(err)}`);
      }
      // runc keeps one state dir per namespace; it is empty once every container is deleted.
      try {
        // Only a namespace of our own making: k8s.io may be another daemon's too.
        if (ownNamespace) fs.rmdirSync(`/run/containerd/runc/${namespace}`);
      } catch {
        // never created, or still holding another run's state: runc's to keep
      }
      return problems;
    },
  };
}

module.exports = { startContainerd, CTR_BIN, CONTAINERD_BIN };

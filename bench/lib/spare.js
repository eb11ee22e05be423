// @ts-check
'use strict';
/**
 * tshim's spare daemons (src/common/spare.ts) as the benchmark sees them: an idle, pre-loaded
 * daemon per containerd and form of the shim (the launcher's `node [V8 flag] …/bin/containerd-shim-tshim-v2
 * -spare SOCKET -address ADDR -title-room …`, the single executable's `…/out/linux-x64/containerd-shim-tshim-v2
 * -spare …`), that the next `start` of the same form adopts. The bench needs to know when one is
 * ready (so the "spare ready" rows really have one, and no sample of any runtime competes with a
 * spare still loading) and to retire it (so the "no spare" rows really have none).
 *
 * `program` (runsProgram) narrows each function to one form's spares; without it, any form's.
 */
const net = require('node:net');
const { delay, processesMatching, runsProgram, waitGoneOrKill } = require('./proc');

/**
 * The spare socket of an idle spare of containerd `address`, or undefined for any other process
 * (an adopted spare renames itself and drops `-spare`).
 * @param {string[]} argv
 * @param {string} address
 * @returns {string | undefined}
 */
function spareSocketOf(argv, address) {
  const at = argv.indexOf('-address');
  if (at < 0 || argv[at + 1] !== address) return undefined;
  const s = argv.indexOf('-spare');
  const socket = s >= 0 ? argv[s + 1] : undefined;
  return socket !== undefined && socket.startsWith('/') ? socket : undefined;
}

/**
 * @param {string} address containerd's socket path
 * @param {string} [program] only the spares of this form
 * @returns {{ pid: number, socket: string }[]}
 */
function idleSpares(address, program) {
  return processesMatching((a) => spareSocketOf(a, address) !== undefined && (program === undefined || runsProgram(a, program))).map((p) => ({
    pid: p.pid,
    socket: /** @type {string} */ (spareSocketOf(p.argv, address)),
  }));
}

/**
 * True once the spare answers a line: it accepts only after loading everything a daemon loads,
 * so an answer means a `start` now would be adopted at once. The probe is an empty line, which the
 * spare rejects (`INVALID`) without any other effect.
 * @param {string} socket
 * @param {number} timeoutMs
 * @returns {Promise<boolean>}
 */
function probeSpare(socket, timeoutMs) {
  return new Promise((resolve) => {
    const conn = net.connect(socket);
    let got = '';
    const done = (/** @type {boolean} */ ok) => {
      clearTimeout(timer);
      conn.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    conn.on('error', () => done(false));
    conn.on('connect', () => conn.write('\n'));
    conn.on('data', (b) => {
      got += b.toString('utf8');
      if (got.includes('\n')) done(true);
    });
    conn.on('end', () => done(got.length > 0));
  });
}

/**
 * Waits until exactly one idle spare of `address` (and `program`) answers. Resolves with its pid,
 * or undefined when none became ready within `timeoutMs` (the caller notes it: the sample then is
 * not what the row claims).
 * @param {string} address
 * @param {number} timeoutMs
 * @param {string} [program]
 * @returns {Promise<number | undefined>}
 */
async function waitSpareReady(address, timeoutMs, program) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const spares = idleSpares(address, program);
    for (const spare of spares) {
      if (await probeSpare(spare.socket, Math.max(100, deadline - Date.now()))) return spare.pid;
    }
    await delay(20);
  }
  return undefined;
}

/**
 * Retires every idle spare of `address` (and `program`) (SIGTERM: the spare removes its socket and
 * exits) and waits until they are gone; SIGKILL after `timeoutMs`. Only spares of our private
 * containerd are touched: their argv names its socket.
 * @param {string} address
 * @param {number} timeoutMs
 * @param {string} [program]
 * @returns {Promise<number>} how many had to be killed
 */
async function retireSpares(address, timeoutMs, program) {
  let killed = 0;
  const spares = idleSpares(address, program);
  for (const s of spares) {
    try {
      process.kill(s.pid, 'SIGTERM');
    } catch {
      // adopted or gone meanwhile
    }
  }
  for (const s of spares) if (!(await waitGoneOrKill(s.pid, timeoutMs))) killed++;
  return killed;
}

module.exports = { spareSocketOf, idleSpares, probeSpare, waitSpareReady, retireSpares };

// @ts-check
'use strict';
/**
 * Finds the shim daemons one runtime runs for the private containerd and measures them. A shim
 * daemon is recognised by its argv: the runtime's program (runsProgram: argv[0] for the Go shim and
 * the single executable, the script argument for the Node one), `-address <our socket>` and
 * `-namespace <our namespace>`, and no action word (a `start`/`delete` process is a short-lived
 * helper, not the daemon).
 */
const { memoryOf, processesMatching, runsProgram } = require('./proc');

/**
 * @typedef {object} ShimMemory
 * @property {number} pid
 * @property {number} rssKiB
 * @property {number | undefined} pssKiB
 * @property {number | undefined} privateDirtyKiB
 */

/**
 * @param {string} program e.g. containerd-shim-runc-v2, or an absolute path (runsProgram)
 * @param {string} address containerd's socket path
 * @param {string} namespace
 * @returns {(argv: string[]) => boolean}
 */
function shimDaemonMatcher(program, address, namespace) {
  return (argv) => {
    const flag = (/** @type {string} */ name) => {
      const at = argv.indexOf(name);
      return at >= 0 ? argv[at + 1] : undefined;
    };
    const last = argv[argv.length - 1];
    return (
      runsProgram(argv, program) &&
      flag('-address') === address &&
      flag('-namespace') === namespace &&
      last !== 'start' &&
      last !== 'delete'
    );
  };
}

/**
 * Memory of every daemon of `program` serving this containerd and namespace.
 * @param {string} program
 * @param {string} address
 * @param {string} namespace
 * @returns {ShimMemory[]}
 */
function sampleShimMemory(program, address, namespace) {
  /** @type {ShimMemory[]} */
  const out = [];
  for (const p of processesMatching(shimDaemonMatcher(program, address, namespace))) {
    const m = memoryOf(p.pid);
    if (m) out.push({ pid: p.pid, rssKiB: m.rssKiB, pssKiB: m.pssKiB, privateDirtyKiB: m.privateDirtyKiB });
  }
  return out;
}

module.exports = { shimDaemonMatcher, sampleShimMemory };

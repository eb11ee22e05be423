// @ts-check
'use strict';
/**
 * Finds the shim daemons one runtime runs for the private containerd and measures them. A shim
 * daemon is recognised by its argv: the runtime's binary name (argv[0] for the Go shim, the script
 * argument for the Node one, after any node flags), `-address <our socket>` and `-namespace <our namespace>`, and no
 * action word (a `start`/`delete` process is a short-lived helper, not the daemon).
 */
const path = require('node:path');
const { memoryOf, processesMatching } = require('./proc');

/**
 * @typedef {object} ShimMemory
 * @property {number} pid
 * @property {number} rssKiB
 * @property {number | undefined} pssKiB
 * @property {number | undefined} privateDirtyKiB
 */

/**
 * @param {string} shimName e.g. containerd-shim-runc-v2
 * @param {string} address containerd's socket path
 * @param {string} namespace
 * @returns {(argv: string[]) => boolean}
 */
function shimDaemonMatcher(shimName, address, namespace) {
  return (argv) => {
    const flag = (/** @type {string} */ name) => {
      const at = argv.indexOf(name);
      return at >= 0 ? argv[at + 1] : undefined;
    };
    const last = argv[argv.length - 1];
    // node flags (a launched daemon's --max-semi-space-size) may come before the script
    const flagsAt = argv.indexOf('-namespace');
    return (
      argv.slice(0, flagsAt >= 0 ? flagsAt : 2).some((a) => path.basename(a) === shimName) &&
      flag('-address') === address &&
      flag('-namespace') === namespace &&
      last !== 'start' &&
      last !== 'delete'
    );
  };
}

/**
 * Memory of every daemon of `shimName` serving this containerd and namespace.
 * @param {string} shimName
 * @param {string} address
 * @param {string} namespace
 * @returns {ShimMemory[]}
 */
function sampleShimMemory(shimName, address, namespace) {
  /** @type {ShimMemory[]} */
  const out = [];
  for (const p of processesMatching(shimDaemonMatcher(shimName, address, namespace))) {
    const m = memoryOf(p.pid);
    if (m) out.push({ pid: p.pid, rssKiB: m.rssKiB, pssKiB: m.pssKiB, privateDirtyKiB: m.privateDirtyKiB });
  }
  return out;
}

module.exports = { shimDaemonMatcher, sampleShimMemory };

// @ts-check
'use strict';
/** Command-line options of bench/run.js. */

/**
 * @typedef {object} Options
 * @property {number} iterations timed samples per runtime for each latency row
 * @property {number} containers containers per runtime for the memory rows
 * @property {number} warmup untimed rounds per runtime before each latency phase
 * @property {number} settleMs wait between the last memory container's start and sampling
 * @property {boolean} json
 * @property {boolean} noCri skip the CRI rows (no CRI-enabled containerd, no CNI needed)
 * @property {boolean} help
 */

const USAGE = `usage: node bench/run.js [--iterations N] [--containers K] [--warmup W] [--settle-ms MS] [--no-cri] [--json]
  --iterations N   timed samples per runtime for start/delete, run --rm and exec (default 20)
  --containers K   containers per runtime for the memory rows (default 10)
  --warmup W       untimed rounds per runtime before each latency phase (default 2)
  --settle-ms MS   wait after starting the memory containers before sampling (default 2000)
  --no-cri         skip the CRI pod and container rows
  --json           print one JSON document instead of the table
Needs root, containerd 1.6 at /usr/bin, busybox-static, containernetworking-plugins (CRI rows),
and a built tree (npm run build).`;

class UsageError extends Error {}

/**
 * Accepts `--flag value` and `--flag=value`.
 * @param {readonly string[]} argv
 * @returns {Options}
 * @throws {UsageError}
 */
function parseArgs(argv) {
  /** @type {Options} */
  const opts = { iterations: 20, containers: 10, warmup: 2, settleMs: 2000, json: false, noCri: false, help: false };
  /**
   * @param {string} flag
   * @param {string | undefined} raw
   * @param {number} min
   */
  const int = (flag, raw, min) => {
    const n = Number(raw);
    if (raw === undefined || raw === '' || !Number.isInteger(n) || n < min) throw new UsageError(`${flag} needs an integer >= ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    const inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case '--iterations': opts.iterations = int(flag, value(), 1); break;
      case '--containers': opts.containers = int(flag, value(), 1); break;
      case '--warmup': opts.warmup = int(flag, value(), 0); break;
      case '--settle-ms': opts.settleMs = int(flag, value(), 0); break;
      case '--json':
      case '--no-cri':
      case '-h':
      case '--help':
        if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
        if (flag === '--json') opts.json = true;
        else if (flag === '--no-cri') opts.noCri = true;
        else opts.help = true;
        break;
      default:
        throw new UsageError(`unknown argument ${arg}`);
    }
  }
  return opts;
}

module.exports = { parseArgs, UsageError, USAGE };

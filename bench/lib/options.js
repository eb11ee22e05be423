// @ts-check
'use strict';
/** Command-line options of bench/run.js. */

/**
 * @typedef {object} Options
 * @property {number} iterations timed samples per runtime for each latency row
 * @property {number} containers containers per runtime for the own-shim memory rows
 * @property {number} grouped containers in the grouped shim (the marginal row divides by this - 1)
 * @property {number} warmup untimed rounds per runtime before each latency phase
 * @property {number} settleMs wait between the last memory container's start and sampling
 * @property {number} burst concurrent `ctr run -d` per burst
 * @property {number} burstRounds bursts per runtime
 * @property {number} pods pods per runtime in the pod memory row (2 containers each)
 * @property {number} ioMiB MiB written through stdout per IO sample
 * @property {number} ioSamples IO samples per runtime and mode (FIFO, TTY)
 * @property {number} ioTtyMiB MiB per TTY sample (the TTY path is ~10x slower than FIFO)
 * @property {string[]} only phases to run (PHASES); all when not given
 * @property {string} out where the JSON document of the run is written ('' = nowhere)
 * @property {boolean} quick smaller everything, for a first look (~3 min)
 * @property {boolean} json
 * @property {boolean} noCri skip the CRI rows (no CRI-enabled containerd, no CNI needed)
 * @property {boolean} noIo skip the IO rows
 * @property {boolean} help
 */

/** The phases of a run, in order; --only picks some. */
const PHASES = ['direct', 'runrm', 'exec', 'burst', 'io', 'memory', 'pods', 'cri'];

const USAGE = `usage: node bench/run.js [--quick] [--iterations N] [--containers K] [--grouped G] [--warmup W]
       [--settle-ms MS] [--burst B] [--burst-rounds R] [--pods P] [--io-mib M] [--io-samples S]
       [--io-tty-mib T] [--only PHASE,...] [--out FILE] [--no-io] [--no-cri] [--json]
  --quick          a smaller run for a first look: N=6, W=1, K=5, R=1, P=5, M=128, T=64, S=1, MS=1000
                   (explicit options given after or before it still win)
  --iterations N   timed samples per runtime for start/delete, run --rm, exec, CRI (default 12)
  --containers K   containers per runtime for the own-shim memory rows (default 10)
  --grouped G      containers in the one grouped shim per runtime (default 10)
  --warmup W       untimed rounds per runtime before each latency phase (default 2)
  --settle-ms MS   wait after starting the memory containers before sampling (default 2000)
  --burst B        concurrent ctr run -d per burst (default 20)
  --burst-rounds R bursts per runtime (default 2)
  --pods P         pods per runtime, 2 containers each, for the pod PSS row (default 20)
  --io-mib M       MiB through the container's stdout per IO sample (default 1024)
  --io-tty-mib T   MiB per TTY sample (default 256: the pty path runs at ~10-25 MB/s here,
                   1 GiB would take 1.5 min per runtime; the rate does not depend on the size)
  --io-samples S   IO samples per runtime and mode, FIFO and TTY (default 1)
  --only P,...     run only these phases: ${PHASES.join(', ')}
  --out FILE       the whole run as JSON (default bench/results.json; --out '' for none)
  --no-io          skip the IO rows
  --no-cri         skip the CRI rows
  --json           print the JSON document on stdout instead of the table
Needs root, containerd 1.6 at /usr/bin, busybox-static, util-linux script, GNU time,
containernetworking-plugins (CRI rows), and a built tree (npm run build).`;

class UsageError extends Error {}

/** @type {Readonly<Partial<Options>>} */
const QUICK = { iterations: 6, warmup: 1, containers: 5, grouped: 10, burstRounds: 1, pods: 5, ioMiB: 128, ioTtyMiB: 64, ioSamples: 1, settleMs: 1000 };

/**
 * Accepts `--flag value` and `--flag=value`. --quick sets the defaults it names; options given
 * explicitly win wherever they appear.
 * @param {readonly string[]} argv
 * @param {string} defaultOut
 * @returns {Options}
 * @throws {UsageError}
 */
function parseArgs(argv, defaultOut = 'bench/results.json') {
  /** @type {Options} */
  const opts = {
    iterations: 12, containers: 10, grouped: 10, warmup: 2, settleMs: 2000, burst: 20, burstRounds: 2, pods: 20,
    ioMiB: 1024, ioTtyMiB: 256, ioSamples: 1, only: [...PHASES], out: defaultOut, quick: false, json: false, noCri: false, noIo: false, help: false,
  };
  /** @type {Set<string>} */
  const explicit = new Set();
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
  /** @type {Record<string, [keyof Options, number]>} */
  const numeric = {
    '--iterations': ['iterations', 1],
    '--containers': ['containers', 1],
    '--grouped': ['grouped', 2],
    '--warmup': ['warmup', 0],
    '--settle-ms': ['settleMs', 0],
    '--burst': ['burst', 1],
    '--burst-rounds': ['burstRounds', 1],
    '--pods': ['pods', 1],
    '--io-mib': ['ioMiB', 1],
    '--io-samples': ['ioSamples', 1],
    '--io-tty-mib': ['ioTtyMiB', 1],
  };
  /** @type {Record<string, keyof Options>} */
  const switches = { '--json': 'json', '--no-cri': 'noCri', '--no-io': 'noIo', '--quick': 'quick', '-h': 'help', '--help': 'help' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    const inline = eq >= 0 ? arg.slice(eq + 1) : undefined;
    const value = () => (inline !== undefined ? inline : argv[++i]);
    const num = numeric[flag];
    const sw = switches[flag];
    if (num) {
      /** @type {Record<string, unknown>} */ (opts)[num[0]] = int(flag, value(), num[1]);
      explicit.add(num[0]);
    } else if (sw) {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
      /** @type {Record<string, unknown>} */ (opts)[sw] = true;
    } else if (flag === '--only') {
      const v = value() ?? '';
      const picked = v.split(',').map((p) => p.trim()).filter((p) => p !== '');
      const unknown = picked.filter((p) => !PHASES.includes(p));
      if (picked.length === 0 || unknown.length > 0) throw new UsageError(`--only takes phases from ${PHASES.join(',')}${unknown.length > 0 ? `, not ${unknown.join(',')}` : ''}`);
      opts.only = picked;
    } else if (flag === '--out') {
      const v = value();
      if (v === undefined) throw new UsageError('--out needs a file name (or \'\' for none)');
      opts.out = v;
    } else {
      throw new UsageError(`unknown argument ${arg}`);
    }
  }
  if (opts.quick) {
    for (const [key, v] of Object.entries(QUICK)) {
      if (!explicit.has(key)) /** @type {Record<string, unknown>} */ (opts)[key] = v;
    }
  }
  return opts;
}

module.exports = { parseArgs, UsageError, USAGE, QUICK, PHASES };

// @ts-check
'use strict';
/**
 * Process plumbing for the benchmark: timed child runs, /proc scans and per-process memory.
 * Everything here acts only on pids the caller names; nothing looks processes up by name alone.
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const delay = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @typedef {object} RunResult
 * @property {number} code exit code, or 128+signal
 * @property {Buffer} stdout
 * @property {string} stderr
 * @property {number} ms wall time from spawn until the process exited and its pipes closed
 */

/**
 * @typedef {object} RunOptions
 * @property {string} [cwd]
 * @property {NodeJS.ProcessEnv} [env]
 * @property {number} [timeoutMs] default 60 s; the child is SIGKILLed after it
 */

/**
 * Runs a command to completion with stdin at /dev/null. The clock stops at 'close' rather than
 * 'exit' because that is what containerd waits for too (CombinedOutput reads to EOF), so a
 * daemon that leaks the start process's pipes shows up as slow instead of being hidden.
 * @param {string} cmd
 * @param {readonly string[]} args
 * @param {RunOptions} [opts]
 * @returns {Promise<RunResult>}
 */
function runTimed(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    /** @type {Buffer[]} */ const out = [];
    /** @type {Buffer[]} */ const err = [];
    child.stdout.on('data', (b) => out.push(b));
    child.stderr.on('data', (b) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      const signum = signal ? require('node:os').constants.signals[signal] : 0;
      resolve({ code: code ?? 128 + signum, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), ms });
    });
  });
}

/**
 * Runs a command whose stdout may be huge (the IO rows): stdout goes straight to /dev/null, so
 * nothing in this process copies it; stderr is kept. stdin is an open pipe, closed once the
 * child exits (script(1) ends its session on EOF from stdin).
 * @param {string} cmd
 * @param {readonly string[]} args
 * @param {RunOptions} [opts]
 * @returns {Promise<RunResult>}
 */
function runToNull(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const devnull = fs.openSync('/dev/null', 'w');
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', devnull, 'pipe'] });
    fs.closeSync(devnull);
    /** @type {Buffer[]} */ const err = [];
    child.stderr?.on('data', (b) => err.push(b));
    child.stdin?.on('error', () => undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', () => child.stdin?.end());
    child.on('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      const signum = signal ? require('node:os').constants.signals[signal] : 0;
      resolve({ code: code ?? 128 + signum, stdout: Buffer.alloc(0), stderr: Buffer.concat(err).toString('utf8'), ms });
    });
  });
}

/**
 * Like runTimed but a non-zero exit is an error carrying the output.
 * @param {string} cmd
 * @param {readonly string[]} args
 * @param {RunOptions} [opts]
 * @returns {Promise<RunResult>}
 */
async function runChecked(cmd, args, opts = {}) {
  const r = await runTimed(cmd, args, opts);
  if (r.code !== 0) {
    const text = `${r.stderr.trim()} ${r.stdout.toString('utf8').trim()}`.trim();
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${text}`);
  }
  return r;
}

/**
 * @typedef {object} ProcInfo
 * @property {number} pid
 * @property {string[]} argv
 */

/**
 * argv from /proc/PID/cmdline. A process that set its title (a tshim spare daemon once adopted
 * renames itself `containerd-shim-tshim-v2 -namespace NS -id ID -address ADDR`) shows one
 * space-separated string padded with NULs: that is split into words.
 * @param {Buffer} raw
 * @returns {string[]}
 */
function argvOf(raw) {
  const argv = raw.toString('utf8').split('\0').filter((word) => word !== '');
  const only = argv[0];
  return argv.length === 1 && only !== undefined && only.includes(' ') ? only.split(/ +/).filter((w) => w !== '') : argv;
}

/**
 * Whether `argv` runs the shim `program`: a bare name matches any path with that base name; an
 * absolute path matches that file alone, which tells forms of one shim apart (bin/'s launcher,
 * the single executable in out/linux-x64, both named containerd-shim-tshim-v2). The program is
 * argv[0] (a Go shim, the single executable) or node's script, after any node flags (a launched
 * daemon's `node --max-semi-space-size=1 SCRIPT …`): one of the words before the shim's own
 * flags, which have a single dash (`-namespace`, `-spare`).
 * @param {string[]} argv
 * @param {string} program
 */
function runsProgram(argv, program) {
  const same = path.isAbsolute(program) ? (/** @type {string} */ a) => a === program : (/** @type {string} */ a) => path.basename(a) === program;
  const shimFlags = argv.findIndex((a) => a.startsWith('-') && !a.startsWith('--'));
  return argv.slice(0, shimFlags >= 0 ? shimFlags : argv.length).some(same);
}

/**
 * Live processes whose argv satisfies `match`; ones that vanish mid-scan are skipped.
 * @param {(argv: string[]) => boolean} match
 * @returns {ProcInfo[]}
 */
function processesMatching(match) {
  /** @type {ProcInfo[]} */
  const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let raw;
    try {
      raw = fs.readFileSync(`/proc/${entry}/cmdline`);
    } catch {
      continue;
    }
    const argv = argvOf(raw);
    if (argv.length > 0 && match(argv)) found.push({ pid: Number(entry), argv });
  }
  return found;
}

/**
 * True while `pid` exists and is not a zombie: a daemon reparented to init can linger as one
 * for a moment after it has really finished.
 * @param {number} pid
 */
function isRunning(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state letter follows the parenthesised command name, which may itself contain ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * Waits for `pid` to finish; SIGKILLs it after `timeoutMs`. Only call with pids this run started.
 * @param {number} pid
 * @param {number} timeoutMs
 * @returns {Promise<boolean>} false when it had to be killed
 */
async function waitGoneOrKill(pid, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited between the check and the kill
      }
      return false;
    }
    await delay(5);
  }
  return true;
}

/**
 * @typedef {object} Memory
 * @property {number} rssKiB resident set (VmRSS)
 * @property {number | undefined} pssKiB proportional set from smaps_rollup (shared pages split
 *   between the processes mapping them); undefined when the kernel does not offer it
 * @property {number | undefined} privateDirtyKiB Private_Dirty from smaps_rollup: pages only this
 *   process has written (heap, stacks, relocated data), what one more process really costs
 */

/**
 * The fields of /proc/PID/smaps_rollup (or smaps, summed) in KiB, by name.
 * @param {string} text
 * @returns {Record<string, number>}
 */
function parseSmapsRollup(text) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const m of text.matchAll(/^([A-Za-z_]+):\s+(\d+) kB$/gm)) {
    const key = /** @type {string} */ (m[1]);
    out[key] = (out[key] ?? 0) + Number(m[2]);
  }
  return out;
}

/**
 * @param {number} pid
 * @returns {Memory | undefined} undefined when the process is gone
 */
function memoryOf(pid) {
  let status;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!rss) return undefined;
  let pssKiB;
  let privateDirtyKiB;
  try {
    const rollup = parseSmapsRollup(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    pssKiB = rollup['Pss'];
    privateDirtyKiB = rollup['Private_Dirty'];
  } catch {
    pssKiB = undefined;
  }
  return { rssKiB: Number(rss[1]), pssKiB, privateDirtyKiB };
}

/** Linux's USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on every Linux ABI). */
const CLOCK_TICKS = 100;

/**
 * User + system CPU seconds from the text of /proc/PID/stat (fields 14 and 15, counted after the
 * parenthesised command name, which may itself contain spaces and ')').
 * @param {string} stat
 * @returns {number}
 */
function parseStatCpu(stat) {
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field N is rest[N - 3].
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime) || rest.length < 13) throw new Error('not a /proc/PID/stat line');
  return (utime + stime) / CLOCK_TICKS;
}

/**
 * @param {number} pid
 * @returns {number | undefined} CPU seconds so far, undefined once the process is gone
 */
function cpuSecondsOf(pid) {
  try {
    return parseStatCpu(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Mount points at or below `dir`, deepest first (the order they must be unmounted in).
 * @param {string} dir
 * @returns {string[]}
 */
function mountsUnder(dir) {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const points = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter(/** @returns {p is string} */ (p) => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8))))
    .filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/**
 * Runs `fn` over `items`, at most `width` at once (at least one).
 * @template T
 * @param {readonly T[]} items
 * @param {number} width
 * @param {(item: T) => Promise<void>} fn
 */
async function pool(items, width, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = /** @type {T} */ (items[next++]);
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(width, items.length)) }, worker));
}

module.exports = { pool, delay, runTimed, runChecked, runToNull, argvOf, runsProgram, parseSmapsRollup, parseStatCpu, cpuSecondsOf, processesMatching, isRunning, waitGoneOrKill, memoryOf, mountsUnder };

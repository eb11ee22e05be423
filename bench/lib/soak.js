// @ts-check
'use strict';
/**
 * Soak and storm steps shared by `npm run soak` (bench/soak.js) and the bounded suite version
 * (test/e2e/soak.test.ts): container cycles through one grouped shim, an exec storm, and what a
 * shim process holds (fds by kind, memory from smaps_rollup, children and zombies).
 *
 * Every container here carries the annotation `io.containerd.runc.v2.group=<group>`, so `start`
 * hashes the group (not the id) into the socket name and containerd hands every one of them to the
 * same shim daemon (src/common/group.ts groupingKey; ctr 1.6 sets it with `--annotation`).
 */
const fs = require('node:fs');
const { pool } = require('./proc');

const GROUP_ANNOTATION = 'io.containerd.runc.v2.group';

/**
 * @typedef {(args: string[], timeoutMs?: number) => Promise<{ code: number | null, stdout: Buffer | string, stderr: Buffer | string }>} CtrFn
 * a ctr runner bound to one containerd and namespace that does not throw on a non-zero exit
 */

/**
 * @typedef {object} ShimSample
 * @property {number} fds every open fd
 * @property {number} sockets fds that are sockets
 * @property {number} pipes fds that are pipes or FIFOs
 * @property {number} rssKiB
 * @property {number} privateDirtyKiB
 * @property {number} anonymousKiB anonymous memory (the V8 and malloc heaps live here)
 * @property {number} threads
 * @property {number} children
 * @property {number} zombies
 */

/**
 * @param {number} pid
 * @returns {{ pid: number, state: string }[]} direct children with their state letter
 */
function childrenOf(pid) {
  /** @type {{ pid: number, state: string }[]} */
  const out = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[1]) === pid) out.push({ pid: Number(entry), state: fields[0] ?? '?' });
  }
  return out;
}

/**
 * @param {string} text
 * @param {string} key
 */
function kib(text, key) {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/**
 * What one shim process holds right now.
 * @param {number} pid
 * @returns {ShimSample}
 */
function sampleShim(pid) {
  let sockets = 0;
  let pipes = 0;
  const fds = fs.readdirSync(`/proc/${pid}/fd`);
  for (const fd of fds) {
    let target = '';
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (target.startsWith('socket:')) sockets++;
    else if (target.startsWith('pipe:')) pipes++;
    else {
      try {
        if (fs.statSync(`/proc/${pid}/fd/${fd}`).isFIFO()) pipes++;
      } catch {
        // closed meanwhile
      }
    }
  }
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const children = childrenOf(pid);
  return {
    fds: fds.length,
    sockets,
    pipes,
    rssKiB: kib(status, 'VmRSS'),
    privateDirtyKiB: kib(rollup, 'Private_Dirty'),
    anonymousKiB: kib(rollup, 'Anonymous'),
    threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0),
    children: children.length,
    zombies: children.filter((c) => c.state === 'Z').length,
  };
}

/** @param {ShimSample} s */
function formatSample(s) {
  return `fds ${s.fds} (sockets ${s.sockets}, pipes/fifos ${s.pipes}) rss ${(s.rssKiB / 1024).toFixed(1)} MiB ` +
    `private_dirty ${(s.privateDirtyKiB / 1024).toFixed(1)} MiB anon ${(s.anonymousKiB / 1024).toFixed(1)} MiB ` +
    `threads ${s.threads} children ${s.children} zombies ${s.zombies}`;
}

/** @param {{ stdout: Buffer | string, stderr: Buffer | string }} r */
const text = (r) => `${r.stdout.toString()}${r.stderr.toString()}`.trim();

/**
 * @param {CtrFn} ctr
 * @param {string[]} args
 * @param {number} [timeoutMs]
 */
async function must(ctr, args, timeoutMs) {
  const r = await ctr(args, timeoutMs);
  if (r.code !== 0) throw new Error(`ctr ${args.join(' ')} exited ${r.code}: ${text(r)}`);
  return r;
}

/**
 * `ctr run -d` of a sleeping container in the group.
 * @param {CtrFn} ctr
 * @param {{ runtime: string, image: string, group: string, id: string, fifoDir: string, command?: string[] }} o
 */
async function runGrouped(ctr, o) {
  await must(ctr, ['run', '-d', '--runtime', o.runtime, '--fifo-dir', o.fifoDir, '--annotation', `${GROUP_ANNOTATION}=${o.group}`,
    o.image, o.id, ...(o.command ?? ['sleep', '100000'])]);
}

/**
 * An exec that exits with `status`; resolves with the status ctr reports (its exit code).
 * @param {CtrFn} ctr
 * @param {string} id
 * @param {string} execId
 * @param {number} status
 * @param {string} fifoDir
 */
async function execStatus(ctr, id, execId, status, fifoDir) {
  const r = await ctr(['task', 'exec', '--fifo-dir', fifoDir, '--exec-id', execId, id, 'sh', '-c', `exit ${status}`], 120_000);
  return r.code;
}

/**
 * One soak cycle: create+start (`run -d`), an exec with its own status, SIGKILL, delete the task
 * (force: waits for the exit) and the container.
 * @param {CtrFn} ctr
 * @param {{ runtime: string, image: string, group: string, id: string, fifoDir: string, status: number }} o
 */
async function cycle(ctr, o) {
  await runGrouped(ctr, o);
  const got = await execStatus(ctr, o.id, 'x', o.status, o.fifoDir);
  if (got !== o.status) throw new Error(`exec in ${o.id} exited ${got}, expected ${o.status}`);
  await must(ctr, ['task', 'kill', '-s', 'SIGKILL', o.id]);
  await must(ctr, ['task', 'rm', '-f', o.id]);
  await must(ctr, ['container', 'rm', o.id]);
}

/**
 * `total` execs into container `id`, `concurrency` at a time; exec i exits with i % 256.
 * @param {CtrFn} ctr
 * @param {{ id: string, total: number, concurrency: number, fifoDir: string, prefix?: string }} o
 * @returns {Promise<{ checked: number, wrong: string[] }>}
 */
async function execStorm(ctr, o) {
  /** @type {string[]} */
  const wrong = [];
  let checked = 0;
  await pool(Array.from({ length: o.total }, (_, i) => i), o.concurrency, async (i) => {
    const want = i % 256;
    const got = await execStatus(ctr, o.id, `${o.prefix ?? 's'}${i}`, want, o.fifoDir);
    checked++;
    if (got !== want) wrong.push(`exec ${i}: status ${got}, expected ${want}`);
  });
  return { checked, wrong };
}

module.exports = { GROUP_ANNOTATION, childrenOf, sampleShim, formatSample, runGrouped, execStatus, cycle, execStorm };

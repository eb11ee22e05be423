#!/usr/bin/env node
// @ts-check
'use strict';
/**
 * `npm run soak`: a private containerd 1.6, one grouped tshim daemon, then
 *   1. N create/start/exec/kill/delete cycles through that one daemon (default 2000, CONCURRENCY at
 *      a time), printing its fds, RSS, Private_Dirty and anonymous memory every INTERVAL cycles;
 *   2. an exec storm: STORM execs into one container, STORM_CONCURRENCY at a time, exec i exiting
 *      with i % 256, every status checked, then no zombies and no fd growth.
 * Exits non-zero if the daemon changed, a status was wrong, or it ends holding more than it did.
 *
 *   node bench/soak.js [--cycles N] [--concurrency C] [--interval K] [--storm N] [--storm-concurrency C]
 *
 * Heap: the V8 heap cannot be read from outside the daemon (its SIGUSR1 dump names no sizes);
 * `anon` (anonymous memory from smaps_rollup) is where both the V8 and malloc heaps live.
 */
const fs = require('node:fs');
const path = require('node:path');
const { startContainerd } = require('./lib/containerd');
const { importBenchImage } = require('./lib/image');
const { decodeShimPid, encodeIdRequest, TASK_SERVICE } = require('./lib/shim-direct');
const { pool } = require('./lib/proc');
const { sampleShim, formatSample, runGrouped, cycle, execStorm } = require('./lib/soak');

const REPO_ROOT = path.resolve(__dirname, '..');
// Spare daemons (src/common/spare.ts) are not what is measured here, and they only retire once
// containerd is gone, after the teardown's leftover check; the grouped daemon is started as usual.
process.env.TSHIM_SPARE = '0';
const RUNTIME = 'io.containerd.tshim.v2';

/** @param {string[]} argv */
function parse(argv) {
  const o = { cycles: 2000, concurrency: 4, interval: 100, storm: 1000, stormConcurrency: 50 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]?.replace(/^--/, '').replace(/-(\w)/g, (_, c) => c.toUpperCase());
    const value = Number(argv[i + 1]);
    if (!key || !(key in o) || !Number.isInteger(value) || value < 0) {
      throw new Error(`usage: soak.js [--cycles N] [--concurrency C] [--interval K] [--storm N] [--storm-concurrency C] (bad ${argv[i]})`);
    }
    /** @type {Record<string, number>} */ (o)[key] = value;
  }
  return o;
}

/**
 * The daemon serving a task, asked over its socket (Connect answers with the shim's pid).
 * @param {string} dir containerd's temp dir
 * @param {string} namespace
 * @param {string} id
 */
async function shimPid(dir, namespace, id) {
  const { TtrpcClient } = require(path.join(REPO_ROOT, 'dist', 'common', 'ttrpc', 'client.js'));
  const address = fs.readFileSync(path.join(dir, 'state', 'io.containerd.runtime.v2.task', namespace, id, 'address'), 'utf8').trim();
  const client = await TtrpcClient.connect(address, { timeoutMs: 10_000 });
  try {
    return decodeShimPid(await client.call(TASK_SERVICE, 'Connect', encodeIdRequest(id), { timeoutMs: 10_000 }));
  } finally {
    client.close();
  }
}

async function main() {
  const o = parse(process.argv.slice(2));
  const cd = await startContainerd(REPO_ROOT);
  const problems = [];
  const started = Date.now();
  const log = (/** @type {string} */ line) => console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${line}`);
  try {
    const image = await importBenchImage(cd);
    const fifoDir = path.join(cd.dir, 'fifo');
    fs.mkdirSync(fifoDir);
    const group = `soak-${process.pid}`;
    const ctr = (/** @type {string[]} */ args, /** @type {number | undefined} */ t) => cd.ctrUnchecked(args, t ?? 120_000);
    await runGrouped(ctr, { runtime: RUNTIME, image, group, id: 'anchor', fifoDir });
    const pid = await shimPid(cd.dir, cd.namespace, 'anchor');
    // One warm-up cycle, so the baseline is a daemon that has already loaded what a cycle uses.
    await cycle(ctr, { runtime: RUNTIME, image, group, id: 'warmup', fifoDir, status: 1 });
    const first = sampleShim(pid);
    log(`grouped shim ${pid}, before: ${formatSample(first)}`);

    let done = 0;
    const t0 = Date.now();
    await pool(Array.from({ length: o.cycles }, (_, i) => i), o.concurrency, async (i) => {
      await cycle(ctr, { runtime: RUNTIME, image, group, id: `c${i}`, fifoDir, status: (i % 254) + 1 });
      const again = await shimPid(cd.dir, cd.namespace, 'anchor');
      if (again !== pid) throw new Error(`cycle ${i}: the group is now served by ${again}, not ${pid}`);
      if (++done % o.interval === 0) log(`cycle ${done}: ${formatSample(sampleShim(pid))}`);
    });
    const afterCycles = sampleShim(pid);
    log(`${o.cycles} cycles in ${((Date.now() - t0) / 1000).toFixed(0)} s; after: ${formatSample(afterCycles)}`);
    if (afterCycles.fds > first.fds) problems.push(`fds grew over the cycles: ${first.fds} -> ${afterCycles.fds}`);
    if (afterCycles.children !== 1 || afterCycles.zombies !== 0) problems.push(`children after cycles: ${afterCycles.children} (${afterCycles.zombies} zombies), expected only the anchor`);

    if (o.storm > 0) {
      const before = sampleShim(pid);
      const t1 = Date.now();
      const storm = await execStorm(ctr, { id: 'anchor', total: o.storm, concurrency: o.stormConcurrency, fifoDir });
      const after = sampleShim(pid);
      log(`exec storm: ${storm.checked} execs (${o.stormConcurrency} at a time) in ${((Date.now() - t1) / 1000).toFixed(0)} s, ${storm.wrong.length} wrong statuses`);
      log(`after storm: ${formatSample(after)}`);
      problems.push(...storm.wrong.slice(0, 20));
      if (after.fds > before.fds) problems.push(`fds grew over the storm: ${before.fds} -> ${after.fds}`);
      if (after.zombies > 0 || after.children !== 1) problems.push(`children after storm: ${after.children} (${after.zombies} zombies)`);
    }
    await ctr(['task', 'rm', '-f', 'anchor']);
    await ctr(['container', 'rm', 'anchor']);
  } catch (err) {
    problems.push(err instanceof Error ? err.stack ?? err.message : String(err));
  } finally {
    problems.push(...(await cd.stop()));
  }
  if (problems.length > 0) {
    console.error(`soak: FAILED\n  ${problems.join('\n  ')}`);
    process.exitCode = 1;
  } else {
    log('soak: ok');
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});

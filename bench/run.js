#!/usr/bin/env node
// @ts-check
'use strict';
/**
 * tshim vs containerd-shim-runc-v2, side by side in one run: shim start/delete latency, full
 * `ctr run --rm` lifecycle, exec latency and shim memory, against a private containerd 1.6.
 * Samples of the two runtimes alternate (runc,tshim then tshim,runc, …) so machine noise and
 * warm-cache effects fall on both equally. Usage: see bench/README.md or `--help`.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startContainerd } = require('./lib/containerd');
const { importBenchImage, PAUSE_VARIANT } = require('./lib/image');
const { prepareCri, CriClient, podConfig, containerConfig } = require('./lib/cri');
const { directCycle, StepError } = require('./lib/shim-direct');
const { sampleShimMemory } = require('./lib/memory');
const { pool, delay, runTimed, runToNull, memoryOf, waitGoneOrKill, cpuSecondsOf, processesMatching } = require('./lib/proc');
const { Results } = require('./lib/results');
const { parseArgs, UsageError, USAGE } = require('./lib/options');
const { waitSpareReady, retireSpares, idleSpares } = require('./lib/spare');
const { TARGETS, evaluateTargets, targetLines } = require('./lib/targets');
const { parseTimeOutput, ioRate, shQuote } = require('./lib/io');
const { shimForms } = require('../scripts/shim-forms');

const REPO_ROOT = path.resolve(__dirname, '..');
const GROUP_ANNOTATION = 'io.containerd.runc.v2.group';
/** Long enough to outlive any run; containers are force-removed at the end of their phase. */
const LONG_SLEEP = '1000000';
const MiB = 1024;

/**
 * @typedef {import('./lib/results').RuntimeKey} RuntimeKey
 * @typedef {object} Runtime
 * @property {RuntimeKey} key
 * @property {string} runtime containerd runtime type
 * @property {string} binary the shim executable containerd resolves for it
 * @property {string} program what its processes run (lib/proc.js runsProgram): a name for runc's,
 *   the absolute path for tshim's, whose forms share one name
 * @property {{ key: string, label: string }} [form] another form of tshim (scripts/shim-forms.js):
 *   its rows are `ROW:key`
 * @property {string[]} [extraArgs] more `ctr run` flags (e.g. a runtime config file)
 */

const TSHIM_BIN = path.join(REPO_ROOT, 'bin', 'containerd-shim-tshim-v2');
/** @type {readonly Runtime[]} */
const RUNTIMES = [
  { key: 'runc', runtime: 'io.containerd.runc.v2', binary: '/usr/bin/containerd-shim-runc-v2', program: 'containerd-shim-runc-v2' },
  { key: 'tshim', runtime: 'io.containerd.tshim.v2', binary: TSHIM_BIN, program: TSHIM_BIN },
];

/**
 * The other built forms of tshim (the single executable of `npm run package`, when out/linux-x64
 * has it; TSHIM_BENCH_FORMS narrows): rows of their own for start, `ctr run -d` and daemon
 * memory, the form's samples in the tshim column and runc's samples of the same rounds in the runc
 * column. containerd runs a form by its absolute path as the runtime (`ctr run --runtime PATH`).
 * @type {readonly Runtime[]}
 */
const FORMS = shimForms()
  .filter((f) => f.available && f.key !== 'tshim')
  .map((f) => ({ key: /** @type {RuntimeKey} */ ('tshim'), runtime: f.binary, binary: f.binary, program: f.binary, form: { key: f.key, label: f.label } }));
/** The rows each form repeats. */
const FORM_ROWS = ['start', 'startNoSpare', 'runDetached', 'pdOne', 'pssOne', 'rssOne'];
/** Every tshim form whose spares the bench must see ready before a sample. */
const TSHIM_PROGRAMS = [TSHIM_BIN, ...FORMS.map((f) => f.program)];

/**
 * The row a runtime's sample of `row` goes to: `row` itself, or `row:form` for another form.
 * @param {string} row
 * @param {Runtime} rt
 */
const rowOf = (row, rt) => (rt.form ? `${row}:${rt.form.key}` : row);

/**
 * ABBA order: iteration i runs runc first when i is even, tshim first when odd, so neither
 * always benefits from going second (warm page cache, a just-finished GC in containerd).
 * @param {number} i
 * @returns {readonly Runtime[]}
 */
const orderFor = (i) => (i % 2 === 0 ? RUNTIMES : [...RUNTIMES].reverse());
/**
 * The same ABBA order over runc, tshim and the other forms, for the phases that time the forms.
 * @param {number} i
 */
const orderWithForms = (i) => (i % 2 === 0 ? [...RUNTIMES, ...FORMS] : [...RUNTIMES, ...FORMS].reverse());

/** Fails early, with the fix, instead of half-way through a run. */
function preflight() {
  if (process.getuid?.() !== 0) throw new Error('must run as root (containerd, runc, mounts)');
  for (const file of ['/usr/bin/containerd', '/usr/bin/ctr', '/usr/bin/runc', '/usr/bin/script', '/usr/bin/time', ...RUNTIMES.map((r) => r.binary)]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing`);
  }
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
}

/**
 * @param {Options} o
 * @returns {import('./lib/results').RowSpec[]}
 */
const rowsFor = (o) =>
  // each form's copy of a row right below the row itself
  baseRows(o).flatMap((row) => [row, ...(FORM_ROWS.includes(row.id) ? FORMS.map((f) => ({ ...row, id: rowOf(row.id, f), label: `${row.label} [${f.form?.label}]` })) : [])]);

/**
 * @param {Options} o
 * @returns {import('./lib/results').RowSpec[]}
 */
const baseRows = (o) => [
  { id: 'floor', label: 'process floor: runc=/bin/true, tshim=node -e 0', unit: 'ms', kind: 'samples' },
  { id: 'start', label: 'shim start (direct), spare ready', unit: 'ms', kind: 'samples' },
  { id: 'startNoSpare', label: 'shim start (direct), no spare', unit: 'ms', kind: 'samples' },
  { id: 'delete', label: 'shim delete (direct)', unit: 'ms', kind: 'samples' },
  { id: 'runRm', label: 'ctr run --rm ... true, spare ready', unit: 'ms', kind: 'samples' },
  { id: 'runRmNoSpare', label: 'ctr run --rm ... true, no spare (1st on node)', unit: 'ms', kind: 'samples' },
  { id: 'exec', label: 'ctr task exec ... true', unit: 'ms', kind: 'samples' },
  { id: 'runDetached', label: 'ctr run -d (own shim)', unit: 'ms', kind: 'samples' },
  { id: 'runGrouped', label: 'ctr run -d (grouped, shim running)', unit: 'ms', kind: 'samples' },
  { id: 'burst', label: `burst: ${o.burst} concurrent ctr run -d, wall`, unit: 'ms', kind: 'samples' },
  { id: 'burstNs', label: `burst: ${o.burst} concurrent ctr run -d, wall: runc, tshim ShimGroup=namespace`, unit: 'ms', kind: 'samples' },
  { id: 'ioFifo', label: `stdout FIFO, ${o.ioMiB} MiB (higher=better)`, unit: 'MB/s', kind: 'samples' },
  { id: 'ioTty', label: `stdout TTY, ${o.ioTtyMiB} MiB (higher=better)`, unit: 'MB/s', kind: 'samples' },
  { id: 'ioFifoCtrCpu', label: 'ctr CPU (user+sys) per FIFO sample', unit: 's', kind: 'samples' },
  { id: 'ioTtyCtrCpu', label: 'ctr CPU (user+sys) per TTY sample', unit: 's', kind: 'samples' },
  { id: 'ioFifoShimCpu', label: 'shim daemon CPU per FIFO sample', unit: 's', kind: 'samples' },
  { id: 'ioTtyShimCpu', label: 'shim daemon CPU per TTY sample', unit: 's', kind: 'samples' },
  { id: 'pdOne', label: 'Private_Dirty, daemon with 1 container', unit: 'MiB', kind: 'samples' },
  { id: 'pssOne', label: `PSS, daemon with 1 container (${o.containers} running)`, unit: 'MiB', kind: 'samples' },
  { id: 'rssOne', label: 'RSS, daemon with 1 container', unit: 'MiB', kind: 'samples' },
  { id: 'pssTotal', label: `PSS total, ${o.containers} own shims`, unit: 'MiB', kind: 'value' },
  { id: 'pdGrouped1', label: 'Private_Dirty, grouped shim, 1 container', unit: 'MiB', kind: 'value' },
  { id: 'pdGrouped', label: `Private_Dirty, grouped shim, ${o.grouped} containers`, unit: 'MiB', kind: 'value' },
  { id: 'pssGrouped', label: `PSS, grouped shim, ${o.grouped} containers`, unit: 'MiB', kind: 'value' },
  { id: 'pdMarginal', label: 'Private_Dirty per extra grouped container', unit: 'MiB', kind: 'value' },
  { id: 'podsPss', label: `PSS total of all shims, ${o.pods} pods x 2`, unit: 'MiB', kind: 'value' },
  { id: 'podsPd', label: `Private_Dirty total, ${o.pods} pods x 2`, unit: 'MiB', kind: 'value' },
  { id: 'podsPssNs', label: `PSS total, ${o.pods} pods x 2: runc per pod, tshim ShimGroup=namespace`, unit: 'MiB', kind: 'value' },
  { id: 'podsPdNs', label: `Private_Dirty total, ${o.pods} pods x 2: runc per pod, tshim ShimGroup=namespace`, unit: 'MiB', kind: 'value' },
  { id: 'sparePd', label: 'idle spare daemon: Private_Dirty (runc: none)', unit: 'MiB', kind: 'value' },
  { id: 'sparePss', label: 'idle spare daemon: PSS (runc: none)', unit: 'MiB', kind: 'value' },
  { id: 'nodePd', label: 'idle `node` process: Private_Dirty (floor)', unit: 'MiB', kind: 'value' },
  { id: 'criPod', label: 'CRI pod: run, create+start, stop, remove', unit: 'ms', kind: 'samples' },
  { id: 'criRunPod', label: 'CRI RunPodSandbox', unit: 'ms', kind: 'samples' },
  { id: 'criContainer', label: 'CRI container: create+start, stop, remove', unit: 'ms', kind: 'samples' },
  { id: 'criCtrStart', label: 'CRI container create+start (in pod)', unit: 'ms', kind: 'samples' },
  { id: 'criCtrStop', label: 'CRI StopContainer (timeout 0)', unit: 'ms', kind: 'samples' },
];

/** Set by SIGINT/SIGTERM; phases stop at the next sample and teardown still runs. */
let interrupted = false;

/**
 * Called before every sample: stops the run on an interrupt, and when containerd has died,
 * since every later sample would only time a connection failure.
 * @param {import('./lib/containerd').Containerd} cd
 */
function checkCanContinue(cd) {
  if (interrupted) throw new Error('interrupted');
  if (!cd.isAlive()) throw new Error('the private containerd exited during the run');
}

/** @param {string} text */
const progress = (text) => process.stderr.write(`[bench] ${text}\n`);

/**
 * @typedef {import('./lib/containerd').Containerd} Containerd
 * @typedef {import('./lib/options').Options} Options
 * @typedef {object} Ctx
 * @property {Containerd} cd
 * @property {string} image
 * @property {Options} opts
 * @property {Results} results
 */

/** How long a sample may wait for tshim's next spare to finish loading. */
const SPARE_READY_MS = 10_000;

/**
 * Before every sample, of either runtime: the spare the previous tshim `start` launched must have
 * finished loading, so that (a) a "spare ready" sample really finds one and (b) no sample, runc's
 * included, shares the CPU with a spare still loading. With `retire`, the spare is then retired,
 * so the sample is what the first container on a node sees (start finds none, launches its own
 * daemon and, in the background, the next spare).
 * @param {Ctx} ctx
 * @param {boolean} retire
 * @param {string} row for the note when no spare turns up
 * @param {string} [program] the form whose spare `retire` retires (default: the launcher's)
 */
async function prepareSpare({ cd, results }, retire, row, program = TSHIM_BIN) {
  if (spareOff) return;
  // Each form's spare (a form's start spawns its own): before that form's first start there is
  // none; after one, start has spawned the next already.
  for (const p of TSHIM_PROGRAMS) {
    const seen = spareSeen.has(`${cd.address}\0${p}`);
    const present = idleSpares(cd.address, p).length > 0;
    const pid = present || seen ? await waitSpareReady(cd.address, present ? SPARE_READY_MS : 2_000, p) : undefined;
    if (pid === undefined && seen) {
      const left = idleSpares(cd.address);
      const form = p === TSHIM_BIN ? '' : ` of ${path.relative(REPO_ROOT, p)}`;
      results.note(`${row}: no ready spare${form} before a sample (${present ? `${SPARE_READY_MS / 1000} s` : '2 s'}); idle spares now: ${left.map((x) => `${x.pid} ${x.socket}`).join(', ') || 'none'}`);
    }
    if (pid !== undefined) spareSeen.add(`${cd.address}\0${p}`);
  }
  if (retire) {
    const killed = await retireSpares(cd.address, 5_000, program);
    if (killed > 0) results.note(`${row}: a spare ignored SIGTERM and was killed`);
  }
}
/** True when tshim is told not to use spares (TSHIM_SPARE=0 in the bench's environment). */
const spareOff = ['0', 'false', 'off', 'no'].includes((process.env['TSHIM_SPARE'] ?? '').toLowerCase());
/** containerd address + program of each form whose spare was seen: before its first start there is none to wait for. */
const spareSeen = new Set();

/**
 * The floor line: `node -e 0` (what every Node process pays before running a line of the shim)
 * in tshim's column, `/bin/true` (a bare exec) in runc's; the `start` target is node -e 0 + 10 ms.
 * @param {Ctx} ctx
 * @param {number} i
 */
async function floorSample(ctx, i) {
  for (const rt of orderFor(i)) {
    await prepareSpare(ctx, false, 'floor');
    // in containerd's environment, as a shim's node runs
    const r = rt.key === 'tshim' ? await runTimed(process.execPath, ['-e', '0'], { env: ctx.cd.env }) : await runTimed('/bin/true', []);
    if (i >= ctx.opts.warmup) {
      if (r.code === 0) ctx.results.add('floor', rt.key, r.ms);
      else ctx.results.fail('floor', rt.key, new Error(`exit ${r.code}`));
    }
  }
}

/**
 * The shim binary's own `start` and `delete`, with containerd only as the address; `start` with
 * a ready spare and with none, and the floor line, all interleaved in the same rounds.
 * @param {Ctx} ctx
 */
async function benchDirect(ctx) {
  const { cd, opts, results } = ctx;
  const { TtrpcClient } = require(path.join(REPO_ROOT, 'dist', 'common', 'ttrpc', 'client.js'));
  const parent = path.join(cd.dir, 'direct');
  fs.mkdirSync(parent);
  const total = opts.warmup + opts.iterations;
  for (let i = 0; i < total; i++) {
    for (const noSpare of [false, true]) {
      for (const rt of orderWithForms(i)) {
        checkCanContinue(cd);
        const timed = i >= opts.warmup;
        const startRow = rowOf(noSpare ? 'startNoSpare' : 'start', rt);
        const deleteRow = rt.form ? undefined : 'delete';
        await prepareSpare(ctx, noSpare && rt.key === 'tshim', startRow, rt.program);
        try {
          const r = await directCycle(
            { binary: rt.binary, namespace: cd.namespace, containerdAddress: cd.address, env: cd.env },
            parent,
            `direct-${rt.form?.key ?? rt.key}-${i}${noSpare ? 'n' : ''}`,
            TtrpcClient,
            { beforeDelete: () => prepareSpare(ctx, false, 'delete') },
          );
          for (const w of r.warnings) results.note(`direct ${rt.form?.key ?? rt.key}: ${w}`);
          if (timed) {
            addWithForms(results, startRow, rt, r.startMs);
            if (!noSpare && deleteRow) results.add(deleteRow, rt.key, r.deleteMs);
          }
        } catch (err) {
          if (timed) results.fail(err instanceof StepError && err.step === 'delete' && deleteRow ? deleteRow : startRow, rt.key, err);
        }
      }
    }
    await floorSample(ctx, i);
  }
}

/**
 * Records a sample; runc's also go to each form's copy of the row (FORMS), whose runc column is
 * runc's samples of the same rounds.
 * @param {Results} results
 * @param {string} row
 * @param {Runtime} rt
 * @param {number} value
 */
function addWithForms(results, row, rt, value) {
  results.add(row, rt.key, value);
  if (rt.key === 'runc' && FORM_ROWS.includes(row)) for (const f of FORMS) results.add(rowOf(row, f), 'runc', value);
}

/**
 * Force-removes containers (task first), ignoring the ones already gone, and waits until their
 * shims have exited so the next phase starts from an idle machine.
 * @param {Containerd} cd
 * @param {string[]} ids
 */
async function removeContainers(cd, ids) {
  // A few at a time: one by one, 80 containers cost half a minute on a busy machine.
  await pool(ids, 4, async (id) => {
    await cd.ctrUnchecked(['tasks', 'rm', '-f', id], 30_000);
    await cd.ctrUnchecked(['containers', 'rm', id], 30_000);
  });
  const deadline = Date.now() + 10_000;
  while (cd.shimProcesses().length > 0 && Date.now() < deadline) await delay(50);
}


/**
 * create + start + wait + delete + shutdown through containerd, as one `ctr` call; with a ready
 * spare and with none (retired just before the sample), interleaved in the same rounds.
 * @param {Ctx} ctx
 */
async function benchRunRm(ctx) {
  const { cd, image, opts, results } = ctx;
  const total = opts.warmup + opts.iterations;
  for (let i = 0; i < total; i++) {
    for (const noSpare of [false, true]) {
      const row = noSpare ? 'runRmNoSpare' : 'runRm';
      for (const rt of orderFor(i)) {
        checkCanContinue(cd);
        await prepareSpare(ctx, noSpare && rt.key === 'tshim', row);
        const id = `rm-${rt.key}-${i}${noSpare ? 'n' : ''}`;
        try {
          const r = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, image, id, 'true']);
          if (i >= opts.warmup) results.add(row, rt.key, r.ms);
        } catch (err) {
          if (i >= opts.warmup) results.fail(row, rt.key, err);
          await removeContainers(cd, [id]);
        }
      }
    }
  }
}

/**
 * Exec latency against one long-running container per runtime.
 * @param {Ctx} ctx
 */
async function benchExec(ctx) {
  const { cd, image, opts, results } = ctx;
  /** @type {Map<RuntimeKey, string>} */
  const running = new Map();
  try {
    for (const rt of RUNTIMES) {
      const id = `exec-${rt.key}`;
      try {
        await cd.ctr(['run', '-d', '--runtime', rt.runtime, image, id, 'sleep', LONG_SLEEP]);
        running.set(rt.key, id);
      } catch (err) {
        results.fail('exec', rt.key, err);
        await removeContainers(cd, [id]);
      }
    }
    const total = opts.warmup + opts.iterations;
    for (let i = 0; i < total; i++) {
      for (const rt of orderFor(i)) {
        checkCanContinue(cd);
        await prepareSpare(ctx, false, 'exec');
        const id = running.get(rt.key);
        if (id === undefined) continue;
        try {
          const r = await cd.ctr(['task', 'exec', '--exec-id', `e${i}`, id, 'true']);
          if (i >= opts.warmup) results.add('exec', rt.key, r.ms);
        } catch (err) {
          if (i >= opts.warmup) results.fail('exec', rt.key, err);
        }
      }
    }
  } finally {
    await removeContainers(cd, [...running.values()]);
  }
}

/**
 * Burst: B `ctr run -d` at once (own shim each), wall until every one returned, i.e. every task is
 * RUNNING (ctr run -d returns after Start); checked with `ctr tasks ls` too. Rounds alternate
 * the runtimes ABBA; containers are removed between rounds, untimed.
 * @param {Ctx} ctx
 */
async function benchBurst(ctx) {
  const { cd, opts, results } = ctx;
  const config = namespaceGroupConfig(cd);
  for (let i = 0; i < opts.burstRounds; i++) {
    for (const rt of orderFor(i)) {
      const ms = await burstOnce(ctx, rt, `burst-${rt.key}-${i}`, 'burst');
      if (ms !== undefined) results.add('burst', rt.key, ms);
      // runc per container against tshim with one daemon for the namespace (src/common/group.ts)
      if (ms !== undefined && rt.key === 'runc') results.add('burstNs', rt.key, ms);
    }
    const tshim = /** @type {Runtime} */ (RUNTIMES.find((r) => r.key === 'tshim'));
    const ns = await burstOnce(ctx, { ...tshim, extraArgs: ['--runtime-config-path', config] }, `burstns-${i}`, 'burstNs');
    if (ns !== undefined) results.add('burstNs', 'tshim', ns);
  }
}

/**
 * One burst of `opts.burst` concurrent `ctr run -d`; the wall time until all are RUNNING, or
 * undefined (recorded as a failure of `row`).
 * @param {Ctx} ctx
 * @param {Runtime} rt
 * @param {string} prefix
 * @param {string} row
 * @returns {Promise<number | undefined>}
 */
async function burstOnce(ctx, rt, prefix, row) {
  const { cd, image, opts, results } = ctx;
  checkCanContinue(cd);
  await prepareSpare(ctx, false, row);
  const ids = Array.from({ length: opts.burst }, (_, j) => `${prefix}-${j}`);
  try {
    const t0 = performance.now();
    const runs = await Promise.all(
      ids.map((id) => cd.ctrUnchecked(['run', '-d', '--runtime', rt.runtime, ...(rt.extraArgs ?? []), image, id, 'sleep', LONG_SLEEP], 120_000)),
    );
    const ms = performance.now() - t0;
    const failed = runs.filter((r) => r.code !== 0);
    if (failed.length > 0) throw new Error(`${failed.length}/${ids.length} ctr run -d failed, first: ${failed[0]?.stderr.trim()}`);
    const listed = (await cd.ctr(['tasks', 'ls'])).stdout.toString('utf8');
    const notRunning = ids.filter((id) => !new RegExp(`^${id}\\s+\\d+\\s+RUNNING`, 'm').test(listed));
    if (notRunning.length > 0) throw new Error(`${notRunning.length} tasks not RUNNING after the burst: ${notRunning.join(' ')}`);
    return ms;
  } catch (err) {
    results.fail(row, rt.key, err);
    return undefined;
  } finally {
    await removeContainers(cd, ids);
  }
}

/**
 * A runtime config file with ShimGroup = "namespace", passed to ctr as an operator would.
 * @param {Containerd} cd
 */
function namespaceGroupConfig(cd) {
  const config = path.join(cd.dir, 'tshim-namespace-group.toml');
  fs.writeFileSync(config, 'ShimGroup = "namespace"\n');
  return config;
}

/**
 * IO: `dd if=/dev/zero bs=1M count=M` as the container's stdout, ctr's stdout at /dev/null,
 * through FIFOs (plain `ctr run`) and through a TTY (`ctr run -t` under script(1), which gives
 * ctr the terminal it insists on; script's own output is /dev/null too). The rate is timed inside
 * the container (lib/io.js); GNU time records ctr's CPU, to show whether ctr (the same client for
 * both) was the bottleneck.
 * @param {Ctx} ctx
 */
async function benchIo(ctx) {
  const { cd, image, opts, results } = ctx;
  for (let i = 0; i < opts.ioSamples; i++) {
    for (const tty of [false, true]) {
      const row = tty ? 'ioTty' : 'ioFifo';
      const mib = tty ? opts.ioTtyMiB : opts.ioMiB;
      const bytes = mib * 1024 * 1024;
      // 2 MB/s would be broken; the timeout only guards the run.
      const timeoutMs = 60_000 + (bytes / 2e6) * 1000;
      for (const rt of orderFor(i)) {
        checkCanContinue(cd);
        await prepareSpare(ctx, false, row);
        const id = `io-${rt.key}-${i}${tty ? 't' : 'f'}`;
        const out = path.join(cd.dir, 'io', id);
        fs.mkdirSync(out, { recursive: true });
        const script = `cat /proc/uptime >/out/t0; dd if=/dev/zero bs=1048576 count=${mib} 2>/out/dd; cat /proc/uptime >/out/t1`;
        const ctrArgs = ['--address', cd.address, '--namespace', cd.namespace, 'run', '--rm', ...(tty ? ['-t'] : []),
          '--runtime', rt.runtime, '--mount', `type=bind,src=${out},dst=/out,options=rbind:rw`, image, id, 'sh', '-c', script];
        const timeArgs = ['-f', '%U %S %e', '-o', path.join(out, 'time'), '/usr/bin/ctr', ...ctrArgs];
        const shimCpu = watchShimCpu(cd, id);
        try {
          const r = tty
            ? await runToNull('/usr/bin/script', ['-qfec', ['/usr/bin/time', ...timeArgs].map(shQuote).join(' '), '/dev/null'], { timeoutMs })
            : await runToNull('/usr/bin/time', timeArgs, { timeoutMs });
          if (r.code !== 0) throw new Error(`ctr run exited ${r.code}: ${r.stderr.trim()}`);
          const read = (/** @type {string} */ f) => fs.readFileSync(path.join(out, f), 'utf8');
          const rate = ioRate(bytes, read('t0'), read('t1'));
          const ctr = parseTimeOutput(read('time'));
          results.add(row, rt.key, rate.mbps);
          results.add(`${row}CtrCpu`, rt.key, ctr.cpu);
          const shim = shimCpu.stop();
          if (shim !== undefined) results.add(`${row}ShimCpu`, rt.key, shim);
          else results.note(`${row} ${rt.key}: the shim daemon of ${id} was not found, no shim CPU`);
          ioRaw.push({ row, runtime: rt.key, mbps: rate.mbps, ddSeconds: rate.seconds, ctrCpuSeconds: ctr.cpu, ctrWallSeconds: ctr.wall, shimCpuSeconds: shim ?? null, wallMs: r.ms });
        } catch (err) {
          results.fail(row, rt.key, err);
          await removeContainers(cd, [id]);
        } finally {
          shimCpu.stop();
          fs.rmSync(out, { recursive: true, force: true });
        }
      }
    }
  }
}
/**
 * Follows the CPU time of the shim daemon serving container `id` (found by its argv: `-id ID` and
 * our private address; an adopted spare shows both in its title) while an IO sample runs: polled
 * every 100 ms, the last reading before the daemon exits is kept, so at most 0.1 s of its
 * teardown is missed. CPU the daemon spent before the container started (a spare's loading) is
 * subtracted by taking the first reading as the base.
 * @param {Containerd} cd
 * @param {string} id
 * @returns {{ stop: () => number | undefined }}
 */
function watchShimCpu(cd, id) {
  let stopped = false;
  /** @type {number | undefined} */ let pid;
  /** @type {number | undefined} */ let base;
  /** @type {number | undefined} */ let last;
  const tick = () => {
    if (stopped) return;
    if (pid === undefined) {
      const found = processesMatching((a) => {
        const at = a.indexOf('-address');
        const last = a[a.length - 1];
        return at >= 0 && a[at + 1] === cd.address && a[a.indexOf('-id') + 1] === id && last !== 'start' && last !== 'delete';
      });
      pid = found[0]?.pid;
      if (pid !== undefined) base = cpuSecondsOf(pid);
    } else {
      const now = cpuSecondsOf(pid);
      if (now !== undefined) last = now;
    }
    timer = setTimeout(tick, 100);
  };
  /** @type {NodeJS.Timeout} */
  let timer = setTimeout(tick, 50);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      return base !== undefined && last !== undefined ? last - base : undefined;
    },
  };
}

/** @type {Record<string, unknown>[]} per IO sample: dd seconds, ctr CPU and wall, for the JSON */
const ioRaw = [];

const MiBof = (/** @type {number | undefined} */ kib) => (kib === undefined ? undefined : kib / MiB);

/**
 * Memory of every shim daemon of one runtime for this containerd: PSS, Private_Dirty, RSS in MiB.
 * @param {Ctx} ctx
 * @param {Runtime} rt
 * @param {number} expected daemons that should be there (noted when different)
 * @param {string} what
 */
function shimMemory({ cd, results }, rt, expected, what) {
  const shims = sampleShimMemory(rt.program, cd.address, cd.namespace);
  const name = rt.form?.key ?? rt.key;
  if (shims.length !== expected) results.note(`${what} ${name}: found ${shims.length} shim daemons, expected ${expected}`);
  if (shims.some((m) => m.pssKiB === undefined || m.privateDirtyKiB === undefined)) results.note(`${what} ${name}: smaps_rollup unreadable for some daemon`);
  const sum = (/** @type {(m: import('./lib/memory').ShimMemory) => number | undefined} */ f) => shims.reduce((s, m) => s + (f(m) ?? 0), 0) / MiB;
  return { shims, pss: sum((m) => m.pssKiB), pd: sum((m) => m.privateDirtyKiB), rss: sum((m) => m.rssKiB) };
}

/**
 * Starts `ids` detached with `runtime` (and annotations), a few at once, untimed; returns the
 * ones that started.
 * @param {Ctx} ctx
 * @param {Runtime} rt
 * @param {{ id: string, annotations: string[] }[]} specs
 * @param {string} row for failures
 */
async function startMany({ cd, image, results }, rt, specs, row) {
  /** @type {string[]} */
  const ok = [];
  await pool(specs, 4, async ({ id, annotations }) => {
    try {
      const args = ['run', '-d', '--runtime', rt.runtime, ...(rt.extraArgs ?? []), ...annotations.flatMap((a) => ['--annotation', a])];
      await cd.ctr([...args, image, id, 'sleep', LONG_SLEEP], 120_000);
      ok.push(id);
    } catch (err) {
      results.fail(row, rt.key, err);
    }
  });
  return ok;
}

/**
 * K detached containers per runtime, each with its own shim (latency row `ctr run -d (own shim)`,
 * spare ready before each), both runtimes' sets running at once; after a settle delay every daemon
 * is measured (Private_Dirty, PSS, RSS from smaps_rollup / status), and so are the idle spare and
 * an idle `node` process as the floor.
 * @param {Ctx} ctx
 */
async function benchMemoryOwn(ctx) {
  const { cd, image, opts, results } = ctx;
  /** @type {string[]} */
  const created = [];
  /** @type {Map<Runtime, number>} */
  const running = new Map();
  try {
    for (let j = 0; j < opts.containers; j++) {
      for (const rt of orderWithForms(j)) {
        checkCanContinue(cd);
        await prepareSpare(ctx, false, rowOf('runDetached', rt));
        const id = `mem-${rt.form?.key ?? rt.key}-${j}`;
        created.push(id);
        try {
          const r = await cd.ctr(['run', '-d', '--runtime', rt.runtime, image, id, 'sleep', LONG_SLEEP]);
          addWithForms(results, rowOf('runDetached', rt), rt, r.ms);
          running.set(rt, (running.get(rt) ?? 0) + 1);
        } catch (err) {
          results.fail(rowOf('runDetached', rt), rt.key, err);
        }
      }
    }
    // Sampling right after the last start would catch tshim mid-allocation (and before the
    // first GC); the delay lets both settle into their steady state.
    await prepareSpare(ctx, false, 'memory');
    await delay(opts.settleMs);
    for (const [rt, n] of running) {
      const m = shimMemory(ctx, rt, n, 'own shims');
      for (const s of m.shims) {
        if (s.privateDirtyKiB !== undefined) addWithForms(results, rowOf('pdOne', rt), rt, s.privateDirtyKiB / MiB);
        if (s.pssKiB !== undefined) addWithForms(results, rowOf('pssOne', rt), rt, s.pssKiB / MiB);
        addWithForms(results, rowOf('rssOne', rt), rt, s.rssKiB / MiB);
      }
      if (!rt.form) results.add('pssTotal', rt.key, m.pss);
    }
    await measureSpareAndFloor(ctx);
  } finally {
    await removeContainers(cd, created);
  }
}

/**
 * The idle spare tshim keeps per containerd (a cost runc does not have, hence no runc value), and
 * an idle `node` process: the floor every Node daemon starts from.
 * @param {Ctx} ctx
 */
async function measureSpareAndFloor({ cd, results }) {
  const spares = idleSpares(cd.address, TSHIM_BIN);
  const spare = spares[0] && memoryOf(spares[0].pid);
  if (spare?.privateDirtyKiB !== undefined) results.add('sparePd', 'tshim', spare.privateDirtyKiB / MiB);
  if (spare?.pssKiB !== undefined) results.add('sparePss', 'tshim', spare.pssKiB / MiB);
  if (!spare && !spareOff) results.note('no idle spare found to measure');
  const { spawn } = require('node:child_process');
  // Measured once it has run its first line (a fixed delay measured it half-started under load).
  const child = spawn(process.execPath, ['-e', 'process.stdout.write("r"); setInterval(() => {}, 1e6)'], { stdio: ['ignore', 'pipe', 'ignore'], env: cd.env });
  try {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 15_000);
      child.stdout?.once('data', () => {
        clearTimeout(timer);
        resolve(undefined);
      });
    });
    await delay(300);
    const m = child.pid === undefined ? undefined : memoryOf(child.pid);
    if (m?.privateDirtyKiB !== undefined) results.add('nodePd', 'tshim', m.privateDirtyKiB / MiB);
  } finally {
    child.kill('SIGKILL');
    if (child.pid !== undefined) await waitGoneOrKill(child.pid, 5_000);
  }
}

/**
 * One grouped shim per runtime (`io.containerd.runc.v2.group`, which both shims implement): its
 * memory with 1 container, then with G; the marginal Private_Dirty per extra container is
 * (PD(G) - PD(1)) / (G - 1). The latency row times the G - 1 starts that found the shim running.
 * @param {Ctx} ctx
 */
async function benchMemoryGrouped(ctx) {
  const { cd, image, opts, results } = ctx;
  /** @type {string[]} */
  const created = [];
  /** @type {Record<RuntimeKey, number>} */
  const running = { runc: 0, tshim: 0 };
  /** @type {Record<RuntimeKey, number | undefined>} */
  const pd1 = { runc: undefined, tshim: undefined };
  try {
    for (let j = 0; j < opts.grouped; j++) {
      for (const rt of orderFor(j)) {
        checkCanContinue(cd);
        await prepareSpare(ctx, false, 'runGrouped');
        const id = `grp-${rt.key}-${j}`;
        created.push(id);
        try {
          const r = await cd.ctr(['run', '-d', '--runtime', rt.runtime, '--annotation', `${GROUP_ANNOTATION}=bench-${rt.key}`, image, id, 'sleep', LONG_SLEEP]);
          if (j > 0) results.add('runGrouped', rt.key, r.ms);
          running[rt.key]++;
        } catch (err) {
          results.fail('runGrouped', rt.key, err);
        }
      }
      if (j === 0) {
        await prepareSpare(ctx, false, 'memory');
        await delay(opts.settleMs);
        for (const rt of RUNTIMES) if (running[rt.key] === 1) pd1[rt.key] = shimMemory(ctx, rt, 1, 'grouped (1)').pd;
      }
    }
    await prepareSpare(ctx, false, 'memory');
    await delay(opts.settleMs);
    for (const rt of RUNTIMES) {
      const n = running[rt.key];
      if (n === 0) continue;
      const m = shimMemory(ctx, rt, 1, `grouped (${n})`);
      results.add('pdGrouped', rt.key, m.pd);
      results.add('pssGrouped', rt.key, m.pss);
      const one = pd1[rt.key];
      if (one !== undefined) {
        results.add('pdGrouped1', rt.key, one);
        if (n > 1) results.add('pdMarginal', rt.key, (m.pd - one) / (n - 1));
      }
    }
  } finally {
    await removeContainers(cd, created);
  }
}

/**
 * P pods x 2 containers per runtime, one group annotation per pod (so one shim per pod, as CRI
 * makes it), both runtimes at once; total PSS and Private_Dirty of all their shims.
 * @param {Ctx} ctx
 */
async function benchPods(ctx) {
  const { cd, opts, results } = ctx;
  /** @type {string[]} */
  const created = [];
  try {
    for (const rt of RUNTIMES) {
      const specs = [];
      for (let p = 0; p < opts.pods; p++) {
        for (let c = 0; c < 2; c++) specs.push({ id: `pod-${rt.key}-${p}-${c}`, annotations: [`${GROUP_ANNOTATION}=pod-${rt.key}-${p}`] });
      }
      created.push(...specs.map((s) => s.id));
      // The two containers of a pod one after the other: the second must find the pod's shim.
      const first = await startMany(ctx, rt, specs.filter((_, k) => k % 2 === 0), 'podsPss');
      const second = await startMany(ctx, rt, specs.filter((_, k) => k % 2 === 1), 'podsPss');
      if (first.length + second.length !== specs.length) results.note(`pods ${rt.key}: ${first.length + second.length}/${specs.length} containers started`);
    }
    await prepareSpare(ctx, false, 'memory');
    await delay(opts.settleMs);
    for (const rt of RUNTIMES) {
      const m = shimMemory(ctx, rt, opts.pods, 'pods');
      results.add('podsPss', rt.key, m.pss);
      results.add('podsPd', rt.key, m.pd);
      if (rt.key === 'runc') {
        results.add('podsPssNs', rt.key, m.pss);
        results.add('podsPdNs', rt.key, m.pd);
      }
    }
  } finally {
    await removeContainers(cd, created);
  }
  await benchPodsNamespacePolicy(ctx);
}

/**
 * The same pods for tshim alone under ShimGroup = namespace (src/common/group.ts), set through a
 * runtime config file as an operator would: every container of the namespace in one daemon. Its
 * runc side is the per-pod figure of the same run.
 * @param {Ctx} ctx
 */
async function benchPodsNamespacePolicy(ctx) {
  const { cd, opts, results } = ctx;
  const rt = /** @type {Runtime} */ (RUNTIMES.find((r) => r.key === 'tshim'));
  const config = namespaceGroupConfig(cd);
  const specs = [];
  for (let p = 0; p < opts.pods; p++) {
    for (let c = 0; c < 2; c++) specs.push({ id: `nspod-${p}-${c}`, annotations: [`${GROUP_ANNOTATION}=nspod-${p}`] });
  }
  try {
    const started = await startMany(ctx, { ...rt, extraArgs: ['--runtime-config-path', config] }, specs, 'podsPssNs');
    if (started.length !== specs.length) results.note(`pods (namespace policy): ${started.length}/${specs.length} containers started`);
    await prepareSpare(ctx, false, 'memory');
    await delay(opts.settleMs);
    const m = shimMemory(ctx, rt, 1, 'pods (namespace policy)');
    results.add('podsPssNs', rt.key, m.pss);
    results.add('podsPdNs', rt.key, m.pd);
  } finally {
    await removeContainers(cd, specs.map((s) => s.id));
  }
}

/**
 * Rows 13 and 14, on a CRI-enabled containerd of their own (the CRI plugin would tax every other
 * row): CRI handler `tshim` vs handler `runc`, interleaved like the rest. criPod times one pod's
 * whole life: RunPodSandbox, CreateContainer + StartContainer (`sleep`), StopPodSandbox,
 * RemovePodSandbox. criContainer times CreateContainer + StartContainer + StopContainer (timeout
 * 0: SIGKILL) + RemoveContainer in a pod per handler that stays up for the phase.
 * @param {Options} opts
 * @param {Results} results
 * @param {(text: string) => void} step
 */
async function benchCri(opts, results, step) {
  const setup = await prepareCri(REPO_ROOT, `docker.io/tshim/bench:${PAUSE_VARIANT.tag}`);
  /** @type {Containerd | undefined} */
  let cd;
  /** @type {CriClient | undefined} */
  let cri;
  try {
    cd = await startContainerd(REPO_ROOT, { cri: setup.config });
    const image = await importBenchImage(cd);
    await importBenchImage(cd, PAUSE_VARIANT);
    cri = new CriClient(REPO_ROOT, cd.address);
    await cri.waitReady();
    await cri.waitImage(image);
    await cri.waitImage(`docker.io/tshim/bench:${PAUSE_VARIANT.tag}`);
    const c = cri;
    /** @type {Ctx} */
    const ctx = { cd, image, opts, results };
    const logDir = path.join(cd.dir, 'pod-logs');
    const sleeper = (/** @type {string} */ name) => containerConfig(name, image, ['sleep', LONG_SLEEP]);
    const total = opts.warmup + opts.iterations;

    step(`CRI pod lifecycle (${opts.iterations} timed + ${opts.warmup} warm-up rounds per handler)`);
    for (let i = 0; i < total; i++) {
      for (const rt of orderFor(i)) {
        checkCanContinue(cd);
        const config = podConfig(`pod-${rt.key}-${i}`, logDir);
        /** @type {string | undefined} */
        let podId;
        await prepareSpare(ctx, false, 'criPod');
        const t0 = performance.now();
        try {
          podId = (await c.call('RuntimeService/RunPodSandbox', { config, runtimeHandler: rt.key })).podSandboxId;
          if (i >= opts.warmup) results.add('criRunPod', rt.key, performance.now() - t0);
          const id = (await c.call('RuntimeService/CreateContainer', { podSandboxId: podId, config: sleeper('main'), sandboxConfig: config })).containerId;
          await c.call('RuntimeService/StartContainer', { containerId: id });
          await c.call('RuntimeService/StopPodSandbox', { podSandboxId: podId });
          await c.call('RuntimeService/RemovePodSandbox', { podSandboxId: podId });
          if (i >= opts.warmup) results.add('criPod', rt.key, performance.now() - t0);
        } catch (err) {
          if (i >= opts.warmup) results.fail('criPod', rt.key, err);
          if (podId) await removePodQuietly(c, podId);
        }
      }
    }

    step(`CRI container lifecycle in a running pod (${opts.iterations} timed + ${opts.warmup} warm-up rounds per handler)`);
    /** @type {Map<RuntimeKey, { id: string, config: Record<string, unknown> }>} */
    const pods = new Map();
    try {
      for (const rt of RUNTIMES) {
        const config = podConfig(`ctr-${rt.key}`, logDir);
        try {
          pods.set(rt.key, { id: (await c.call('RuntimeService/RunPodSandbox', { config, runtimeHandler: rt.key })).podSandboxId, config });
        } catch (err) {
          results.fail('criContainer', rt.key, err);
        }
      }
      for (let i = 0; i < total; i++) {
        for (const rt of orderFor(i)) {
          checkCanContinue(cd);
          const pod = pods.get(rt.key);
          if (!pod) continue;
          await prepareSpare(ctx, false, 'criContainer');
          const t0 = performance.now();
          try {
            const id = (await c.call('RuntimeService/CreateContainer', { podSandboxId: pod.id, config: sleeper(`c${i}`), sandboxConfig: pod.config })).containerId;
            await c.call('RuntimeService/StartContainer', { containerId: id });
            const t1 = performance.now();
            await c.call('RuntimeService/StopContainer', { containerId: id, timeout: 0 });
            const t2 = performance.now();
            await c.call('RuntimeService/RemoveContainer', { containerId: id });
            if (i >= opts.warmup) {
              results.add('criContainer', rt.key, performance.now() - t0);
              results.add('criCtrStart', rt.key, t1 - t0);
              results.add('criCtrStop', rt.key, t2 - t1);
            }
          } catch (err) {
            if (i >= opts.warmup) results.fail('criContainer', rt.key, err);
          }
        }
      }
    } finally {
      for (const pod of pods.values()) await removePodQuietly(c, pod.id);
    }
  } finally {
    if (cri) {
      // Whatever a failed sample left: every pod goes before containerd does.
      try {
        const left = /** @type {{ id: string }[]} */ ((await cri.call('RuntimeService/ListPodSandbox', {})).items ?? []);
        for (const pod of left) await removePodQuietly(cri, pod.id);
      } catch (err) {
        results.note(`CRI teardown: ${err instanceof Error ? err.message : String(err)}`);
      }
      cri.close();
    }
    if (cd) for (const problem of await cd.stop()) results.note(`CRI teardown: ${problem}`);
    for (const problem of await setup.cleanup()) results.note(`CRI teardown: ${problem}`);
  }
}

/**
 * @param {CriClient} cri
 * @param {string} podId
 */
async function removePodQuietly(cri, podId) {
  await cri.call('RuntimeService/StopPodSandbox', { podSandboxId: podId }).catch(() => undefined);
  await cri.call('RuntimeService/RemovePodSandbox', { podSandboxId: podId }).catch(() => undefined);
}

/** @returns {Promise<Record<string, string | number>>} */
async function environment() {
  const firstLine = async (/** @type {string} */ cmd, /** @type {string[]} */ args) => {
    const r = await runTimed(cmd, args, { timeoutMs: 10_000 }).catch(() => undefined);
    return r?.stdout.toString('utf8').split('\n')[0]?.trim() ?? 'unknown';
  };
  let revision = 'unknown';
  try {
    revision = fs.readFileSync(path.join(REPO_ROOT, 'dist', 'revision.txt'), 'utf8').trim();
  } catch {
    // an unstamped build still benchmarks fine
  }
  return {
    tshimRevision: revision,
    containerd: await firstLine('/usr/bin/containerd', ['--version']),
    runc: await firstLine('/usr/bin/runc', ['--version']),
    node: process.version,
    kernel: os.release(),
    cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
    memoryMiB: Math.round(os.totalmem() / 1024 / 1024),
  };
}

async function main() {
  /** @type {Options} */
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2), path.join(REPO_ROOT, 'bench', 'results.json'));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  try {
    preflight();
  } catch (err) {
    process.stderr.write(`cannot run the benchmark: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    progress('interrupted: cleaning up (interrupt again to abandon the cleanup)');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const results = new Results(rowsFor(opts));
  const env = await environment();
  const startedAt = new Date();
  const loadBefore = os.loadavg();
  progress(`starting a private containerd${opts.quick ? ' (--quick)' : ''}`);
  const cd = await startContainerd(REPO_ROOT);
  /** @type {unknown} */
  let fatal;
  const phases = 1 + ['direct', 'runrm', 'exec', 'burst', 'io', 'memory', 'memory', 'pods', 'cri', 'cri']
    .filter((p) => opts.only.includes(p) && !(p === 'io' && opts.noIo) && !(p === 'cri' && opts.noCri)).length;
  let phase = 0;
  const step = (/** @type {string} */ text) => progress(`${++phase}/${phases} ${text} [${Math.round((Date.now() - startedAt.getTime()) / 1000)} s]`);
  try {
    const image = await importBenchImage(cd);
    const ctx = { cd, image, opts, results };
    const n = `${opts.iterations} timed + ${opts.warmup} warm-up rounds per runtime`;
    const on = (/** @type {string} */ p) => opts.only.includes(p);
    /** @type {[string, string, () => Promise<void>][]} */
    const plan = [
      ['direct', `shim start (spare ready / none) + delete, direct, node -e 0 floor (${n})`, () => benchDirect(ctx)],
      ['runrm', `ctr run --rm, spare ready / none (${n})`, () => benchRunRm(ctx)],
      ['exec', `ctr task exec (${n})`, () => benchExec(ctx)],
      ['burst', `burst: ${opts.burstRounds} x ${opts.burst} concurrent ctr run -d per runtime`, () => benchBurst(ctx)],
      ['io', `IO: ${opts.ioMiB} MiB FIFO / ${opts.ioTtyMiB} MiB TTY through stdout, ${opts.ioSamples} samples per runtime and mode`, () => benchIo(ctx)],
      ['memory', `memory, ${opts.containers} containers per runtime, one shim each`, () => benchMemoryOwn(ctx)],
      ['memory', `memory, one grouped shim per runtime, 1 then ${opts.grouped} containers`, () => benchMemoryGrouped(ctx)],
      ['pods', `memory, ${opts.pods} pods x 2 containers per runtime`, () => benchPods(ctx)],
    ];
    for (const [name, text, run] of plan) {
      if (name === 'io' && opts.noIo) continue;
      if (!on(name)) continue;
      step(text);
      await run();
    }
  } catch (err) {
    fatal = err;
  } finally {
    step('tearing down');
    for (const problem of await cd.stop()) results.note(`teardown: ${problem}`);
  }
  if (fatal === undefined && !opts.noCri && opts.only.includes('cri')) {
    try {
      progress('starting a CRI-enabled private containerd');
      await benchCri(opts, results, step);
    } catch (err) {
      fatal = err;
    }
  }

  const seconds = (Date.now() - startedAt.getTime()) / 1000;
  const targets = evaluateTargets(TARGETS, (id) => results.medians(id));
  const { out, json, help, ...parameters } = opts;
  const meta = {
    startedAt: startedAt.toISOString(),
    durationSeconds: Math.round(seconds),
    parameters,
    runtimes: [...RUNTIMES, ...FORMS].map(({ key, runtime, binary, form }) => ({ key, runtime, binary, ...(form ? { form: form.key } : {}) })),
    environment: { ...env, loadavgBefore: loadBefore, loadavgAfter: os.loadavg(), tshimSpare: spareOff ? 'off (TSHIM_SPARE)' : 'on' },
    aborted: fatal === undefined ? null : fatal instanceof Error ? fatal.message : String(fatal),
    targets,
    ioSamples: ioRaw,
  };
  const document = results.toJSON(meta);
  if (out !== '') {
    const file = path.resolve(out);
    fs.writeFileSync(file, `${JSON.stringify(document, null, 2)}\n`);
    progress(`wrote ${file}`);
  }
  if (fatal !== undefined) {
    process.stderr.write(`benchmark aborted: ${fatal instanceof Error ? fatal.message : String(fatal)}\n`);
    for (const note of results.notes) process.stderr.write(`  ${note}\n`);
    return interrupted ? 130 : 1;
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
  } else {
    const load = (/** @type {number[]} */ l) => l.map((x) => x.toFixed(1)).join(' ');
    process.stdout.write(results.toTable([
      `tshim (${env.tshimRevision}) vs containerd-shim-runc-v2, ${env.containerd}, ${env.runc}`,
      `N=${opts.iterations} interleaved samples (+${opts.warmup} warm-up), K=${opts.containers}, G=${opts.grouped}, ` +
        `burst ${opts.burstRounds}x${opts.burst}, ${opts.pods} pods, IO ${opts.ioSamples}x ${opts.ioMiB} MiB FIFO / ${opts.ioTtyMiB} MiB TTY; ` +
        `${env.cpus}, kernel ${env.kernel}, node ${env.node}; ${Math.round(seconds)} s; load ${load(loadBefore)} -> ${load(os.loadavg())}`,
    ]));
    process.stdout.write(['issue #7 targets (medians of this run):', ...targetLines(targets), ''].join('\n'));
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);

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
const { delay, runTimed } = require('./lib/proc');
const { Results } = require('./lib/results');
const { parseArgs, UsageError, USAGE } = require('./lib/options');

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
 * @property {string} shimName
 */

/** @type {readonly Runtime[]} */
const RUNTIMES = [
  { key: 'runc', runtime: 'io.containerd.runc.v2', binary: '/usr/bin/containerd-shim-runc-v2', shimName: 'containerd-shim-runc-v2' },
  { key: 'tshim', runtime: 'io.containerd.tshim.v2', binary: path.join(REPO_ROOT, 'bin', 'containerd-shim-tshim-v2'), shimName: 'containerd-shim-tshim-v2' },
];

/**
 * ABBA order: iteration i runs runc first when i is even, tshim first when odd, so neither
 * always benefits from going second (warm page cache, a just-finished GC in containerd).
 * @param {number} i
 * @returns {readonly Runtime[]}
 */
const orderFor = (i) => (i % 2 === 0 ? RUNTIMES : [...RUNTIMES].reverse());

/** Fails early, with the fix, instead of half-way through a run. */
function preflight() {
  if (process.getuid?.() !== 0) throw new Error('must run as root (containerd, runc, mounts)');
  for (const file of ['/usr/bin/containerd', '/usr/bin/ctr', '/usr/bin/runc', ...RUNTIMES.map((r) => r.binary)]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing`);
  }
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
}

/** @type {readonly import('./lib/results').RowSpec[]} */
const ROWS = [
  { id: 'start', label: 'shim start (direct)', unit: 'ms', kind: 'samples' },
  { id: 'delete', label: 'shim delete (direct)', unit: 'ms', kind: 'samples' },
  { id: 'runRm', label: 'ctr run --rm ... true', unit: 'ms', kind: 'samples' },
  { id: 'exec', label: 'ctr task exec ... true', unit: 'ms', kind: 'samples' },
  { id: 'runDetached', label: 'ctr run -d (own shim)', unit: 'ms', kind: 'samples' },
  { id: 'runGrouped', label: 'ctr run -d (shared shim)', unit: 'ms', kind: 'samples' },
  { id: 'rss', label: 'RSS per container, own shim', unit: 'MiB', kind: 'samples' },
  { id: 'pss', label: 'PSS per container, own shim', unit: 'MiB', kind: 'samples' },
  { id: 'rssTotal', label: 'RSS total, K containers', unit: 'MiB', kind: 'value' },
  { id: 'pssTotal', label: 'PSS total, K containers', unit: 'MiB', kind: 'value' },
  { id: 'rssGrouped', label: 'RSS per container, shared shim', unit: 'MiB', kind: 'value' },
  { id: 'pssGrouped', label: 'PSS per container, shared shim', unit: 'MiB', kind: 'value' },
  { id: 'criPod', label: 'CRI pod: run, create+start, stop, remove', unit: 'ms', kind: 'samples' },
  { id: 'criContainer', label: 'CRI container: create+start, stop, remove', unit: 'ms', kind: 'samples' },
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

/**
 * Row 1 and 2: the shim binary's own `start` and `delete`, with containerd only as the address.
 * @param {Ctx} ctx
 */
async function benchDirect({ cd, opts, results }) {
  const { TtrpcClient } = require(path.join(REPO_ROOT, 'dist', 'common', 'ttrpc', 'client.js'));
  const parent = path.join(cd.dir, 'direct');
  fs.mkdirSync(parent);
  const total = opts.warmup + opts.iterations;
  for (let i = 0; i < total; i++) {
    for (const rt of orderFor(i)) {
      checkCanContinue(cd);
      const timed = i >= opts.warmup;
      try {
        const r = await directCycle(
          { binary: rt.binary, namespace: cd.namespace, containerdAddress: cd.address, env: cd.env },
          parent,
          `direct-${rt.key}-${i}`,
          TtrpcClient,
        );
        for (const w of r.warnings) results.note(`direct ${rt.key}: ${w}`);
        if (timed) {
          results.add('start', rt.key, r.startMs);
          results.add('delete', rt.key, r.deleteMs);
        }
      } catch (err) {
        if (timed) results.fail(err instanceof StepError && err.step === 'delete' ? 'delete' : 'start', rt.key, err);
      }
    }
  }
}

/**
 * Force-removes containers (task first), ignoring the ones already gone, and waits until their
 * shims have exited so the next phase starts from an idle machine.
 * @param {Containerd} cd
 * @param {string[]} ids
 */
async function removeContainers(cd, ids) {
  for (const id of ids) {
    await cd.ctrUnchecked(['tasks', 'rm', '-f', id], 30_000);
    await cd.ctrUnchecked(['containers', 'rm', id], 30_000);
  }
  const deadline = Date.now() + 10_000;
  while (cd.shimProcesses().length > 0 && Date.now() < deadline) await delay(50);
}

/**
 * Row 3: create + start + wait + delete + shutdown through containerd, as one `ctr` call.
 * @param {Ctx} ctx
 */
async function benchRunRm({ cd, image, opts, results }) {
  const total = opts.warmup + opts.iterations;
  for (let i = 0; i < total; i++) {
    for (const rt of orderFor(i)) {
      checkCanContinue(cd);
      const id = `rm-${rt.key}-${i}`;
      try {
        const r = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, image, id, 'true']);
        if (i >= opts.warmup) results.add('runRm', rt.key, r.ms);
      } catch (err) {
        if (i >= opts.warmup) results.fail('runRm', rt.key, err);
        await removeContainers(cd, [id]);
      }
    }
  }
}

/**
 * Row 4: exec latency against one long-running container per runtime.
 * @param {Ctx} ctx
 */
async function benchExec({ cd, image, opts, results }) {
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
 * Rows 5–12: K detached containers per runtime, each with its own shim, or all K sharing one
 * shim through the grouping annotation. Both runtimes run at once (started interleaved) and are
 * sampled after a settle delay; the grouped and ungrouped sets never coexist, because PSS splits
 * shared pages between every process mapping them and would blur the two cases.
 * @param {Ctx} ctx
 * @param {boolean} grouped
 */
async function benchMemory({ cd, image, opts, results }, grouped) {
  /** @type {string[]} */
  const created = [];
  /** @type {Record<RuntimeKey, number>} */
  const runningCount = { runc: 0, tshim: 0 };
  const latencyRow = grouped ? 'runGrouped' : 'runDetached';
  try {
    for (let j = 0; j < opts.containers; j++) {
      for (const rt of orderFor(j)) {
        checkCanContinue(cd);
        const id = `${grouped ? 'grp' : 'mem'}-${rt.key}-${j}`;
        const annotation = grouped ? ['--annotation', `${GROUP_ANNOTATION}=bench-${rt.key}`] : [];
        created.push(id);
        try {
          const r = await cd.ctr(['run', '-d', '--runtime', rt.runtime, ...annotation, image, id, 'sleep', LONG_SLEEP]);
          results.add(latencyRow, rt.key, r.ms);
          runningCount[rt.key]++;
        } catch (err) {
          results.fail(latencyRow, rt.key, err);
        }
      }
    }
    // Sampling right after the last start would catch tshim mid-allocation (and before the
    // first GC); the delay lets both settle into their steady state.
    await delay(opts.settleMs);
    for (const rt of RUNTIMES) {
      const n = runningCount[rt.key];
      if (n === 0) continue;
      const shims = sampleShimMemory(rt.shimName, cd.address, cd.namespace);
      const expected = grouped ? 1 : n;
      if (shims.length !== expected) {
        results.note(`${grouped ? 'grouped' : 'ungrouped'} ${rt.key}: found ${shims.length} shim daemons for ${n} containers, expected ${expected}`);
      }
      const rss = shims.reduce((s, m) => s + m.rssKiB, 0) / MiB;
      const pssKnown = shims.every((m) => m.pssKiB !== undefined);
      const pss = shims.reduce((s, m) => s + (m.pssKiB ?? 0), 0) / MiB;
      if (grouped) {
        results.add('rssGrouped', rt.key, rss / n);
        if (pssKnown) results.add('pssGrouped', rt.key, pss / n);
      } else {
        for (const m of shims) {
          results.add('rss', rt.key, m.rssKiB / MiB);
          if (m.pssKiB !== undefined) results.add('pss', rt.key, m.pssKiB / MiB);
        }
        results.add('rssTotal', rt.key, rss);
        if (pssKnown) results.add('pssTotal', rt.key, pss);
      }
      if (!pssKnown) results.note(`${rt.key}: /proc/<pid>/smaps_rollup unreadable, PSS rows left empty`);
    }
  } finally {
    await removeContainers(cd, created);
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
 */
async function benchCri(opts, results) {
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
    const logDir = path.join(cd.dir, 'pod-logs');
    const sleeper = (/** @type {string} */ name) => containerConfig(name, image, ['sleep', LONG_SLEEP]);
    const total = opts.warmup + opts.iterations;

    progress(`6/7 CRI pod lifecycle (${opts.iterations} timed + ${opts.warmup} warm-up rounds per handler)`);
    for (let i = 0; i < total; i++) {
      for (const rt of orderFor(i)) {
        checkCanContinue(cd);
        const config = podConfig(`pod-${rt.key}-${i}`, logDir);
        const t0 = performance.now();
        /** @type {string | undefined} */
        let podId;
        try {
          podId = (await c.call('RuntimeService/RunPodSandbox', { config, runtimeHandler: rt.key })).podSandboxId;
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

    progress(`7/7 CRI container lifecycle in a running pod (${opts.iterations} timed + ${opts.warmup} warm-up rounds per handler)`);
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
          const t0 = performance.now();
          try {
            const id = (await c.call('RuntimeService/CreateContainer', { podSandboxId: pod.id, config: sleeper(`c${i}`), sandboxConfig: pod.config })).containerId;
            await c.call('RuntimeService/StartContainer', { containerId: id });
            await c.call('RuntimeService/StopContainer', { containerId: id, timeout: 0 });
            await c.call('RuntimeService/RemoveContainer', { containerId: id });
            if (i >= opts.warmup) results.add('criContainer', rt.key, performance.now() - t0);
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
    opts = parseArgs(process.argv.slice(2));
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

  const results = new Results(ROWS);
  const env = await environment();
  const startedAt = new Date();
  progress('starting a private containerd');
  const cd = await startContainerd(REPO_ROOT);
  /** @type {unknown} */
  let fatal;
  try {
    const image = await importBenchImage(cd);
    const ctx = { cd, image, opts, results };
    const n = `${opts.iterations} timed + ${opts.warmup} warm-up rounds per runtime`;
    progress(`1/7 shim start + delete, direct (${n})`);
    await benchDirect(ctx);
    progress(`2/7 ctr run --rm (${n})`);
    await benchRunRm(ctx);
    progress(`3/7 ctr task exec (${n})`);
    await benchExec(ctx);
    progress(`4/7 memory, ${opts.containers} containers per runtime, one shim each`);
    await benchMemory(ctx, false);
    progress(`5/7 memory, ${opts.containers} containers per runtime in one group`);
    await benchMemory(ctx, true);
  } catch (err) {
    fatal = err;
  } finally {
    progress('tearing down');
    for (const problem of await cd.stop()) results.note(`teardown: ${problem}`);
  }
  if (fatal === undefined && !opts.noCri) {
    try {
      progress('starting a CRI-enabled private containerd');
      await benchCri(opts, results);
    } catch (err) {
      fatal = err;
    }
  }
  if (fatal !== undefined) {
    process.stderr.write(`benchmark aborted: ${fatal instanceof Error ? fatal.message : String(fatal)}\n`);
    for (const note of results.notes) process.stderr.write(`  ${note}\n`);
    return interrupted ? 130 : 1;
  }

  const seconds = (Date.now() - startedAt.getTime()) / 1000;
  const meta = {
    startedAt: startedAt.toISOString(),
    durationSeconds: Math.round(seconds),
    iterations: opts.iterations,
    warmup: opts.warmup,
    containers: opts.containers,
    settleMs: opts.settleMs,
    runtimes: RUNTIMES.map(({ key, runtime, binary }) => ({ key, runtime, binary })),
    environment: env,
  };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(results.toJSON(meta), null, 2)}\n`);
  } else {
    process.stdout.write(results.toTable([
      `tshim (${env.tshimRevision}) vs containerd-shim-runc-v2, ${env.containerd}, ${env.runc}`,
      `N=${opts.iterations} interleaved samples (+${opts.warmup} warm-up), K=${opts.containers} containers; ` +
        `${env.cpus}, kernel ${env.kernel}, node ${env.node}; ${Math.round(seconds)} s`,
    ]));
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

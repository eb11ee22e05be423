/**
 * `npm run fuzz`: the long run. FUZZ_INPUTS (default 1,000,000) split over all targets by the
 * weights below, FUZZ_SEED (default 20261201) for the whole run. Prints per-target counts and
 * times, the live daemon's figures, and every finding with its target, input index and bytes.
 */
import { expect, it } from 'vitest';
import { liveDaemonTarget, type LiveStats } from './live';
import { runFuzz } from './runner';
import { inProcessTargets } from './targets';

const SEED = Number(process.env.FUZZ_SEED ?? 20261201);
const INPUTS = Number(process.env.FUZZ_INPUTS ?? 1_000_000);

/** Share of the inputs per target (sums to 1). */
const WEIGHTS: Record<string, number> = {
  'frame-decoder': 0.15,
  'ttrpc-server': 0.15,
  'ttrpc-client-replies': 0.05,
  envelopes: 0.1,
  'task-requests': 0.2,
  'runtime-options': 0.08,
  'options-toml': 0.05,
  'start-stdin': 0.07,
  'json-inputs': 0.05,
  'live-daemon': 0.1,
};

it(`fuzzes ${INPUTS} inputs with seed ${SEED}`, async () => {
  let live: LiveStats | undefined;
  const targets = [...inProcessTargets(), liveDaemonTarget((s) => (live = s))];
  const perTarget = Object.fromEntries(targets.map((t) => [t.name, Math.round(INPUTS * (WEIGHTS[t.name] ?? 0))]));
  console.log(`fuzz: seed ${SEED}, ${INPUTS} inputs`);
  const report = await runFuzz(targets, { seed: SEED, perTarget, maxFindings: 20, log: (l) => console.log(l) });
  console.log(`fuzz: ${report.inputs} inputs in ${(report.ms / 1000).toFixed(1)} s`);
  for (const [name, t] of Object.entries(report.perTarget)) if (t.extra) console.log(`  ${name}: ${JSON.stringify(t.extra)}`);
  if (live) console.log(`  live daemon ${live.pid}: fds ${live.fdsBefore} -> ${live.fdsAfter}, ${live.responses} responses, ${live.rawInputs} raw inputs`);
  for (const f of report.findings) console.log(`FINDING ${f.target} #${f.index}: ${f.message}\n  input: ${f.input?.slice(0, 2000) ?? ''}`);
  expect(report.findings).toEqual([]);
});

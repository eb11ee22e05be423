/**
 * The bounded fuzz run of the test suite: every target, a fixed seed, a few hundred inputs each
 * (`npm run fuzz` runs the same targets for 10^6 inputs). A finding prints the target, the input
 * index and its bytes; `FUZZ_SEED=<seed> npm run fuzz` replays a whole run.
 */
import { describe, expect, it } from 'vitest';
import { liveDaemonTarget, type LiveStats } from './live';
import { runFuzz } from './runner';
import { inProcessTargets } from './targets';

const SEED = Number(process.env.FUZZ_SEED ?? 20261201);

describe('fuzzing (bounded, seeded)', () => {
  it('in-process parsers: frames, server, client, envelopes, every Task request, options, TOML, start stdin, JSON', async () => {
    const targets = inProcessTargets();
    const perTarget = Object.fromEntries(targets.map((t) => [t.name, 250]));
    const report = await runFuzz(targets, { seed: SEED, perTarget });
    expect(report.findings).toEqual([]);
    expect(report.inputs).toBe(250 * targets.length);
  }, 180_000);

  it('a live daemon keeps serving, answers with the right codes and leaks no fds', async () => {
    let stats: LiveStats | undefined;
    const live = liveDaemonTarget((s) => (stats = s));
    const report = await runFuzz([live], { seed: SEED, perTarget: { 'live-daemon': 600 } });
    expect(report.findings).toEqual([]);
    expect(stats).toBeDefined();
    expect(stats!.fdsAfter).toBeGreaterThan(0);
    expect(stats!.fdsAfter).toBeLessThanOrEqual(stats!.fdsBefore + 2);
    // The hostile inputs were answered, with refusals among them: the run did exercise the parsers.
    expect(stats!.responses).toBeGreaterThan(500);
    expect(stats!.codes[3]).toBeGreaterThan(0);
    expect(stats!.codes[5]).toBeGreaterThan(0);
  }, 180_000);
});

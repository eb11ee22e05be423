/**
 * Drives fuzz targets: input i of target t gets its own Rng seeded from (seed, t, i), so a finding
 * replays exactly with `replay(target, seed, index)` whatever else ran before it.
 */
import { FuzzFinding, type FuzzTarget } from './targets';
import { Rng, inputSeed } from './gen';

export interface FuzzReport {
  seed: number;
  inputs: number;
  ms: number;
  perTarget: Record<string, { inputs: number; ms: number; extra?: Record<string, number> }>;
  findings: Array<{ target: string; index: number; message: string; input?: string }>;
}

export interface FuzzRunOptions {
  seed: number;
  /** inputs per target */
  perTarget: Record<string, number>;
  /** stop a target after this many findings (default 5) */
  maxFindings?: number;
  log?: (line: string) => void;
}

function targetSalt(name: string): number {
  let h = 2166136261;
  for (const c of name) h = Math.imul(h ^ c.charCodeAt(0), 16777619);
  return h >>> 0;
}

export function rngFor(target: string, seed: number, index: number): Rng {
  return new Rng(inputSeed((seed ^ targetSalt(target)) >>> 0, index));
}

export async function runFuzz(targets: FuzzTarget[], options: FuzzRunOptions): Promise<FuzzReport> {
  const report: FuzzReport = { seed: options.seed, inputs: 0, ms: 0, perTarget: {}, findings: [] };
  const started = Date.now();
  const stray: unknown[] = [];
  const onStray = (err: unknown): void => {
    stray.push(err);
  };
  process.on('unhandledRejection', onStray);
  process.on('uncaughtException', onStray);
  try {
    for (const target of targets) {
      const count = options.perTarget[target.name] ?? 0;
      if (count <= 0) continue;
      const t0 = Date.now();
      let found = 0;
      await target.setup?.();
      let i = 0;
      for (; i < count && found < (options.maxFindings ?? 5); i++) {
        try {
          await target.run(rngFor(target.name, options.seed, i));
        } catch (err) {
          found++;
          const f = err instanceof FuzzFinding ? err : new FuzzFinding(target.name, `harness error: ${(err as Error)?.stack ?? String(err)}`);
          report.findings.push({
            target: target.name,
            index: i,
            message: f.message,
            input: f.input === undefined ? undefined : Buffer.isBuffer(f.input) ? f.input.toString('hex') : JSON.stringify(f.input),
          });
        }
        for (const err of stray.splice(0)) {
          found++;
          report.findings.push({ target: target.name, index: i, message: `unhandled: ${(err as Error)?.stack ?? String(err)}` });
        }
      }
      try {
        await target.teardown?.();
      } catch (err) {
        const f = err instanceof FuzzFinding ? err : new FuzzFinding(target.name, `teardown: ${(err as Error)?.stack ?? String(err)}`);
        report.findings.push({ target: target.name, index: i, message: f.message });
      }
      report.inputs += i;
      report.perTarget[target.name] = { inputs: i, ms: Date.now() - t0, extra: target.stats?.() };
      options.log?.(`  ${target.name}: ${i} inputs in ${Date.now() - t0} ms${found ? `, ${found} findings` : ''}`);
    }
  } finally {
    process.off('unhandledRejection', onStray);
    process.off('uncaughtException', onStray);
  }
  report.ms = Date.now() - started;
  return report;
}

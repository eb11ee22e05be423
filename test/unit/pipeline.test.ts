/**
 * azure-pipelines.yml keeps its Linux job and has a windows-2022 job that runs the real HCS path:
 * Node 20, npm ci, build, the platform-neutral unit tests, containerd's release binaries, a
 * nanoserver:ltsc2022 pull, and a process-isolated run plus an exec through io.containerd.tshim.v2
 * with their output and exit codes checked. Parsed, not grepped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

interface Step {
  task?: string;
  script?: string;
  powershell?: string;
  displayName?: string;
  inputs?: Record<string, string>;
}
interface Job {
  job: string;
  pool: { vmImage: string };
  steps: Step[];
}

const doc = parse(fs.readFileSync(path.join(__dirname, '..', '..', 'azure-pipelines.yml'), 'utf8')) as { jobs: Job[]; variables: Record<string, string> };
const job = (image: string): Job => {
  const j = doc.jobs.find((x) => x.pool.vmImage === image);
  if (!j) throw new Error(`no job on ${image}`);
  return j;
};
const body = (s: Step): string => s.script ?? s.powershell ?? '';

describe('azure-pipelines.yml', () => {
  it('keeps the Linux job running .ci/run', () => {
    const linux = job('ubuntu-22.04');
    expect(linux.steps.some((s) => body(s).includes('.ci/run'))).toBe(true);
  });

  it('has a windows-2022 job: Node 20, npm ci, build, platform-neutral unit tests', () => {
    const win = job('windows-2022');
    const node = win.steps.find((s) => s.task?.startsWith('NodeTool'));
    expect(node?.inputs?.['versionSpec']).toBe('20.x');
    const scripts = win.steps.map(body);
    const at = (needle: string | RegExp): number => scripts.findIndex((s) => (typeof needle === 'string' ? s.includes(needle) : needle.test(s)));
    expect(at('npm ci')).toBeGreaterThan(-1);
    expect(at('npm run build')).toBeGreaterThan(at('npm ci'));
    const unit = scripts[at('vitest run')]!;
    expect(unit).toContain('test/unit/windows-schema.test.ts');
    expect(unit).toContain('test/unit/windows-hcs.test.ts');
    expect(unit).not.toMatch(/test\/e2e|test\/windows/);
    expect(at('vitest run')).toBeGreaterThan(at('npm run build'));
  });

  it('then runs real HCS: containerd release binaries, containerd started, nanoserver:ltsc2022 pulled, run + exec through tshim with output and exit codes checked', () => {
    const win = job('windows-2022');
    const scripts = win.steps.map(body);
    const at = (needle: string | RegExp): number => scripts.findIndex((s) => (typeof needle === 'string' ? s.includes(needle) : needle.test(s)));
    expect(doc.variables['NANOSERVER_IMAGE']).toBe('mcr.microsoft.com/windows/nanoserver:ltsc2022');
    const install = at(/containerd-\$\(CONTAINERD_VERSION\)-windows-amd64\.tar\.gz/);
    const start = at(/Start-Process -FilePath containerd\.exe/);
    const pull = at(/images pull "\$\(NANOSERVER_IMAGE\)"/);
    const run = at('--runtime io.containerd.tshim.v2');
    expect(install).toBeGreaterThan(at('vitest run'));
    expect(start).toBeGreaterThan(install);
    expect(pull).toBeGreaterThan(start);
    expect(run).toBeGreaterThan(pull);
    const test = scripts[run]!;
    expect(test).toMatch(/ctr @ctr run --rm --runtime io\.containerd\.tshim\.v2/);
    expect(test).toMatch(/task exec/);
    expect(test).toMatch(/-match 'hello-from-hcs'/);
    expect(test).toMatch(/\$code -ne 3/);
    expect(test).toMatch(/-match 'exec-ok'/);
    expect(test).toMatch(/\$execCode -ne 5/);
    expect(at('launcher.c')).toBeGreaterThan(-1);
    expect(at('launcher.c')).toBeLessThan(run);
  });
});

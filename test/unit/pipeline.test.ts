/**
 * azure-pipelines.yml keeps its Linux job and has a windows-2022 job that runs the real HCS path
 * through the steps template Windows container CI pipelines include (pipelines/tshim-windows.yml:
 * Node 20, npm ci, build, the .exe launcher, containerd's release binaries, containerd started,
 * images pulled), then the platform-neutral unit tests and a process-isolated run plus an exec
 * through io.containerd.tshim.v2 with their output and exit codes checked. Parsed, not grepped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

interface Step {
  task?: string;
  script?: string;
  powershell?: string;
  template?: string;
  displayName?: string;
  condition?: string;
  workingDirectory?: string;
  inputs?: Record<string, string>;
  parameters?: Record<string, unknown>;
}
interface Job {
  job: string;
  pool: { vmImage: string };
  steps: Step[];
}
interface Template {
  parameters: Array<{ name: string; type: string; default: unknown }>;
  steps: Array<Step | Record<string, Step[]>>;
}

const root = path.join(__dirname, '..', '..');
const readYaml = <T>(file: string): T => parse(fs.readFileSync(path.join(root, file), 'utf8')) as T;
const doc = readYaml<{ jobs: Job[]; variables: Record<string, string> }>('azure-pipelines.yml');
const template = readYaml<Template>('pipelines/tshim-windows.yml');
const stopTemplate = readYaml<{ steps: Step[] }>('pipelines/tshim-windows-stop.yml');
const job = (image: string): Job => {
  const j = doc.jobs.find((x) => x.pool.vmImage === image);
  if (!j) throw new Error(`no job on ${image}`);
  return j;
};
const body = (s: Step): string => s.script ?? s.powershell ?? '';
/** The template's steps, with its `${{ each image … }}` block flattened in place. */
const templateSteps = (): Step[] =>
  template.steps.flatMap((s) => (Object.keys(s).some((k) => k.startsWith('${{ each')) ? Object.values(s as Record<string, Step[]>)[0] ?? [] : [s as Step]));

describe('azure-pipelines.yml', () => {
  it('keeps the Linux job running .ci/run', () => {
    const linux = job('ubuntu-22.04');
    expect(linux.steps.some((s) => body(s).includes('.ci/run'))).toBe(true);
  });

  it('sets the windows-2022 job up with the template pipelines include, then runs the platform-neutral unit tests', () => {
    const win = job('windows-2022');
    const first = win.steps[0];
    expect(first?.template).toBe('pipelines/tshim-windows.yml');
    expect(first?.parameters?.['images']).toEqual(['mcr.microsoft.com/windows/nanoserver:ltsc2022']);
    const scripts = win.steps.map(body);
    const unit = scripts.findIndex((s) => s.includes('vitest run'));
    expect(unit).toBeGreaterThan(0);
    expect(scripts[unit]).toContain('test/unit/windows-schema.test.ts');
    expect(scripts[unit]).toContain('test/unit/windows-hcs.test.ts');
    expect(scripts[unit]).not.toMatch(/test\/e2e|test\/windows/);
    expect(win.steps[win.steps.length - 1]?.template).toBe('pipelines/tshim-windows-stop.yml');
  });

  it('then runs real HCS: a run and an exec through tshim with output and exit codes checked', () => {
    const win = job('windows-2022');
    const scripts = win.steps.map(body);
    expect(doc.variables['NANOSERVER_IMAGE']).toBe('mcr.microsoft.com/windows/nanoserver:ltsc2022');
    const run = scripts.findIndex((s) => s.includes('--runtime io.containerd.tshim.v2'));
    expect(run).toBeGreaterThan(scripts.findIndex((s) => s.includes('vitest run')));
    const test = scripts[run]!;
    expect(test).toContain('$(TSHIM_CONTAINERD_ADDRESS)');
    expect(test).toMatch(/ctr @ctr run --rm --runtime io\.containerd\.tshim\.v2/);
    expect(test).toMatch(/task exec/);
    expect(test).toMatch(/-match 'hello-from-hcs'/);
    expect(test).toMatch(/\$code -ne 3/);
    expect(test).toMatch(/-match 'exec-ok'/);
    expect(test).toMatch(/\$execCode -ne 5/);
    // pause/resume on real HCS: either it pauses (PAUSED, then RUNNING again) or it is refused as not implemented
    expect(test).toMatch(/task pause tshim-exec/);
    expect(test).toMatch(/task resume tshim-exec/);
    expect(test).toMatch(/not implemented\|not supported/);
  });
});

describe('pipelines/tshim-windows.yml (the template Windows container pipelines include)', () => {
  it('takes the tshim checkout, Node and containerd versions, containerd address and images as parameters', () => {
    const names = Object.fromEntries(template.parameters.map((p) => [p.name, p]));
    expect(Object.keys(names).sort()).toEqual(['containerdAddress', 'containerdVersion', 'images', 'nodeVersion', 'tshimDir']);
    expect(names['nodeVersion']?.default).toBe('20.x');
    expect(names['images']?.type).toBe('object');
  });

  it('in order: Node, npm ci, build, the .exe launcher, containerd release binaries on PATH, containerd started, each image pulled', () => {
    const steps = templateSteps();
    const scripts = steps.map(body);
    const at = (needle: string | RegExp): number => scripts.findIndex((s) => (typeof needle === 'string' ? s.includes(needle) : needle.test(s)));
    expect(steps[0]?.task).toBe('NodeTool@0');
    expect(steps[0]?.inputs?.['versionSpec']).toBe('${{ parameters.nodeVersion }}');
    const order = [
      at('npm ci'),
      at('npm run build'),
      at('launcher.c'),
      at(/containerd-\$\{\{ parameters\.containerdVersion \}\}-windows-amd64\.tar\.gz/),
      at(/Start-Process -FilePath containerd\.exe/),
      at(/images pull "\$\{\{ image \}\}"/),
    ];
    expect(order.every((i) => i > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    for (const s of steps.slice(1, 4)) expect(s.workingDirectory).toBe('${{ parameters.tshimDir }}');
    const install = scripts[at('windows-amd64.tar.gz')]!;
    expect(install).toContain('task.prependpath]${{ parameters.tshimDir }}\\bin');
    expect(install).toContain('TSHIM_CONTAINERD_ADDRESS]${{ parameters.containerdAddress }}');
  });

  it('has a stop template that always runs', () => {
    expect(stopTemplate.steps).toHaveLength(1);
    expect(stopTemplate.steps[0]?.condition).toBe('always()');
    expect(body(stopTemplate.steps[0] as Step)).toContain('Stop-Process -Id $(CONTAINERD_PID)');
  });
});

/**
 * Issue #10, point 7: the README's first command, `bash scripts/demo.sh`, runs to the end and shows
 * a container, an exec, live stats and the events stream, then leaves nothing behind. It runs with
 * TSHIM_DEMO_NO_INSTALL=1, so it fails rather than install anything (this machine already has what
 * it needs), and with containerd finding the shim where the other suites do (the `e2e-sea` project
 * runs it with the single executable).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT, defaultShimDir } from './harness';
import { processesMatching } from './fixtures/system';

it('the README starts with the demo, which runs a container, an exec, stats and events, then cleans up', async () => {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const firstCommand = /```sh\n([^\n#]*?)\s*(#|\n)/.exec(readme)?.[1];
  expect(firstCommand).toBe('bash scripts/demo.sh');

  const run = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn('bash', ['scripts/demo.sh'], {
      cwd: REPO_ROOT,
      env: { ...process.env, TSHIM_DEMO_NO_INSTALL: '1', TSHIM_DEMO_SHIM_DIR: defaultShimDir() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const timer = setTimeout(() => child.kill('SIGTERM'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, out })));
  });
  expect(run.code, run.out).toBe(0);
  const out = run.out;
  expect(out).toContain(`shim: ${path.join(defaultShimDir(), 'containerd-shim-tshim-v2')}`);
  expect(out).toContain('Hello from a container run by tshim');
  expect(out).toMatch(/^exec in \S+: pid \d+, id: 0$/m);
  expect(out.match(/^METRIC\s+VALUE/gm)?.length).toBe(3);
  expect(out).toMatch(/^pids\.current\s+\d+/m);
  const topics = [...out.matchAll(/^ {2}demo (\/\S+) /gm)].map((m) => m[1]);
  expect(topics).toEqual([
    '/containers/create', '/tasks/create', '/tasks/start', '/tasks/exec-added', '/tasks/exec-started',
    '/tasks/exit', '/tasks/exit', '/tasks/delete', '/containers/delete',
  ]);
  const tmp = /removing the private containerd and (\/tmp\/tshim-demo\.\S+)/.exec(out)?.[1];
  expect(tmp).toBeDefined();
  expect(existsSync(tmp!)).toBe(false);
  // containerd, ctr events and every shim ran with the demo's temp dir in their argv.
  expect(await processesMatching((argv) => argv.some((a) => a.includes(tmp!)))).toEqual([]);
});

/**
 * The Windows single executable (out/win-x64/containerd-shim-tshim-v2.exe, `node
 * scripts/build-sea.js --target win-x64`) under Wine, as containerd on Windows runs it: one
 * Windows-node client (wine-shim-client.js) runs its `--version`, `--help`, a `start` of a copy
 * without tshim-koffi.node, then `start` → Connect → a container through the stand-in
 * vmcompute.dll → Shutdown → `delete`. No node.exe is on the Wine PATH: the daemon `start` launches
 * is the executable itself, and koffi comes from beside it (the only koffi an executable has).
 *
 * The executable is built here when out/win-x64 does not match dist/ (test/e2e/fixtures/sea-build.ts),
 * with this file's Wine prefix. Like the Wine suite, this proves the executable on Windows Node's
 * code paths against a simulated HCS, not HCS itself. Nothing is timed: the client orders its
 * steps through pipes, events and files.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureSea } from '../e2e/fixtures/sea-build';
import { buildStandInDll, createPrefix, REPO, runClient, windowsNode, wineDescribe, winPath, type WinePrefix } from './wine-harness';
import { type ClientResults, type Output } from './wine-results';

const suite = wineDescribe('Windows single-executable suite');

const NS = 'tshim-sea';
const ID = 'sea1';
const EXE = 'containerd-shim-tshim-v2.exe';
const NOT_FOUND = 5;
/** A few seconds normally; past this the client is stopped and the test fails with its progress. */
const CLIENT_DEADLINE_MS = 180_000;

suite('the Windows single executable under Wine (stand-in vmcompute.dll; not HCS itself)', () => {
  let root = '';
  let prefix: WinePrefix | undefined;
  let results: ClientResults | undefined;
  let calls: string[] = [];
  let exeMiB = 0;
  const timings: string[] = [];
  const stamp = (what: string, started: number): void => void timings.push(`${what} ${((Date.now() - started) / 1000).toFixed(1)} s`);

  beforeAll(async () => {
    const started = Date.now();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-sea-exe-'));
    const [control, lone] = ['control', 'lone'].map((d) => path.join(root, d)) as [string, string];
    for (const d of [control, lone]) fs.mkdirSync(d);
    windowsNode(); // fetched (once per machine) before the prefix's timing
    prefix = await createPrefix(root, buildStandInDll(root));
    stamp('prefix', started);
    const exe = ensureSea('win-x64', ['--wine-prefix', prefix.dir]).bin;
    exeMiB = fs.statSync(exe).size / 1048576;
    stamp('exe', started);
    // the executable without its koffi module beside it (a hard link where /tmp allows: 71 MiB)
    try {
      fs.linkSync(exe, path.join(lone, EXE));
    } catch {
      fs.copyFileSync(exe, path.join(lone, EXE));
    }
    results = await runClient(prefix, {
      root,
      script: 'wine-shim-client.js',
      namespace: NS,
      config: {
        shim: winPath(exe),
        id: ID,
        container: true,
        delete: true,
        probes: [
          { name: 'version', command: winPath(exe), args: ['--version'] },
          { name: 'help', command: winPath(exe), args: ['--help'] },
          { name: 'lone', command: winPath(path.join(lone, EXE)), start: 'lone1' },
        ],
      },
      env: { TSHIM_FAKE_HCS_DIR: winPath(control) },
      deadlineMs: CLIENT_DEADLINE_MS,
    });
    calls = fs.readFileSync(path.join(control, 'calls.log'), 'utf8').split('\n').filter(Boolean);
    stamp('client done', started);
  }, 600_000);

  afterAll(() => {
    console.log(`Windows single-executable suite: ${timings.join(', ')}; ${EXE} ${exeMiB.toFixed(1)} MiB`);
    prefix?.destroy();
    if (root && !process.env['TSHIM_WINE_KEEP']) fs.rmSync(root, { recursive: true, force: true });
  });

  const step = <T>(name: string): T => results!.step<T>(name);

  it('the client ran every step without an unexpected error', () => {
    expect(results!.errors).toEqual([]);
    expect(results!.done).toBe(true);
  });

  it('--version says it is the single executable, with the package version and the revision of the build', () => {
    const version = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    const revision = fs.readFileSync(path.join(REPO, 'dist', 'revision.txt'), 'utf8').trim();
    const r = step<Output>('probe.version');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toContain(`Version:  ${version}`);
    expect(r.stdout).toContain(`Revision: ${revision}`);
    expect(r.stdout).toMatch(/Node\.js:\s+v20\.\d+\.\d+/);
    expect(r.stdout).toContain('Form:     single executable');
  });

  it('--help lists the actions containerd uses', () => {
    const r = step<Output>('probe.help');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toContain('Usage: containerd-shim-tshim-v2');
    expect(r.stdout).toMatch(/^ {2}start /m);
    expect(r.stdout).toMatch(/^ {2}delete /m);
  });

  it('start prints the runhcs-style protected pipe address; the daemon it launched answers Connect with its pid', () => {
    const s = step<Output & { files: string[] }>('start');
    expect(s).toMatchObject({ code: 0, stderr: '', stdout: `\\\\.\\pipe\\ProtectedPrefix\\Administrators\\containerd-shim-${NS}-${ID}-pipe` });
    expect(s.files).toEqual(expect.arrayContaining(['address', 'shim.pid', 'config.json']));
    const pid = step<number>('connectPid');
    expect(pid).toBeGreaterThan(0);
    expect(pid).toBe(step<number>('shimPidFile'));
  });

  it('a container through the stand-in HCS: koffi loaded from beside the executable drives vmcompute.dll; output, exit code, events', () => {
    expect(results!.ok('create')['pid']).toBe(0);
    expect(results!.ok('startTask')['pid']).toBeGreaterThan(0);
    expect(results!.ok('wait')['exitStatus']).toBe(3);
    expect(step<string>('stdout')).toContain('from-the-shim');
    expect(results!.ok('delete')['exitStatus']).toBe(3);
    expect(calls).toEqual(expect.arrayContaining([`ActivateLayer C:\\snapshots\\${ID}`, `DeactivateLayer C:\\snapshots\\${ID}`]));
    expect(calls.some((c) => c.startsWith(`HcsCreateComputeSystem ${ID}`))).toBe(true);
    expect(results!.topics(ID)).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
  });

  it('State of an unknown id is NotFound; Shutdown ends the daemon; delete afterwards answers a DeleteResponse', () => {
    expect(results!.refused('unknownState', NOT_FOUND)).toBeTruthy();
    results!.ok('shutdown');
    expect(step<boolean>('daemonGone')).toBe(true);
    const d = step<{ code: number; response: Record<string, unknown>; stderr: string }>('deleteAction');
    expect(d.code, d.stderr).toBe(0);
    expect(d.response).not.toHaveProperty('decodeError');
  });

  it('a copy without tshim-koffi.node refuses to start, in one line naming the file', () => {
    const r = step<Output>('probe.lone');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`${winPath(path.join(root, 'lone'))}\\tshim-koffi.node`);
  });
});

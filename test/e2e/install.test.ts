/**
 * Issue #13: every command of the README's Install section, run as written in a copy of this
 * working tree, gives a shim that `-v` answers and that runs a container through a private
 * containerd 1.6, found on containerd's PATH and named by an absolute runtime path. A launcher
 * without its code says so in one line on stderr and exits 1, never with a stack trace.
 *
 * The copy keeps `npm ci` and `npm pack` (which rebuild dist/) away from the working tree that
 * the other test files run from. `/usr/local/bin` and npm's prefix become temp dirs; npm's prefix
 * is set the ordinary way, through npm_config_prefix.
 */
import { spawn } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, shimProcesses, startContainerd, uniqueId, type Containerd } from './harness';
import { importBusyboxImage } from './image';
import { npmFreeEnv } from './fixtures/npm-env';
import { DELETED_MARKER } from '../../src/common/deleted-marker';

const SHIM = 'containerd-shim-tshim-v2';
const RUNTIME = 'io.containerd.tshim.v2';
const VERSION = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv to completion in `cwd`; never throws on a non-zero exit. */
function run(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** The commands of the README's Install block, comments and blank lines dropped. */
function readmeInstallCommands(): string[] {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Install\n'));
  const block = section?.match(/```sh\n([\s\S]*?)```/)?.[1];
  if (!block) throw new Error('README.md has no ```sh block under ## Install');
  return block.split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter((l) => l !== '');
}

/**
 * Each README command and how the test runs it: `dir` replaces /usr/local/bin, `prefix` is npm's
 * global prefix. Paths are relative to the work dir.
 */
const STEPS: ReadonlyArray<{ command: string; dir?: string; prefix?: string }> = [
  { command: 'npm ci' },
  { command: 'npm pack' },
  { command: `npm install -g ./tshim-${VERSION}.tgz`, prefix: 'npm-tgz' },
  { command: 'npm run install-shim -- /usr/local/bin', dir: 'shim-checkout' },
  { command: 'node "$(npm root -g)/tshim/scripts/install-shim.js" /usr/local/bin', dir: 'shim-npm', prefix: 'npm-tgz' },
  { command: 'ln -s "$PWD/bin/containerd-shim-tshim-v2" /usr/local/bin/', dir: 'link' },
  { command: 'npm install -g .', prefix: 'npm-dir' },
];

/** Every install form: the dir holding the shim, and where its real file must be. */
const FORMS: ReadonlyArray<{ name: string; dir: string; realUnder: string }> = [
  { name: 'npm install -g of the packed tarball', dir: 'npm-tgz/bin', realUnder: 'npm-tgz/lib/node_modules/tshim/bin' },
  { name: 'npm run install-shim', dir: 'shim-checkout', realUnder: 'shim-checkout' },
  { name: 'a copy of what npm run install-shim wrote', dir: 'copy-checkout', realUnder: 'copy-checkout' },
  { name: 'install-shim of the npm package', dir: 'shim-npm', realUnder: 'shim-npm' },
  { name: 'a copy of what install-shim of the npm package wrote', dir: 'copy-npm', realUnder: 'copy-npm' },
  { name: 'a symlink to the checkout', dir: 'link', realUnder: 'checkout/bin' },
  { name: 'npm install -g of the checkout', dir: 'npm-dir/bin', realUnder: 'checkout/bin' },
];

/** One line, names the missing file, no stack frames, no stdout. */
function expectOneLineError(r: Result, missing: string): void {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n');
  expect(lines).toHaveLength(2); // the line and the empty string after its newline
  expect(lines[0]).toContain(`${SHIM}: `);
  expect(lines[0]).toContain(missing);
  expect(r.stderr).not.toMatch(/^\s+at /m);
}

let work = '';
const at = (rel: string): string => path.join(work, rel);
const shimIn = (rel: string): string => path.join(work, rel, SHIM);
/** A containerd whose PATH has no tshim of ours: runtimes are named by absolute path. */
let bare: Containerd | undefined;
let image = '';

beforeAll(async () => {
  // Short: containerd's sockets and the shim's live under other dirs, but keep paths readable.
  work = await fs.mkdtemp('/tmp/tsi-');
  const checkout = at('checkout');
  // The working tree as it is now (tracked and untracked files git does not ignore).
  const files = await run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO_ROOT });
  if (files.code !== 0) throw new Error(`git ls-files: ${files.stderr}`);
  for (const rel of files.stdout.split('\0').filter((f) => f !== '')) {
    const from = path.join(REPO_ROOT, rel);
    const stat = await fs.lstat(from).catch(() => undefined);
    if (!stat) continue; // deleted in the working tree, not yet in the index
    await fs.mkdir(path.dirname(path.join(checkout, rel)), { recursive: true });
    await fs.cp(from, path.join(checkout, rel), { verbatimSymlinks: true });
  }

  expect(readmeInstallCommands()).toEqual(STEPS.map((s) => s.command));
  for (const step of STEPS) {
    let command = step.command;
    if (step.dir) {
      await fs.mkdir(at(step.dir), { recursive: true });
      command = command.replaceAll('/usr/local/bin', at(step.dir));
    }
    const env = npmFreeEnv(step.prefix ? { npm_config_prefix: at(step.prefix) } : {});
    const r = await run(['bash', '-euc', command], { cwd: checkout, env, timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`README command failed (${r.code}): ${command}\n${r.stdout}\n${r.stderr}`);
  }
  // What an operator does with the file install-shim wrote: copy it elsewhere.
  for (const [from, to] of [['shim-checkout', 'copy-checkout'], ['shim-npm', 'copy-npm']] as const) {
    await fs.mkdir(at(to));
    const r = await run(['install', '-m', '0755', shimIn(from), `${at(to)}/`]);
    if (r.code !== 0) throw new Error(`install: ${r.stderr}`);
  }

  await fs.mkdir(at('empty'));
  bare = await startContainerd({ shimDir: at('empty') });
  image = await importBusyboxImage(bare);
}, 300_000);

afterAll(async () => {
  const problems = bare ? await bare.stop() : [];
  if (work) await fs.rm(work, { recursive: true, force: true });
  if (problems.length > 0) throw new Error(`teardown:\n${problems.join('\n')}`);
});

/**
 * `ctr run --rm` of a container that prints, waits for a line on stdin and exits 3: while it
 * waits, the running shim's argv names `shim`, the binary containerd started.
 */
async function runContainer(cd: Containerd, runtime: string, shim: string): Promise<void> {
  const id = uniqueId('install');
  const bg = cd.ctrBackground(['run', '--rm', '--runtime', runtime, image, id, 'sh', '-c', 'echo ran-by-tshim; read line; exit 3'], { stdin: true });
  try {
    await bg.waitForOutput('ran-by-tshim\n', 20_000);
    const shims = await shimProcesses(cd, id);
    // The script node runs (after any daemon V8 flags); an adopted spare shows the same in its title.
    expect(shims.map((p) => p.cmdline.find((word) => word.endsWith('/containerd-shim-tshim-v2')))).toEqual([shim]);
    bg.write('go\n');
    const r = await bg.exited;
    expect(r).toMatchObject({ code: 3, stdout: 'ran-by-tshim\n' });
  } finally {
    await bg.stop('SIGKILL');
  }
}

describe.concurrent.each(FORMS)('installed as $name', ({ dir, realUnder }) => {
  it('is the file the form promises and answers -v', async () => {
    const shim = shimIn(dir);
    expect(await fs.realpath(shim)).toBe(path.join(await fs.realpath(at(realUnder)), SHIM));
    const r = await run([shim, '-v']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${SHIM}:\\n  Version:  ${VERSION.replaceAll('.', '\\.')}\\n  Revision: \\S+\\n  Node.js:  v\\d+`));
  });

  it('runs a container when containerd finds it on its PATH', async () => {
    const cd = await startContainerd({ shimDir: at(dir) });
    try {
      await importBusyboxImage(cd);
      await runContainer(cd, RUNTIME, shimIn(dir));
    } finally {
      expect(await cd.stop()).toEqual([]);
    }
  });

  it('runs a container when ctr names it by absolute path as the runtime', async () => {
    await runContainer(bare!, shimIn(dir), shimIn(dir));
  });
});

describe("NODE_EXTRA_CA_CERTS in containerd's environment", () => {
  it("install-shim's launcher parks it: a stale path does not reach start's output, where containerd reads the address", async () => {
    const gone = at('gone-ca.pem');
    const cd = await startContainerd({ shimDir: at('shim-checkout'), env: { NODE_EXTRA_CA_CERTS: gone } });
    try {
      await importBusyboxImage(cd);
      await runContainer(cd, RUNTIME, shimIn('shim-checkout'));
      // node itself (no launcher of ours) prints the warning start's output would have carried
      const plain = await run([process.execPath, '-e', '0'], { env: { ...process.env, NODE_EXTRA_CA_CERTS: gone } });
      expect(plain.stderr).toContain('Ignoring extra certs');
    } finally {
      expect(await cd.stop()).toEqual([]);
    }
  });
});

/** A shim command line's flags, as containerd passes them (no daemon is reached with these). */
const FLAGS = ['-namespace', 'install-test', '-address', '/run/none.sock', '-publish-binary', '/bin/false', '-id', 'x'];

describe("install-shim's launcher and containerd's delete", () => {
  // node cannot start with this: an answer under it came from sh
  const noNode = { ...process.env, NODE_OPTIONS: '--require=/nonexistent/tshim-test-no-node' };

  it("answers a delete whose bundle holds the daemon's DeleteResponse without starting node; anything else goes to node", async () => {
    const shim = shimIn('shim-checkout');
    const bundle = at('deleted-bundle');
    await fs.mkdir(bundle, { recursive: true });
    const response = 'what the daemon left\n\u0001\u0002';
    await fs.writeFile(path.join(bundle, DELETED_MARKER), response);

    expect(await run([shim, ...FLAGS, '-bundle', bundle, 'delete'], { env: noNode })).toEqual({ code: 0, stdout: response, stderr: '' });
    // A relative bundle, another action: node's, which cannot start here.
    const nodeRan = (r: Result): void => {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('tshim-test-no-node');
    };
    nodeRan(await run([shim, ...FLAGS, '-bundle', path.basename(bundle), 'delete'], { cwd: path.dirname(bundle), env: noNode }));
    nodeRan(await run([shim, ...FLAGS, '-bundle', bundle, 'start'], { env: noNode }));
    await fs.rm(path.join(bundle, DELETED_MARKER));
    nodeRan(await run([shim, ...FLAGS, '-bundle', bundle, 'delete'], { env: noNode }));
    // With node able to start, the same delete without a marker is the full action.
    const full = await run([shim, ...FLAGS, '-bundle', bundle, 'delete']);
    expect(full.code).toBe(0);
    expect(full.stdout.length).toBeGreaterThan(0);
  });
});

describe.concurrent('a launcher without its code', () => {

  it('a plain copy of bin/: one line naming ../dist/main.js, exit 1, for start, delete and -v', async () => {
    const plain = at('plain/bin');
    await fs.mkdir(plain, { recursive: true });
    await fs.copyFile(path.join(REPO_ROOT, 'bin', SHIM), path.join(plain, SHIM));
    await fs.chmod(path.join(plain, SHIM), 0o755);
    const missing = at('plain/dist/main.js');
    for (const args of [[...FLAGS, 'start'], [...FLAGS, '-bundle', work, 'delete'], ['-v']]) {
      expectOneLineError(await run([path.join(plain, SHIM), ...args]), missing);
    }
  });

  it('through containerd, ctr reports that line, not a stack trace', async () => {
    const plain = at('plain-ctr');
    await fs.mkdir(plain, { recursive: true });
    await fs.copyFile(path.join(REPO_ROOT, 'bin', SHIM), path.join(plain, SHIM));
    await fs.chmod(path.join(plain, SHIM), 0o755);
    const r = await bare!.ctr(['run', '--rm', '--runtime', path.join(plain, SHIM), image, uniqueId('plain'), 'true'], { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`cannot find its code, ${path.join(work, 'dist', 'main.js')} does not exist`);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it('an install-shim launcher whose recorded code is gone: one line naming it, exit 1', async () => {
    // A throwaway package: install-shim records its dist/, which is then removed.
    const pkg = at('gone');
    await fs.mkdir(path.join(pkg, 'scripts'), { recursive: true });
    for (const rel of ['bin', 'dist', 'package.json', 'scripts/install-shim.js']) {
      await fs.cp(path.join(REPO_ROOT, rel), path.join(pkg, rel), { recursive: true });
    }
    const installed = await run(['node', path.join(pkg, 'scripts', 'install-shim.js'), path.join(pkg, 'out')]);
    expect(installed).toMatchObject({ code: 0, stderr: '' });
    await fs.rm(path.join(pkg, 'dist'), { recursive: true });
    const shim = path.join(pkg, 'out', SHIM);
    for (const args of [[...FLAGS, 'start'], [...FLAGS, '-bundle', work, 'delete'], ['-v']]) {
      expectOneLineError(await run([shim, ...args]), path.join(pkg, 'dist', 'main.js'));
    }
  });
});

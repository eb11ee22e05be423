/**
 * The driver against a stand-in runtime (a shell script named by `binary`, as BinaryName would):
 * what reaches the runtime (argv, env, stdin, the --process file) and how its log and exit status
 * become errors.
 */
import * as fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { Runc } from '../../src/linux/runc';
import { NO_SUCH_CONTAINER, PROCESS_ALREADY_FINISHED } from '../../src/linux/runc-errors';

let dir: string;
let bundle: string;
let runc: Runc;
let savedNotify: string | undefined;
let savedXdg: string | undefined;

const FAKE = `#!/bin/sh
d=$(dirname "$0")
printf '%s\\n' "$@" > "$d/argv"
env > "$d/env"
prev=""; log=""; proc=""
for a in "$@"; do
  [ "$prev" = "--log" ] && log="$a"
  [ "$prev" = "--process" ] && proc="$a"
  prev="$a"
done
if [ -n "$proc" ]; then cp "$proc" "$d/process.json"; echo "$proc" > "$d/process-path"; fi
case "$*" in *"--resources -"*) cat > "$d/stdin";; esac
if [ -f "$d/script" ]; then . "$d/script"; fi
exit 0
`;

function behave(script: string): void {
  fs.writeFileSync(path.join(dir, 'script'), script);
}

function logLine(msg: string, level = 'error'): string {
  return `echo '{"level":"${level}","msg":"${msg}","time":"2026-01-01T00:00:00Z"}' >> "$log"`;
}

const argv = (): string[] => fs.readFileSync(path.join(dir, 'argv'), 'utf8').trimEnd().split('\n');

async function failure(p: Promise<unknown>): Promise<ShimError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ShimError);
  return err as ShimError;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-fakerunc-'));
  bundle = path.join(dir, 'bundle');
  fs.mkdirSync(bundle);
  fs.writeFileSync(path.join(dir, 'fake-runc'), FAKE, { mode: 0o755 });
  runc = new Runc({
    binary: path.join(dir, 'fake-runc'),
    root: path.join(dir, 'root', 'ns1'),
    systemdCgroup: true,
    logPath: path.join(bundle, 'log.json'),
  });
  savedNotify = process.env.NOTIFY_SOCKET;
  savedXdg = process.env.XDG_RUNTIME_DIR;
  process.env.NOTIFY_SOCKET = '/run/systemd/notify';
  process.env.XDG_RUNTIME_DIR = dir;
});

afterEach(() => {
  if (savedNotify === undefined) delete process.env.NOTIFY_SOCKET;
  else process.env.NOTIFY_SOCKET = savedNotify;
  if (savedXdg === undefined) delete process.env.XDG_RUNTIME_DIR;
  else process.env.XDG_RUNTIME_DIR = savedXdg;
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('invocation', () => {
  it('runs the configured binary with the global prefix and without NOTIFY_SOCKET', async () => {
    await runc.start('c1');
    expect(argv()).toEqual([
      '--root',
      path.join(dir, 'root', 'ns1'),
      '--log',
      path.join(bundle, 'log.json'),
      '--log-format',
      'json',
      '--systemd-cgroup',
      'start',
      'c1',
    ]);
    const env = fs.readFileSync(path.join(dir, 'env'), 'utf8');
    expect(env).not.toContain('NOTIFY_SOCKET');
    expect(env).toContain(`XDG_RUNTIME_DIR=${dir}`);
  });

  it('exec writes the Process JSON to a runc-process temp file and removes it', async () => {
    const spec = JSON.stringify({ args: ['sh'], cwd: '/' });
    const devNull = fs.openSync('/dev/null', 'r+');
    try {
      await runc.exec('c1', spec, { pidFile: path.join(bundle, 'e1.pid'), stdio: [devNull, devNull, devNull] });
    } finally {
      fs.closeSync(devNull);
    }
    const processPath = fs.readFileSync(path.join(dir, 'process-path'), 'utf8').trim();
    expect(path.dirname(processPath)).toBe(dir);
    expect(path.basename(processPath)).toMatch(/^runc-process\d+$/);
    expect(fs.readFileSync(path.join(dir, 'process.json'), 'utf8')).toBe(spec);
    expect(fs.existsSync(processPath)).toBe(false);
    expect(argv().slice(7)).toEqual([
      'exec',
      '--process',
      processPath,
      '--detach',
      '--pid-file',
      path.join(bundle, 'e1.pid'),
      'c1',
    ]);
  });

  it('exec removes the temp file when the runtime fails too', async () => {
    behave(`${logLine('exec failed: boom')}\nexit 1`);
    const devNull = fs.openSync('/dev/null', 'r+');
    const err = await failure(
      runc.exec('c1', '{}', { pidFile: path.join(bundle, 'e1.pid'), stdio: [devNull, devNull, devNull] }),
    );
    fs.closeSync(devNull);
    expect(err.message).toBe('OCI runtime exec failed: exec failed: boom');
    const processPath = fs.readFileSync(path.join(dir, 'process-path'), 'utf8').trim();
    expect(fs.existsSync(processPath)).toBe(false);
  });

  it('update sends the resources JSON on stdin', async () => {
    const resources = JSON.stringify({ memory: { limit: 1048576 } });
    await runc.update('c1', resources);
    expect(fs.readFileSync(path.join(dir, 'stdin'), 'utf8')).toBe(resources);
    expect(argv().slice(7)).toEqual(['update', '--resources', '-', 'c1']);
  });

  it('create hands the given fds to the runtime as its stdio', async () => {
    const out = path.join(dir, 'create-out');
    const fd = fs.openSync(out, 'w');
    const devNull = fs.openSync('/dev/null', 'r+');
    behave('echo on-stdout; echo on-stderr >&2');
    try {
      await runc.create('c1', { bundle, pidFile: path.join(bundle, 'init.pid'), stdio: [devNull, fd, fd] });
    } finally {
      fs.closeSync(fd);
      fs.closeSync(devNull);
    }
    expect(fs.readFileSync(out, 'utf8')).toBe('on-stdout\non-stderr\n');
  });
});

describe('results', () => {
  it('parses state, ps (null = none), stats data, features and version', async () => {
    const state = { ociVersion: '1.0.2', id: 'c1', pid: 42, status: 'running', bundle: '/b', rootfs: '/b/rootfs' };
    behave(`echo '${JSON.stringify({ ...state, created: 'x', owner: '' })}'`);
    expect(await runc.state('c1')).toMatchObject({ id: 'c1', pid: 42, status: 'running' });
    behave(`echo '[1,2,3]'`);
    expect(await runc.ps('c1')).toEqual([1, 2, 3]);
    behave('echo null');
    expect(await runc.ps('c1')).toEqual([]);
    behave(`echo '{"type":"stats","id":"c1","data":{"pids":{"current":2}}}'`);
    expect(await runc.stats('c1')).toEqual({ pids: { current: 2 } });
    behave(`echo '{"ociVersionMin":"1.0.0"}'`);
    expect(await runc.features()).toEqual({ ociVersionMin: '1.0.0' });
    behave(`echo "No help topic for 'features'" >&2; exit 3`);
    expect(await runc.features()).toBeUndefined();
    behave(`printf 'runc version 1.1.5+ds1\\ncommit: abc\\n'`);
    expect(await runc.version()).toBe('1.1.5+ds1');
  });

  it('rejects output that is not what the subcommand promises', async () => {
    behave('echo garbage');
    expect((await failure(runc.ps('c1'))).code).toBe(Code.Unknown);
    behave(`echo '{"unexpected":true}'`);
    expect((await failure(runc.state('c1'))).code).toBe(Code.Unknown);
  });
});

describe('errors', () => {
  it('reads only the log lines written by the failing call', async () => {
    // an earlier call left an error in the shared log
    fs.writeFileSync(path.join(bundle, 'log.json'), '{"level":"error","msg":"stale","time":"t"}\n');
    behave('echo "runc: something odd" >&2; exit 1');
    const err = await failure(runc.pause('c1'));
    expect(err.code).toBe(Code.Unknown);
    expect(err.message).toBe('OCI runtime pause failed: exit status 1: runc: something odd');

    behave(`${logLine('first')}\n${logLine('just a warning', 'warning')}\n${logLine('container not paused')}\nexit 1`);
    expect((await failure(runc.resume('c1'))).message).toBe('OCI runtime resume failed: container not paused');
  });

  it('maps kill failures like the Go shim', async () => {
    behave(`${logLine('container not running')}\nexit 1`);
    let err = await failure(runc.kill('c1', 9, false));
    expect([err.code, err.message]).toEqual([Code.NotFound, PROCESS_ALREADY_FINISHED]);

    behave(`${logLine('container does not exist')}\nexit 1`);
    err = await failure(runc.kill('c1', 9, true));
    expect([err.code, err.message]).toEqual([Code.NotFound, NO_SUCH_CONTAINER]);
    expect(argv().slice(7)).toEqual(['kill', '--all', 'c1', '9']);

    behave(`${logLine('unable to signal init: invalid argument')}\nexit 1`);
    err = await failure(runc.kill('c1', 99, false));
    expect([err.code, err.message]).toEqual([
      Code.Unknown,
      'unknown error after kill: unable to signal init: invalid argument',
    ]);
  });

  it('delete of a container runc does not know succeeds; other failures do not', async () => {
    behave(`${logLine('container does not exist')}\nexit 1`);
    await runc.delete('c1', false);
    behave(`${logLine('some trouble')}\nexit 1`);
    const err = await failure(runc.delete('c1', true));
    expect([err.code, err.message]).toEqual([Code.Unknown, 'failed to delete task: some trouble']);
  });

  it('a runtime that cannot be started is an Unknown ShimError', async () => {
    const missing = new Runc({
      binary: path.join(dir, 'no-such-runc'),
      root: dir,
      systemdCgroup: false,
      logPath: path.join(bundle, 'log.json'),
    });
    const err = await failure(missing.start('c1'));
    expect(err.code).toBe(Code.Unknown);
    expect(err.message).toMatch(/^OCI runtime start failed: .*no-such-runc.*ENOENT/);
  });
});

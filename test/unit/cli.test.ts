import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { USAGE, parseArgs } from '../../src/common/cli';
import { runCommand } from '../../src/common/actions';
import { currentPlatform } from '../../src/platform';
import { STRING_OPTION_FLAGS } from '../../src/common/cli';

const SRC = path.join(__dirname, '..', '..', 'src');
const LAUNCHER = path.join(__dirname, '..', '..', 'bin', 'containerd-shim-tshim-v2');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? sources(full) : e.name.endsWith('.ts') ? [full] : [];
  });
}

/** What runCommand wrote and returned. */
async function runCaptured(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const sink = (append: (s: string) => void): NodeJS.WritableStream => ({ write: (chunk: string) => (append(String(chunk)), true) }) as unknown as NodeJS.WritableStream;
  const code = await runCommand(parseArgs(argv), {
    stdout: sink((s) => (stdout += s)),
    stderr: sink((s) => (stderr += s)),
    writeResult: (data) => (stdout += Buffer.from(data).toString()),
    readStdin: () => Promise.resolve(Buffer.alloc(0)),
    selfCommand: ['unused'],
    platform: currentPlatform(),
  });
  return { code, stdout, stderr };
}

describe('parseArgs', () => {
  it('parses containerd 1.6 start argv', () => {
    const cmd = parseArgs(['-namespace', 'default', '-address', '/run/c.sock', '-publish-binary', '/usr/bin/containerd', '-id', 't1', '-debug', 'start']);
    expect(cmd).toEqual({
      kind: 'start',
      flags: { namespace: 'default', id: 't1', address: '/run/c.sock', publishBinary: '/usr/bin/containerd', bundle: '', socket: '', spare: '', debug: true },
    });
  });

  it('parses delete with -bundle and double-dash / equals forms', () => {
    const cmd = parseArgs(['--namespace=ns', '-id=x', '-bundle', '/b', 'delete']);
    expect(cmd.kind).toBe('delete');
    if (cmd.kind === 'delete') expect(cmd.flags).toMatchObject({ namespace: 'ns', id: 'x', bundle: '/b' });
  });

  it('no action means serve', () => {
    expect(parseArgs(['-namespace', 'n', '-id', 'i', '-address', 'a']).kind).toBe('serve');
  });

  it('-v and -version print the version', () => {
    expect(parseArgs(['-v'])).toEqual({ kind: 'version' });
    expect(parseArgs(['--version'])).toEqual({ kind: 'version' });
  });

  it('-info is recognised', () => {
    expect(parseArgs(['-info']).kind).toBe('info');
  });

  it('rejects unknown flags, unknown actions, missing values and extra words', () => {
    expect(parseArgs(['-bogus', 'start'])).toMatchObject({ kind: 'usage', error: 'flag provided but not defined: -bogus' });
    expect(parseArgs(['frobnicate'])).toMatchObject({ kind: 'usage', error: 'unknown action "frobnicate"' });
    expect(parseArgs(['-id'])).toMatchObject({ kind: 'usage', error: 'flag needs an argument: -id' });
    expect(parseArgs(['start', 'extra'])).toMatchObject({ kind: 'usage', error: 'unexpected argument "extra"' });
    expect(parseArgs(['-debug=maybe'])).toMatchObject({ kind: 'usage' });
  });

  it('runs an idle spare daemon with -spare and ignores its -title-room', () => {
    const cmd = parseArgs(['-spare', '/run/containerd/s/tshim-spare-x', '-address', '/c.sock', '-title-room', '....']);
    expect(cmd).toMatchObject({ kind: 'spare', flags: { spare: '/run/containerd/s/tshim-spare-x', address: '/c.sock', socket: '' } });
    expect(parseArgs(['-spare', '/s', 'start']).kind).toBe('start');
  });

  it('accepts 2.x -debug-socket without failing', () => {
    expect(parseArgs(['-debug-socket', '/x', '-id', 'a', 'start']).kind).toBe('start');
  });

  it('-h, --help and the word help ask for help', () => {
    for (const argv of [['-h'], ['--help'], ['-help'], ['help'], ['-id', 'x', '--help', 'start']]) expect(parseArgs(argv)).toEqual({ kind: 'help' });
    expect(parseArgs(['-help=false', '-v'])).toEqual({ kind: 'version' });
  });
});

describe('--help and misuse (issue #10)', () => {
  it('--help prints subcommands, every flag and every environment variable the code reads, on stdout, exit 0', async () => {
    const r = await runCaptured(['--help']);
    expect(r).toEqual({ code: 0, stdout: USAGE, stderr: '' });
    for (const action of ['start', 'delete']) expect(USAGE).toMatch(new RegExp(`^  ${action}\\s`, 'm'));
    for (const flag of [...STRING_OPTION_FLAGS, 'debug', 'info', 'v', 'version', 'h', 'help']) {
      expect(USAGE, `-${flag}`).toMatch(new RegExp(`(^|\\s|, )-${flag}[ ,\\n]`, 'm'));
    }
    // Every variable read through process.env / env['X'] / secondsFromEnv(…, 'X') anywhere in src/.
    const read = new Set<string>();
    for (const file of sources(SRC)) {
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/env(?:\.|\[')([A-Z][A-Z0-9_]+)/g)) read.add(m[1]!);
      for (const m of text.matchAll(/FromEnv\([^,]+,\s*'([A-Z][A-Z0-9_]+)'/g)) read.add(m[1]!);
    }
    expect([...read]).toEqual(expect.arrayContaining(['TSHIM_PROTOCOL', 'TSHIM_SPARE', 'TSHIM_SPARE_IDLE_SECONDS', 'TSHIM_SPARE_CHECK_SECONDS', 'TTRPC_ADDRESS']));
    // NOTIFY_SOCKET is only ever removed from runc's environment, never read.
    for (const name of [...read].filter((n) => n !== 'NOTIFY_SOCKET')) expect(USAGE, name).toMatch(new RegExp(`\\b${name}\\b`));
  });

  it('misuse is one line on stderr naming the mistake, nothing on stdout, exit 2', async () => {
    for (const [argv, error] of [
      [['-bogus', 'start'], 'flag provided but not defined: -bogus'],
      [['frobnicate'], 'unknown action "frobnicate"'],
      [['-id'], 'flag needs an argument: -id'],
      [['start', 'extra'], 'unexpected argument "extra"'],
      [['-debug=maybe'], 'invalid boolean value "maybe" for -debug'],
    ] as const) {
      const r = await runCaptured([...argv]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`containerd-shim-tshim-v2: ${error} (run \`containerd-shim-tshim-v2 --help\` for usage)\n`);
    }
  });

  it('the installed launcher behaves the same as a process', () => {
    if (!fs.existsSync(path.join(__dirname, '..', '..', 'dist', 'main.js'))) return; // built by npm test
    expect(execFileSync(LAUNCHER, ['--help'], { encoding: 'utf8' })).toBe(USAGE);
    const bad = spawnSync(LAUNCHER, ['-nope'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr.trimEnd().split('\n')).toHaveLength(1);
  });
});

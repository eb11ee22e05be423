/**
 * The threat model's claims (README "Threat model"), each tested on real processes:
 * - the shim's socket and the spare daemons' sockets are filesystem sockets, 0600 root, in a 0700
 *   root directory; no tshim process listens on an abstract socket, so a container sharing the
 *   host's network namespace (where abstract sockets live) cannot reach one: CVE-2020-15257;
 * - a local non-root user cannot connect to either;
 * - `-socket` (a daemon run by hand) is 0600 whatever the umask (it was 0777 under umask 0);
 * - strings from a container or its options never reach a shell.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { codec } from '../../src/common/proto';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { spareProcesses, type Containerd } from './harness';
import { scratchDir, useTestBed } from './fixtures/suite';
import { SHIM_BIN } from './shim-wire-helpers';

const RUNTIME = 'io.containerd.tshim.v2';
const PYTHON = '/usr/bin/python3';
const bed = useTestBed();

function shimSocketOf(cd: Containerd, id: string): string {
  const address = fs.readFileSync(path.join(cd.dir, 'state', 'io.containerd.runtime.v2.task', cd.namespace, id, 'address'), 'utf8');
  return address.trim().replace(/^unix:\/\//, '');
}

async function shimPidOf(sock: string, id: string): Promise<number> {
  const client = await TtrpcClient.connect(sock, { timeoutMs: 10_000 });
  try {
    const reply = await client.call('containerd.task.v2.Task', 'Connect', codec<{ id: string }>('containerd.task.v2.ConnectRequest').encode({ id }), { timeoutMs: 10_000 });
    return codec<{ shimPid: number }>('containerd.task.v2.ConnectResponse').decode(reply).shimPid;
  } finally {
    client.close();
  }
}

async function spareSockets(cd: Containerd): Promise<{ pid: number; socket: string }[]> {
  return (await spareProcesses(cd)).map((p) => ({ pid: p.pid, socket: p.cmdline[p.cmdline.indexOf('-spare') + 1] ?? '' }));
}

/** Inode -> path ('@name' for abstract) of every unix socket in our network namespace. */
function unixSocketTable(): Map<string, string> {
  const table = new Map<string, string>();
  for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length >= 7) table.set(cols[6]!, cols[7] ?? '');
  }
  return table;
}

/** The bound names of the unix sockets `pid` holds. */
function boundNames(pid: number): string[] {
  const table = unixSocketTable();
  const names: string[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target = '';
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    const name = inode ? table.get(inode) : undefined;
    if (name) names.push(name);
  }
  return names;
}

/** Connects to each target from python (host or container), printing `label:ok` or `label:ERRNO`. */
const CONNECT_SCRIPT = [
  'import socket, sys, errno',
  'for arg in sys.argv[1:]:',
  '    label, addr = arg.split("=", 1)',
  '    if addr.startswith("@"): addr = "\\0" + addr[1:]',
  '    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
  '    try:',
  '        s.connect(addr); print(label + ":ok")',
  '    except OSError as e:',
  '        print(label + ":" + errno.errorcode.get(e.errno, str(e.errno)))',
  '    finally:',
  '        s.close()',
].join('\n');

function parseResults(out: string): Record<string, string> {
  const r: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^(\w+):(\w+)$/.exec(line.trim());
    if (m) r[m[1]!] = m[2]!;
  }
  return r;
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, out }));
  });
}

describe('threat model: who can reach a tshim socket', () => {
  it('shim and spare sockets are 0600 root filesystem sockets in a 0700 root dir; no tshim process has an abstract socket', async () => {
    const { cd, image } = bed();
    const id = 'sec-perm';
    expect((await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, id, 'sleep', '100000'])).code).toBe(0);
    try {
      const sock = shimSocketOf(cd, id);
      const spares = await spareSockets(cd);
      expect(spares.length, 'tshim keeps a spare daemon by default').toBeGreaterThan(0);
      for (const p of [sock, ...spares.map((s) => s.socket)]) {
        const st = fs.statSync(p);
        expect({ path: p, socket: st.isSocket(), mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid }).toEqual({
          path: p, socket: true, mode: '600', uid: 0, gid: 0,
        });
        const dir = fs.statSync(path.dirname(p));
        expect({ dir: path.dirname(p), mode: (dir.mode & 0o7777).toString(8), uid: dir.uid }).toEqual({ dir: path.dirname(p), mode: '700', uid: 0 });
      }
      const shimPid = await shimPidOf(sock, id);
      for (const pid of [shimPid, ...spares.map((s) => s.pid)]) {
        const names = boundNames(pid);
        expect(names.filter((n) => n.startsWith('@')), `abstract sockets of ${pid}`).toEqual([]);
      }
      expect(boundNames(shimPid)).toContain(sock);
    } finally {
      await cd.ctr(['task', 'rm', '-f', id], { allowFail: true });
      await cd.ctr(['container', 'rm', id], { allowFail: true });
    }
  });

  it('a host-network container reaches the host abstract namespace but neither the shim nor a spare socket (CVE-2020-15257)', async () => {
    const { cd, image } = bed();
    const target = 'sec-target';
    expect((await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, target, 'sleep', '100000'])).code).toBe(0);
    // Control: an abstract socket on the host, which a host-network container can connect to
    // (python listens: node's listen cannot bind abstract names). It says "ready" once listening
    // and exits when its stdin closes.
    const control = `tshim-sec-${randomBytes(6).toString('hex')}`;
    const server = spawn(PYTHON, ['-c', [
      'import socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
      `s.bind("\\0${control}")`,
      's.listen(16)',
      'print("ready", flush=True)',
      'sys.stdin.read()',
    ].join('\n')], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.once('exit', () => reject(new Error('control listener exited')));
      server.stdout.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
    });
    try {
      const sock = shimSocketOf(cd, target);
      const spare = (await spareSockets(cd))[0]?.socket;
      expect(spare).toBeTruthy();
      const targets = [`control=@${control}`, `shimabstract=@${sock}`, `shimfile=${sock}`, `spareabstract=@${spare}`, `sparefile=${spare}`];
      // The host's python, bind-mounted read-only into the busybox image.
      const result = await cd.ctr([
        'run', '--rm', '--net-host', '--runtime', RUNTIME,
        '--mount', 'type=bind,src=/usr,dst=/usr,options=rbind:ro',
        '--mount', 'type=bind,src=/usr/lib,dst=/lib,options=rbind:ro',
        '--mount', 'type=bind,src=/usr/lib64,dst=/lib64,options=rbind:ro',
        image, 'sec-probe', PYTHON, '-c', CONNECT_SCRIPT, ...targets,
      ], { allowFail: true });
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(parseResults(result.stdout)).toEqual({
        control: 'ok',
        shimabstract: 'ECONNREFUSED',
        shimfile: 'ENOENT',
        spareabstract: 'ECONNREFUSED',
        sparefile: 'ENOENT',
      });
    } finally {
      server.stdin.end();
      await cd.ctr(['task', 'rm', '-f', target], { allowFail: true });
      await cd.ctr(['container', 'rm', target], { allowFail: true });
    }
  });

  it('a local non-root user cannot connect to the shim or a spare socket', async () => {
    const { cd, image } = bed();
    const id = 'sec-user';
    expect((await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, id, 'sleep', '100000'])).code).toBe(0);
    try {
      const sock = shimSocketOf(cd, id);
      const spare = (await spareSockets(cd))[0]!.socket;
      const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', PYTHON, '-c', CONNECT_SCRIPT, `shim=${sock}`, `spare=${spare}`]);
      expect(parseResults(r.out), r.out).toEqual({ shim: 'EACCES', spare: 'EACCES' });
      // ...while root can (the same probe, so the refusal above is the permission).
      const root = await run(PYTHON, ['-c', CONNECT_SCRIPT, `shim=${sock}`]);
      expect(parseResults(root.out)).toEqual({ shim: 'ok' });
    } finally {
      await cd.ctr(['task', 'rm', '-f', id], { allowFail: true });
      await cd.ctr(['container', 'rm', id], { allowFail: true });
    }
  });

  it('a daemon given -socket creates it 0600 even under umask 0 (it was 0777)', async () => {
    const { cd } = bed();
    const dir = await scratchDir(cd, 'sec-socket');
    const bundle = path.join(dir, 'ns', 'b1');
    fs.mkdirSync(bundle, { recursive: true });
    fs.writeFileSync(path.join(bundle, 'config.json'), '{}');
    const sock = path.join(dir, 's.sock');
    const ns = `tshim-sec-${randomBytes(4).toString('hex')}`;
    const child = spawn('sh', ['-c', 'umask 000; exec "$@"', 'sh', SHIM_BIN, '-namespace', ns, '-id', 'b1', '-address', path.join(dir, 'c.sock'), '-socket', sock], {
      cwd: bundle,
      env: { PATH: `${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`, TSHIM_SPARE: '0' },
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      // The daemon announces nothing; the socket appearing is the signal (bounded for a busy host).
      const deadline = Date.now() + 30_000;
      while (!fs.existsSync(sock) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect((fs.statSync(sock).mode & 0o777).toString(8)).toBe('600');
      const client = await TtrpcClient.connect(sock, { timeoutMs: 10_000 });
      await client.call('containerd.task.v2.Task', 'Shutdown', Buffer.from([0x0a, 0x02, 0x62, 0x31]), { timeoutMs: 10_000 }).catch(() => undefined);
      client.close();
      await exited;
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

describe('threat model: container-supplied strings never reach a shell', () => {
  it('the shim source spawns no shell (no shell: true, no exec/execSync, no sh -c)', () => {
    const files: string[] = [];
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (p.endsWith('.ts')) files.push(p);
      }
    };
    walk(path.join(__dirname, '..', '..', 'src'));
    const offending: string[] = [];
    for (const f of files) {
      const text = fs.readFileSync(f, 'utf8');
      if (/shell:\s*true/.test(text)) offending.push(`${f}: shell: true`);
      // exec/execSync run their command line through /bin/sh.
      if (/import\s*\{[^}]*\b(exec|execSync)\b[^}]*\}\s*from\s*['"](node:)?child_process['"]/.test(text) || /child_process['"]\)\.exec(Sync)?\b/.test(text)) {
        offending.push(`${f}: child_process exec`);
      }
      if (/['"]\/bin\/(ba)?sh['"]|['"]sh['"],\s*\[?['"]-c['"]/.test(text)) offending.push(`${f}: sh -c`);
    }
    expect(offending).toEqual([]);
  });

  it('a BinaryName with shell syntax from a runtime options file is one path that does not exist, never a command line', async () => {
    const { cd, image } = bed();
    const dir = await scratchDir(cd, 'sec-binary');
    const marker = path.join(dir, 'pwned');
    const opts = path.join(dir, 'opts.toml');
    fs.writeFileSync(opts, `BinaryName = "/bin/true; touch ${marker}; runc"\n`);
    const r = await cd.ctr(['run', '--rm', '--runtime', RUNTIME, '--runtime-config-path', opts, image, 'sec-binary', 'true'], { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no such file or directory|ENOENT|not found/i);
    expect(fs.existsSync(marker)).toBe(false);
    await cd.ctr(['container', 'rm', 'sec-binary'], { allowFail: true });
  });
});

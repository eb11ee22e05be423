import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { moveToCgroup } from '../../src/common/shim-cgroup';

const V1_PIDS = '/sys/fs/cgroup/pids';
const isRootV1 = process.getuid?.() === 0 && fs.existsSync(path.join(V1_PIDS, 'cgroup.procs'));

describe('moveToCgroup', () => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  it.runIf(isRootV1)('joins every v1 hierarchy that has the path', async () => {
    const name = `tshim-test-${process.pid}-${Date.now()}`;
    const dir = path.join(V1_PIDS, name);
    fs.mkdirSync(dir);
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    cleanups.push(() => {
      child.kill('SIGKILL');
    });
    await new Promise((r) => child.once('spawn', r));
    moveToCgroup(child.pid!, `/${name}`);
    expect(fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')).toContain(String(child.pid));
    const own = fs.readFileSync(`/proc/${child.pid}/cgroup`, 'utf8');
    expect(own).toMatch(new RegExp(`:pids:/${name}$`, 'm'));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // the kernel needs the group empty before rmdir
    for (let i = 0; i < 50 && fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim(); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    fs.rmdirSync(dir);
  });

  it('writes the one unified hierarchy on cgroup v2 (fixture tree)', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-cg2-'));
    cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
    fs.writeFileSync(path.join(root, 'cgroup.controllers'), 'cpu memory pids\n');
    fs.mkdirSync(path.join(root, 'shims'));
    moveToCgroup(4242, 'shims', root);
    expect(fs.readFileSync(path.join(root, 'shims', 'cgroup.procs'), 'utf8')).toBe('4242');
  });

  it('fails clearly when no hierarchy has the path', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-cg1-'));
    cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
    fs.mkdirSync(path.join(root, 'memory'));
    expect(() => moveToCgroup(1, '/missing', root)).toThrow(/failed to join shim cgroup \/missing/);
  });
});

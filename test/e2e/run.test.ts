/**
 * `ctr run` end to end, per runtime: exit codes, the three stdio streams, terminals, signals,
 * custom rootfs, log URIs and the runc binary option. Every case is checked against
 * io.containerd.runc.v2 first; a case the reference fails is a wrong case.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { findLeftovers, removeContainer, RUNTIMES, waitForTaskStatus } from './harness';
import { makeBusyboxRootfs } from './image';
import { delay } from './fixtures/system';
import { runtimeNames, scratchDir, stripCr, useTestBed } from './fixtures/suite';

const bed = useTestBed();

describe.each(RUNTIMES)('ctr run with %s', (runtime) => {
  const names = runtimeNames(runtime);
  const run = (...args: string[]): string[] => ['run', '--runtime', runtime, ...args];

  describe.concurrent('exit status and stdio', () => {
    it('prints stdout and exits 0', async () => {
      const { cd, image } = bed();
      const r = await cd.ctr(run('--rm', image, names.id('echo'), 'echo', 'hello'));
      expect(r).toMatchObject({ code: 0, stdout: 'hello\n' });
    });

    it('returns the init exit code as its own', async () => {
      const { cd, image } = bed();
      const r = await cd.ctr(run('--rm', image, names.id('exit7'), 'sh', '-c', 'exit 7'), { allowFail: true });
      expect(r.code).toBe(7);
    });

    it('keeps stderr apart from stdout', async () => {
      const { cd, image } = bed();
      const r = await cd.ctr(run('--rm', image, names.id('stderr'), 'sh', '-c', 'echo out; echo err >&2'));
      expect(r.stdout).toBe('out\n');
      expect(r.stderr).toBe('err\n');
    });

    it('feeds stdin and ends it with CloseIO when ctr sees EOF', async () => {
      const { cd, image } = bed();
      // EOF is sent only once the task echoes the first line: ctr 1.6 drops the CloseIO when its
      // stdin ends before the task exists (`echo x | ctr run ... cat` can hang forever).
      const bg = cd.ctrBackground(run('--rm', image, names.id('stdin'), 'cat'), { stdin: true });
      bg.write('data-1\n');
      await bg.waitForOutput('data-1\n');
      bg.write('data-2\n');
      bg.endInput();
      const r = await bg.exited;
      expect(r).toMatchObject({ code: 0, stdout: 'data-1\ndata-2\n' });
    });
  });

  describe.concurrent('signals', () => {
    it('reports 137 to an attached ctr run when the task is SIGKILLed', async () => {
      const { cd, image } = bed();
      const id = names.id('kill9run');
      const bg = cd.ctrBackground(run('--rm', image, id, 'sleep', '1000'));
      try {
        await waitForTaskStatus(cd, id, 'RUNNING');
        await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
        expect((await bg.exited).code).toBe(137);
      } finally {
        await bg.stop('SIGKILL');
        await removeContainer(cd, id);
      }
    });

    it('shows a SIGKILLed detached task as STOPPED with status 137', async () => {
      const { cd, image } = bed();
      const id = names.id('kill9det');
      try {
        await cd.ctr(run('-d', image, id, 'sleep', '1000'));
        const running = await waitForTaskStatus(cd, id, 'RUNNING');
        expect(running.pid).toBeGreaterThan(0);
        await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
        const stopped = await waitForTaskStatus(cd, id, 'STOPPED');
        expect(stopped.pid).toBe(running.pid);
        // ctr 1.6 has no `task wait`; `task rm` reports the exit status it collected.
        const rm = await cd.ctr(['tasks', 'rm', id]);
        expect(rm.stderr).toContain(`task ${id} exit with non-zero exit code 137`);
      } finally {
        await removeContainer(cd, id);
      }
    });
  });

  describe.concurrent('terminal', () => {
    it('gives the task a pty sized like ctr\'s terminal and returns its exit code', async () => {
      const { cd, image } = bed();
      // The resize arrives right after start, so the shell waits for a non-zero size first.
      const script = 'tty; i=0; while [ -z "$(stty size 2>/dev/null)" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; stty size; exit 4';
      const r = await cd.ctrInTerminal(run('-t', '--rm', image, names.id('tty'), 'sh', '-c', script), {
        rows: 33, cols: 111, allowFail: true,
      });
      const out = stripCr(r.stdout);
      expect(out).toMatch(/^\/dev\/pts\/\d+$/m);
      expect(out).toMatch(/^33 111$/m);
      expect(r.code).toBe(4);
    });
  });

  describe.concurrent('rootfs, logs and runtime options', () => {
    it('runs on a plain --rootfs directory with no snapshot', async () => {
      const { cd } = bed();
      const id = names.id('rootfs');
      const rootfs = path.join(await scratchDir(cd, id), 'rootfs');
      await makeBusyboxRootfs(rootfs);
      // No image config means no PATH in the spec, hence absolute paths.
      const r = await cd.ctr(run('--rm', '--rootfs', rootfs, id, '/bin/sh', '-c', 'echo from-container > /tmp/marker; cat /etc/passwd'));
      expect(r.stdout).toContain('root:x:0:0:root:/root:/bin/sh');
      // The write landed in the directory itself: it was the container's root, not a copy.
      expect(await fs.readFile(path.join(rootfs, 'tmp/marker'), 'utf8')).toBe('from-container\n');
      const snapshots = await cd.ctr(['snapshots', 'ls']);
      expect(snapshots.stdout.split('\n').map((l) => l.split(/\s+/)[0])).not.toContain(id);
    });

    it('writes the output of a detached task to a file:// log URI', async () => {
      const { cd, image } = bed();
      const id = names.id('loguri');
      const log = path.join(await scratchDir(cd, id), 'logs', 'out.log');
      const expected = Array.from({ length: 200 }, (_, i) => String(i + 1));
      try {
        // stdout only: with stdout and stderr both going to the file, the reference shim of
        // containerd 1.6.20 sometimes drops stderr ("error copying stderr" in its log).
        await cd.ctr(run('-d', '--log-uri', `file://${log}`, image, id, 'seq', '1', '200'));
        await waitForTaskStatus(cd, id, 'STOPPED');
        // STOPPED can be reported while the copy into the file is still draining.
        const lines = async (): Promise<string[]> => (await fs.readFile(log, 'utf8')).split('\n').filter((l) => l !== '');
        for (let n = 0; n < 100 && (await lines()).length < expected.length; n++) await delay(50);
        expect(await lines()).toEqual(expected);
      } finally {
        await removeContainer(cd, id);
      }
    });

    it('runs the configured runc binary (BinaryName) for create, start and delete', async () => {
      const { cd, image } = bed();
      const id = names.id('binname');
      const dir = await scratchDir(cd, id);
      const calls = path.join(dir, 'calls.log');
      const wrapper = path.join(dir, 'runc-wrapper.sh');
      await fs.writeFile(wrapper, `#!/bin/sh\necho "$*" >> ${calls}\nexec /usr/sbin/runc "$@"\n`, { mode: 0o755 });
      // ctr 1.6 sends containerd.runc.v1.Options (from --runc-binary) only to io.containerd.runc.v2
      // and refuses --runc-binary for any other runtime; those get runtimeoptions.v1.Options with
      // the --runtime-config-path, whose TOML carries BinaryName.
      let options: string[];
      if (runtime === 'io.containerd.runc.v2') {
        options = ['--runc-binary', wrapper];
      } else {
        const toml = path.join(dir, 'runtime.toml');
        await fs.writeFile(toml, `BinaryName = "${wrapper}"\n`);
        options = ['--runtime-config-path', toml];
      }
      const r = await cd.ctr(run('--rm', ...options, image, id, 'echo', 'wrapped'));
      expect(r.stdout).toBe('wrapped\n');
      const verbs = (await fs.readFile(calls, 'utf8'))
        .split('\n')
        .filter((l) => l !== '')
        .map((line) => line.split(' ').find((w) => ['create', 'start', 'delete'].includes(w)));
      expect(verbs).toContain('create');
      expect(verbs).toContain('start');
      expect(verbs).toContain('delete');
      expect(verbs.indexOf('create')).toBeLessThan(verbs.indexOf('start'));
      expect(verbs.indexOf('start')).toBeLessThan(verbs.indexOf('delete'));
    });
  });

  it('leaves no task, container, mount or shim process behind', async () => {
    expect(await findLeftovers(bed().cd, names.prefix)).toEqual([]);
  });
});

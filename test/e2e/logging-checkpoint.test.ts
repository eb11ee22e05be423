/**
 * Two paths through containerd 1.6 that need a helper program, per runtime: a `binary://` log
 * URI (the shim runs a logger that gets the task's stdout/stderr on fds 3/4), and checkpoint /
 * live restore with a runc wrapper standing in for CRIU (`criu check` fails on this host, so
 * checkpoint.test.ts cannot run; fixtures/runc-fakecriu.sh explains what it fakes).
 * Every case is checked against io.containerd.runc.v2 first; a case the reference fails is a
 * wrong case.
 */
import * as grpc from '@grpc/grpc-js';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Writer } from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { findLeftovers, removeContainer, RUNTIMES, waitForTaskStatus, type Containerd } from './harness';
import { subscribeEvents } from './fixtures/events';
import { delay } from './fixtures/system';
import { runtimeNames, scratchDir, useTestBed } from './fixtures/suite';

const bed = useTestBed();

/** Debian's containerd 1.6 runc shim: the behaviour every case is validated against. */
const REFERENCE_RUNTIME = 'io.containerd.runc.v2';
const FAKE_CRIU = path.join(__dirname, 'fixtures', 'runc-fakecriu.sh');

/** The file's content once it equals `expected`, else (after `timeoutMs`) whatever it holds. */
async function waitForContent(file: string, expected: string, timeoutMs = 10_000): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await fs.readFile(file, 'utf8').catch(() => undefined);
    if (text === expected || Date.now() > deadline) return text;
    await delay(50);
  }
}

/** True once `pid` no longer runs `program` (gone, reaped, or the pid reused by something else). */
async function processGone(pid: number, program: string, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    // A zombie has an empty cmdline: it has exited, only its parent has not collected it yet.
    if (!cmdline.includes(program)) return true;
    if (Date.now() > deadline) return false;
    await delay(50);
  }
}

/**
 * containerd's binary logger contract: stdout on fd 3, stderr on fd 4, readiness by closing fd 5.
 * It records argv, its exact environment and pid next to itself, copies both streams into files
 * and idles until the shim's SIGTERM at delete, which it records too. It never exits by itself:
 * when the pipes reach EOF differs (the 1.6 reference shim holds their write ends until delete),
 * so only the shim can have ended it. The shim passes no PATH (only CONTAINER_ID and
 * CONTAINER_NAMESPACE), hence absolute program paths.
 */
const LOGGER_SCRIPT = `#!/bin/sh
out=\${0%/*}
printf '%s\\n' "$@" > "$out/argv"
/usr/bin/tr '\\0' '\\n' < /proc/$$/environ > "$out/env"
echo $$ > "$out/pid"
trap 'echo TERM > "$out/signal"; exit 0' TERM
# the copies must not hold the readiness fd, or the shim would wait for them to exit
/bin/cat <&3 > "$out/stdout" 5>&- &
/bin/cat <&4 > "$out/stderr" 5>&- &
exec 3<&- 4<&- 5>&-
while :; do /bin/sleep 0.1; done
`;

/**
 * Runtime options that make the shim run `binary` instead of runc. ctr 1.6 sends
 * containerd.runc.v1.Options (from --runc-binary) only to io.containerd.runc.v2 and refuses it for
 * other runtimes; those get runtimeoptions.v1.Options whose TOML file carries BinaryName.
 */
async function runtimeBinaryOptions(runtime: string, dir: string, binary: string): Promise<string[]> {
  if (runtime === REFERENCE_RUNTIME) return ['--runc-binary', binary];
  const toml = path.join(dir, 'runtime.toml');
  await fs.writeFile(toml, `BinaryName = "${binary}"\n`);
  return ['--runtime-config-path', toml];
}

/** One wrapper invocation: its argv after the binary, split back into words. */
type Invocation = string[];

async function readInvocations(logFile: string): Promise<Invocation[]> {
  const text = await fs.readFile(logFile, 'utf8').catch(() => '');
  return text.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

/** The value following `flag` in an invocation, if the flag is there. */
const flagValue = (argv: Invocation, flag: string): string | undefined => {
  const at = argv.indexOf(flag);
  return at >= 0 ? argv[at + 1] : undefined;
};

/** The subcommand: the first word after runc's global options (which all take a value here). */
function subcommand(argv: Invocation): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i] ?? '';
    if (['--root', '--log', '--log-format', '--criu'].includes(word)) i++;
    else if (!word.startsWith('-')) return word;
  }
  return undefined;
}

/**
 * Tasks.Checkpoint through containerd's gRPC API with containerd.runc.v1.CheckpointOptions{exit}.
 * ctr 1.6 cannot ask any shim but the runc ones to exit after a checkpoint (`ctr tasks checkpoint
 * --exit` drops the options for other runtimes), so the request is built here, field by field:
 * CheckpointTaskRequest{container_id 1, options 3 Any{type_url 1, value 2}}, CheckpointOptions{exit 1}.
 */
async function checkpointTaskWithExit(cd: Containerd, containerId: string): Promise<void> {
  const options = Writer.create().uint32((1 << 3) | 0).bool(true).finish();
  const any = Writer.create()
    .uint32((1 << 3) | 2).string('containerd.runc.v1.CheckpointOptions')
    .uint32((2 << 3) | 2).bytes(options)
    .finish();
  const request = Buffer.from(Writer.create().uint32((1 << 3) | 2).string(containerId).uint32((3 << 3) | 2).bytes(any).finish());
  const client = new grpc.Client(`unix://${cd.address}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', cd.namespace);
  try {
    await new Promise<void>((resolve, reject) => {
      client.makeUnaryRequest(
        '/containerd.services.tasks.v1.Tasks/Checkpoint',
        (req: Buffer) => req,
        // The reply's descriptors name content nothing here refers to; the wrapper log is checked.
        (res: Buffer) => res,
        request,
        metadata,
        { deadline: Date.now() + 30_000 },
        (err) => (err ? reject(new Error(`Tasks.Checkpoint: ${grpc.status[err.code]}: ${err.details}`)) : resolve()),
      );
    });
  } finally {
    client.close();
  }
}

async function taskPids(cd: Containerd, id: string): Promise<number[]> {
  const r = await cd.ctr(['tasks', 'ps', id]);
  // PID INFO, then one row per process
  return r.stdout.split('\n').slice(1).map((l) => Number(l.trim().split(/\s+/)[0])).filter((n) => n > 0);
}

describe.each(RUNTIMES)('logging and checkpoint with %s', (runtime) => {
  const names = runtimeNames(runtime);

  it('runs a binary:// logger with the task\'s stdout on fd 3, stderr on fd 4, and ends it at delete', async () => {
    const { cd, image } = bed();
    const id = names.id('binlog');
    const dir = await scratchDir(cd, id);
    const logger = path.join(dir, 'logger.sh');
    await fs.writeFile(logger, LOGGER_SCRIPT, { mode: 0o755 });
    try {
      await cd.ctr(['run', '-d', '--runtime', runtime, '--log-uri', `binary://${logger}?k1=v1`,
        image, id, 'sh', '-c', 'echo out-line; echo err-line >&2']);
      await waitForTaskStatus(cd, id, 'STOPPED');
      // STOPPED can be reported before the logger has copied everything out of the pipes.
      expect(await waitForContent(path.join(dir, 'stdout'), 'out-line\n')).toBe('out-line\n');
      expect(await waitForContent(path.join(dir, 'stderr'), 'err-line\n')).toBe('err-line\n');
      // The query becomes argv pairs; the environment is exactly these two variables.
      expect(await fs.readFile(path.join(dir, 'argv'), 'utf8')).toBe('k1\nv1\n');
      const env = (await fs.readFile(path.join(dir, 'env'), 'utf8')).split('\n').filter((l) => l !== '').sort();
      expect(env).toEqual([`CONTAINER_ID=${id}`, `CONTAINER_NAMESPACE=${cd.namespace}`]);

      const loggerPid = Number((await fs.readFile(path.join(dir, 'pid'), 'utf8')).trim());
      expect(await processGone(loggerPid, logger, 0)).toBe(false);
      const rm = await cd.ctr(['tasks', 'rm', id]);
      expect(rm.stderr).toBe('');
      // The logger never exits by itself: only the shim's SIGTERM at delete can have ended it.
      expect(await processGone(loggerPid, logger)).toBe(true);
      expect(await fs.readFile(path.join(dir, 'signal'), 'utf8')).toBe('TERM\n');
      await cd.ctr(['containers', 'rm', id]);
      expect(await findLeftovers(cd, id)).toEqual([]);
    } finally {
      await removeContainer(cd, id);
    }
  });

  it('checkpoints through the runtime binary and restores a running task from the stored image', async () => {
    const { cd, image } = bed();
    const id = names.id('fakecriu');
    const ref = `docker.io/tshim/fake-checkpoint:${id}`;
    const dir = await scratchDir(cd, id);
    const calls = path.join(dir, 'runc-calls.log');
    // containerd's environment is shared by the whole file, so the log path is baked into a
    // per-test launcher instead.
    const wrapper = path.join(dir, 'runc');
    await fs.writeFile(wrapper, `#!/bin/sh\nFAKECRIU_LOG=${calls} exec /bin/bash ${FAKE_CRIU} "$@"\n`, { mode: 0o755 });
    const options = await runtimeBinaryOptions(runtime, dir, wrapper);
    const events = await subscribeEvents(cd);
    let restoreImage: string | undefined;
    try {
      await cd.ctr(['run', '-d', '--runtime', runtime, ...options, image, id, 'sh', '-c', 'while true; do sleep 0.2; done']);
      const before = await waitForTaskStatus(cd, id, 'RUNNING');

      // ctr pauses the task, checkpoints it and resumes it. Its CheckpointOptions never set
      // `exit` (only `ctr tasks checkpoint --exit` does, and only for runc runtimes), so both
      // shims must ask for --leave-running and the task keeps running.
      await cd.ctr(['containers', 'checkpoint', '--task', id, ref]);
      const checkpoints = (await readInvocations(calls)).filter((a) => subcommand(a) === 'checkpoint');
      expect(checkpoints).toHaveLength(1);
      const checkpoint = checkpoints[0] ?? [];
      const imagePath = flagValue(checkpoint, '--image-path');
      expect(imagePath).toMatch(/^\//);
      expect(flagValue(checkpoint, '--work-path')).toMatch(/^\//);
      expect(checkpoint).toContain('--leave-running');
      expect(checkpoint[checkpoint.length - 1]).toBe(id);
      expect(await waitForTaskStatus(cd, id, 'RUNNING')).toMatchObject({ pid: before.pid });
      // The image dir was containerd's temporary one: it is in the content store now.
      expect((await cd.ctr(['images', 'ls', '-q'])).stdout.split('\n')).toContain(ref);

      // The 1.6 reference shim publishes no /tasks/checkpointed (the topic exists, nothing in
      // containerd 1.6 emits it), so only tshim's event can be checked; it names the image dir.
      if (runtime !== REFERENCE_RUNTIME) {
        const event = await events.waitFor((e) => e.topic === '/tasks/checkpointed' && e.body.container_id === id);
        expect(event.body).toEqual({ container_id: id, checkpoint: imagePath });
      }

      await cd.ctr(['tasks', 'rm', '-f', id]);
      await cd.ctr(['containers', 'rm', id]);
      await cd.ctr(['containers', 'restore', '--live', id, ref]);
      const restored = await waitForTaskStatus(cd, id, 'RUNNING');

      const restores = (await readInvocations(calls)).filter((a) => subcommand(a) === 'restore');
      expect(restores).toHaveLength(1);
      const restore = restores[0] ?? [];
      restoreImage = flagValue(restore, '--image-path');
      // containerd unpacks the stored checkpoint into a new dir; the wrapper found its marker there.
      expect(restoreImage).toMatch(/^\//);
      expect(restoreImage).not.toBe(imagePath);
      expect(flagValue(restore, '--pid-file')).toMatch(/\/init\.pid$/);
      expect(flagValue(restore, '--bundle')).toMatch(new RegExp(`/${id}$`));
      expect(restore).toContain('--detach');
      expect(restore[restore.length - 1]).toBe(id);

      // A fresh init from the same bundle, reported by pid through Pids and State alike.
      expect(restored.pid).toBeGreaterThan(0);
      expect(restored.pid).not.toBe(before.pid);
      expect(await taskPids(cd, id)).toContain(restored.pid);
      expect(await fs.readFile(`/proc/${restored.pid}/cmdline`, 'utf8')).toContain('while true; do sleep 0.2; done');

      await cd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id]);
      await waitForTaskStatus(cd, id, 'STOPPED');
      await removeStoppedTask(cd, id, 137);
    } finally {
      await events.stop();
      await removeContainer(cd, id);
      await cd.ctr(['images', 'rm', '--sync', ref], { allowFail: true });
      // containerd 1.6 never removes the dir it unpacks a checkpoint into for Create.
      if (restoreImage !== undefined && path.basename(restoreImage).startsWith('ctrd-checkpoint')) {
        await fs.rm(restoreImage, { recursive: true, force: true });
      }
    }
  });

  it('checkpoints without --leave-running when asked to exit, and the task stops with 137', async () => {
    const { cd, image } = bed();
    const id = names.id('ckptexit');
    const dir = await scratchDir(cd, id);
    const calls = path.join(dir, 'runc-calls.log');
    const wrapper = path.join(dir, 'runc');
    await fs.writeFile(wrapper, `#!/bin/sh\nFAKECRIU_LOG=${calls} exec /bin/bash ${FAKE_CRIU} "$@"\n`, { mode: 0o755 });
    const options = await runtimeBinaryOptions(runtime, dir, wrapper);
    try {
      await cd.ctr(['run', '-d', '--runtime', runtime, ...options, image, id, 'sh', '-c', 'while true; do sleep 0.2; done']);
      await waitForTaskStatus(cd, id, 'RUNNING');
      await checkpointTaskWithExit(cd, id);
      const checkpoints = (await readInvocations(calls)).filter((a) => subcommand(a) === 'checkpoint');
      expect(checkpoints).toHaveLength(1);
      expect(checkpoints[0]).not.toContain('--leave-running');
      // The stand-in ends the container as a real dump would; the shim reports that exit as usual.
      await waitForTaskStatus(cd, id, 'STOPPED');
      await removeStoppedTask(cd, id, 137);
    } finally {
      await removeContainer(cd, id);
    }
  });

  it('leaves no task, container, mount or shim process behind', async () => {
    expect(await findLeftovers(bed().cd, names.prefix)).toEqual([]);
  });
});

/** `tasks rm` of a stopped task reports its exit status; then the container goes and nothing is left. */
async function removeStoppedTask(cd: Containerd, id: string, status: number): Promise<void> {
  const rm = await cd.ctr(['tasks', 'rm', id]);
  expect(rm.stderr).toContain(`task ${id} exit with non-zero exit code ${status}`);
  await cd.ctr(['containers', 'rm', id]);
  expect(await findLeftovers(cd, id)).toEqual([]);
}

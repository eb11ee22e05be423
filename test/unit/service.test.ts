import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DELETED_MARKER, deletedMarkerFor } from '../../src/common/deleted-marker';
import { Code, ShimError } from '../../src/common/errors';
import { codec } from '../../src/common/proto';
import { RESERVATION_MS, TaskService } from '../../src/common/service';
import { TaskStatus } from '../../src/common/types';
import { FakeBackend, outcome, RecordingSink } from './fake-backend';

function req<T extends object>(o: T): T {
  return o;
}

const flush = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

describe('TaskService against a fake backend', () => {
  let backend: FakeBackend;
  let sink: RecordingSink;
  let service: TaskService;
  let shutdowns: number;

  beforeEach(() => {
    backend = new FakeBackend();
    sink = new RecordingSink();
    shutdowns = 0;
    service = new TaskService(backend, sink, 'default', { requestShutdown: () => shutdowns++ });
  });

  async function create(id = 'c1'): Promise<number> {
    const r = await service.create(
      req({ id, bundle: '/b/' + id, rootfs: [], terminal: false, stdin: '', stdout: '/f/out', stderr: '', checkpoint: '', parentCheckpoint: '', options: null }) as never,
    );
    return r.pid;
  }

  it('runs the init lifecycle with events in containerd order', async () => {
    const pid = await create();
    expect(pid).toBeGreaterThan(0);
    expect((await service.state({ id: 'c1', execId: '' } as never)).status).toBe(TaskStatus.CREATED);
    expect((await service.start({ id: 'c1', execId: '' } as never)).pid).toBe(pid);
    expect((await service.state({ id: 'c1', execId: '' } as never)).status).toBe(TaskStatus.RUNNING);
    const waiting = service.wait({ id: 'c1', execId: '' } as never);
    backend.containers.get('c1')!.init.exit(7);
    const w = await waiting;
    expect(w.exitStatus).toBe(7);
    const st = await service.state({ id: 'c1', execId: '' } as never);
    expect(st.status).toBe(TaskStatus.STOPPED);
    expect(st.exitStatus).toBe(7);
    const d = await service.delete({ id: 'c1', execId: '' } as never);
    expect(d).toMatchObject({ pid, exitStatus: 7 });
    expect(sink.topics()).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    expect(sink.events[2]!.event).toMatchObject({ containerId: 'c1', id: 'c1', pid, exitStatus: 7 });
    expect(await outcome(service.state({ id: 'c1', execId: '' } as never))).toBe(Code.NotFound);
    await service.shutdown({ id: 'c1', now: false } as never);
    expect(shutdowns).toBe(1);
  });

  it('refuses illegal transitions with FailedPrecondition and unknown ids with NotFound', async () => {
    await create();
    expect(await outcome(service.resume({ id: 'c1' } as never))).toBe(Code.FailedPrecondition);
    await service.start({ id: 'c1', execId: '' } as never);
    expect(await outcome(service.start({ id: 'c1', execId: '' } as never))).toBe(Code.FailedPrecondition);
    expect(await outcome(service.delete({ id: 'c1', execId: '' } as never))).toBe(Code.FailedPrecondition);
    await service.pause({ id: 'c1' } as never);
    expect(await outcome(service.pause({ id: 'c1' } as never))).toBe(Code.FailedPrecondition);
    expect(await outcome(service.exec({ id: 'c1', execId: 'e', terminal: false, stdin: '', stdout: '', stderr: '', spec: null } as never))).toBe(
      Code.FailedPrecondition,
    );
    await service.resume({ id: 'c1' } as never);
    expect(await outcome(service.state({ id: 'nope', execId: '' } as never))).toBe(Code.NotFound);
    expect(await outcome(service.state({ id: 'c1', execId: 'nope' } as never))).toBe(Code.NotFound);
    expect(await outcome(service.kill({ id: 'c1', execId: 'nope', signal: 9, all: false } as never))).toBe(Code.NotFound);
    await service.kill({ id: 'c1', execId: '', signal: 9, all: false } as never);
    await service.wait({ id: 'c1', execId: '' } as never);
    expect(await outcome(service.kill({ id: 'c1', execId: '', signal: 9, all: false } as never))).toBe(Code.NotFound);
    expect(await outcome(service.pause({ id: 'c1' } as never))).toBe(Code.FailedPrecondition);
    expect(sink.topics()).toContain('/tasks/paused');
    expect(sink.topics()).toContain('/tasks/resumed');
  });

  it('handles execs: duplicate ids, kill before start, exit ordering before the init exit', async () => {
    await create();
    await service.start({ id: 'c1', execId: '' } as never);
    const execReq = { id: 'c1', execId: 'e1', terminal: false, stdin: '', stdout: '', stderr: '', spec: { typeUrl: 'x', value: Buffer.from('{}') } };
    await service.exec(execReq as never);
    expect(await outcome(service.exec(execReq as never))).toBe(Code.AlreadyExists);
    expect(await outcome(service.kill({ id: 'c1', execId: 'e1', signal: 15, all: false } as never))).toBe(Code.FailedPrecondition);
    const epid = (await service.start({ id: 'c1', execId: 'e1' } as never)).pid;
    expect(epid).toBeGreaterThan(0);
    const pids = await service.pids({ id: 'c1' } as never);
    const execEntry = pids.processes.find((p) => p.pid === epid);
    expect(execEntry?.info?.typeUrl).toBe('containerd.runc.v1.ProcessDetails');
    // init dies first; the exec's exit must still be published before the init's
    backend.containers.get('c1')!.init.exit(0);
    await service.wait({ id: 'c1', execId: '' } as never);
    await flush();
    const exits = sink.events.filter((e) => e.topic === '/tasks/exit').map((e) => e.event['id']);
    expect(exits).toEqual(['e1', 'c1']);
    expect(await outcome(service.start({ id: 'c1', execId: 'e1' } as never))).toBe(Code.FailedPrecondition);
    await service.delete({ id: 'c1', execId: 'e1' } as never);
    expect(await outcome(service.state({ id: 'c1', execId: 'e1' } as never))).toBe(Code.NotFound);
    // an exec id may be reused after delete... but not once the init is gone
    expect(await outcome(service.exec(execReq as never))).toBe(Code.FailedPrecondition);
    expect(sink.topics().filter((t) => t.startsWith('/tasks/exec'))).toEqual(['/tasks/exec-added', '/tasks/exec-started']);
  });

  it('kills an exec that outlives its init, then publishes both exits in order', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      await create();
      const c = backend.containers.get('c1')!;
      c.killExecsOnInitExit = false;
      await service.start({ id: 'c1', execId: '' } as never);
      await service.exec({ id: 'c1', execId: 'e1', terminal: false, stdin: '', stdout: '', stderr: '', spec: null } as never);
      await service.start({ id: 'c1', execId: 'e1' } as never);
      c.init.exit(0);
      const waiting = service.wait({ id: 'c1', execId: '' } as never);
      await vi.advanceTimersByTimeAsync(4000);
      expect(sink.topics()).not.toContain('/tasks/exit');
      await vi.advanceTimersByTimeAsync(2000);
      await waiting;
      expect(c.execs.get('e1')!.calls).toContain('kill 9 false');
      const exits = sink.events.filter((e) => e.topic === '/tasks/exit').map((e) => [e.event['id'], e.event['exitStatus']]);
      expect(exits).toEqual([
        ['e1', 137],
        ['c1', 0],
      ]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('releases Wait on an exec whose start failed or that was deleted unstarted; refuses exec id "init"', async () => {
    await create();
    await service.start({ id: 'c1', execId: '' } as never);
    const execReq = (execId: string) =>
      ({ id: 'c1', execId, terminal: false, stdin: '', stdout: '', stderr: '', spec: null }) as never;
    await service.exec(execReq('bad'));
    const c = backend.containers.get('c1')!;
    c.execs.get('bad')!.startGate = Promise.reject(new ShimError(Code.Unknown, 'OCI runtime exec failed'));
    const waitBad = service.wait({ id: 'c1', execId: 'bad' } as never);
    expect(await outcome(service.start({ id: 'c1', execId: 'bad' } as never))).toBe(Code.Unknown);
    expect((await waitBad).exitStatus).toBe(255);
    await service.exec(execReq('never'));
    const waitNever = service.wait({ id: 'c1', execId: 'never' } as never);
    await service.delete({ id: 'c1', execId: 'never' } as never);
    expect((await waitNever).exitStatus).toBe(0);
    expect(await outcome(service.exec(execReq('init')))).toBe(Code.InvalidArgument);
  });

  it('publishes start before an exit that races it', async () => {
    await create();
    const c = backend.containers.get('c1')!;
    let release!: () => void;
    c.init.startGate = new Promise((r) => (release = r));
    const starting = service.start({ id: 'c1', execId: '' } as never);
    await flush();
    c.init.exit(0);
    await flush();
    release();
    await starting;
    await service.wait({ id: 'c1', execId: '' } as never);
    expect(sink.topics()).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit']);
  });

  it('keeps serving while containers remain; connect never fails', async () => {
    await create('a');
    await service.shutdown({ id: 'a', now: false } as never);
    expect(shutdowns).toBe(0);
    expect((await service.connect({ id: 'zzz' } as never)).taskPid).toBe(0);
    expect((await service.connect({ id: 'a' } as never)).shimPid).toBe(process.pid);
  });

  it('rejects duplicate and malformed container ids', async () => {
    await create('a');
    expect(await outcome(create('a'))).toBe(Code.AlreadyExists);
    expect(await outcome(create('../etc'))).toBe(Code.InvalidArgument);
  });

  it('OOM hook publishes /tasks/oom', async () => {
    await create('a');
    backend.containers.get('a')!.hooks.onOom();
    expect(sink.events.at(-1)).toMatchObject({ topic: '/tasks/oom', event: { containerId: 'a' } });
  });
});

describe('reservations for a shared daemon (group.ts)', () => {
  let backend: FakeBackend;
  let shutdowns: number;
  let service: TaskService;

  beforeEach(() => {
    backend = new FakeBackend();
    shutdowns = 0;
    service = new TaskService(backend, new RecordingSink(), 'default', { requestShutdown: () => shutdowns++ });
  });

  const create = (id: string): Promise<unknown> =>
    service.create({ id, bundle: '/b/' + id, rootfs: [], terminal: false, stdin: '', stdout: '', stderr: '', checkpoint: '', parentCheckpoint: '', options: null } as never);

  it('a reserved daemon outlives a Shutdown with no container; the Create takes the reservation, the next Shutdown ends it', async () => {
    expect(service.reserve('next')).toBe(true);
    await service.shutdown({ id: 'prev', now: false } as never);
    expect(shutdowns).toBe(0);
    await create('next');
    backend.containers.get('next')!.init.exit(0);
    await service.delete({ id: 'next', execId: '' } as never);
    await service.shutdown({ id: 'next', now: false } as never);
    expect(shutdowns).toBe(1);
  });

  it('an ending daemon refuses reservations and Creates, and ends only once', async () => {
    await service.shutdown({ id: 'prev', now: false } as never);
    expect(shutdowns).toBe(1);
    expect(service.reserve('late')).toBe(false);
    expect(await outcome(create('late'))).toBe(Code.FailedPrecondition);
    await service.shutdown({ id: 'prev', now: false } as never);
    expect(shutdowns).toBe(1);
  });

  it('a reservation whose Create never comes lapses and ends the empty daemon', async () => {
    vi.useFakeTimers();
    try {
      expect(service.reserve('ghost')).toBe(true);
      await service.shutdown({ id: 'prev', now: false } as never);
      expect(shutdowns).toBe(0);
      vi.advanceTimersByTime(RESERVATION_MS);
      expect(shutdowns).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a lapsed reservation leaves a daemon with containers running', async () => {
    vi.useFakeTimers();
    try {
      await create('a');
      expect(service.reserve('ghost')).toBe(true);
      vi.advanceTimersByTime(RESERVATION_MS);
      expect(shutdowns).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('reservations released by containerd', () => {
  it('a Shutdown for the reserved container itself releases its reservation', async () => {
    let shutdowns = 0;
    const service = new TaskService(new FakeBackend(), new RecordingSink(), 'default', { requestShutdown: () => shutdowns++ });
    expect(service.reserve('gave-up')).toBe(true);
    expect(service.reserve('other')).toBe(true);
    await service.shutdown({ id: 'gave-up', now: false } as never);
    expect(shutdowns).toBe(0);
    await service.shutdown({ id: 'other', now: false } as never);
    expect(shutdowns).toBe(1);
  });
});

describe('the deleted marker (deleted-marker.ts)', () => {
  let bundle: string;
  beforeEach(() => {
    bundle = mkdtempSync(join(tmpdir(), 'tshim-marker-'));
  });
  afterEach(() => rmSync(bundle, { recursive: true, force: true }));

  it('Delete of the init leaves its DeleteResponse in the bundle; a Create there removes a stale one', async () => {
    const backend = new FakeBackend();
    const service = new TaskService(backend, new RecordingSink(), 'default', { requestShutdown: () => undefined });
    writeFileSync(join(bundle, DELETED_MARKER), 'stale');
    await service.create({ id: 'm1', bundle, rootfs: [], terminal: false, stdin: '', stdout: '', stderr: '', checkpoint: '', parentCheckpoint: '', options: null } as never);
    expect(existsSync(join(bundle, DELETED_MARKER))).toBe(false);
    await service.start({ id: 'm1', execId: '' } as never);
    const waiting = service.wait({ id: 'm1', execId: '' } as never);
    backend.containers.get('m1')!.init.exit(3);
    await waiting;
    const reply = await service.delete({ id: 'm1', execId: '' } as never);
    const marker = codec<{ pid: number; exitStatus: number }>('containerd.task.v2.DeleteResponse').decode(readFileSync(join(bundle, DELETED_MARKER)));
    expect(marker).toMatchObject({ pid: reply.pid, exitStatus: 3 });
  });

  it('the entry point answers containerd\'s `delete` from it; any other form goes through the whole action', () => {
    writeFileSync(join(bundle, DELETED_MARKER), Buffer.from([8, 7]));
    const flags = ['-namespace', 'k8s.io', '-address', '/run/containerd/containerd.sock', '-publish-binary', '/usr/bin/containerd', '-id', 'c1'];
    expect(deletedMarkerFor([...flags, '-bundle', bundle, 'delete'])).toEqual(Buffer.from([8, 7]));
    expect(deletedMarkerFor([...flags, '-bundle', bundle, '-debug', 'delete'])).toEqual(Buffer.from([8, 7]));
    for (const argv of [
      [...flags, 'delete'], // no -bundle: the action derives it from the working directory
      [...flags, '-bundle', 'relative/b', 'delete'],
      [...flags, '-bundle', bundle, 'start'],
      [...flags, '-bundle', join(bundle, 'elsewhere'), 'delete'], // no marker there
      [`-bundle=${bundle}`, 'delete'],
    ]) {
      expect(deletedMarkerFor(argv), argv.join(' ')).toBeUndefined();
    }
  });
});

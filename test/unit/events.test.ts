import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code, ShimError, unavailable } from '../../src/common/errors';
import {
  PublishBinaryTransport,
  Publisher,
  TtrpcForwardTransport,
  type EventEnvelope,
  type ForwardTransport,
} from '../../src/common/events';
import { codec, unpackAny } from '../../src/common/proto';
import { TtrpcServer } from '../../src/common/ttrpc/server';
import { decodeAny } from '../../src/common/wire';

const TASK_EXIT = 'containerd.events.TaskExit';
const TASK_START = 'containerd.events.TaskStart';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(5);
  }
}

function containerIdOf(envelope: EventEnvelope): string {
  const decoded = unpackAny<{ containerId: string }>(envelope.event);
  return decoded?.message.containerId ?? '';
}

/** Records every attempt; `behave` decides each attempt's outcome. */
class FakeTransport implements ForwardTransport {
  attempts: string[] = [];
  delivered: string[] = [];
  closed = false;

  constructor(private readonly behave: (id: string, attempt: number) => Promise<void> = async () => undefined) {}

  async forward(envelope: EventEnvelope): Promise<void> {
    const id = containerIdOf(envelope);
    this.attempts.push(id);
    const n = this.attempts.filter((a) => a === id).length;
    await this.behave(id, n);
    this.delivered.push(id);
  }

  close(): void {
    this.closed = true;
  }
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-events-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('Publisher queue', () => {
  it('retries the head in place so order survives intermittent failures', async () => {
    // Every event fails on its first attempt and every third event also on its second.
    const transport = new FakeTransport(async (id, attempt) => {
      await sleep(1);
      const n = Number(id.slice(1));
      if (attempt === 1 || (n % 3 === 0 && attempt === 2)) throw unavailable('flaky');
    });
    const publisher = new Publisher({ namespace: 'default', retryDelayMs: () => 2 }, transport);
    const ids = Array.from({ length: 30 }, (_, i) => `c${i}`);
    for (const id of ids) publisher.publish('/tasks/start', TASK_START, { containerId: id, pid: 1 });
    await waitFor(() => transport.delivered.length === ids.length);
    expect(transport.delivered).toEqual(ids);
    // Attempts never interleave: each event's retries are consecutive, at the head.
    const collapsed = transport.attempts.filter((id, i) => id !== transport.attempts[i - 1]);
    expect(collapsed).toEqual(ids);
    expect(transport.attempts.filter((id) => id === 'c3')).toHaveLength(3);
    expect(publisher.pending).toBe(0);
    await publisher.close(100);
  });

  it('never blocks publish while the transport hangs', async () => {
    let calls = 0;
    const hanging: ForwardTransport = {
      forward: () => {
        calls++;
        return new Promise<void>(() => undefined);
      },
      close: () => undefined,
    };
    const publisher = new Publisher({ namespace: 'default', forwardTimeoutMs: 60_000 }, hanging);
    const started = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) publisher.publish('/tasks/exit', TASK_EXIT, { containerId: `c${i}`, pid: i });
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    // A publish that waited on the transport would wait 60 s for each; this only tells them apart.
    expect(elapsedMs).toBeLessThan(30_000);
    expect(publisher.pending).toBe(1000);
    await sleep(10);
    expect(calls).toBe(1);
    const closeStarted = Date.now();
    await publisher.close(50);
    // bounded by close's 50 ms, not by the 60 s forward timeout
    expect(Date.now() - closeStarted).toBeLessThan(30_000);
    expect(publisher.pending).toBe(0);
  });

  it('close() flushes what is queued within its timeout', async () => {
    const transport = new FakeTransport(() => sleep(3));
    const publisher = new Publisher({ namespace: 'default' }, transport);
    for (let i = 0; i < 20; i++) publisher.publish('/tasks/exit', TASK_EXIT, { containerId: `c${i}` });
    const started = Date.now();
    await publisher.close(60_000);
    // returns once flushed, long before its timeout
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(transport.delivered).toHaveLength(20);
    expect(transport.closed).toBe(true);
    // Published after close: dropped, no throw, nothing queued.
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'late' });
    expect(publisher.pending).toBe(0);
    expect(transport.attempts).not.toContain('late');
  });

  it('close() gives up after its timeout, cutting a retry delay short', async () => {
    const transport = new FakeTransport(async () => {
      throw unavailable('down');
    });
    const publisher = new Publisher({ namespace: 'default', retryDelayMs: () => 60_000 }, transport);
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'a' });
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'b' });
    await sleep(10);
    const started = Date.now();
    await publisher.close(100);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(90);
    expect(took).toBeLessThan(1000);
    expect(publisher.pending).toBe(0);
    expect(transport.closed).toBe(true);
    expect(transport.attempts).toEqual(['a']);
  });

  it('drops an event after maxRetries and moves on', async () => {
    const transport = new FakeTransport(async (id) => {
      if (id === 'bad') throw new ShimError(Code.InvalidArgument, 'rejected');
    });
    const publisher = new Publisher({ namespace: 'default', maxRetries: 2, retryDelayMs: () => 1 }, transport);
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'bad' });
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'good' });
    await waitFor(() => transport.delivered.includes('good'));
    expect(transport.attempts).toEqual(['bad', 'bad', 'bad', 'good']);
    await publisher.close(100);
  });

  it('bounds each attempt by the forward timeout even if the transport ignores it', async () => {
    const transport = new FakeTransport((id) => (id === 'stuck' ? new Promise<void>(() => undefined) : Promise.resolve()));
    const publisher = new Publisher(
      { namespace: 'default', forwardTimeoutMs: 20, maxRetries: 1, retryDelayMs: () => 1 },
      transport,
    );
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'stuck' });
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'next' });
    await waitFor(() => transport.delivered.includes('next'), 2000);
    expect(transport.attempts).toEqual(['stuck', 'stuck', 'next']);
    await publisher.close(100);
  });

  it('drops the oldest waiting event on overflow, never the one in flight', async () => {
    let release: (() => void) | undefined;
    const transport = new FakeTransport((id) =>
      id === 'e0' ? new Promise<void>((resolve) => (release = resolve)) : Promise.resolve(),
    );
    const publisher = new Publisher({ namespace: 'default', maxQueue: 3 }, transport);
    for (let i = 0; i < 6; i++) publisher.publish('/tasks/exit', TASK_EXIT, { containerId: `e${i}` });
    expect(publisher.pending).toBe(4);
    await waitFor(() => release !== undefined);
    release?.();
    await waitFor(() => transport.delivered.length === 4);
    expect(transport.delivered).toEqual(['e0', 'e3', 'e4', 'e5']);
    await publisher.close(100);
  });

  it('stamps the time at publish and snapshots the event', async () => {
    const seen: EventEnvelope[] = [];
    const publisher = new Publisher(
      { namespace: 'ns1' },
      { forward: async (e) => void seen.push(e), close: () => undefined },
    );
    const before = Date.now();
    const event = { containerId: 'c1', pid: 7 };
    publisher.publish('/tasks/start', TASK_START, event);
    event.containerId = 'mutated';
    await waitFor(() => seen.length === 1);
    const envelope = seen[0] as EventEnvelope;
    expect(envelope.namespace).toBe('ns1');
    expect(envelope.topic).toBe('/tasks/start');
    expect(envelope.event.typeUrl).toBe(TASK_START);
    expect(containerIdOf(envelope)).toBe('c1');
    expect(envelope.timestamp.getTime()).toBeGreaterThanOrEqual(before);
    expect(envelope.timestamp.getTime()).toBeLessThanOrEqual(Date.now());
    await publisher.close(100);
  });

  it('never throws: bad event types and a missing transport only log', async () => {
    const transport = new FakeTransport();
    const publisher = new Publisher({ namespace: 'default' }, transport);
    expect(() => publisher.publish('/tasks/exit', 'no.such.Type', { x: 1 })).not.toThrow();
    expect(() => publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'c', exitedAt: 'not a timestamp' })).not.toThrow();
    expect(publisher.pending).toBe(0);
    await publisher.close(100);

    const discarding = new Publisher({ namespace: 'default' });
    expect(() => discarding.publish('/tasks/exit', TASK_EXIT, { containerId: 'c' })).not.toThrow();
    expect(discarding.pending).toBe(0);
    await discarding.close(100);
  });
});

interface Received {
  namespace: string | undefined;
  envelope: {
    timestamp: { seconds: number; nanos: number };
    namespace: string;
    topic: string;
    event: { typeUrl: string; value: Buffer };
  };
  deadline: number | undefined;
}

/** A containerd-like events endpoint on a unix socket. */
async function startEventsServer(socketPath: string, received: Received[]): Promise<{ stop: () => Promise<void>; connections: () => number }> {
  const server = new TtrpcServer();
  const forwardRequest = codec<{ envelope: Received['envelope'] }>('containerd.services.events.ttrpc.v1.ForwardRequest');
  server.register('containerd.services.events.ttrpc.v1.Events', {
    Forward: async (payload, ctx) => {
      received.push({
        namespace: ctx.metadata.get('containerd-namespace-ttrpc')?.[0],
        envelope: forwardRequest.decode(payload).envelope,
        deadline: ctx.deadline,
      });
      return new Uint8Array(0);
    },
  });
  const netServer = net.createServer();
  let connections = 0;
  netServer.on('connection', () => connections++);
  server.attach(netServer);
  await new Promise<void>((resolve, reject) => {
    netServer.once('error', reject);
    netServer.listen(socketPath, () => resolve());
  });
  return {
    connections: () => connections,
    stop: async () => {
      await server.shutdown(100);
      await new Promise((resolve) => netServer.close(resolve));
      fs.rmSync(socketPath, { force: true });
    },
  };
}

describe('TtrpcForwardTransport against a real ttrpc server', () => {
  it('forwards envelopes with namespace metadata, type URL and a real timestamp', async () => {
    const sock = path.join(tmp, 'events-a.sock');
    const received: Received[] = [];
    const server = await startEventsServer(sock, received);
    const publisher = new Publisher({ namespace: 'k8s.io', ttrpcAddress: `unix://${sock}` });
    const before = Date.now();
    publisher.publish('/tasks/exit', TASK_EXIT, {
      containerId: 'c1',
      id: 'exec-1',
      pid: 4242,
      exitStatus: 137,
      exitedAt: { seconds: 1_800_000_000, nanos: 5 },
    });
    publisher.publish('/tasks/delete', 'containerd.events.TaskDelete', { containerId: 'c1', pid: 4242 });
    await waitFor(() => received.length === 2);
    await publisher.close(1000);
    await server.stop();

    const [exit, del] = received as [Received, Received];
    expect(exit.namespace).toBe('k8s.io');
    expect(exit.envelope.namespace).toBe('k8s.io');
    expect(exit.envelope.topic).toBe('/tasks/exit');
    expect(exit.envelope.event.typeUrl).toBe(TASK_EXIT);
    const ms = exit.envelope.timestamp.seconds * 1000 + exit.envelope.timestamp.nanos / 1e6;
    expect(ms).toBeGreaterThanOrEqual(before - 1);
    expect(ms).toBeLessThanOrEqual(Date.now());
    // The request carries the forward timeout as its deadline, like the Go publisher's 5 s.
    expect(exit.deadline).toBeDefined();
    const exitEvent = unpackAny<Record<string, unknown>>(exit.envelope.event)?.message;
    expect(exitEvent).toMatchObject({ containerId: 'c1', id: 'exec-1', pid: 4242, exitStatus: 137 });
    expect(del.envelope.topic).toBe('/tasks/delete');
    expect(del.envelope.event.typeUrl).toBe('containerd.events.TaskDelete');
  });

  it('prepare() dials ahead of the first event, which then goes over that connection; with nobody listening it is harmless', async () => {
    const sock = path.join(tmp, 'events-p.sock');
    const received: Received[] = [];
    const early = new Publisher({ namespace: 'default', ttrpcAddress: sock, retryDelayMs: () => 20 });
    early.prepare(); // nothing listens yet
    const server = await startEventsServer(sock, received);
    const publisher = new Publisher({ namespace: 'default', ttrpcAddress: sock });
    publisher.prepare();
    await waitFor(() => server.connections() === 1);
    expect(received).toHaveLength(0);
    publisher.publish('/tasks/create', 'containerd.events.TaskCreate', { containerId: 'c1', pid: 1 });
    early.publish('/tasks/create', 'containerd.events.TaskCreate', { containerId: 'c2', pid: 2 });
    await waitFor(() => received.length === 2);
    expect(server.connections()).toBe(2);
    await publisher.close(1000);
    await early.close(1000);
    await server.stop();
  });

  it('delivers in order once a server that was down comes up', async () => {
    const sock = path.join(tmp, 'events-b.sock');
    const received: Received[] = [];
    const publisher = new Publisher({ namespace: 'default', ttrpcAddress: sock, retryDelayMs: () => 50 });
    const ids = ['c1', 'c2', 'c3', 'c4'];
    for (const id of ids) publisher.publish('/tasks/start', TASK_START, { containerId: id, pid: 1 });
    await sleep(150);
    expect(received).toHaveLength(0);
    const server = await startEventsServer(sock, received);
    await waitFor(() => received.length === ids.length);
    const got = received.map((r) => unpackAny<{ containerId: string }>(r.envelope.event)?.message.containerId);
    expect(got).toEqual(ids);
    await publisher.close(1000);
    await server.stop();
  });

  it('redials when containerd restarts and closes the connection', async () => {
    const sock = path.join(tmp, 'events-c.sock');
    const first: Received[] = [];
    const second: Received[] = [];
    const transport = new TtrpcForwardTransport(sock, { timeoutMs: 1000 });
    const publisher = new Publisher({ namespace: 'default', retryDelayMs: () => 20 }, transport);
    let server = await startEventsServer(sock, first);
    publisher.publish('/tasks/start', TASK_START, { containerId: 'before', pid: 1 });
    await waitFor(() => first.length === 1);
    await server.stop();
    server = await startEventsServer(sock, second);
    publisher.publish('/tasks/exit', TASK_EXIT, { containerId: 'after', pid: 1 });
    await waitFor(() => second.length === 1);
    expect(second[0]?.envelope.topic).toBe('/tasks/exit');
    await publisher.close(1000);
    await server.stop();
  });

  it('surfaces a server error status as a ShimError with its code', async () => {
    const sock = path.join(tmp, 'events-d.sock');
    const server = new TtrpcServer();
    server.register('containerd.services.events.ttrpc.v1.Events', {
      Forward: async () => {
        throw new ShimError(Code.InvalidArgument, 'envelope timestamp is zero');
      },
    });
    const netServer = net.createServer();
    server.attach(netServer);
    await new Promise<void>((resolve) => netServer.listen(sock, () => resolve()));
    const transport = new TtrpcForwardTransport(sock);
    const envelope: EventEnvelope = {
      timestamp: new Date(),
      namespace: 'default',
      topic: '/tasks/oom',
      event: { typeUrl: 'containerd.events.TaskOOM', value: Buffer.alloc(0) },
    };
    await expect(transport.forward(envelope)).rejects.toMatchObject({ code: Code.InvalidArgument });
    transport.close();
    await expect(transport.forward(envelope)).rejects.toMatchObject({ code: Code.Unavailable });
    await server.shutdown(100);
    await new Promise((resolve) => netServer.close(resolve));
  });
});

describe('PublishBinaryTransport', () => {
  function script(name: string, body: string): string {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return file;
  }

  it('runs `<bin> --address A publish --topic T --namespace N` with the event Any on stdin', async () => {
    const out = path.join(tmp, 'publish-out');
    const bin = script('fake-publish', `printf '%s\\n' "$@" > ${out}.args; cat > ${out}.stdin`);
    const transport = new PublishBinaryTransport(bin, '/run/c.sock');
    const publisher = new Publisher({ namespace: 'default' }, transport);
    publisher.publish('/tasks/oom', 'containerd.events.TaskOOM', { containerId: 'c9' });
    await publisher.close(5000);
    expect(fs.readFileSync(`${out}.args`, 'utf8').split('\n').filter(Boolean)).toEqual([
      '--address',
      '/run/c.sock',
      'publish',
      '--topic',
      '/tasks/oom',
      '--namespace',
      'default',
    ]);
    const any = decodeAny(fs.readFileSync(`${out}.stdin`));
    expect(any.typeUrl).toBe('containerd.events.TaskOOM');
    expect(unpackAny<{ containerId: string }>(any)?.message.containerId).toBe('c9');
  });

  it('rejects with the stderr of a failing binary, and Unavailable for a missing one', async () => {
    const bin = script('failing-publish', 'cat >/dev/null; echo "ctr: namespace required" >&2; exit 3');
    const envelope: EventEnvelope = {
      timestamp: new Date(),
      namespace: 'default',
      topic: '/tasks/oom',
      event: { typeUrl: 'containerd.events.TaskOOM', value: Buffer.alloc(0) },
    };
    const failing = new PublishBinaryTransport(bin, '/run/c.sock');
    await expect(failing.forward(envelope)).rejects.toThrow(/exit status 3.*namespace required/);
    const missing = new PublishBinaryTransport(path.join(tmp, 'does-not-exist'), '/run/c.sock');
    await expect(missing.forward(envelope)).rejects.toMatchObject({ code: Code.Unavailable });
    const slow = new PublishBinaryTransport(script('slow-publish', 'sleep 5'), '/run/c.sock', { timeoutMs: 100 });
    await expect(slow.forward(envelope)).rejects.toMatchObject({ code: Code.DeadlineExceeded });
  });
});

/**
 * A private containerd 1.6 (own root/state/sockets, CRI disabled) with `ctr events` watching it:
 * the real consumer of both transports.
 */
describe('against a real containerd', () => {
  let dir: string;
  let daemon: ChildProcess | undefined;
  let watcher: ChildProcess | undefined;
  let eventsOut = '';
  const available = fs.existsSync('/usr/bin/containerd') && fs.existsSync('/usr/bin/ctr');

  async function stopChild(child: ChildProcess | undefined): Promise<void> {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  beforeAll(async () => {
    if (!available) return;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-ctd-'));
    fs.writeFileSync(
      path.join(dir, 'config.toml'),
      [
        'version = 2',
        `root = "${dir}/root"`,
        `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]',
        `  address = "${dir}/c.sock"`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${dir}/opt"`,
      ].join('\n'),
    );
    daemon = spawn('/usr/bin/containerd', ['--config', path.join(dir, 'config.toml')], { stdio: 'ignore' });
    await waitFor(() => fs.existsSync(path.join(dir, 'c.sock.ttrpc')), 20_000);
    watcher = spawn('/usr/bin/ctr', ['--address', path.join(dir, 'c.sock'), 'events'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    watcher.stdout?.on('data', (c: Buffer) => (eventsOut += c.toString()));
    // ctr subscribes asynchronously; a probe event published until it shows up proves it listens.
    const probeAny = Buffer.from('0a19636f6e7461696e6572642e6576656e74732e5461736b4f4f4d', 'hex');
    const deadline = Date.now() + 20_000;
    while (!eventsOut.includes(' probe /tasks/oom')) {
      if (Date.now() > deadline) throw new Error('ctr events never saw the probe event');
      const args = ['--address', path.join(dir, 'c.sock'), 'publish', '--topic', '/tasks/oom', '--namespace', 'probe'];
      const probe = spawn('/usr/bin/containerd', args, { stdio: ['pipe', 'ignore', 'ignore'] });
      probe.stdin?.end(probeAny);
      await new Promise((resolve) => probe.once('exit', resolve));
      await sleep(100);
    }
  });

  afterAll(async () => {
    await stopChild(watcher);
    await stopChild(daemon);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** ctr prints `<date> <time> +0000 UTC <namespace> <topic> <json>`. */
  function eventsFor(namespace: string): Array<{ topic: string; event: Record<string, unknown> }> {
    return eventsOut
      .split('\n')
      .map((line) => /^\S+ \S+ \S+ UTC (\S+) (\S+) (.*)$/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null && m[1] === namespace)
      .map((m) => ({ topic: m[2] as string, event: JSON.parse(m[3] as string) as Record<string, unknown> }));
  }

  it.runIf(available)('accepts our Forward envelopes over its ttrpc socket, in order', async () => {
    const publisher = new Publisher({ namespace: 'tshim-ttrpc', ttrpcAddress: `unix://${dir}/c.sock.ttrpc` });
    publisher.publish('/tasks/start', TASK_START, { containerId: 'c1', pid: 100 });
    publisher.publish('/tasks/exit', TASK_EXIT, {
      containerId: 'c1',
      id: 'c1',
      pid: 100,
      exitStatus: 3,
      exitedAt: { seconds: 1_800_000_000, nanos: 0 },
    });
    publisher.publish('/tasks/delete', 'containerd.events.TaskDelete', { containerId: 'c1', pid: 100, exitStatus: 3 });
    await publisher.close(5000);
    await waitFor(() => eventsFor('tshim-ttrpc').length === 3);
    const events = eventsFor('tshim-ttrpc');
    expect(events.map((e) => e.topic)).toEqual(['/tasks/start', '/tasks/exit', '/tasks/delete']);
    expect(events[1]?.event).toMatchObject({ container_id: 'c1', id: 'c1', pid: 100, exit_status: 3 });
  });

  it.runIf(available)('accepts events through `containerd publish` as the publish binary', async () => {
    const publisher = new Publisher({
      namespace: 'tshim-binary',
      publishBinary: '/usr/bin/containerd',
      containerdAddress: path.join(dir, 'c.sock'),
    });
    publisher.publish('/tasks/oom', 'containerd.events.TaskOOM', { containerId: 'c2' });
    publisher.publish('/tasks/paused', 'containerd.events.TaskPaused', { containerId: 'c2' });
    await publisher.close(10_000);
    await waitFor(() => eventsFor('tshim-binary').length === 2);
    expect(eventsFor('tshim-binary')).toEqual([
      { topic: '/tasks/oom', event: { container_id: 'c2' } },
      { topic: '/tasks/paused', event: { container_id: 'c2' } },
    ]);
  });
});

/**
 * Issue #10, point 3: containerd 2.x, played by this test (only containerd 1.6 installs here).
 * The test is the containerd: it runs the shim's `start` exactly as 2.x does, reads the bootstrap
 * it prints as 2.x parses it, connects with ttrpc or gRPC as 2.x would, drives a real busybox
 * container through the whole Task API lifecycle and receives the shim's events on a fake
 * containerd events service (ttrpc `Forward`), then runs the `delete` action as 2.x does.
 *
 * Verified against the containerd 2.x sources (read, not copied; core/runtime/v2/command.go,
 * binary.go, shim.go, bridge.go, pkg/shim/util.go):
 * - start argv: `-namespace NS -address GRPC -publish-binary CONTAINERD -id ID [-debug] start`,
 *   cwd = the bundle; delete adds `-bundle PATH` before `delete` and gets no stdin;
 * - start environment: containerd's own plus GOMAXPROCS=2, MAX_SHIM_VERSION=2, TTRPC_ADDRESS,
 *   GRPC_ADDRESS, NAMESPACE (TSHIM_PROTOCOL=grpc reaches the shim the same way: containerd's own
 *   environment, e.g. a systemd drop-in);
 * - start stdin (2.3, any shim not named *shim-runc-v1* / *shim-runhcs-v1*): a
 *   containerd.runtime.bootstrap.v1.BootstrapParams with the runtime options as an extension;
 * - start output: CombinedOutput, TrimSpace, then JSON {version, address, protocol}; not JSON or
 *   version < 2 means a plain ttrpc address and task API v2; version > 3 is an error;
 * - ttrpc: the `unix://` prefix is stripped before dialling; version 2 selects
 *   containerd.task.v2.Task, version 3 containerd.task.v3.Task; gRPC only with version 3, and the
 *   address is first dialled as a plain unix socket path (so it must be a bare path) and then
 *   given to grpc-go as `unix://` + address;
 * - events reach containerd's ttrpc `containerd.services.events.ttrpc.v1.Events/Forward` (wire
 *   identical Envelope in 2.x).
 *
 * Not verified (no containerd 2.x binary here, and these are behaviour, not source, facts):
 * - that a real 2.x accepts every reply (field values were checked against our own reading of the
 *   Go client, not by running it); the 2.3 protobuf BootstrapResult parse of a plain or JSON reply
 *   (reasoned: both fail to parse as protobuf and fall through);
 * - 2.x's sandbox API and the streaming IO of task v3 (tshim announces version 2 over ttrpc, so
 *   2.x uses task v2 there; the ttrpc-v3 case drives v3 as 2.x would for a shim that announced 3);
 * - `-debug-socket`, SCHED_CORE, OTEL_* variables and 2.x's runtime `env` (accepted or ignored).
 *
 * tshim's own TSHIM_SPARE=0 keeps spares out: nothing answers at the fake -address, so a spare
 * would only idle until its first check.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codec } from '../../src/common/proto';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { TtrpcServer } from '../../src/common/ttrpc/server';
import { EVENTS_SERVICE_TTRPC, TASK_METHODS, TASK_SERVICE_V2, TASK_SERVICE_V3, TaskStatus, type TaskMethod } from '../../src/common/types';
import { defaultShimDir } from './harness';
import { makeBusyboxRootfs } from './image';
import { daemonPids, isAlive, waitUntil } from './shim-wire-helpers';

const SHIM = path.join(defaultShimDir(), 'containerd-shim-tshim-v2');
const CONTAINERD_BINARY = '/usr/bin/containerd';
const PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';

interface Envelope {
  timestamp: { seconds: number; nanos: number } | null;
  namespace: string;
  topic: string;
  event: { typeUrl: string; value: Buffer } | null;
}

interface Received {
  metadataNamespace: string | undefined;
  envelope: Envelope;
}

/** containerd's side of the events: a ttrpc Events service at TTRPC_ADDRESS. */
async function startEventsService(socketPath: string, received: Received[]): Promise<() => Promise<void>> {
  const server = new TtrpcServer();
  const forward = codec<{ envelope: Envelope }>('containerd.services.events.ttrpc.v1.ForwardRequest');
  server.register(EVENTS_SERVICE_TTRPC, {
    Forward: async (payload, ctx) => {
      received.push({ metadataNamespace: ctx.metadata.get('containerd-namespace-ttrpc')?.[0], envelope: forward.decode(payload).envelope });
      return new Uint8Array(0);
    },
  });
  const listener = net.createServer();
  server.attach(listener);
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(socketPath, () => resolve());
  });
  return async () => {
    await server.shutdown(100);
    await new Promise((resolve) => listener.close(resolve));
    fs.rmSync(socketPath, { force: true });
  };
}

interface Run {
  code: number | null;
  output: Buffer;
  stdout: Buffer;
}

/** exec.Cmd as containerd uses it: CombinedOutput for start, separate stdout for delete. */
function runShim(args: string[], cwd: string, env: NodeJS.ProcessEnv, stdin: Buffer | undefined): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(SHIM, args, { cwd, env, stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], detached: true });
    const combined: Buffer[] = [];
    const stdout: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => (combined.push(b), stdout.push(b)));
    child.stderr!.on('data', (b: Buffer) => combined.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output: Buffer.concat(combined), stdout: Buffer.concat(stdout) }));
    if (stdin) {
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(stdin);
    }
  });
}

interface StartParams {
  version: number;
  address: string;
  protocol: string;
}

/** parseStartResponse of containerd 2.x, step by step. */
function parseStartResponse(output: Buffer): StartParams {
  const response = output.toString('utf8').trim();
  let params: Partial<StartParams> | undefined;
  try {
    params = JSON.parse(response) as Partial<StartParams>;
  } catch {
    params = undefined;
  }
  if (!params || typeof params !== 'object' || (params.version ?? 0) < 2) return { version: 2, address: response, protocol: 'ttrpc' };
  if ((params.version ?? 0) > 3) throw new Error(`unsupported shim version (${params.version})`);
  return { version: params.version!, address: params.address ?? '', protocol: params.protocol ?? '' };
}

/** A task client as 2.x makes one from the bootstrap (bridge.go NewTaskClient). */
interface TaskClient {
  readonly service: string;
  call<Res>(method: TaskMethod, request: unknown): Promise<Res>;
  close(): void;
}

async function connectTask(params: StartParams, namespace: string, forceV3 = false): Promise<TaskClient> {
  const encode = (method: TaskMethod, request: unknown): Buffer => Buffer.from(codec(TASK_METHODS[method].request).encode(request));
  const decode = <Res>(method: TaskMethod, bytes: Uint8Array): Res => codec<Res>(TASK_METHODS[method].response).decode(bytes);
  if (params.protocol === 'ttrpc') {
    const service = forceV3 || params.version === 3 ? TASK_SERVICE_V3 : TASK_SERVICE_V2;
    const client = await TtrpcClient.connect(params.address.replace(/^unix:\/\//, ''), { timeoutMs: 5000 });
    return {
      service,
      call: async <Res>(method: TaskMethod, request: unknown) =>
        decode<Res>(method, await client.call(service, method, encode(method, request), { timeoutMs: 20_000, metadata: { 'containerd-namespace-ttrpc': namespace } })),
      close: () => client.close(),
    };
  }
  if (params.protocol !== 'grpc' || params.version !== 3) throw new Error(`containerd 2.x would refuse ${JSON.stringify(params)}`);
  // grpcDialContext: a plain unix dial of the address first, then grpc-go on unix:// + address.
  await new Promise<void>((resolve, reject) => {
    const probe = net.connect(params.address);
    probe.once('connect', () => (probe.destroy(), resolve()));
    probe.once('error', reject);
  });
  const client = new grpc.Client(`unix://${params.address}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', namespace);
  return {
    service: TASK_SERVICE_V3,
    call: <Res>(method: TaskMethod, request: unknown) =>
      new Promise<Res>((resolve, reject) => {
        client.makeUnaryRequest(
          `/${TASK_SERVICE_V3}/${method}`,
          (b: Buffer) => b,
          (b: Buffer) => b,
          encode(method, request),
          metadata,
          { deadline: Date.now() + 20_000 },
          (err: grpc.ServiceError | null, value?: Buffer) => (err ? reject(err) : resolve(decode<Res>(method, value ?? Buffer.alloc(0)))),
        );
      }),
    close: () => client.close(),
  };
}

/** BootstrapParams as 2.3's command() fills it for `start`. */
function runcOptionsAny(runcRoot: string): { typeUrl: string; value: Buffer } {
  return { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from(codec('containerd.runc.v1.Options').encode({ binaryName: 'runc', root: runcRoot })) };
}

function bootstrapParams(f: { id: string; namespace: string; address: string; runcRoot: string }): Buffer {
  return Buffer.from(
    codec('containerd.runtime.bootstrap.v1.BootstrapParams').encode({
      instanceId: f.id,
      namespace: f.namespace,
      logLevel: 0, // INFO
      containerdVersion: 'v2.3.0',
      containerdTtrpcAddress: `${f.address}.ttrpc`,
      containerdGrpcAddress: f.address,
      containerdBinary: CONTAINERD_BINARY,
      extensions: [{ value: runcOptionsAny(f.runcRoot) }],
    }),
  );
}

/** The OCI bundle 2.x would lay out: config.json from `runc spec`, busybox rootfs. */
async function writeBundle(dir: string, args: string[]): Promise<void> {
  await makeBusyboxRootfs(path.join(dir, 'rootfs'));
  await new Promise<void>((resolve, reject) => {
    const child = spawn('runc', ['spec'], { cwd: dir, stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`runc spec exited ${code}`))));
  });
  const spec = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as {
    process: { args: string[]; terminal: boolean; env: string[] };
    root: { path: string; readonly: boolean };
  };
  spec.process.args = args;
  spec.process.terminal = false;
  spec.root = { path: 'rootfs', readonly: false };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(spec));
}

const CASES = [
  { name: 'ttrpc, the bootstrap tshim prints by default (2.x then uses task v2)', env: {}, forceV3: false, expect: { protocol: 'ttrpc', version: 2, service: TASK_SERVICE_V2 } },
  { name: 'ttrpc, task API v3 (as 2.x calls a shim announcing version 3)', env: {}, forceV3: true, expect: { protocol: 'ttrpc', version: 2, service: TASK_SERVICE_V3 } },
  { name: 'gRPC, TSHIM_PROTOCOL=grpc (version-3 JSON bootstrap)', env: { TSHIM_PROTOCOL: 'grpc' }, forceV3: false, expect: { protocol: 'grpc', version: 3, service: TASK_SERVICE_V3 } },
] as const;

describe.each(CASES)('containerd 2.x drives tshim: $name', (c) => {
  const tag = randomBytes(4).toString('hex');
  const root = `/tmp/tshim-c2-${tag}`;
  const namespace = `tshim-c2-${tag}`;
  const id = `c2-${tag}`;
  const address = path.join(root, 'containerd.sock');
  const bundle = path.join(root, 'state', namespace, id);
  const runcRoot = path.join(root, 'runc');
  const received: Received[] = [];
  let stopEvents: (() => Promise<void>) | undefined;
  let task: TaskClient | undefined;
  let start: Run | undefined;
  let params: StartParams | undefined;

  const env: NodeJS.ProcessEnv = {
    // containerd's own environment (a systemd service's), then what command() appends
    PATH: `${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    TSHIM_SPARE: '0',
    ...c.env,
    GOMAXPROCS: '2',
    MAX_SHIM_VERSION: '2',
    TTRPC_ADDRESS: `${address}.ttrpc`,
    GRPC_ADDRESS: address,
    NAMESPACE: namespace,
  };

  beforeAll(async () => {
    fs.mkdirSync(bundle, { recursive: true });
    await writeBundle(bundle, ['sleep', '600']);
    stopEvents = await startEventsService(`${address}.ttrpc`, received);
    const args = ['-namespace', namespace, '-address', address, '-publish-binary', CONTAINERD_BINARY, '-id', id, 'start'];
    start = await runShim(args, bundle, env, bootstrapParams({ id, namespace, address, runcRoot }));
    params = parseStartResponse(start.output);
  });

  afterAll(async () => {
    task?.close();
    for (const pid of await daemonPids(namespace)) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    await new Promise<void>((resolve) => {
      const child = spawn('runc', ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore' });
      child.on('close', () => resolve());
      child.on('error', () => resolve());
    });
    await stopEvents?.();
    if (params) fs.rmSync(params.address.replace(/^unix:\/\//, ''), { force: true });
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('start exits 0 with only the bootstrap on its combined output, which 2.x parses as expected', () => {
    expect(start!.code).toBe(0);
    expect(params).toMatchObject({ protocol: c.expect.protocol, version: c.expect.version });
    // ttrpc keeps unix:// (stripped by the dialer); gRPC must be a bare path (dialled as one).
    expect(params!.address).toMatch(c.expect.protocol === 'grpc' ? /^\/run\/containerd\/s\/[0-9a-f]{64}$/ : /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    // `address` for containerd versions that read it back on restart
    expect(fs.readFileSync(path.join(bundle, 'address'), 'utf8')).toMatch(/^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
  });

  it('serves a whole lifecycle: Connect, Create, Start, State, Exec, Wait, Stats, Kill, Delete, Shutdown', async () => {
    task = await connectTask(params!, namespace, c.forceV3);
    expect(task.service).toBe(c.expect.service);
    const [daemon] = await daemonPids(namespace);
    expect(daemon).toBeGreaterThan(0);

    const connected = await task.call<{ shimPid: number }>('Connect', { id });
    expect(connected.shimPid).toBe(daemon);

    const noIo = { terminal: false, stdin: '', stdout: '', stderr: '' };
    // shimTask.Create sends the task options, else the runtime options: the same Any as at start.
    const options = runcOptionsAny(runcRoot);
    const created = await task.call<{ pid: number }>('Create', { id, bundle, rootfs: [], ...noIo, checkpoint: '', parentCheckpoint: '', options });
    expect(created.pid).toBeGreaterThan(0);
    expect(await task.call<{ pid: number }>('Start', { id, execId: '' })).toMatchObject({ pid: created.pid });
    expect(await task.call<{ status: number; pid: number; bundle: string }>('State', { id, execId: '' })).toMatchObject({ status: TaskStatus.RUNNING, pid: created.pid, bundle });
    // runc keeps its state under the options' Root (per namespace), as with the runc shim.
    expect(fs.existsSync(path.join(runcRoot, namespace, id, 'state.json'))).toBe(true);

    const processSpec = { args: ['sh', '-c', 'exit 3'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, terminal: false };
    await task.call('Exec', { id, execId: 'e1', ...noIo, spec: { typeUrl: PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify(processSpec)) } });
    const execStarted = await task.call<{ pid: number }>('Start', { id, execId: 'e1' });
    expect(execStarted.pid).toBeGreaterThan(0);
    expect(await task.call<{ exitStatus: number }>('Wait', { id, execId: 'e1' })).toMatchObject({ exitStatus: 3 });
    expect(await task.call<{ exitStatus: number }>('Delete', { id, execId: 'e1' })).toMatchObject({ exitStatus: 3 });

    const stats = await task.call<{ stats: { typeUrl: string } | null }>('Stats', { id });
    expect(stats.stats?.typeUrl).toMatch(/^io\.containerd\.cgroups\.v[12]\.Metrics$/);

    await task.call('Kill', { id, execId: '', signal: 9, all: false });
    expect(await task.call<{ exitStatus: number }>('Wait', { id, execId: '' })).toMatchObject({ exitStatus: 137 });
    expect(await task.call<{ exitStatus: number; pid: number }>('Delete', { id, execId: '' })).toMatchObject({ exitStatus: 137, pid: created.pid });

    // containerd ignores the error of a connection the shim closes while answering Shutdown.
    await task.call('Shutdown', { id, now: false }).catch(() => undefined);
    expect(await waitUntil(() => !isAlive(daemon!), 10_000)).toBe(true);
  });

  it('published the task events, in order, to containerd\'s ttrpc Forward', async () => {
    expect(await waitUntil(() => received.some((r) => r.envelope.topic === '/tasks/delete'), 10_000)).toBe(true);
    const topics = received.map((r) => r.envelope.topic);
    const order = ['/tasks/create', '/tasks/start', '/tasks/exec-added', '/tasks/exec-started', '/tasks/exit', '/tasks/exit', '/tasks/delete'];
    expect(topics).toEqual(order);
    for (const r of received) {
      expect(r.envelope.namespace).toBe(namespace);
      expect(r.metadataNamespace).toBe(namespace);
      expect(r.envelope.timestamp?.seconds).toBeGreaterThan(0);
    }
    const exits = received
      .filter((r) => r.envelope.topic === '/tasks/exit')
      .map((r) => codec<{ containerId: string; id: string; exitStatus: number }>('containerd.events.TaskExit').decode(r.envelope.event!.value));
    expect(exits).toEqual([
      expect.objectContaining({ containerId: id, id: 'e1', exitStatus: 3 }),
      expect.objectContaining({ containerId: id, id, exitStatus: 137 }),
    ]);
    expect(received.map((r) => r.envelope.event?.typeUrl)).toEqual([
      'containerd.events.TaskCreate', 'containerd.events.TaskStart', 'containerd.events.TaskExecAdded',
      'containerd.events.TaskExecStarted', 'containerd.events.TaskExit', 'containerd.events.TaskExit', 'containerd.events.TaskDelete',
    ]);
  });

  it('delete, run as 2.x runs it (-bundle, no stdin), prints a DeleteResponse and leaves nothing behind', async () => {
    const args = ['-namespace', namespace, '-address', address, '-publish-binary', CONTAINERD_BINARY, '-id', id, '-bundle', bundle, 'delete'];
    const del = await runShim(args, bundle, env, undefined);
    expect(del.code).toBe(0);
    const response = codec<{ exitStatus: number }>('containerd.task.v2.DeleteResponse').decode(del.stdout);
    expect(response.exitStatus).toBe(137);
    expect(await daemonPids(namespace)).toEqual([]);
    expect(fs.existsSync(params!.address.replace(/^unix:\/\//, ''))).toBe(false);
  });
});

/**
 * The built binary (bin/containerd-shim-tshim-v2 → dist/) driven exactly as containerd 1.6 drives
 * it, but without containerd: argv, env, cwd and stdin of `start`/`delete`, then the daemon's
 * socket spoken to byte by byte. No container is created; what is under test is the process and
 * wire contract (spec §2–§5), including how the daemon survives hostile peers.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { codec, fromTimestamp, packAny } from '../../src/common/proto';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { decodeResponse } from '../../src/common/ttrpc/messages';
import {
  TASK_SERVICE_V2,
  TASK_SERVICE_V3,
  type CreateTaskRequest,
  type DeleteRequest,
  type DeleteResponse,
  type KillRequest,
  type ShutdownRequest,
  type StateRequest,
} from '../../src/common/types';
import {
  OBSERVED_OPTIONS_ANY,
  RawConnection,
  SHIM_BIN,
  Scratch,
  connectOnce,
  containerdEnv,
  daemonPids,
  decodeConnect,
  deleteArgs,
  encodeConnect,
  isAlive,
  requestBody,
  requestFrame,
  runShim,
  startArgs,
  waitUntil,
  type ShimBundle,
  type ShimRun,
} from './shim-wire-helpers';

const stateRequest = codec<StateRequest>('containerd.task.v2.StateRequest');
const deleteRequest = codec<DeleteRequest>('containerd.task.v2.DeleteRequest');
const killRequest = codec<KillRequest>('containerd.task.v2.KillRequest');
const createRequest = codec<CreateTaskRequest>('containerd.task.v2.CreateTaskRequest');
const shutdownRequest = codec<ShutdownRequest>('containerd.task.v2.ShutdownRequest');
const deleteResponse = codec<DeleteResponse>('containerd.task.v2.DeleteResponse');

/** `start` runs once per container and containerd waits for it; a second is already generous. */
const START_BUDGET_MS = 5000;
/** containerd's io.containerd.timeout.shim.cleanup default (spec §3). */
const DELETE_BUDGET_MS = 5000;

const scratch = new Scratch();
afterAll(async () => {
  // Anything listed here leaked past the tests (a failed Shutdown, a stray daemon).
  const forced = await scratch.cleanup();
  if (forced.length > 0) console.warn(`shim-wire cleanup had to force: ${forced.join('; ')}`);
});

/** The status code a call ends with (OK when it succeeds). */
async function codeOf(call: Promise<unknown>): Promise<Code> {
  try {
    await call;
    return Code.OK;
  } catch (err) {
    if (err instanceof ShimError) return err.code;
    throw err;
  }
}

/** Runs `start` and finds the one daemon it left serving the bundle's namespace. */
async function startDaemon(
  b: ShimBundle,
  opts: { input?: Buffer; env?: Record<string, string>; debug?: boolean } = {},
): Promise<{ run: ShimRun; pid: number }> {
  const run = await runShim(startArgs(b, { debug: opts.debug }), {
    cwd: b.dir,
    env: containerdEnv(b, opts.env),
    input: opts.input,
    timeoutMs: 15_000,
  });
  const pids = await daemonPids(b.namespace);
  return { run, pid: pids.length === 1 ? pids[0]! : -1 };
}

function expectCleanStart(run: ShimRun, stdout: string): void {
  expect(run.timedOut, 'start must exit (and release its pipes) while the daemon lives on').toBe(false);
  expect({ code: run.code, stderr: run.stderr, stdout: run.stdout.toString('utf8') }).toEqual({
    code: 0,
    stderr: '',
    stdout,
  });
  expect(run.durationMs).toBeLessThan(START_BUDGET_MS);
}

async function shutdownOverTtrpc(socketPath: string, id: string): Promise<'replied' | 'closed'> {
  const client = await TtrpcClient.connect(socketPath, { timeoutMs: 3000 });
  try {
    const reply = await client.call(TASK_SERVICE_V2, 'Shutdown', shutdownRequest.encode({ id, now: false }), {
      timeoutMs: 3000,
    });
    // Empty encodes to zero bytes: the Go shim's reply carries no payload at all (spec §5.2).
    expect(reply.length).toBe(0);
    return 'replied';
  } catch (err) {
    // The daemon may close the connection before the reply is read; that is a clean outcome
    // only if it is a plain close, not a timeout or an error status.
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.Unavailable);
    expect((err as ShimError).message).toBe('ttrpc: closed');
    return 'closed';
  } finally {
    client.close();
  }
}

async function expectDaemonGone(b: ShimBundle, pid: number): Promise<void> {
  expect(await waitUntil(() => !isAlive(pid), 5000), `daemon ${pid} still running 5 s after Shutdown`).toBe(true);
  expect(await waitUntil(() => !fs.existsSync(b.socketPath), 1000), 'socket file left behind').toBe(true);
  expect(await daemonPids(b.namespace)).toEqual([]);
}

// The binary under test must be the built one; a missing dist/ would make every test below fail
// with a confusing spawn error instead. Runs first.
it('the launcher and its compiled entry point exist', () => {
  expect(fs.existsSync(SHIM_BIN)).toBe(true);
  expect(fs.existsSync(path.join(path.dirname(SHIM_BIN), '..', 'dist', 'main.js'))).toBe(true);
});

// ---------------------------------------------------------------------------------------------

describe('command line', () => {
  const cwd = '/tmp';
  const env = { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin` };

  it('-v prints name, version and revision and exits 0', async () => {
    const run = await runShim(['-v'], { cwd, env });
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
      version: string;
    };
    const revision = fs.readFileSync(path.join(__dirname, '..', '..', 'dist', 'revision.txt'), 'utf8').trim();
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    const text = run.stdout.toString('utf8');
    expect(text).toMatch(/^containerd-shim-tshim-v2:\n/);
    expect(text).toContain(`  Version:  ${pkg.version}\n`);
    expect(text).toContain(`  Revision: ${revision}\n`);
  });

  it('-info prints a RuntimeInfo with the runtime features runc reports, and the options it was given', async () => {
    const run = await runShim(['-info'], { cwd, env, input: OBSERVED_OPTIONS_ANY });
    expect(run.code, run.stderr).toBe(0);
    const info = codec<{
      name: string;
      version: { version: string; revision: string };
      options?: { typeUrl: string };
      features?: { typeUrl: string; value: Buffer };
    }>('containerd.types.RuntimeInfo').decode(run.stdout);
    expect(info.name).toBe('io.containerd.tshim.v2');
    expect(info.version.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(info.options?.typeUrl).toBe('containerd.runc.v1.Options');
    expect(info.features?.typeUrl).toBe('types.containerd.io/opencontainers/runtime-spec/1/features/Features');
    const features = JSON.parse(info.features!.value.toString('utf8')) as { ociVersionMin?: string; hooks?: string[] };
    expect(features.ociVersionMin).toBeTruthy();
    expect(features.hooks).toContain('prestart');
  });

  it.each([
    ['an unknown flag', ['-bogus', 'start']],
    ['an unknown action', ['-namespace', 'x', '-id', 'y', 'frobnicate']],
    ['a flag without its value', ['-namespace']],
  ])('%s is one line on stderr pointing at --help, exit 2, nothing on stdout', async (_what, args) => {
    const run = await runShim(args, { cwd, env });
    expect(run.code).toBe(2);
    expect(run.stdout.length).toBe(0);
    expect(run.stderr).toMatch(/^containerd-shim-tshim-v2: .+ \(run `containerd-shim-tshim-v2 --help` for usage\)\n$/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('ttrpc daemon started like containerd 1.6 does', () => {
  let b: ShimBundle;
  let first: ShimRun;
  let daemonPid = -1;

  beforeAll(async () => {
    b = scratch.bundle('ttrpc');
    ({ run: first, pid: daemonPid } = await startDaemon(b, { input: OBSERVED_OPTIONS_ANY }));
  });

  describe('start', () => {
    it('prints exactly the socket address and exits quickly while the daemon lives on', async () => {
      expectCleanStart(first, b.expectedAddress);
      expect(await daemonPids(b.namespace)).toHaveLength(1);
      expect(daemonPid).toBeGreaterThan(0);
      expect(daemonPid).not.toBe(first.pid);
      expect(isAlive(daemonPid)).toBe(true);
    });

    it('writes the same address to <bundle>/address and serves a private socket', () => {
      expect(fs.readFileSync(path.join(b.dir, 'address'), 'utf8')).toBe(b.expectedAddress);
      const socket = fs.statSync(b.socketPath);
      expect(socket.isSocket()).toBe(true);
      expect((socket.mode & 0o777).toString(8)).toBe('600');
      const dir = fs.statSync(path.dirname(b.socketPath));
      expect(dir.isDirectory()).toBe(true);
      expect(dir.mode & 0o077, `socket dir mode ${(dir.mode & 0o777).toString(8)} lets others in`).toBe(0);
    });

    it('a second start (empty stdin) returns the same address and spawns no second daemon', async () => {
      const again = await runShim(startArgs(b), { cwd: b.dir, env: containerdEnv(b), timeoutMs: 15_000 });
      expectCleanStart(again, b.expectedAddress);
      expect(await daemonPids(b.namespace)).toEqual([daemonPid]);
      expect(fs.readFileSync(path.join(b.dir, 'address'), 'utf8')).toBe(b.expectedAddress);
    });
  });

  describe('task API over ttrpc', () => {
    let client: TtrpcClient;
    beforeAll(async () => {
      client = await TtrpcClient.connect(b.socketPath, { timeoutMs: 3000 });
    });
    afterAll(() => client?.close());

    const call = (method: string, payload: Uint8Array, service = TASK_SERVICE_V2): Promise<Buffer> =>
      client.call(service, method, payload, { timeoutMs: 10_000 });

    it('Connect reports the daemon pid (not the start process) and no task pid, on v2 and v3', async () => {
      for (const service of [TASK_SERVICE_V2, TASK_SERVICE_V3]) {
        const reply = decodeConnect(await call('Connect', encodeConnect(b.id), service));
        expect(reply.shimPid).toBe(daemonPid);
        expect(reply.taskPid).toBe(0);
      }
    });

    it('State, Delete and Kill of an unknown id are NotFound (v2 and v3)', async () => {
      for (const service of [TASK_SERVICE_V2, TASK_SERVICE_V3]) {
        expect(await codeOf(call('State', stateRequest.encode({ id: 'nope', execId: '' }), service))).toBe(Code.NotFound);
        expect(await codeOf(call('Delete', deleteRequest.encode({ id: 'nope', execId: '' }), service))).toBe(
          Code.NotFound,
        );
        expect(
          await codeOf(call('Kill', killRequest.encode({ id: 'nope', execId: '', signal: 9, all: false }), service)),
        ).toBe(Code.NotFound);
      }
    });

    it('an unknown method or service is Unimplemented', async () => {
      await expect(call('Frobnicate', Buffer.alloc(0))).rejects.toMatchObject({
        code: Code.Unimplemented,
        message: 'method Frobnicate',
      });
      await expect(call('Connect', encodeConnect(b.id), 'containerd.task.v9.Task')).rejects.toMatchObject({
        code: Code.Unimplemented,
        message: 'service containerd.task.v9.Task',
      });
    });

    it('a payload that is not a valid request message is InvalidArgument', async () => {
      const garbage = Buffer.from([0xff, 0xff, 0xff]);
      for (const method of ['State', 'Connect', 'Create', 'Kill']) {
        expect(await codeOf(call(method, garbage)), method).toBe(Code.InvalidArgument);
      }
    });

    it('Create with a missing bundle or no config.json is an error status, and the daemon carries on', async () => {
      const noConfig = path.join(b.root, 'empty-bundle');
      fs.mkdirSync(noConfig);
      const cases = [
        { id: 'ghost-missing', bundle: path.join(b.root, 'does-not-exist') },
        { id: 'ghost-noconfig', bundle: noConfig },
      ];
      for (const { id, bundle } of cases) {
        const request: CreateTaskRequest = {
          id,
          bundle,
          rootfs: [],
          terminal: false,
          stdin: '',
          stdout: '',
          stderr: '',
          checkpoint: '',
          parentCheckpoint: '',
          options: null,
        };
        let failure: unknown;
        await call('Create', createRequest.encode(request)).then(
          () => undefined,
          (err: unknown) => {
            failure = err;
          },
        );
        expect(failure, `Create in ${bundle} succeeded`).toBeInstanceOf(ShimError);
        const err = failure as ShimError;
        expect(err.code).not.toBe(Code.OK);
        // A dropped connection would also reject; it must be a status from a live daemon.
        expect(err.code).not.toBe(Code.Unavailable);
        expect(err.message.length).toBeGreaterThan(0);
        // Nothing half-created is left registered.
        expect(await codeOf(call('State', stateRequest.encode({ id, execId: '' })))).toBe(Code.NotFound);
      }
      expect(client.closed).toBe(false);
      expect(decodeConnect(await call('Connect', encodeConnect(b.id))).shimPid).toBe(daemonPid);
      expect(isAlive(daemonPid)).toBe(true);
    });
  });

  describe('hostile peers on raw sockets', () => {
    let raw: RawConnection | undefined;
    afterAll(() => raw?.destroy());

    async function open(): Promise<RawConnection> {
      raw?.destroy();
      raw = await RawConnection.open(b.socketPath);
      return raw;
    }

    async function expectOthersStillServed(): Promise<void> {
      expect(isAlive(daemonPid)).toBe(true);
      const reply = await connectOnce(b.socketPath, b.id);
      expect(reply.shimPid).toBe(daemonPid);
    }

    it('garbage bytes (an HTTP request) get the connection closed, nothing else', async () => {
      const conn = await open();
      await conn.write(Buffer.from('GET / HTTP/1.1\r\nHost: shim\r\n\r\n'));
      // 'GET ' read as a frame length is ~1.2 GB: not a ttrpc peer, so the daemon hangs up.
      expect(await conn.closedWithin(3000)).toBe(true);
      expect(conn.unclaimedFrames).toBe(0);
      await expectOthersStillServed();
    });

    it('a garbage envelope inside a well-formed frame is InvalidArgument on that stream', async () => {
      const conn = await open();
      await conn.write(requestFrame(1, Buffer.from([0xff, 0xff, 0xff])));
      const frame = await conn.frameFor(1, 3000);
      expect(frame, 'no reply to a malformed envelope').toBeDefined();
      expect(decodeResponse(frame!.payload).status?.code).toBe(Code.InvalidArgument);
      // The connection stays usable for the next, valid request.
      await conn.write(requestFrame(3, requestBody(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id))));
      const next = await conn.frameFor(3, 3000);
      expect(decodeConnect(decodeResponse(next!.payload).payload).shimPid).toBe(daemonPid);
      await expectOthersStillServed();
    });

    it('a truncated frame followed by a close leaves the daemon serving', async () => {
      const conn = await open();
      const frame = requestFrame(1, requestBody(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id)));
      await conn.write(frame.subarray(0, frame.length - 7));
      conn.socket.end();
      expect(await conn.closedWithin(3000)).toBe(true);
      await expectOthersStillServed();
    });

    it('a frame header announcing 100 MiB gets the connection closed without reading it', async () => {
      const conn = await open();
      const header = Buffer.alloc(10);
      header.writeUInt32BE(100 << 20, 0);
      header.writeUInt32BE(1, 4);
      header.writeUInt8(1, 8);
      await conn.write(Buffer.concat([header, randomBytes(4096)]));
      expect(await conn.closedWithin(3000)).toBe(true);
      expect(conn.unclaimedFrames).toBe(0);
      await expectOthersStillServed();
    });

    it('a 5 MiB request is ResourceExhausted on its stream and the connection stays usable', async () => {
      const conn = await open();
      const big = requestBody(TASK_SERVICE_V2, 'Connect', Buffer.alloc(5 << 20, 0x41));
      await conn.write(requestFrame(1, big));
      const frame = await conn.frameFor(1, 10_000);
      expect(frame, 'no reply to an oversized request').toBeDefined();
      expect(frame!.type).toBe(2);
      const status = decodeResponse(frame!.payload).status;
      expect(status?.code).toBe(Code.ResourceExhausted);
      await conn.write(requestFrame(3, requestBody(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id))));
      const next = await conn.frameFor(3, 3000);
      expect(next, 'connection unusable after an oversized request').toBeDefined();
      expect(decodeResponse(next!.payload).status).toBeUndefined();
      expect(decodeConnect(decodeResponse(next!.payload).payload).shimPid).toBe(daemonPid);
      await expectOthersStillServed();
    });

    it('an even stream id is InvalidArgument, and so is a reused one', async () => {
      const conn = await open();
      const connect = requestBody(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id));
      await conn.write(requestFrame(2, connect));
      const even = await conn.frameFor(2, 3000);
      expect(even, 'no reply on an even stream id').toBeDefined();
      expect(decodeResponse(even!.payload).status).toMatchObject({
        code: Code.InvalidArgument,
        message: 'StreamID must be odd for client initiated streams',
      });
      await conn.write(requestFrame(5, connect));
      expect(decodeConnect(decodeResponse((await conn.frameFor(5, 3000))!.payload).payload).shimPid).toBe(daemonPid);
      await conn.write(requestFrame(3, connect));
      const reused = await conn.frameFor(3, 3000);
      expect(decodeResponse(reused!.payload).status?.code).toBe(Code.InvalidArgument);
      await expectOthersStillServed();
    });

    it('a peer that connects and never sends anything does not block others', async () => {
      const conn = await open();
      await expectOthersStillServed();
      expect(conn.isClosed).toBe(false);
    });
  });

  describe('Shutdown', () => {
    it('with no containers: replies, exits within seconds and removes the socket', async () => {
      expect(isAlive(daemonPid)).toBe(true);
      const outcome = await shutdownOverTtrpc(b.socketPath, b.id);
      expect(['replied', 'closed']).toContain(outcome);
      await expectDaemonGone(b, daemonPid);
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe('start that cannot place its daemon', () => {
  it('fails, and leaves neither a daemon nor a socket behind', async () => {
    const b = scratch.bundle('badcg');
    const options = packAny('containerd.runc.v1.Options', { shimCgroup: `/tshim-missing-${randomBytes(4).toString('hex')}` });
    const input = codec<{ typeUrl: string; value: Buffer }>('google.protobuf.Any').encode(options);
    const run = await runShim(startArgs(b), { cwd: b.dir, env: containerdEnv(b), input, timeoutMs: START_BUDGET_MS * 3 });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/failed to join shim cgroup/);
    expect(await waitUntil(async () => (await daemonPids(b.namespace)).length === 0, 5000)).toBe(true);
    expect(fs.existsSync(b.socketPath)).toBe(false);
  });
});

describe('delete action', () => {
  it('after the daemon deleted the task, prints the DeleteResponse it left and touches nothing else', async () => {
    const b = scratch.bundle('deleted');
    const left = deleteResponse.encode({ pid: 4242, exitStatus: 3, exitedAt: { seconds: 1700000000, nanos: 5 } });
    fs.writeFileSync(path.join(b.dir, 'tshim-deleted'), left);
    // a runtime that cannot be run: the full cleanup would fail on it
    fs.writeFileSync(path.join(b.dir, 'options.json'), JSON.stringify({ binary_name: '/nonexistent/runc' }));
    const run = await runShim(deleteArgs(b), { cwd: b.dir, env: containerdEnv(b), timeoutMs: 15_000 });
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(Buffer.from(run.stdout)).toEqual(Buffer.from(left));
    expect(deleteResponse.decode(run.stdout)).toMatchObject({ pid: 4242, exitStatus: 3 });
  });

  it('prints a DeleteResponse (pid 0, 137, now), exits 0, and can be repeated', async () => {
    const b = scratch.bundle('delete');
    for (let round = 1; round <= 2; round++) {
      const before = Date.now();
      const run = await runShim(deleteArgs(b), { cwd: b.dir, env: containerdEnv(b), timeoutMs: 15_000 });
      const after = Date.now();
      expect(run.timedOut).toBe(false);
      expect(run.code, `round ${round}: ${run.stderr}`).toBe(0);
      expect(run.stderr).not.toMatch(/delete failed/);
      expect(run.durationMs).toBeLessThan(DELETE_BUDGET_MS);
      // Raw protobuf, no framing: pid 0 is omitted, then exit_status=137 (10 89 01), then exited_at.
      expect([...run.stdout.subarray(0, 4)]).toEqual([0x10, 0x89, 0x01, 0x1a]);
      const reply = deleteResponse.decode(run.stdout);
      expect(reply.pid).toBe(0);
      expect(reply.exitStatus).toBe(137);
      const exitedAt = fromTimestamp(reply.exitedAt)?.getTime() ?? 0;
      expect(exitedAt).toBeGreaterThanOrEqual(before - 1000);
      expect(exitedAt).toBeLessThanOrEqual(after + 1000);
    }
    expect(await daemonPids(b.namespace)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('gRPC mode (TSHIM_PROTOCOL=grpc)', () => {
  let b: ShimBundle;
  let start: ShimRun;
  let daemonPid = -1;
  let client: grpc.Client | undefined;

  beforeAll(async () => {
    b = scratch.bundle('grpc');
    ({ run: start, pid: daemonPid } = await startDaemon(b, { env: { TSHIM_PROTOCOL: 'grpc' } }));
    client = new grpc.Client(`unix://${b.socketPath}`, grpc.credentials.createInsecure());
  });
  afterAll(() => client?.close());

  function unary(method: string, payload: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      client!.makeUnaryRequest(
        method,
        (bytes: Buffer) => bytes,
        (bytes: Buffer) => bytes,
        payload,
        { deadline: Date.now() + 5000 },
        (err: grpc.ServiceError | null, value?: Buffer) => (err ? reject(err) : resolve(value ?? Buffer.alloc(0))),
      );
    });
  }

  it('start prints the version-3 JSON with the socket address', async () => {
    expectCleanStart(start, JSON.stringify({ version: 3, address: b.socketPath, protocol: 'grpc' }));
    // A bare path: containerd 2.x net.Dial()s it as a unix socket path before handing it to grpc-go.
    expect(JSON.parse(start.stdout.toString('utf8'))).toEqual({ version: 3, address: b.socketPath, protocol: 'grpc' });
    expect(daemonPid).toBeGreaterThan(0);
    expect(fs.readFileSync(path.join(b.dir, 'address'), 'utf8')).toBe(b.expectedAddress);
  });

  it('Connect answers on v2 and v3 with the daemon pid', async () => {
    for (const service of [TASK_SERVICE_V2, TASK_SERVICE_V3]) {
      const reply = decodeConnect(await unary(`/${service}/Connect`, encodeConnect(b.id)));
      expect(reply.shimPid).toBe(daemonPid);
      expect(reply.taskPid).toBe(0);
    }
  });

  it('State of an unknown id is NOT_FOUND', async () => {
    await expect(
      unary(`/${TASK_SERVICE_V2}/State`, stateRequest.encode({ id: 'nope', execId: '' })),
    ).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('Shutdown ends the daemon and removes the socket', async () => {
    let outcome: 'replied' | grpc.status;
    try {
      const reply = await unary(`/${TASK_SERVICE_V2}/Shutdown`, shutdownRequest.encode({ id: b.id, now: false }));
      expect(reply.length).toBe(0);
      outcome = 'replied';
    } catch (err) {
      outcome = (err as grpc.ServiceError).code;
    }
    // The reply is sent before the transport closes; a connection torn down first is UNAVAILABLE.
    expect(['replied', grpc.status.UNAVAILABLE]).toContain(outcome);
    client?.close();
    client = undefined;
    await expectDaemonGone(b, daemonPid);
  });
});

// ---------------------------------------------------------------------------------------------

describe('-debug daemon logging into the bundle log FIFO', () => {
  it('writes logrus-style lines, debug ones included, that containerd can copy verbatim', async () => {
    const b = scratch.bundle('debug', { withLogFifo: true });
    // Open the read side as containerd does before `start`: O_RDWR never blocks and never sees EOF.
    const fd = fs.openSync(path.join(b.dir, 'log'), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const reader = new net.Socket({ fd, readable: true, writable: false });
    scratch.onCleanup(() => reader.destroy());
    let text = '';
    reader.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
    });

    const { run, pid } = await startDaemon(b, { debug: true });
    expectCleanStart(run, b.expectedAddress);
    expect(pid).toBeGreaterThan(0);

    // An RPC the daemon logs at debug level.
    expect((await connectOnce(b.socketPath, b.id)).shimPid).toBe(pid);
    const sawDebug = await waitUntil(() => /^time="[^"]+" level=debug msg=/m.test(text), 5000);
    expect(sawDebug, `no debug line in:\n${text}`).toBe(true);

    expect(await shutdownOverTtrpc(b.socketPath, b.id)).toMatch(/replied|closed/);
    await expectDaemonGone(b, pid);
    await waitUntil(() => text.includes('shim shutting down'), 1000);

    const lines = text.split('\n');
    expect(lines.pop(), 'last line is not newline-terminated').toBe('');
    const logrus = /^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z" level=(trace|debug|info|warning|error) msg=("(?:[^"\\]|\\.)*"|\S+)( [a-z_.]+=("(?:[^"\\]|\\.)*"|\S+))*$/;
    for (const line of lines) expect(line).toMatch(logrus);
    const started = lines.find((l) => l.includes('msg="starting signal loop"'));
    expect(started, `no start line in:\n${text}`).toBeDefined();
    expect(started).toContain('level=debug');
    expect(started).toContain(`namespace=${b.namespace}`);
    expect(started).toContain(`pid=${pid}`);
    expect(started).toContain('runtime=io.containerd.tshim.v2');
    expect(lines.some((l) => l.includes('msg="shim shutting down"'))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

describe('reservations: a shared daemon waits for the container a start reserved it for (group.ts)', () => {
  const reserve = async (socketPath: string, id: string): Promise<boolean> => {
    const client = await TtrpcClient.connect(socketPath, { timeoutMs: 3000 });
    try {
      const reply = await client.call('tshim.v1.Control', 'Reserve', codec<object>('tshim.v1.ReserveRequest').encode({ id }), { timeoutMs: 3000 });
      return codec<{ reserved: boolean }>('tshim.v1.ReserveResponse').decode(reply).reserved;
    } finally {
      client.close();
    }
  };

  it('Shutdown leaves a reserved daemon serving; the reservation lapses and the daemon ends by itself', async () => {
    const b = scratch.bundle('reserved');
    const { pid } = await startDaemon(b, { env: { TSHIM_RESERVATION_SECONDS: '2' } });
    expect(await reserve(b.socketPath, 'next-container')).toBe(true);
    expect(await shutdownOverTtrpc(b.socketPath, b.id)).toBe('replied');
    // still serving after the Shutdown: Connect answers from the same daemon
    expect((await connectOnce(b.socketPath, b.id)).shimPid).toBe(pid);
    // no Create comes: after the reservation lapses, nothing is left to serve
    await expectDaemonGone(b, pid);
  });

  it('an ending daemon refuses a reservation, its socket already gone; a start then launches a new daemon', async () => {
    const b = scratch.bundle('ending');
    const { pid } = await startDaemon(b);
    const client = await TtrpcClient.connect(b.socketPath, { timeoutMs: 3000 });
    try {
      await client.call(TASK_SERVICE_V2, 'Shutdown', shutdownRequest.encode({ id: b.id, now: false }), { timeoutMs: 3000 });
      // the daemon decided to end before it replied: its socket was unlinked first
      expect(fs.existsSync(b.socketPath)).toBe(false);
      const reply = await client.call('tshim.v1.Control', 'Reserve', codec<object>('tshim.v1.ReserveRequest').encode({ id: 'late' }), { timeoutMs: 3000 }).catch((err: ShimError) => err);
      // the reply can lose the race with the daemon's exit; a reservation it is not
      if (!(reply instanceof ShimError)) expect(codec<{ reserved: boolean }>('tshim.v1.ReserveResponse').decode(reply).reserved).toBe(false);
    } finally {
      client.close();
    }
    await expectDaemonGone(b, pid);
    const { run, pid: next } = await startDaemon(b);
    expectCleanStart(run, b.expectedAddress);
    expect(next).not.toBe(pid);
    expect(await shutdownOverTtrpc(b.socketPath, b.id)).toMatch(/replied|closed/);
    await expectDaemonGone(b, next);
  });
});

/**
 * A spare daemon's own socket, driven without containerd: `start` leaves a spare, hostile or
 * malformed adoption requests are refused with a reason while the spare stays available, and a
 * well-formed `start` then gets exactly that process as its daemon.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { argvOf, processesMatching } from './fixtures/system';
import {
  Scratch, connectOnce, containerdEnv, isAlive, runShim, startArgs, waitUntil, type ShimBundle,
} from './shim-wire-helpers';

const scratch = new Scratch();
afterAll(async () => {
  for (const spare of await sparesOf(address)) process.kill(spare, 'SIGTERM');
  await scratch.cleanup();
  fs.rmSync(addressDir, { recursive: true, force: true });
});

// One fake containerd address shared by the bundles, so their starts share one spare. Nothing
// listens there: the spare's containerd check is pushed past the test's lifetime.
const addressDir = fs.mkdtempSync('/tmp/tshim-spare-wire-');
const address = `${addressDir}/c.sock`;
const env = (b: ShimBundle): NodeJS.ProcessEnv => containerdEnv(b, { TSHIM_SPARE: '1', TSHIM_SPARE_CHECK_SECONDS: '600' });

async function sparesOf(containerd: string): Promise<number[]> {
  const found = await processesMatching((argv) => argv.includes('-spare') && argv[argv.indexOf('-address') + 1] === containerd);
  return found.map((p) => p.pid);
}

function spareSocketOf(pid: number): string {
  const argv = argvOf(fs.readFileSync(`/proc/${pid}/cmdline`));
  return argv[argv.indexOf('-spare') + 1] ?? '';
}

/**
 * Sends raw bytes to the spare (then hangs up when `hangUp`, as a probe does) and returns what it
 * answered before closing: one JSON line, or nothing for a peer that hung up first.
 */
function ask(socket: string, bytes: Buffer | string, hangUp = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(socket);
    let reply = '';
    conn.on('data', (chunk: Buffer) => (reply += chunk.toString()));
    conn.on('close', () => resolve(reply));
    conn.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
    conn.on('connect', () => (hangUp ? conn.end(bytes) : conn.write(bytes)));
  });
}

describe('spare daemon socket', () => {
  it('refuses malformed adoptions with a reason, stays a spare, and is adopted by the next start', async () => {
    const first = scratch.bundle('spare1', { address });
    const run = await runShim(startArgs(first), { cwd: first.dir, env: env(first), timeoutMs: 15_000 });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(await waitUntil(async () => (await sparesOf(address)).length === 1, 10_000)).toBe(true);
    const [spare] = await sparesOf(address);
    const socket = spareSocketOf(spare as number);
    expect(socket).toMatch(/^\/run\/containerd\/s\/tshim-spare-[0-9a-f]{40}$/);
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);

    const request = {
      v: 1, namespace: first.namespace, id: 'x', bundle: first.dir, address, publishBinary: '', debug: false,
      socket: '/run/containerd/s/tshim-wire-never', protocol: 'ttrpc', env: {}, deadline: Date.now() + 600_000,
    };
    const refusals: Array<[string, Buffer | string, RegExp]> = [
      ['garbage', 'GET / HTTP/1.1\r\n\r\n\n', /"code":"INVALID"/],
      ['another protocol version', `${JSON.stringify({ ...request, v: 2 })}\n`, /version 2/],
      ['a relative bundle', `${JSON.stringify({ ...request, bundle: 'rel/dir' })}\n`, /absolute/],
      ['env not an object', `${JSON.stringify({ ...request, env: ['A=1'] })}\n`, /env must be an object/],
      ['a request past its deadline (start gave up)', `${JSON.stringify({ ...request, deadline: Date.now() - 1 })}\n`, /"code":"EXPIRED"/],
      ['a socket already in use', `${JSON.stringify({ ...request, socket: first.socketPath })}\n`, /"code":"EADDRINUSE"/],
      ['a line over 1 MiB', Buffer.alloc(1.5 * 1024 * 1024, 0x61), /too long/],
    ];
    for (const [what, bytes, expected] of refusals) {
      expect(await ask(socket, bytes), what).toMatch(expected);
      expect(isAlive(spare as number), `spare alive after ${what}`).toBe(true);
    }
    for (const [what, bytes] of [['a bare connect-and-close', ''], ['half a line, then EOF', '{"v":1']] as const) {
      expect(await ask(socket, bytes, true), what).toBe('');
      expect(isAlive(spare as number), `spare alive after ${what}`).toBe(true);
    }
    expect(fs.existsSync('/run/containerd/s/tshim-wire-never')).toBe(false);

    const second = scratch.bundle('spare2', { address });
    const adopted = await runShim(startArgs(second), { cwd: second.dir, env: env(second), timeoutMs: 15_000 });
    expect(adopted).toMatchObject({ code: 0, stderr: '' });
    expect(adopted.stdout.toString()).toBe(second.expectedAddress);
    expect(fs.readFileSync(`${second.dir}/address`, 'utf8')).toBe(second.expectedAddress);
    expect((await connectOnce(second.socketPath, second.id)).shimPid).toBe(spare);
    // The spare's socket went with the adoption; the start left a new spare in its place.
    expect(await waitUntil(async () => (await sparesOf(address)).some((pid) => pid !== spare), 10_000)).toBe(true);
    expect(await sparesOf(address)).not.toContain(spare);
  });
});

import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  parseAdoptionRequest, readLine, requestAdoption, secondsFromEnv, spareEnabled, spareSocketPath, type AdoptionRequest,
} from '../../src/common/spare';

const request: AdoptionRequest = {
  v: 1,
  namespace: 'default',
  id: 'c1',
  bundle: '/run/containerd/io.containerd.runtime.v2.task/default/c1',
  address: '/run/containerd/containerd.sock',
  publishBinary: '/usr/bin/containerd',
  debug: true,
  socket: '/run/containerd/s/abc',
  protocol: 'ttrpc',
  env: { PATH: '/usr/bin', TTRPC_ADDRESS: '/run/containerd/containerd.sock.ttrpc' },
  deadline: 1_900_000_000_000,
};

const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A stand-in spare on a temp socket that answers every line with `answer(line)`. */
async function fakeSpare(answer: (line: string, socket: net.Socket) => void): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spare-unit-'));
  const file = path.join(dir, 's');
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    void readLine(socket, 2000).then((line) => answer(line, socket), () => socket.destroy());
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(file, resolve));
  return file;
}

describe('spare daemons: policy', () => {
  it('is on by default and off by TSHIM_SPARE=0/false/off/no or NoSpareDaemon', () => {
    expect(spareEnabled({}, undefined)).toBe(true);
    expect(spareEnabled({ TSHIM_SPARE: '1' }, true)).toBe(true);
    for (const off of ['0', 'false', 'OFF', 'no']) expect(spareEnabled({ TSHIM_SPARE: off }, true)).toBe(false);
    expect(spareEnabled({}, false)).toBe(false);
  });

  it('reads positive seconds from the environment, else the default', () => {
    expect(secondsFromEnv({ T: '2.5' }, 'T', 7)).toBe(2500);
    for (const bad of [undefined, '', '0', '-1', 'soon']) expect(secondsFromEnv({ T: bad }, 'T', 7)).toBe(7);
  });

  it('keys the spare socket by program, containerd and protocol, inside the socket dir', () => {
    const base = spareSocketPath('/run/containerd/s', ['/usr/bin/node', '/opt/shim'], '/run/containerd/containerd.sock', 'ttrpc');
    expect(base).toMatch(/^\/run\/containerd\/s\/tshim-spare-[0-9a-f]{40}$/);
    expect(spareSocketPath('/run/containerd/s', ['/usr/bin/node', '/opt/shim'], '/run/containerd/containerd.sock', 'ttrpc')).toBe(base);
    const others = [
      spareSocketPath('/run/containerd/s', ['/usr/bin/node', '/opt/other'], '/run/containerd/containerd.sock', 'ttrpc'),
      spareSocketPath('/run/containerd/s', ['/usr/bin/node', '/opt/shim'], '/tmp/c.sock', 'ttrpc'),
      spareSocketPath('/run/containerd/s', ['/usr/bin/node', '/opt/shim'], '/run/containerd/containerd.sock', 'grpc'),
    ];
    expect(new Set([base, ...others]).size).toBe(4);
  });
});

describe('spare daemons: adoption request', () => {
  it('round-trips a request and keeps only string environment values', () => {
    const line = JSON.stringify({ ...request, env: { ...request.env, N: 5, O: null } });
    expect(parseAdoptionRequest(line)).toEqual(request);
  });

  it('refuses what a start never sends', () => {
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...request, v: 2 }, /version 2/],
      [{ ...request, id: '' }, /id must be a string \(non-empty\)/],
      [{ ...request, namespace: 7 }, /namespace/],
      [{ ...request, bundle: 'relative' }, /absolute/],
      [{ ...request, socket: 'relative.sock' }, /absolute/],
      [{ ...request, env: 'PATH=/bin' }, /env must be an object/],
    ];
    for (const [value, message] of bad) expect(() => parseAdoptionRequest(JSON.stringify(value))).toThrow(message);
    expect(() => parseAdoptionRequest('not json')).toThrow();
  });

  // Found by the fuzzer (test/fuzz, target json-inputs): valid JSON that is not an object failed
  // with a TypeError about reading 'v' of null instead of saying what was wrong.
  it.each(['null', '[]', '7', '"x"', 'true'])('refuses %s as not a JSON object', (line) => {
    expect(() => parseAdoptionRequest(line)).toThrow(/^adoption request: not a JSON object$/);
  });
});

describe('spare daemons: requestAdoption', () => {
  it('returns the adopted pid, or the refusal with its code', async () => {
    const seen: AdoptionRequest[] = [];
    const ok = await fakeSpare((line, socket) => {
      seen.push(parseAdoptionRequest(line));
      socket.end('{"ok":true,"pid":4242}\n');
    });
    expect(await requestAdoption(ok, request)).toEqual({ ok: true, pid: 4242 });
    expect(seen).toEqual([request]);
    const busy = await fakeSpare((_line, socket) => socket.end('{"ok":false,"code":"BUSY","message":"taken"}\n'));
    expect(await requestAdoption(busy, request)).toEqual({ ok: false, code: 'BUSY', message: 'taken' });
  });

  it('means "no spare" for a missing socket, a hang-up, garbage or a bad pid', async () => {
    expect(await requestAdoption('/nonexistent/spare.sock', request)).toBeUndefined();
    const hangUp = await fakeSpare((_line, socket) => socket.destroy());
    expect(await requestAdoption(hangUp, request)).toBeUndefined();
    const garbage = await fakeSpare((_line, socket) => socket.end('HTTP/1.1 400 Bad Request\n'));
    expect(await requestAdoption(garbage, request)).toBeUndefined();
    const badPid = await fakeSpare((_line, socket) => socket.end('{"ok":true,"pid":0}\n'));
    expect(await requestAdoption(badPid, request)).toBeUndefined();
  });
});

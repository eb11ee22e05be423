/**
 * In-place upgrade on the wire, without containerd or containers: a daemon started as containerd
 * starts it hands itself over (execve, same pid) with its listening socket, an idle connection and
 * a connection holding half a request frame; the new image serves all three where they stood. A
 * hand-over to a binary that cannot start leaves the old image serving.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codec } from '../../src/common/proto';
import { TtrpcClient } from '../../src/common/ttrpc/client';
import { decodeResponse, encodeRequest } from '../../src/common/ttrpc/messages';
import { TASK_SERVICE_V2 } from '../../src/common/types';
import {
  RawConnection, SHIM_BIN, Scratch, containerdEnv, daemonPids, decodeConnect, encodeConnect, isAlive, runShim, startArgs,
  type ShimBundle,
} from './shim-wire-helpers';

const scratch = new Scratch();
afterAll(async () => {
  expect(await scratch.cleanup()).toEqual([]);
});

const CONTROL = 'tshim.v1.Control';
const upgradeRequest = codec<{ launcher: string; quiesceTimeoutMs: number }>('tshim.v1.UpgradeRequest');
const upgradeResponse = codec<{ upgraded: boolean; pid: number; message: string; oldVersion: string; newVersion: string; pauseMicros: number }>(
  'tshim.v1.UpgradeResponse',
);

function runUpgrade(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(SHIM_BIN, [...args, 'upgrade'], { env, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

describe('in-place upgrade of a daemon without containers', () => {
  let b: ShimBundle;
  let pid = -1;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    b = scratch.bundle('upg');
    env = containerdEnv(b, { TSHIM_UPGRADE_DIR: path.join(b.root, 'upgrade-state') });
    const run = await runShim(startArgs(b), { cwd: b.dir, env, timeoutMs: 15_000 });
    expect(run.code).toBe(0);
    [pid] = await daemonPids(b.namespace);
    expect(pid).toBeGreaterThan(0);
  });

  it('hands the listener and live connections over to a new image with the same pid', async () => {
    const idle = await TtrpcClient.connect(b.socketPath);
    const before = decodeConnect(await idle.call(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id)));
    expect(before.shimPid).toBe(pid);
    expect(before.version).toMatch(/^\d+\.\d+\.\d+/);

    // half a request: the rest is sent to the new image
    const raw = await RawConnection.open(b.socketPath);
    const body = encodeRequest({ service: TASK_SERVICE_V2, method: 'Connect', payload: encodeConnect(b.id), timeoutNano: 0n, metadata: [] });
    const frame = Buffer.alloc(10 + body.length);
    frame.writeUInt32BE(body.length, 0);
    frame.writeUInt32BE(1, 4);
    frame.writeUInt8(1, 8);
    body.copy(frame, 10);
    const cut = 14;
    await raw.write(frame.subarray(0, cut));

    const result = await runUpgrade(['-socket', b.socketPath], env);
    expect(result.stderr).toBe('');
    expect(result.stdout).toMatch(new RegExp(`^upgraded pid=${pid} socket=${b.socketPath} from=\\S+ to=\\S+ pause_ms=[0-9.]+ containers=0 fds=\\d+\\n$`));
    expect(result.code).toBe(0);

    // same process, now running the new image
    expect(isAlive(pid)).toBe(true);
    expect(await daemonPids(b.namespace)).toEqual([pid]);
    const after = decodeConnect(await idle.call(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id)));
    expect(after.shimPid).toBe(pid);
    await raw.write(frame.subarray(cut));
    const reply = await raw.frameFor(1, 10_000);
    expect(reply).toBeDefined();
    expect(decodeConnect(decodeResponse(reply!.payload).payload).shimPid).toBe(pid);
    const fresh = await TtrpcClient.connect(b.socketPath);
    expect(decodeConnect(await fresh.call(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id))).shimPid).toBe(pid);
    fresh.close();
    raw.destroy();
    idle.close();
    // nothing of the state is left behind, and the state dir is root-only
    const dir = path.join(b.root, 'upgrade-state');
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
  });

  it('keeps serving when the new binary cannot start, and says why', async () => {
    const client = await TtrpcClient.connect(b.socketPath);
    expect(decodeConnect(await client.call(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id))).shimPid).toBe(pid);
    const fdsBefore = fdCount(pid);
    for (const launcher of ['/bin/false', path.join(b.root, 'missing-launcher')]) {
      const r = upgradeResponse.decode(await client.call(CONTROL, 'Upgrade', upgradeRequest.encode({ launcher, quiesceTimeoutMs: 0 }), { timeoutMs: 60_000 }));
      expect(r.upgraded).toBe(false);
      expect(r.pid).toBe(pid);
      expect(r.message).toMatch(/the new shim refused the hand-over/);
    }
    expect(decodeConnect(await client.call(TASK_SERVICE_V2, 'Connect', encodeConnect(b.id))).shimPid).toBe(pid);
    client.close();
    expect(isAlive(pid)).toBe(true);
    // nothing leaked by the attempts
    expect(fdCount(pid)).toBeLessThanOrEqual(fdsBefore);
  });

  it('the daemon still shuts down and removes its socket after an upgrade', async () => {
    const client = await TtrpcClient.connect(b.socketPath);
    await client.call(TASK_SERVICE_V2, 'Shutdown', codec<object>('containerd.task.v2.ShutdownRequest').encode({ id: b.id })).catch(() => undefined);
    client.close();
    for (let i = 0; i < 200 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
    expect(isAlive(pid)).toBe(false);
    expect(fs.existsSync(b.socketPath)).toBe(false);
  });
});

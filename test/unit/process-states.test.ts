import { describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { ManagedProcess } from '../../src/common/process/process';
import { FakeProcess, outcome } from './fake-backend';

const stdio = { stdin: '', stdout: '', stderr: '', terminal: false };
const pauser = { pause: async () => undefined, resume: async () => undefined };

function init(fromCheckpoint = false): { p: ManagedProcess; platform: FakeProcess } {
  const platform = new FakeProcess(true);
  return { p: new ManagedProcess({ containerId: 'c', execId: '', stdio }, platform, { fromCheckpoint, pauser }), platform };
}

function exec(): { p: ManagedProcess; platform: FakeProcess } {
  const platform = new FakeProcess(false);
  return { p: new ManagedProcess({ containerId: 'c', execId: 'e', stdio }, platform), platform };
}

async function stopped(p: ManagedProcess): Promise<void> {
  await p.markExited({ status: 1, exitedAt: new Date() });
}

describe('init state machine', () => {
  it('created: start, kill, update, exec allowed; pause, resume, checkpoint refused', async () => {
    const { p } = init();
    expect(p.stateName).toBe('created');
    expect(await outcome(p.pause())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.resume())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.checkpoint(async () => undefined))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.update(async () => undefined))).toBe('ok');
    expect(await outcome(p.withState((s) => s.checkExec()))).toBe('ok');
    expect(await outcome(p.kill(15, false))).toBe('ok');
    expect(await outcome(p.start(() => undefined))).toBe('ok');
    expect(p.stateName).toBe('running');
  });

  it('running ⇄ paused, with the operations each allows', async () => {
    const { p } = init();
    await p.start(() => undefined);
    expect(await outcome(p.start(() => undefined))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.delete())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.resume())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.checkpoint(async () => undefined))).toBe('ok');
    expect(await outcome(p.pause())).toBe('ok');
    expect(p.stateName).toBe('paused');
    expect(await outcome(p.pause())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.withState((s) => s.checkExec()))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.delete())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.kill(9, false))).toBe('ok');
    expect(await outcome(p.resume())).toBe('ok');
    expect(p.stateName).toBe('running');
  });

  it('a failed start leaves the process created', async () => {
    const { p, platform } = init();
    platform.startGate = Promise.reject(new ShimError(Code.Unknown, 'OCI runtime start failed'));
    expect(await outcome(p.start(() => undefined))).toBe(Code.Unknown);
    expect(p.stateName).toBe('created');
  });

  it('stopped: only delete; kill is NotFound; then deleted refuses everything', async () => {
    const { p } = init();
    await p.start(() => undefined);
    await stopped(p);
    expect(p.stateName).toBe('stopped');
    expect(p.exited?.status).toBe(1);
    expect(await outcome(p.kill(9, false))).toBe(Code.NotFound);
    expect(await outcome(p.start(() => undefined))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.pause())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.update(async () => undefined))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.resize(80, 24))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.withState((s) => s.checkExec()))).toBe(Code.FailedPrecondition);
    expect(await p.markExited({ status: 2, exitedAt: new Date() })).toBe(false);
    expect(p.exited?.status).toBe(1);
    expect(await outcome(p.delete())).toBe('ok');
    expect(p.stateName).toBe('deleted');
    expect(await outcome(p.delete())).toBe(Code.NotFound);
    expect(await outcome(p.kill(9, false))).toBe(Code.NotFound);
  });

  it('a created init that dies is stopped and deletable', async () => {
    const { p } = init();
    await stopped(p);
    expect(p.stateName).toBe('stopped');
    expect(await outcome(p.delete())).toBe('ok');
  });

  it('created from a checkpoint: start restores, nothing else runs', async () => {
    const { p } = init(true);
    expect(p.stateName).toBe('createdCheckpoint');
    expect(await outcome(p.kill(9, false))).toBe(Code.NotFound);
    expect(await outcome(p.withState((s) => s.checkExec()))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.start(() => undefined))).toBe('ok');
    expect(p.stateName).toBe('running');
  });
});

describe('exec state machine', () => {
  it('created: kill is FailedPrecondition "process not created"; start runs it', async () => {
    const { p } = exec();
    const err = await p.kill(15, false).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShimError);
    expect((err as ShimError).code).toBe(Code.FailedPrecondition);
    expect((err as ShimError).message).toBe('process not created');
    expect(await outcome(p.pause())).toBe(Code.FailedPrecondition);
    const pid = await p.start(() => undefined);
    expect(pid).toBeGreaterThan(0);
    expect(p.pid).toBe(pid);
    expect(await outcome(p.start(() => undefined))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.delete())).toBe(Code.FailedPrecondition);
    expect(await outcome(p.resize(10, 10))).toBe('ok');
    expect(await outcome(p.kill(15, false))).toBe('ok');
  });

  it('stopped → deleted; onStarted runs before the lock is released', async () => {
    const { p } = exec();
    const order: string[] = [];
    const starting = p.start(() => order.push('started'));
    const exiting = p.markExited({ status: 0, exitedAt: new Date() }).then(() => order.push('exited'));
    await Promise.all([starting, exiting]);
    expect(order).toEqual(['started', 'exited']);
    expect(p.stateName).toBe('stopped');
    expect(await outcome(p.resize(1, 1))).toBe(Code.FailedPrecondition);
    expect(await outcome(p.delete())).toBe('ok');
    expect(await outcome(p.delete())).toBe(Code.NotFound);
  });
});

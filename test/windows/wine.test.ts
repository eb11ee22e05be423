/**
 * End to end under Wine: tshim's own code, run by the Windows build of Node, does `start`, serves as
 * the daemon over a named pipe and answers `delete`, while a client (also Windows Node) plays
 * containerd on Windows. HCS is the stand-in vmcompute.dll (test/windows/fake-vmcompute.c).
 *
 * This proves tshim's Windows code paths, Node's Windows named-pipe transport and koffi's Windows
 * ABI against a simulated HCS. It does not prove HCS itself: that is the windows-2022 pipeline job.
 *
 * One client run covers every case (each Windows process start costs seconds under Wine); the
 * cases below read its results.json and the stand-in's call log. Nothing here is timed: the client
 * orders its steps through pipes, events and files.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildLauncher, buildStandInDll, createPrefix, runClient, windowsNode, wineDescribe, winPath, type WinePrefix } from './wine-harness';
import { readIfAny, type Call, type ClientResults } from './wine-results';

const suite = wineDescribe('Wine suite');

const NS = 'tshim-wine';
const STATUS = { CREATED: 1, RUNNING: 2, STOPPED: 3, PAUSED: 4 } as const;
const CODE = { NotFound: 5, FailedPrecondition: 9, Unimplemented: 12, Unavailable: 14 } as const;

suite('Windows backend under Wine against a simulated HCS (stand-in vmcompute.dll; not HCS itself)', () => {
  let root = '';
  let prefix: WinePrefix | undefined;
  let results: ClientResults | undefined;
  let calls: string[] = [];
  let seconds = 0;
  const timings: string[] = [];

  const step = (name: string): Call => results!.step<Call>(name);
  const ok = (name: string): Record<string, unknown> => results!.ok(name);
  const refused = (name: string, code: number): string => results!.refused(name, code);
  const topics = (id: string): string[] => results!.topics(id);
  const callsAfter = (marker: string): string[] => calls.slice(calls.indexOf(marker) + 1);

  beforeAll(async () => {
    const started = Date.now();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-wine-'));
    const control = path.join(root, 'control');
    fs.mkdirSync(control);
    windowsNode(); // fetched (once per machine) before the prefix's timing
    const dll = buildStandInDll(root);
    const launcher = buildLauncher();
    timings.push(`setup ${((Date.now() - started) / 1000).toFixed(1)} s`);
    prefix = await createPrefix(root, dll);
    timings.push(`prefix ${((Date.now() - started) / 1000).toFixed(1)} s`);
    results = await runClient(prefix, {
      root,
      script: 'wine-client.js',
      namespace: NS,
      config: { control: winPath(control), launcher: winPath(launcher) },
      env: { TSHIM_FAKE_HCS_DIR: winPath(control) },
    });
    calls = readIfAny(path.join(control, 'calls.log')).split('\n').filter(Boolean);
    seconds = (Date.now() - started) / 1000;
    timings.push(`client done ${seconds.toFixed(1)} s`);
  }, 600_000);

  afterAll(() => {
    console.log(`Wine suite: ${seconds.toFixed(1)} s (${timings.join(', ')})`);
    prefix?.destroy();
    if (root && !process.env['TSHIM_WINE_KEEP']) fs.rmSync(root, { recursive: true, force: true });
  });

  it('the client ran every scenario without an unexpected error', () => {
    expect(results!.errors).toEqual([]);
    expect(results!.done).toBe(true);
  });

  it('start: prints the runhcs-style protected pipe address, writes address and shim.pid; Connect answers', () => {
    expect(step('c1.logPipe')).toEqual({ served: true });
    const s = step('c1.start') as unknown as { code: number; address: string; files: string[] };
    expect(s.code).toBe(0);
    expect(s.address).toBe(`\\\\.\\pipe\\ProtectedPrefix\\Administrators\\containerd-shim-${NS}-c1-pipe`);
    expect(s.files).toEqual(expect.arrayContaining(['address', 'shim.pid', 'config.json']));
    expect(ok('c1.connect')['shimPid']).toBeGreaterThan(0);
  });

  it('Create: windows-layer mount activated, prepared with NameToGuid ids (nearest parent first) and mounted; the HCS document maps the spec', () => {
    expect(ok('c1.create')['pid']).toBe(0);
    const layerCalls = calls.filter((c) => /Layer .*c1$|PrepareLayer parents/.test(c)).slice(0, 3);
    expect(layerCalls[0]).toBe('ActivateLayer C:\\snapshots\\c1');
    expect(layerCalls[1]).toMatch(/^PrepareLayer parents [0-9a-f-]{36}=C:\\snapshots\\layer2 [0-9a-f-]{36}=C:\\snapshots\\layer1$/);
    expect(layerCalls[2]).toBe('PrepareLayer C:\\snapshots\\c1');
    const doc = JSON.parse(fs.readFileSync(path.join(root, 'control', 'c1.create.json'), 'utf8')) as Record<string, any>;
    expect(doc['SchemaVersion']).toEqual({ Major: 2, Minor: 1 });
    expect(doc['ShouldTerminateOnLastHandleClosed']).toBe(true);
    expect(doc['Container']['GuestOs']).toEqual({ HostName: 'c1-host' });
    expect(doc['Container']['Storage']['Path']).toMatch(/^\\\\\?\\Volume\{[0-9a-f-]{36}\}\\$/);
    expect(doc['Container']['Storage']['Layers'].map((l: { Path: string }) => l.Path)).toEqual(['C:\\snapshots\\layer2', 'C:\\snapshots\\layer1']);
    expect(doc['Container']['Memory']).toEqual({ SizeInMB: 256 });
    expect(doc['Container']['MappedDirectories']).toEqual([{ HostPath: 'C:\\host\\data', ContainerPath: 'C:\\data', ReadOnly: true }]);
    expect(doc['Container']['MappedPipes']).toEqual([{ ContainerPipeName: 'in-container', HostPath: '\\\\.\\pipe\\on-host' }]);
    expect(doc['Container']['Networking']).toMatchObject({ Namespace: '5a5e6f0c-1b7e-4b8a-9a53-2d3c0a6b1e11', DnsSearchList: 'a.local,b.local' });
  });

  it('State/Start: created with pid 0, then running with the HCS process id', () => {
    expect(ok('c1.stateCreated')).toMatchObject({ status: STATUS.CREATED, pid: 0 });
    const pid = ok('c1.startTask')['pid'] as number;
    expect(pid).toBeGreaterThan(0);
    expect(ok('c1.stateRunning')).toMatchObject({ status: STATUS.RUNNING, pid });
    const params = JSON.parse(fs.readFileSync(path.join(root, 'control', 'c1.process.0.json'), 'utf8')) as Record<string, unknown>;
    expect(params).toMatchObject({ WorkingDirectory: 'C:\\windows', Environment: { GREETING: 'hi' }, CreateStdInPipe: true, CreateStdOutPipe: true, CreateStdErrPipe: true });
    expect(params['CommandLine']).toBe('cmd.exe /c "set /p X=& echo got %X% %GREETING%& echo to-stderr 1>&2& exit 7"');
  });

  it('Exec/Start/Wait/Delete of an exec: its stdout through a containerd-style pipe, exit code 5', () => {
    ok('e1.exec');
    expect(ok('e1.start')['pid']).toBeGreaterThan(0);
    expect(ok('e1.wait')['exitStatus']).toBe(5);
    expect(step('e1.stdout')).toContain('exec-out');
    expect(ok('e1.delete')['exitStatus']).toBe(5);
  });

  it("binary:// logging (the runhcs driver contract): an exec's and an init's stdout and stderr reach the driver; Delete waits for it; a missing driver fails Create", () => {
    type Report = { args: string[]; env: Record<string, string>; stdout: string; stderr: string };
    expect(ok('e4.wait')['exitStatus']).toBe(4);
    ok('e4.delete');
    const e4 = step('e4.log') as unknown as Report;
    expect(e4.stdout).toContain('exec-log');
    expect(e4.stderr).toContain('exec-err');
    expect(e4.args[0]).toMatch(/wine-logger\.js$/);
    expect(e4.args[1]).toMatch(/e4-log\.json$/);
    expect(e4.env).toEqual({
      CONTAINER_ID: 'c1',
      CONTAINER_NAMESPACE: NS,
      CONTAINER_STDOUT: `\\\\.\\pipe\\binary-${NS}+c1@e4-stdout`,
      CONTAINER_STDERR: `\\\\.\\pipe\\binary-${NS}+c1@e4-stderr`,
      CONTAINER_WAIT: `\\\\.\\pipe\\binary-${NS}+c1@e4-wait`,
    });
    expect(ok('log1.wait')['exitStatus']).toBe(3);
    ok('log1.delete');
    const log1 = step('log1.log') as unknown as Report;
    expect(log1.stdout).toContain('init-log');
    expect(log1.stderr).toContain('init-err');
    expect(log1.env['CONTAINER_STDOUT']).toBe(`\\\\.\\pipe\\binary-${NS}+log1-stdout`);
    expect(refused('log2.create', CODE.Unavailable)).toContain('logger');
    expect(calls.filter((c) => c.endsWith('C:\\snapshots\\log2')).slice(-1)[0]).toBe('DeactivateLayer C:\\snapshots\\log2');
  });

  it('ResizePty on a console exec reaches HcsModifyProcess; Pids carries runhcs ProcessDetails; Stats is runhcs Statistics', () => {
    ok('e2.exec');
    const e2pid = ok('e2.start')['pid'] as number;
    ok('e2.resize');
    expect(calls).toContain('HcsModifyProcess {"Operation":"ConsoleSize","ConsoleSize":{"Height":24,"Width":80}}');
    const params = JSON.parse(fs.readFileSync(path.join(root, 'control', 'c1.process.3.json'), 'utf8')) as Record<string, unknown>;
    expect(params).toMatchObject({ EmulateConsole: true, ConsoleSize: [25, 100], CreateStdInPipe: true, CreateStdOutPipe: true });
    const pids = step('c1.pids') as unknown as { ok: boolean; processes: Array<{ pid: number; typeUrl: string; details: Record<string, unknown> }> };
    expect(pids.ok).toBe(true);
    const init = ok('c1.startTask')['pid'];
    expect(pids.processes.map((p) => p.pid)).toEqual(expect.arrayContaining([init, e2pid]));
    const e2 = pids.processes.find((p) => p.pid === e2pid)!;
    expect(e2.typeUrl).toBe('containerd.runhcs.v1.ProcessDetails');
    expect(e2.details).toMatchObject({ execId: 'e2', processId: e2pid, memoryCommitBytes: 30, userTime_100Ns: 10 });
    const stats = step('c1.stats') as unknown as { ok: boolean; typeUrl: string; stats: { windows: Record<string, any> } };
    expect(stats.typeUrl).toBe('containerd.runhcs.stats.v1.Statistics');
    expect(stats.stats.windows['uptimeNs']).toBe(2_000_000_000);
    expect(stats.stats.windows['processor']).toEqual({ totalRuntimeNs: 150000, runtimeUserNs: 100000, runtimeKernelNs: 50000 });
    expect(stats.stats.windows['memory']['memoryUsagePrivateWorkingSetBytes']).toBe(2048);
  });

  it('Update maps memory to a Modify request', () => {
    ok('c1.update');
    expect(calls).toContain('HcsModifyComputeSystem {"ResourcePath":"Container/Memory/SizeInMB","RequestType":"Update","Settings":300}');
  });

  it('Pause/Resume freeze and thaw the compute system: PAUSED for the task and its exec, nothing starts while paused, events in order', () => {
    ok('c1.pause');
    expect(calls).toContain('froze 2 processes'); // the init and the console exec e2
    expect(ok('c1.statePaused')['status']).toBe(STATUS.PAUSED);
    expect(ok('e2.statePaused')['status']).toBe(STATUS.PAUSED);
    refused('c1.pauseAgain', CODE.FailedPrecondition);
    expect(refused('e3.execWhilePaused', CODE.FailedPrecondition)).toContain('paused');
    expect(ok('c1.statsWhilePaused')).toBeDefined();
    ok('c1.resume');
    expect(calls).toContain('thawed 2 processes');
    expect(ok('c1.stateResumed')['status']).toBe(STATUS.RUNNING);
    refused('c1.resumeAgain', CODE.FailedPrecondition);
    const c1 = topics('c1');
    expect(c1.indexOf('/tasks/paused')).toBeGreaterThan(c1.indexOf('/tasks/exec-started:e2'));
    expect(c1.indexOf('/tasks/resumed')).toBeGreaterThan(c1.indexOf('/tasks/paused'));
  });

  it('a Pause HCS cannot do (ERROR_NOT_SUPPORTED) is Unimplemented and leaves the task RUNNING; Checkpoint is the documented refusal', () => {
    expect(refused('c1.pauseUnsupported', CODE.Unimplemented)).toMatch(/pause c1/i);
    expect(ok('c1.stateAfterFailedPause')['status']).toBe(STATUS.RUNNING);
    expect(refused('c1.checkpoint', CODE.Unimplemented)).toContain('HCS can save only Hyper-V virtual machines');
    expect(topics('c1').filter((t) => t === '/tasks/paused')).toHaveLength(1);
  });

  it('Kill 9 terminates through fresh handles; a second kill is NotFound; an unmapped signal is FailedPrecondition', () => {
    ok('e2.kill');
    expect(ok('e2.wait')['exitStatus']).toBe(1);
    const kill = calls.indexOf('HcsTerminateProcess');
    expect(calls.slice(kill - 4, kill).some((c) => c.startsWith('HcsOpenComputeSystem c1'))).toBe(true);
    expect(calls.slice(kill - 4, kill).some((c) => c.startsWith('HcsOpenProcess'))).toBe(true);
    refused('e2.killAgain', CODE.NotFound);
    ok('e2.delete');
    expect(refused('c1.badSignal', CODE.FailedPrecondition)).toContain('signal 10');
  });

  it('CloseIO gives the init EOF on stdin; its stdout/stderr arrive; Wait reports exit code 7', () => {
    ok('c1.closeIO');
    expect(calls).toContain('HcsModifyProcess {"Operation":"CloseHandle","CloseHandle":{"Handle":"StdIn"}}');
    expect(ok('c1.wait')['exitStatus']).toBe(7);
    expect(step('c1.stdout')).toContain('got abc hi');
    expect(step('c1.stderr')).toContain('to-stderr');
    expect(ok('c1.stateStopped')).toMatchObject({ status: STATUS.STOPPED, exitStatus: 7 });
  });

  it('Delete: layers unprepared then deactivated; events reach the stand-in events service in order', () => {
    expect(ok('c1.delete')['exitStatus']).toBe(7);
    const un = calls.indexOf('UnprepareLayer C:\\snapshots\\c1');
    const de = calls.indexOf('DeactivateLayer C:\\snapshots\\c1');
    expect(un).toBeGreaterThan(0);
    expect(de).toBeGreaterThan(un);
    expect(topics('c1')).toEqual([
      '/tasks/create',
      '/tasks/start',
      '/tasks/exec-added:e1',
      '/tasks/exec-started:e1',
      '/tasks/exit',
      '/tasks/exec-added:e4',
      '/tasks/exec-started:e4',
      '/tasks/exit',
      '/tasks/exec-added:e2',
      '/tasks/exec-started:e2',
      '/tasks/paused',
      '/tasks/resumed',
      '/tasks/exit',
      '/tasks/exit',
      '/tasks/delete',
    ]);
    const exits = results!.events.filter((e) => e.topic === '/tasks/exit' && e.event?.['containerId'] === 'c1').map((e) => [e.event?.['id'], e.event?.['exitStatus']]);
    expect(exits).toEqual([['e1', 5], ['e4', 4], ['e2', 1], ['c1', 7]]);
    expect(results!.events.every((e) => e.namespace === NS)).toBe(true);
  });

  it('refusals and HCS failures: Hyper-V refused before HCS; image mismatch undoes the layers; PrepareLayer retried on NOT_READY/DEVICE_NOT_CONNECTED', () => {
    expect(refused('hv1.create', CODE.FailedPrecondition)).toContain('Hyper-V isolation');
    expect(calls.some((c) => c.includes('hv1'))).toBe(false);
    expect(refused('bad2.create', CODE.FailedPrecondition)).toContain('does not match the host');
    expect(calls.filter((c) => c.endsWith('C:\\snapshots\\bad2'))).toEqual([
      'ActivateLayer C:\\snapshots\\bad2',
      'PrepareLayer C:\\snapshots\\bad2',
      'UnprepareLayer C:\\snapshots\\bad2',
      'DeactivateLayer C:\\snapshots\\bad2',
    ]);
    ok('retry1.create');
    expect(calls.filter((c) => c.startsWith('PrepareLayer') && c.endsWith('retry1'))).toEqual([
      'PrepareLayer C:\\snapshots\\retry1',
      'PrepareLayer C:\\snapshots\\retry1',
      'PrepareLayer C:\\snapshots\\retry1',
    ]);
    ok('retry1.delete');
    expect(calls).toContain('DeactivateLayer C:\\snapshots\\retry1');
    ok('start1.create');
    const m = step('start1.start');
    expect(m.ok).toBe(false);
    ok('start1.delete');
    expect(calls).toContain('DeactivateLayer C:\\snapshots\\start1');
    refused('unknown.state', CODE.NotFound);
    refused('unknown.stats', CODE.NotFound);
  });

  it('Shutdown with no task left ends the daemon; its pipe stops answering', () => {
    ok('c1.shutdown');
    expect(step('c1.daemonGone')).toBe(true);
  });

  it('a pod of two containers shares one shim (started through the containerd-shim-tshim-v2.exe launcher): start returns the sandbox shim address; CtrlShutdown and terminate end them', () => {
    const s = step('pod.start') as unknown as { sandbox: string; app: string; codes: number[]; stderr: string; appFiles: string[] };
    expect(s.codes, s.stderr).toEqual([0, 0]);
    expect(s.sandbox).toBe(`\\\\.\\pipe\\ProtectedPrefix\\Administrators\\containerd-shim-${NS}-pod1-pipe`);
    expect(s.app).toBe(s.sandbox);
    expect(s.appFiles).not.toContain('shim.pid');
    for (const id of ['pod1', 'app1']) {
      ok(`${id}.create`);
      ok(`${id}.start`);
    }
    const [a, b] = step('pod.connect') as unknown as Call[];
    expect(a!.value!['shimPid']).toBe(b!.value!['shimPid']);
    ok('app1.kill');
    expect(calls).toContain('HcsSignalProcess {"Signal":"CtrlShutdown"}');
    expect(ok('app1.wait')['exitStatus']).toBe(0xc000013a);
    ok('pod1.kill');
    expect(ok('pod1.wait')['exitStatus']).toBe(1);
    ok('app1.delete');
    ok('pod.shutdownEarly');
    expect(step('pod.stillServing')).toBe(true);
    ok('pod1.delete');
    ok('pod.shutdown');
    expect(step('pod.daemonGone')).toBe(true);
  });

  it('a killed daemon is cleaned up by delete: DeleteResponse 255 with the shim pid, scratch unprepared and deactivated', () => {
    ok('victim.create');
    ok('victim.start');
    const d = step('victim.delete') as unknown as { code: number; shimPid: number; response: Record<string, unknown>; files: string[] };
    expect(d.code).toBe(0);
    expect(d.response).toMatchObject({ exitStatus: 255, pid: d.shimPid });
    const after = callsAfter('--- daemon killed ---');
    expect(after).toEqual(expect.arrayContaining(['HcsOpenComputeSystem victim', 'UnprepareLayer C:\\snapshots\\victim', 'DeactivateLayer C:\\snapshots\\victim']));
    expect(d.files).not.toContain('layer-mount.json');
  });
});


/*
 * Plays containerd on Windows, run by the Windows node.exe under Wine (test/windows/wine.test.ts
 * starts it once). containerd's side (events service, stdio pipes, Task calls, bundles) is
 * wine-containerd.js; this file runs tshim's `start` and `delete` actions as containerd does and
 * drives the Task API through every scenario below.
 *
 * What this proves: tshim's Windows code paths, Node's Windows named-pipe transport and koffi's
 * Windows ABI, against the stand-in vmcompute.dll (a simulated HCS), not HCS itself.
 *
 * Plain CommonJS on purpose: it loads the built dist/ of the repo, exactly what the shim runs.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { containerd } = require('./wine-containerd');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const MAIN = path.join(config.repo, 'dist', 'main.js');
const cd = containerd(config);
const { NS, unpackAny, record, must, waitEvent, stdioPipe, bundleDir, writeBundle, isServing, untilNotServing, call, execAny, layerMount, spec } = cd;

/** Runs the shim as containerd would: node + dist/main.js, or the .exe launcher containerd really starts. */
function runShim(args, cwd, viaLauncher = false) {
  const [command, argv] = viaLauncher ? [config.launcher, args] : [process.execPath, [MAIN, ...args]];
  return cd.runProcess(command, argv, cwd, { TSHIM_NODE: process.execPath });
}

async function shimStart(id, viaLauncher = false) {
  const r = await runShim(cd.startArgs(id), bundleDir(id), viaLauncher);
  return { code: r.code, address: r.stdout.toString('utf8'), stderr: r.stderr };
}

function fail(line) {
  fs.appendFileSync(path.join(config.control, 'fail'), `${line}\n`);
}

const WAIT_FOREVER = 'set /p Z=';

/** A binary:// log URI that runs test/windows/wine-logger.js with this node.exe; it reports to `report`. */
function loggerUri(report) {
  const exe = process.execPath.replace(/\\/g, '/');
  const script = path.join(__dirname, 'wine-logger.js');
  return `binary:///${exe}?${encodeURIComponent(script)}&${encodeURIComponent(report)}`;
}

function readReport(report) {
  try {
    return JSON.parse(fs.readFileSync(report, 'utf8'));
  } catch (err) {
    return { missing: err.message };
  }
}

// ---------- scenarios ----------

async function singleContainer() {
  const id = 'c1';
  writeBundle(id, spec(id, ['cmd.exe', '/c', 'set /p X=& echo got %X% %GREETING%& echo to-stderr 1>&2& exit 7']));
  const started = await shimStart(id);
  record('c1.start', { code: started.code, address: started.address, stderr: started.stderr, files: fs.readdirSync(bundleDir(id)) });
  const client = await cd.connect(started.address);
  must('c1.connect', await call(client, 'Connect', { id }));
  // containerd on Windows dials the daemon's log pipe soon after start, once: it must be served at
  // info level too, before anything is logged (a bounded wait: the daemon opens it just after serving)
  const logPipe = `\\\\.\\pipe\\containerd-shim-${NS}-${id}-log`;
  let logServed = false;
  for (let i = 0; i < 50 && !logServed; i++) {
    logServed = await isServing(logPipe);
    if (!logServed) await new Promise((r) => setTimeout(r, 100));
  }
  record('c1.logPipe', { served: logServed });

  const io = { stdin: stdioPipe('c1-stdin'), stdout: stdioPipe('c1-stdout'), stderr: stdioPipe('c1-stderr') };
  await Promise.all(Object.values(io).map((p) => p.ready));
  must('c1.create', await call(client, 'Create', {
    id, bundle: bundleDir(id), rootfs: layerMount(id), terminal: false,
    stdin: io.stdin.path, stdout: io.stdout.path, stderr: io.stderr.path,
  }));
  record('c1.stateCreated', await call(client, 'State', { id }));
  must('c1.startTask', await call(client, 'Start', { id }));
  record('c1.stateRunning', await call(client, 'State', { id }));

  // exec e1: output and exit code through the relay
  const e1out = stdioPipe('e1-stdout');
  await e1out.ready;
  must('e1.exec', await call(client, 'Exec', { id, execId: 'e1', stdout: e1out.path, spec: execAny(['cmd.exe', '/c', 'echo exec-out& exit 5']) }));
  must('e1.start', await call(client, 'Start', { id, execId: 'e1' }));
  record('e1.wait', await call(client, 'Wait', { id, execId: 'e1' }));
  await e1out.ended;
  record('e1.stdout', e1out.data);
  record('e1.delete', await call(client, 'Delete', { id, execId: 'e1' }));

  // exec e4 logs through a binary:// driver: its stdout and stderr reach the driver's pipes
  const e4report = path.join(config.work, 'e4-log.json');
  const e4uri = loggerUri(e4report);
  must('e4.exec', await call(client, 'Exec', { id, execId: 'e4', stdout: e4uri, stderr: e4uri, spec: execAny(['cmd.exe', '/c', 'echo exec-log& echo exec-err 1>&2& exit 4']) }));
  must('e4.start', await call(client, 'Start', { id, execId: 'e4' }));
  record('e4.wait', await call(client, 'Wait', { id, execId: 'e4' }));
  record('e4.delete', await call(client, 'Delete', { id, execId: 'e4' }));
  record('e4.log', readReport(e4report));

  // exec e2: a console process; resize, pids, stats while it runs, then SIGKILL
  const e2in = stdioPipe('e2-stdin');
  const e2out = stdioPipe('e2-stdout');
  await Promise.all([e2in.ready, e2out.ready]);
  must('e2.exec', await call(client, 'Exec', { id, execId: 'e2', terminal: true, stdin: e2in.path, stdout: e2out.path, spec: execAny(['cmd.exe', '/c', WAIT_FOREVER], { terminal: true, consoleSize: { height: 25, width: 100 } }) }));
  must('e2.start', await call(client, 'Start', { id, execId: 'e2' }));
  record('e2.resize', await call(client, 'ResizePty', { id, execId: 'e2', width: 80, height: 24 }));
  const pids = await call(client, 'Pids', { id });
  record('c1.pids', pids.ok ? { ok: true, processes: pids.value.processes.map((p) => ({ pid: p.pid, typeUrl: p.info && p.info.typeUrl, details: unpackAny(p.info) && unpackAny(p.info).message })) } : pids);
  const stats = await call(client, 'Stats', { id });
  record('c1.stats', stats.ok ? { ok: true, typeUrl: stats.value.stats.typeUrl, stats: unpackAny(stats.value.stats).message } : stats);
  record('c1.update', await call(client, 'Update', { id, resources: { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/WindowsResources', value: Buffer.from(JSON.stringify({ memory: { limit: 300 * 1024 * 1024 } })) } }));
  // pause/resume with the console exec e2 alive: both read as paused, nothing new may start
  record('c1.pause', await call(client, 'Pause', { id }));
  record('c1.statePaused', await call(client, 'State', { id }));
  record('e2.statePaused', await call(client, 'State', { id, execId: 'e2' }));
  record('c1.pauseAgain', await call(client, 'Pause', { id }));
  record('e3.execWhilePaused', await call(client, 'Exec', { id, execId: 'e3', spec: execAny(['cmd.exe', '/c', 'exit 0']) }));
  record('c1.statsWhilePaused', await call(client, 'Stats', { id }));
  record('c1.resume', await call(client, 'Resume', { id }));
  record('c1.stateResumed', await call(client, 'State', { id }));
  record('c1.resumeAgain', await call(client, 'Resume', { id }));
  fail('HcsPauseComputeSystem 0x80070032');
  record('c1.pauseUnsupported', await call(client, 'Pause', { id }));
  record('c1.stateAfterFailedPause', await call(client, 'State', { id }));
  record('c1.checkpoint', await call(client, 'Checkpoint', { id, path: 'C:\\checkpoints\\c1' }));
  must('e2.kill', await call(client, 'Kill', { id, execId: 'e2', signal: 9 }));
  record('e2.wait', await call(client, 'Wait', { id, execId: 'e2' }));
  record('e2.killAgain', await call(client, 'Kill', { id, execId: 'e2', signal: 9 }));
  record('e2.delete', await call(client, 'Delete', { id, execId: 'e2' }));
  record('c1.badSignal', await call(client, 'Kill', { id, signal: 10 }));

  // the init: stdin line, CloseIO, exit code 7, stdout and stderr
  const stdin = await io.stdin.connected;
  stdin.write('abc\r\n');
  must('c1.closeIO', await call(client, 'CloseIO', { id, stdin: true }));
  record('c1.wait', await call(client, 'Wait', { id }));
  await Promise.all([io.stdout.ended, io.stderr.ended]);
  record('c1.stdout', io.stdout.data);
  record('c1.stderr', io.stderr.data);
  record('c1.stateStopped', await call(client, 'State', { id }));
  must('c1.delete', await call(client, 'Delete', { id }));
  await waitEvent((e) => e.topic === '/tasks/delete' && e.event && e.event.containerId === id);

  // refusals and injected HCS failures, in the same shim
  writeBundle('hv1', spec('hv1', ['cmd.exe', '/c', 'exit 0'], { windows: { hyperv: {} } }));
  record('hv1.create', await call(client, 'Create', { id: 'hv1', bundle: bundleDir('hv1'), rootfs: layerMount('hv1') }));
  writeBundle('bad2', spec('bad2', ['cmd.exe', '/c', 'exit 0']));
  fail('HcsCreateComputeSystem 0xC0370101');
  record('bad2.create', await call(client, 'Create', { id: 'bad2', bundle: bundleDir('bad2'), rootfs: layerMount('bad2') }));
  writeBundle('retry1', spec('retry1', ['cmd.exe', '/c', 'exit 0']));
  fail('PrepareLayer 0x80070015');
  fail('PrepareLayer 0x8007048F');
  must('retry1.create', await call(client, 'Create', { id: 'retry1', bundle: bundleDir('retry1'), rootfs: layerMount('retry1') }));
  record('retry1.delete', await call(client, 'Delete', { id: 'retry1' }));
  writeBundle('start1', spec('start1', ['cmd.exe', '/c', 'exit 0']));
  must('start1.create', await call(client, 'Create', { id: 'start1', bundle: bundleDir('start1'), rootfs: layerMount('start1') }));
  fail('HcsCreateProcess 0x80070002');
  record('start1.start', await call(client, 'Start', { id: 'start1' }));
  record('start1.delete', await call(client, 'Delete', { id: 'start1' }));
  // a task whose init logs through a binary:// driver started at Create; a driver that is not there
  const log1report = path.join(config.work, 'log1-log.json');
  const log1uri = loggerUri(log1report);
  writeBundle('log1', spec('log1', ['cmd.exe', '/c', 'echo init-log& echo init-err 1>&2& exit 3']));
  must('log1.create', await call(client, 'Create', { id: 'log1', bundle: bundleDir('log1'), rootfs: layerMount('log1'), stdout: log1uri, stderr: log1uri }));
  must('log1.start', await call(client, 'Start', { id: 'log1' }));
  record('log1.wait', await call(client, 'Wait', { id: 'log1' }));
  record('log1.delete', await call(client, 'Delete', { id: 'log1' }));
  record('log1.log', readReport(log1report));
  writeBundle('log2', spec('log2', ['cmd.exe', '/c', 'exit 0']));
  const missingDriver = 'binary:///C:/no/such/logger.exe';
  record('log2.create', await call(client, 'Create', { id: 'log2', bundle: bundleDir('log2'), rootfs: layerMount('log2'), stdout: missingDriver, stderr: missingDriver }));
  record('unknown.state', await call(client, 'State', { id: 'nope' }));
  record('unknown.stats', await call(client, 'Stats', { id: 'nope' }));

  must('c1.shutdown', await call(client, 'Shutdown', { id }));
  await untilNotServing(started.address);
  record('c1.daemonGone', true);
  client.close();
}

async function pod() {
  const sandboxAnn = { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': 'pod1' };
  const appAnn = { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'pod1' };
  writeBundle('pod1', spec('pod1', ['cmd.exe', '/c', WAIT_FOREVER], { annotations: sandboxAnn }));
  writeBundle('app1', spec('app1', ['cmd.exe', '/c', WAIT_FOREVER], { annotations: appAnn }));
  const sandbox = await shimStart('pod1', true);
  const app = await shimStart('app1', true);
  record('pod.start', { sandbox: sandbox.address, app: app.address, codes: [sandbox.code, app.code], stderr: sandbox.stderr + app.stderr, appFiles: fs.readdirSync(bundleDir('app1')) });
  const client = await cd.connect(sandbox.address);
  for (const id of ['pod1', 'app1']) {
    const stdin = stdioPipe(`${id}-stdin`);
    await stdin.ready;
    must(`${id}.create`, await call(client, 'Create', { id, bundle: bundleDir(id), rootfs: layerMount(id), stdin: stdin.path }));
    must(`${id}.start`, await call(client, 'Start', { id }));
  }
  record('pod.connect', [await call(client, 'Connect', { id: 'pod1' }), await call(client, 'Connect', { id: 'app1' })]);
  must('app1.kill', await call(client, 'Kill', { id: 'app1', signal: 15 }));
  record('app1.wait', await call(client, 'Wait', { id: 'app1' }));
  must('pod1.kill', await call(client, 'Kill', { id: 'pod1', signal: 9, all: true }));
  record('pod1.wait', await call(client, 'Wait', { id: 'pod1' }));
  record('app1.delete', await call(client, 'Delete', { id: 'app1' }));
  record('pod.shutdownEarly', await call(client, 'Shutdown', { id: 'pod1' }));
  record('pod.stillServing', await isServing(sandbox.address));
  must('pod1.delete', await call(client, 'Delete', { id: 'pod1' }));
  must('pod.shutdown', await call(client, 'Shutdown', { id: 'pod1' }));
  await untilNotServing(sandbox.address);
  record('pod.daemonGone', true);
  client.close();
}

async function killedDaemon() {
  const id = 'victim';
  writeBundle(id, spec(id, ['cmd.exe', '/c', WAIT_FOREVER]));
  const started = await shimStart(id);
  const client = await cd.connect(started.address);
  const stdin = stdioPipe(`${id}-stdin`);
  await stdin.ready;
  must('victim.create', await call(client, 'Create', { id, bundle: bundleDir(id), rootfs: layerMount(id), stdin: stdin.path }));
  must('victim.start', await call(client, 'Start', { id }));
  const pid = Number(fs.readFileSync(path.join(bundleDir(id), 'shim.pid'), 'utf8'));
  client.close();
  process.kill(pid);
  await untilNotServing(started.address);
  fs.appendFileSync(path.join(config.control, 'calls.log'), '--- daemon killed ---\n');
  // containerd runs delete outside the bundle, naming it with -bundle
  const r = await runShim(cd.deleteArgs(id), config.work);
  record('victim.delete', { code: r.code, shimPid: pid, response: cd.decodeDeleteResponse(r.stdout), stderr: r.stderr.slice(0, 500), files: fs.readdirSync(bundleDir(id)) });
}

cd.runScenarios([['single', singleContainer], ['pod', pod], ['killed', killedDaemon]]);

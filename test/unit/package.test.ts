/**
 * What an install needs, checked on the files rather than trusted: the launcher stays tiny and
 * keeps the line install-shim records the code location in; the packed tarball carries everything
 * the built code loads at run time, and nothing that only building or testing needs.
 */
import { execFileSync } from 'node:child_process';
import { builtinModules } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { npmFreeEnv } from '../e2e/fixtures/npm-env';

const REPO = path.join(__dirname, '..', '..');
const LAUNCHER = path.join(REPO, 'bin', 'containerd-shim-tshim-v2');
const DIST = path.join(REPO, 'dist');
const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
  files: string[];
  dependencies: Record<string, string>;
  scripts: Record<string, string>;
};

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? files(full) : [full];
  });
}

const requires = (text: string): string[] => [...text.matchAll(/require\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1]!);

/** Package name of a bare specifier: `@scope/name/x` → `@scope/name`, `name/x` → `name`. */
const packageOf = (spec: string): string => spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');

describe('install', () => {
  it('the launcher loads only node built-ins and has the one line install-shim rewrites', () => {
    const text = fs.readFileSync(LAUNCHER, 'utf8');
    expect(text.startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(fs.statSync(LAUNCHER).mode & 0o111).toBe(0o111);
    expect(requires(text).sort()).toEqual(['fs', 'path']);
    expect(text.split('\n').filter((l) => l === "const CODE = '';")).toHaveLength(1);
    expect(pkg.bin['containerd-shim-tshim-v2']).toBe('bin/containerd-shim-tshim-v2');
    expect(pkg.scripts['install-shim']).toBe('node scripts/install-shim.js');
  });

  it('the built code loads only built-ins, itself and the production dependencies', () => {
    const builtins = new Set(builtinModules);
    const strays: string[] = [];
    for (const file of files(DIST).filter((f) => f.endsWith('.js'))) {
      for (const spec of requires(fs.readFileSync(file, 'utf8'))) {
        if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
        if (!(packageOf(spec) in pkg.dependencies)) strays.push(`${path.relative(REPO, file)} → ${spec}`);
      }
    }
    expect(strays).toEqual([]);
  });

  it('npm pack builds the Windows launcher first (prepack) and takes it from bin/', () => {
    expect(pkg.scripts['prepack']).toBe('node scripts/windows/build-launcher.js --optional');
    expect(pkg.files).toContain('bin/containerd-shim-tshim-v2.exe');
  });

  it('npm pack takes bin/, all of dist/, the install script and package.json, and no sources or tests', () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO, env: npmFreeEnv(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const packed = (JSON.parse(out) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path).sort();
    const wanted = [
      'bin/containerd-shim-tshim-v2',
      'package.json',
      'scripts/install-shim.js',
      ...files(DIST).map((f) => path.relative(REPO, f)),
    ];
    for (const file of ['dist/main.js', 'dist/proto.json', 'dist/revision.txt']) expect(wanted).toContain(file);
    // The .exe launcher is there when built (prepack builds it; --ignore-scripts here does not,
    // and the Wine tests may be building it at this moment), so it is left out of the comparison.
    expect(packed.filter((p) => p !== 'README.md' && p !== 'bin/containerd-shim-tshim-v2.exe')).toEqual(wanted.sort());
  });
});

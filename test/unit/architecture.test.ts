/** The layering the design promises, checked on the sources rather than trusted. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.join(__dirname, '..', '..', 'src');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sources(full);
    return e.name.endsWith('.ts') ? [full] : [];
  });
}

function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\(\s*|require\(\s*)['"]([^'"]+)['"]/g)) found.push(m[1]!);
  return found;
}

describe('architecture', () => {
  it('src/common imports no platform folder at all', () => {
    const offenders: string[] = [];
    for (const file of sources(path.join(SRC, 'common'))) {
      for (const spec of imports(file)) {
        const target = path.resolve(path.dirname(file), spec);
        const platform = ['linux', 'windows'].some((p) => target.startsWith(path.join(SRC, p) + path.sep) || target === path.join(SRC, p));
        if (platform) offenders.push(`${path.relative(SRC, file)} → ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('only src/platform.ts picks a platform folder; platforms never import each other', () => {
    const offenders: string[] = [];
    for (const file of sources(SRC)) {
      const rel = path.relative(SRC, file);
      const home = rel.split(path.sep)[0];
      for (const spec of imports(file)) {
        const target = path.relative(SRC, path.resolve(path.dirname(file), spec));
        const folder = target.split(path.sep)[0];
        if (folder !== 'linux' && folder !== 'windows') continue;
        if (rel === 'platform.ts' || home === folder) continue;
        offenders.push(`${rel} → ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('koffi is loaded in one place (common/koffi.ts, which knows the single executable), used by one file per native library (libc; vmcompute.dll; the few Win32 DLLs)', () => {
    const rel = (f: string): string => path.relative(SRC, f);
    const loaders = sources(SRC).filter((f) => /require\(\s*['"]koffi['"]\s*\)/.test(fs.readFileSync(f, 'utf8')));
    expect(loaders.map(rel)).toEqual([path.join('common', 'koffi.ts')]);
    const users = sources(SRC).filter((f) => imports(f).some((spec) => /\/common\/koffi$/.test(spec))).map(rel);
    expect(users.sort()).toEqual(['linux/libc.ts', 'windows/vmcompute.ts', 'windows/win32.ts']);
  });

  it('the start path does not load protobufjs, winston, grpc-js or koffi at module load', () => {
    // bootstrap.ts is what `start` runs: everything it loads statically, transitively, must stay
    // off the heavy modules (dynamic import() is how it reaches them when it must).
    const staticSpecs = (file: string): string[] =>
      [...fs.readFileSync(file, 'utf8').matchAll(/^import (?!type )[\s\S]*?from ['"]([^'"]+)['"];/gm)].map((m) => m[1] as string);
    const seen = new Set<string>();
    const packages = new Set<string>();
    const visit = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const spec of staticSpecs(file)) {
        if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), `${spec}.ts`));
        else packages.add(spec);
      }
    };
    visit(path.join(SRC, 'common', 'bootstrap.ts'));
    expect([...packages].filter((p) => !p.startsWith('node:'))).toEqual([]);
    const loaded = [...seen].map((f) => path.relative(SRC, f)).sort();
    for (const heavy of ['common/proto.ts', 'common/log.ts', 'common/grpc.ts']) expect(loaded).not.toContain(heavy);
  });
});

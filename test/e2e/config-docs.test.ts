/**
 * Issue #10, point 5: the configuration snippets of docs/configuration.md (and README's CRI block)
 * are loaded, not just shown. containerd 1.6 loads the version 2 config (`config dump` parses and
 * validates it without starting a daemon); the version 3 config must hold the same runtime tables
 * under containerd 2.x's CRI plugin name; the RuntimeClass must name a handler of those tables;
 * the handler tables are the ones the CRI suites run (cri-bed.ts shimHandler); the options table
 * lists exactly the keys and defaults tshim's parser knows, and the example file parses; the log
 * line is what tshim's formatter writes and the journal commands find it.
 */
import { execFile } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { DEFAULT_OPTIONS, TOML_KEYS, parseTomlOptions } from '../../src/common/options';
import { formatLogrusLine } from '../../src/common/log';
import { CONTAINERD_BIN, REPO_ROOT } from './harness';
import { shimHandler } from './fixtures/cri-bed';

const DOC = readFileSync(path.join(REPO_ROOT, 'docs', 'configuration.md'), 'utf8');
const README = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');

/** The fenced block right after `<!-- tested: NAME -->`. */
function snippet(name: string): string {
  const m = new RegExp(`<!-- tested: ${name} -->\\n\`\`\`\\w+\\n([\\s\\S]*?)\`\`\``).exec(DOC);
  if (!m) throw new Error(`docs/configuration.md has no tested snippet ${name}`);
  return m[1]!;
}

/** The markdown table right after `<!-- tested: NAME -->`: rows of cells, header dropped. */
function table(name: string): string[][] {
  const m = new RegExp(`<!-- tested: ${name} -->\\n((?:\\|.*\\|\\n)+)`).exec(DOC);
  if (!m) throw new Error(`docs/configuration.md has no tested table ${name}`);
  return m[1]!.trim().split('\n').slice(2).map((row) => row.split('|').slice(1, -1).map((c) => c.trim()));
}

type Tables = Record<string, { runtime_type: string; runtime_path?: string; options?: Record<string, unknown> }>;

function runtimesOf(doc: Record<string, unknown>, plugin: string): Tables {
  const plugins = doc['plugins'] as Record<string, { containerd: { runtimes: Tables } }>;
  return plugins[plugin]!.containerd.runtimes;
}

describe('docs/configuration.md', () => {
  it('containerd 1.6 loads the version 2 config and keeps the tshim handler tables', async () => {
    const dir = await fs.mkdtemp('/tmp/tshim-docs-');
    try {
      const file = path.join(dir, 'config.toml');
      await fs.writeFile(file, snippet('containerd-1x'));
      const dumped = await new Promise<string>((resolve, reject) =>
        execFile(CONTAINERD_BIN, ['--config', file, 'config', 'dump'], { timeout: 30_000 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
        ),
      );
      const loaded = runtimesOf(parseToml(dumped), 'io.containerd.grpc.v1.cri');
      const written = runtimesOf(parseToml(snippet('containerd-1x')), 'io.containerd.grpc.v1.cri');
      for (const [name, t] of Object.entries(written)) {
        expect(loaded[name], name).toMatchObject({ runtime_type: t.runtime_type, options: t.options });
      }
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('the handler tables are the ones the CRI suites run, and README shows the same', () => {
    const tables = runtimesOf(parseToml(snippet('containerd-1x')), 'io.containerd.grpc.v1.cri');
    expect(Object.keys(tables).sort()).toEqual(['tshim', 'tshim-path']);
    const options = tables['tshim']!.options as Record<string, string>;
    // cri-bed.ts: tshim by type name, tshim-path = shimHandler(name, absolute path, same options).
    expect(tables['tshim']).toEqual({ runtime_type: 'io.containerd.tshim.v2', options: { TypeUrl: 'containerd.runc.v1.Options', ConfigPath: options['ConfigPath'] } });
    const byPath = shimHandler('tshim-path', tables['tshim-path']!.runtime_type, options);
    expect(tables['tshim-path']).toEqual({ runtime_type: byPath.runtimeType, options: byPath.options });
    expect(path.basename(byPath.runtimeType)).toBe('containerd-shim-tshim-v2');

    const readmeBlock = /```toml\n(version = 2\n[\s\S]*?)```/.exec(README)?.[1];
    expect(readmeBlock, 'README CRI toml block').toBeDefined();
    expect(runtimesOf(parseToml(readmeBlock!), 'io.containerd.grpc.v1.cri')).toEqual(tables);
  });

  it('the version 3 config has the same tables under containerd 2.x\'s CRI runtime plugin', () => {
    const v3 = parseToml(snippet('containerd-2x'));
    expect(v3['version']).toBe(3);
    expect(Object.keys(v3['plugins'] as object)).toEqual(['io.containerd.cri.v1.runtime']);
    expect(runtimesOf(v3, 'io.containerd.cri.v1.runtime')).toEqual(runtimesOf(parseToml(snippet('containerd-1x')), 'io.containerd.grpc.v1.cri'));
  });

  it('the RuntimeClass names a handler of those tables and the pod uses the RuntimeClass', () => {
    const [runtimeClass, pod] = snippet('runtimeclass').split(/^---$/m);
    expect(runtimeClass).toMatch(/^kind: RuntimeClass$/m);
    const handler = /^handler: (\S+)$/m.exec(runtimeClass!)?.[1];
    const name = /^metadata:\n {2}name: (\S+)$/m.exec(runtimeClass!)?.[1];
    expect(Object.keys(runtimesOf(parseToml(snippet('containerd-1x')), 'io.containerd.grpc.v1.cri'))).toContain(handler);
    expect(/^ {2}runtimeClassName: (\S+)$/m.exec(pod!)?.[1]).toBe(name);
  });

  it('the options table lists every key tshim reads, with its type and default', () => {
    const rows = table('options-keys');
    const keys = rows.map((r) => r[0]!.replace(/`/g, ''));
    expect(keys).toEqual(Object.keys(TOML_KEYS));
    for (const [cell, type, def] of rows) {
      const key = cell!.replace(/`/g, '');
      const [optionKey, kind] = TOML_KEYS[key]!;
      expect(type, key).toBe(kind);
      const documented = def!.replace(/`/g, '');
      const actual = DEFAULT_OPTIONS[optionKey];
      expect(documented, key).toBe(actual === '' ? '""' : String(actual));
    }
  });

  it('the example options file sets every key and parses', () => {
    const parsed = parseTomlOptions(snippet('options-file'));
    expect(Object.keys(parsed).sort()).toEqual(Object.values(TOML_KEYS).map(([k]) => k).sort());
    expect(parsed.binaryName).toBe('/usr/sbin/runc');
    // The CRI block's ConfigPath names this file.
    expect(snippet('containerd-1x')).toContain('ConfigPath = "/etc/containerd/tshim-options.toml"');
  });

  it('the log line is what the shim writes, and the journal commands find it', () => {
    const line = snippet('log-line').trim();
    const time = /^time="([^"]+)"/.exec(line)![1]!;
    expect(formatLogrusLine(time, 'debug', 'starting signal loop', { namespace: 'k8s.io', id: 'web-1', runtime: 'io.containerd.tshim.v2', pid: 4242, protocol: 'ttrpc' })).toBe(line);
    const greps = [...snippet('journal').matchAll(/grep '([^']+)'/g)].map((m) => m[1]!);
    expect(greps.length).toBeGreaterThan(0);
    for (const pattern of greps) expect(line).toContain(pattern);
  });
});

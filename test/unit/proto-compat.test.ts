/**
 * Wire compatibility of proto/ with the definitions containerd itself is built from: fetches
 * Debian's containerd 1.6.20 and containerd/cgroups 1.0.4 source packages, strips the gogoproto
 * (Go code generation) and fieldpath annotations, which do not affect the wire, loads both sides
 * with protobufjs keeping snake_case names and compares every service, method, message, field and
 * enum.
 *
 * The CRI subset under proto/k8s.io is compared to k8s.io/cri-api v0.25.0, the CRI module
 * containerd 1.6.20 is built with. Debian 12 packages no cri-api sources (`apt-cache search
 * cri-api` finds nothing, and the containerd -dev package carries no vendor tree), so that module
 * comes from the Go module proxy through `go mod download`, into a throwaway module cache.
 */
import { execFileSync, type ExecFileSyncOptions } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Enum, MapField, Namespace, Root, Service, Type, type INamespace, type ReflectionObject } from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasType, protoRoot } from '../../src/common/proto';
import { loadTree } from '../fixtures/proto-tree';

const REPO = path.resolve(__dirname, '..', '..');
const OUR_PROTO_DIR = path.join(REPO, 'proto');

const PACKAGES = {
  'golang-github-containerd-containerd-dev': /^1\.6\.20[~+-]/,
  'golang-github-containerd-cgroups-dev': /^1\.0\.4[~+-]/,
};

/** Where the -dev packages put Go sources; import paths inside the .proto files are relative to it. */
const GOCODE = path.join('usr', 'share', 'gocode', 'src');

/** The upstream files proto/ mirrors (see proto/MANIFEST.md), by Go import path. */
const UPSTREAM_FILES = [
  'github.com/containerd/containerd/runtime/v2/task/shim.proto',
  'github.com/containerd/containerd/api/types/mount.proto',
  'github.com/containerd/containerd/api/types/task/task.proto',
  'github.com/containerd/containerd/api/events/task.proto',
  'github.com/containerd/containerd/api/services/ttrpc/events/v1/events.proto',
  'github.com/containerd/containerd/api/services/events/v1/events.proto',
  'github.com/containerd/containerd/runtime/v2/runc/options/oci.proto',
  'github.com/containerd/containerd/runtime/linux/runctypes/runc.proto',
  'github.com/containerd/containerd/pkg/runtimeoptions/v1/api.proto',
  'github.com/containerd/cgroups/stats/v1/metrics.proto',
  'github.com/containerd/cgroups/v2/stats/metrics.proto',
];

/**
 * Fields we carry beyond 1.6.20 because later containerd versions send them (additive, so 1.6 is
 * unaffected). Each must have exactly this shape in ours; anything else extra is a mismatch.
 */
const LATER_ADDITIONS: Record<string, FieldShape> = {
  'containerd.runc.v1.Options.task_api_address': { id: 12, type: 'string', label: 'singular' }, // 2.0
  'containerd.runc.v1.Options.task_api_version': { id: 13, type: 'uint32', label: 'singular' }, // 2.0
  'runtimeoptions.v1.Options.config_body': { id: 3, type: 'bytes', label: 'singular' }, // 1.7
  'io.containerd.cgroups.v2.MemoryStat.max_usage': { id: 36, type: 'uint64', label: 'singular' }, // cgroups 3.x
  'io.containerd.cgroups.v2.MemoryStat.swap_max_usage': { id: 37, type: 'uint64', label: 'singular' }, // cgroups 3.x
};

interface FieldShape {
  id: number;
  type: string;
  label: 'singular' | 'optional' | 'repeated' | 'map';
  keyType?: string;
  oneof?: string;
}

// --- fetching and preparing upstream ------------------------------------------------------------

function run(cmd: string, args: string[], cwd: string, timeoutMs: number): string {
  return execFileSync(cmd, args, { cwd, timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
}

/** apt-get download into `dir`; refreshes the package lists once if the packages are unknown. */
function downloadDebs(dir: string): string[] {
  const names = Object.keys(PACKAGES);
  try {
    run('apt-get', ['download', ...names], dir, 120_000);
  } catch {
    run('apt-get', ['update'], dir, 150_000);
    run('apt-get', ['download', ...names], dir, 120_000);
  }
  return names.map((name) => {
    const deb = fs.readdirSync(dir).find((f) => f.startsWith(`${name}_`) && f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download produced no .deb for ${name}`);
    return path.join(dir, deb);
  });
}

/**
 * Removes what only matters to Go code generation: gogoproto imports, file/message/enum options
 * and field/enum-value options, and containerd's fieldpath plugin (its .proto extends
 * descriptor.proto, which protobufjs does not bundle). None of these change the wire format.
 */
function stripGoAnnotations(source: string): string {
  const annotation = /^\((gogoproto|containerd\.plugin)\./;
  return source
    .replace(/^[ \t]*import\s+(weak\s+|public\s+)?"(gogoproto\/gogo\.proto|github\.com\/gogo\/protobuf\/gogoproto\/gogo\.proto)";[^\n]*$/gm, '')
    .replace(/^[ \t]*import\s+(weak\s+)?"github\.com\/containerd\/containerd\/protobuf\/plugin\/fieldpath\.proto";[^\n]*$/gm, '')
    .replace(/^[ \t]*option\s+\((gogoproto|containerd\.plugin)\.[A-Za-z_]+\)\s*=[^;]*;[^\n]*$/gm, '')
    .replace(/[ \t]*\[([^\]]*)\]/g, (whole: string, inner: string) => {
      const entries = inner.split(',').map((e) => e.trim());
      if (!entries.some((e) => annotation.test(e))) return whole;
      const kept = entries.filter((e) => e && !annotation.test(e));
      return kept.length ? ` [${kept.join(', ')}]` : '';
    });
}

function copyStripped(fromDir: string, toDir: string): void {
  for (const entry of fs.readdirSync(fromDir, { withFileTypes: true })) {
    const from = path.join(fromDir, entry.name);
    const to = path.join(toDir, entry.name);
    if (entry.isDirectory()) {
      copyStripped(from, to);
    } else if (entry.name.endsWith('.proto')) {
      fs.mkdirSync(toDir, { recursive: true });
      fs.writeFileSync(to, stripGoAnnotations(fs.readFileSync(from, 'utf8')));
    }
  }
}

function listProtoFiles(dir: string): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listProtoFiles(full));
    else if (entry.name.endsWith('.proto')) found.push(full);
  }
  return found.sort();
}

// --- comparison ---------------------------------------------------------------------------------

interface Definitions {
  types: Map<string, Type>;
  enums: Map<string, Enum>;
  services: Map<string, Service>;
}

function collect(root: Root): Definitions {
  const defs: Definitions = { types: new Map(), enums: new Map(), services: new Map() };
  const visit = (obj: ReflectionObject): void => {
    const name = obj.fullName.slice(1);
    // Well-known types come from protobufjs on both sides; they are not ours to compare.
    if (!name.startsWith('google.protobuf.')) {
      if (obj instanceof Type) defs.types.set(name, obj);
      else if (obj instanceof Enum) defs.enums.set(name, obj);
      else if (obj instanceof Service) defs.services.set(name, obj);
    }
    if (obj instanceof Namespace) obj.nestedArray.forEach(visit);
  };
  root.nestedArray.forEach(visit);
  return defs;
}

function shapeOf(field: Type['fieldsArray'][number]): FieldShape {
  field.resolve();
  const type = field.resolvedType ? field.resolvedType.fullName.slice(1) : field.type;
  const shape: FieldShape = { id: field.id, type, label: 'singular' };
  if (field instanceof MapField) {
    shape.label = 'map';
    shape.keyType = field.keyType;
  } else if (field.repeated) {
    shape.label = 'repeated';
  } else if (field.options?.['proto3_optional']) {
    shape.label = 'optional';
  }
  if (field.partOf && !field.options?.['proto3_optional']) shape.oneof = field.partOf.name;
  return shape;
}

const describeShape = (s: FieldShape): string =>
  `${s.label === 'map' ? `map<${s.keyType}, ${s.type}>` : `${s.label} ${s.type}`} = ${s.id}${s.oneof ? ` (oneof ${s.oneof})` : ''}`;

/** Every difference between upstream and ours, as human-readable lines; empty when compatible. */
function compareDefinitions(upstream: Definitions, ours: Definitions): string[] {
  const problems: string[] = [];

  for (const [name, theirs] of upstream.types) {
    const mine = ours.types.get(name);
    if (!mine) {
      problems.push(`message ${name}: missing`);
      continue;
    }
    for (const field of theirs.fieldsArray) {
      const ourField = mine.fields[field.name];
      const want = describeShape(shapeOf(field));
      if (!ourField) problems.push(`field ${name}.${field.name}: missing (upstream ${want})`);
      else if (describeShape(shapeOf(ourField)) !== want)
        problems.push(`field ${name}.${field.name}: ours ${describeShape(shapeOf(ourField))}, upstream ${want}`);
    }
    for (const field of mine.fieldsArray) {
      if (theirs.fields[field.name]) continue;
      const key = `${name}.${field.name}`;
      const allowed = LATER_ADDITIONS[key];
      const got = describeShape(shapeOf(field));
      if (!allowed) problems.push(`field ${key}: only in ours (${got})`);
      else if (got !== describeShape(allowed)) problems.push(`field ${key}: ours ${got}, expected ${describeShape(allowed)}`);
    }
  }

  for (const [name, theirs] of upstream.enums) {
    const mine = ours.enums.get(name);
    if (!mine) {
      problems.push(`enum ${name}: missing`);
      continue;
    }
    const render = (e: Enum): string =>
      Object.entries(e.values)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k}=${v}`)
        .join(', ');
    if (render(mine) !== render(theirs)) problems.push(`enum ${name}: ours {${render(mine)}}, upstream {${render(theirs)}}`);
  }

  for (const [name, theirs] of upstream.services) {
    const mine = ours.services.get(name);
    if (!mine) {
      problems.push(`service ${name}: missing`);
      continue;
    }
    const render = (s: Service, method: string): string | undefined => {
      const m = s.methods[method];
      if (!m) return undefined;
      m.resolve();
      const req = m.resolvedRequestType?.fullName.slice(1) ?? m.requestType;
      const res = m.resolvedResponseType?.fullName.slice(1) ?? m.responseType;
      return `(${m.requestStream ? 'stream ' : ''}${req}) returns (${m.responseStream ? 'stream ' : ''}${res})`;
    };
    const methods = new Set([...Object.keys(theirs.methods), ...Object.keys(mine.methods)]);
    for (const method of [...methods].sort()) {
      const want = render(theirs, method);
      const got = render(mine, method);
      if (want === got) continue;
      if (!got) problems.push(`rpc ${name}.${method}: missing (upstream ${want})`);
      else if (!want) problems.push(`rpc ${name}.${method}: only in ours ${got}`);
      else problems.push(`rpc ${name}.${method}: ours ${got}, upstream ${want}`);
    }
  }
  return problems;
}

/**
 * Differences between a subset we keep and upstream: every service, method, message, field and
 * enum of ours must exist upstream with the same shape; upstream definitions we leave out are fine
 * (a decoder skips unknown fields). Only definitions whose full name starts with `prefix` count.
 */
function compareSubset(upstream: Definitions, ours: Definitions, prefix: string): string[] {
  const problems: string[] = [];
  const mineOnly = <T>(m: Map<string, T>): [string, T][] => [...m].filter(([name]) => name.startsWith(prefix));
  for (const [name, mine] of mineOnly(ours.types)) {
    const theirs = upstream.types.get(name);
    if (!theirs) {
      problems.push(`message ${name}: not upstream`);
      continue;
    }
    for (const field of mine.fieldsArray) {
      const got = describeShape(shapeOf(field));
      const upstreamField = theirs.fields[field.name];
      if (!upstreamField) problems.push(`field ${name}.${field.name}: not upstream (ours ${got})`);
      else if (describeShape(shapeOf(upstreamField)) !== got)
        problems.push(`field ${name}.${field.name}: ours ${got}, upstream ${describeShape(shapeOf(upstreamField))}`);
    }
  }
  const renderEnum = (e: Enum): string =>
    Object.entries(e.values)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(', ');
  for (const [name, mine] of mineOnly(ours.enums)) {
    const theirs = upstream.enums.get(name);
    if (!theirs) problems.push(`enum ${name}: not upstream`);
    else if (renderEnum(mine) !== renderEnum(theirs)) problems.push(`enum ${name}: ours {${renderEnum(mine)}}, upstream {${renderEnum(theirs)}}`);
  }
  const renderMethod = (s: Service, method: string): string | undefined => {
    const m = s.methods[method];
    if (!m) return undefined;
    m.resolve();
    const req = m.resolvedRequestType?.fullName.slice(1) ?? m.requestType;
    const res = m.resolvedResponseType?.fullName.slice(1) ?? m.responseType;
    return `(${m.requestStream ? 'stream ' : ''}${req}) returns (${m.responseStream ? 'stream ' : ''}${res})`;
  };
  for (const [name, mine] of mineOnly(ours.services)) {
    const theirs = upstream.services.get(name);
    if (!theirs) {
      problems.push(`service ${name}: not upstream`);
      continue;
    }
    for (const method of Object.keys(mine.methods).sort()) {
      const want = renderMethod(theirs, method);
      const got = renderMethod(mine, method);
      if (!want) problems.push(`rpc ${name}.${method}: not upstream`);
      else if (want !== got) problems.push(`rpc ${name}.${method}: ours ${got}, upstream ${want}`);
    }
  }
  return problems;
}

// --- the test -----------------------------------------------------------------------------------

describe('proto/ is wire-compatible with containerd 1.6.20 and cgroups 1.0.4', () => {
  let tmp = '';
  let upstream: Definitions;
  let ours: Definitions;
  let ourJson: INamespace;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-proto-compat-'));
    const debDir = path.join(tmp, 'debs');
    const extracted = path.join(tmp, 'x');
    const stripped = path.join(tmp, 'stripped');
    fs.mkdirSync(debDir);
    for (const deb of downloadDebs(debDir)) {
      const pkg = run('dpkg-deb', ['-f', deb, 'Package'], tmp, 30_000).trim();
      const version = run('dpkg-deb', ['-f', deb, 'Version'], tmp, 30_000).trim();
      const expected = PACKAGES[pkg as keyof typeof PACKAGES];
      if (!expected || !expected.test(version)) {
        throw new Error(`${pkg} ${version} is not the upstream version proto/MANIFEST.md names`);
      }
      run('dpkg', ['-x', deb, extracted], tmp, 60_000);
    }
    copyStripped(path.join(extracted, GOCODE, 'github.com'), path.join(stripped, 'github.com'));
    upstream = collect(loadTree(stripped, UPSTREAM_FILES.map((f) => path.join(stripped, f))));

    const ourRoot = loadTree(OUR_PROTO_DIR, listProtoFiles(OUR_PROTO_DIR));
    ours = collect(ourRoot);
    ourJson = ourRoot.toJSON();
  }, 240_000);

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('stripping leaves no Go-only annotations in the upstream files', () => {
    const stripped = path.join(tmp, 'stripped');
    for (const file of UPSTREAM_FILES) {
      const text = fs.readFileSync(path.join(stripped, file), 'utf8');
      const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
      expect(code, file).not.toMatch(/gogoproto|containerd\.plugin/);
    }
  });

  it('the comparison covers what it claims to', () => {
    expect(upstream.services.get('containerd.task.v2.Task')?.methodsArray).toHaveLength(17);
    expect([...upstream.services.keys()].sort()).toEqual([
      'containerd.services.events.ttrpc.v1.Events',
      'containerd.services.events.v1.Events',
      'containerd.task.v2.Task',
    ]);
    // Message count of the pinned upstream files (11 files plus their imports).
    expect(upstream.types.size).toBe(79);
    for (const name of [
      'containerd.events.TaskExit',
      'containerd.services.events.v1.Envelope',
      'containerd.services.events.ttrpc.v1.ForwardRequest',
      'containerd.linux.runc.CreateOptions',
      'runtimeoptions.v1.Options',
      'io.containerd.cgroups.v1.MemoryStat',
      'io.containerd.cgroups.v2.MemoryEvents',
    ]) {
      expect(upstream.types.has(name), name).toBe(true);
    }
  });

  it('has zero mismatches in services, methods, messages, fields and enums', () => {
    const problems = compareDefinitions(upstream, ours);
    expect(problems, `${problems.length} mismatch(es):\n${problems.join('\n')}`).toEqual([]);
  });

  it('every upstream message is available to the runtime codec', () => {
    const missing = [...upstream.types.keys()].filter((name) => !hasType(name));
    expect(missing).toEqual([]);
    expect(protoRoot().lookupService('containerd.task.v2.Task').methodsArray).toHaveLength(17);
  });

  it('the comparison reports drift: renumbered, retyped, missing and extra definitions', () => {
    // Each edit below is a mistake the comparison must catch.
    const broken = JSON.parse(JSON.stringify(ourJson)) as INamespace;
    type Json = { nested: Record<string, Json>; fields: Record<string, { id: number; type: string; rule?: string }>; methods: Record<string, { requestType: string; responseStream?: boolean }>; values: Record<string, number> };
    const at = (...p: string[]): Json => p.reduce<Json>((node, key) => node.nested[key]!, broken as unknown as Json);
    at('containerd', 'types', 'Mount').fields['target']!.id = 9;
    at('containerd', 'task', 'v2', 'DeleteResponse').fields['exit_status']!.type = 'int32';
    at('containerd', 'task', 'v2', 'PidsResponse').fields['processes']!.rule = undefined as unknown as string;
    delete at('containerd', 'events').nested['TaskOOM'];
    at('containerd', 'events', 'TaskStart').fields['extra'] = { id: 7, type: 'string' };
    at('containerd', 'v1', 'types', 'Status').values['PAUSING'] = 6;
    at('containerd', 'task', 'v2', 'Task').methods['Wait']!.responseStream = true;
    delete at('containerd', 'task', 'v2', 'Task').methods['Stats'];
    const brokenRoot = Root.fromJSON(broken);
    brokenRoot.resolveAll();

    const problems = compareDefinitions(upstream, collect(brokenRoot));
    expect(problems).toEqual(
      expect.arrayContaining([
        'field containerd.types.Mount.target: ours singular string = 9, upstream singular string = 3',
        'field containerd.task.v2.DeleteResponse.exit_status: ours singular int32 = 2, upstream singular uint32 = 2',
        'field containerd.task.v2.PidsResponse.processes: ours singular containerd.v1.types.ProcessInfo = 1, upstream repeated containerd.v1.types.ProcessInfo = 1',
        'message containerd.events.TaskOOM: missing',
        'field containerd.events.TaskStart.extra: only in ours (singular string = 7)',
        expect.stringMatching(/^enum containerd\.v1\.types\.Status: ours \{.*PAUSING=6.*\}, upstream \{.*PAUSING=5.*\}$/),
        'rpc containerd.task.v2.Task.Wait: ours (containerd.task.v2.WaitRequest) returns (stream containerd.task.v2.WaitResponse), upstream (containerd.task.v2.WaitRequest) returns (containerd.task.v2.WaitResponse)',
        'rpc containerd.task.v2.Task.Stats: missing (upstream (containerd.task.v2.StatsRequest) returns (containerd.task.v2.StatsResponse))',
      ]),
    );
    expect(problems).toHaveLength(8);
  });

  it('strips gogoproto options without touching other options', () => {
    const source = [
      'import weak "gogoproto/gogo.proto";',
      'import "github.com/gogo/protobuf/gogoproto/gogo.proto";',
      'option (gogoproto.marshaler_all) = true;',
      'message M {',
      '  option (containerd.plugin.fieldpath) = true;',
      '  google.protobuf.Timestamp t = 1 [(gogoproto.stdtime) = true, (gogoproto.nullable) = false];',
      '  string s = 2 [deprecated = true, (gogoproto.customname) = "S"];',
      '  repeated uint32 p = 3 [packed = false];',
      '}',
    ].join('\n');
    expect(stripGoAnnotations(source)).toBe(
      [
        '',
        '',
        '',
        'message M {',
        '',
        '  google.protobuf.Timestamp t = 1;',
        '  string s = 2 [deprecated = true];',
        '  repeated uint32 p = 3 [packed = false];',
        '}',
      ].join('\n'),
    );
  });
});

// --- CRI ----------------------------------------------------------------------------------------

/** The CRI module containerd 1.6.20's go.mod pins, and the file of it proto/k8s.io mirrors. */
const CRI_MODULE = 'k8s.io/cri-api';
const CRI_VERSION = 'v0.25.0';
const CRI_FILE = 'pkg/apis/runtime/v1/api.proto';
const OUR_CRI_FILE = path.join(OUR_PROTO_DIR, 'k8s.io', 'cri-api', CRI_FILE);

/** The go command: from PATH, else the toolchain's usual install place. */
function goBinary(): string {
  for (const dir of [...(process.env.PATH ?? '').split(':').filter((d) => d !== ''), '/usr/local/go/bin', '/usr/lib/go/bin']) {
    const candidate = path.join(dir, 'go');
    if (fs.existsSync(candidate)) return candidate;
  }
  throw new Error('the CRI proto comparison needs the go command (golang-go or /usr/local/go) to fetch k8s.io/cri-api');
}

/** `go mod download` of the pinned module into `cache`; returns the module's source dir. */
function downloadCriModule(cache: string): string {
  const opts: ExecFileSyncOptions = {
    cwd: cache,
    timeout: 120_000,
    stdio: ['ignore', 'pipe', 'pipe'],
    // A private, writable module cache, so the test leaves nothing behind and needs no go.mod.
    env: { ...process.env, GOMODCACHE: path.join(cache, 'mod'), GOFLAGS: '-modcacherw', GO111MODULE: 'on', GOTOOLCHAIN: 'local' },
  };
  let out: string;
  try {
    out = execFileSync(goBinary(), ['mod', 'download', '-json', `${CRI_MODULE}@${CRI_VERSION}`], opts).toString('utf8');
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer; message: string };
    throw new Error(`go mod download ${CRI_MODULE}@${CRI_VERSION} failed: ${e.message}\n${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`);
  }
  const info = JSON.parse(out) as { Path?: string; Version?: string; Dir?: string; Error?: string };
  if (info.Error || !info.Dir) throw new Error(`go mod download ${CRI_MODULE}@${CRI_VERSION}: ${info.Error ?? 'no Dir in its answer'}`);
  if (info.Path !== CRI_MODULE || info.Version !== CRI_VERSION) throw new Error(`go mod download answered ${info.Path}@${info.Version}`);
  return info.Dir;
}

describe(`proto/k8s.io (CRI subset) is wire-compatible with ${CRI_MODULE} ${CRI_VERSION}`, () => {
  let tmp = '';
  let upstream: Definitions;
  let ours: Definitions;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-cri-proto-'));
    const moduleDir = downloadCriModule(tmp);
    const stripped = path.join(tmp, 'stripped', 'k8s.io', 'cri-api', CRI_FILE);
    fs.mkdirSync(path.dirname(stripped), { recursive: true });
    fs.writeFileSync(stripped, stripGoAnnotations(fs.readFileSync(path.join(moduleDir, CRI_FILE), 'utf8')));
    upstream = collect(loadTree(path.join(tmp, 'stripped'), [stripped]));
    ours = collect(loadTree(OUR_PROTO_DIR, [OUR_CRI_FILE]));
  }, 180_000);

  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('the comparison covers what it claims to', () => {
    // v0.25.0 has 26 RuntimeService and 5 ImageService rpcs; ours is the subset the tests call.
    expect(upstream.services.get('runtime.v1.RuntimeService')?.methodsArray).toHaveLength(26);
    expect(upstream.services.get('runtime.v1.ImageService')?.methodsArray).toHaveLength(5);
    expect(ours.services.get('runtime.v1.RuntimeService')?.methodsArray.length).toBeGreaterThanOrEqual(20);
    const ourMessages = [...ours.types.keys()].filter((n) => n.startsWith('runtime.v1.'));
    expect(ourMessages.length).toBeGreaterThan(80);
    expect([...ours.types.keys()].every((n) => n.startsWith('runtime.v1.'))).toBe(true);
  });

  it('has zero mismatches in services, methods, messages, fields and enums', () => {
    const problems = compareSubset(upstream, ours, 'runtime.v1.');
    expect(problems, `${problems.length} mismatch(es):\n${problems.join('\n')}`).toEqual([]);
  });

  it('the subset comparison reports drift: renumbered, renamed, retyped and invented definitions', () => {
    const json = loadTree(OUR_PROTO_DIR, [OUR_CRI_FILE]).toJSON();
    type Json = { nested: Record<string, Json>; fields: Record<string, { id: number; type: string }>; methods: Record<string, { requestType: string; responseType: string }>; values: Record<string, number> };
    const at = (...p: string[]): Json => p.reduce<Json>((node, key) => node.nested[key]!, json as unknown as Json);
    at('runtime', 'v1', 'ContainerStatus').fields['exit_code']!.id = 17;
    at('runtime', 'v1', 'ExecSyncRequest').fields['timeout']!.type = 'int32';
    const linux = at('runtime', 'v1', 'PodSandboxConfig').fields['linux']!;
    delete at('runtime', 'v1', 'PodSandboxConfig').fields['linux'];
    at('runtime', 'v1', 'PodSandboxConfig').fields['linux_config'] = linux;
    at('runtime', 'v1', 'ContainerState').values['CONTAINER_PAUSED'] = 4;
    at('runtime', 'v1', 'RuntimeService').methods['Pause'] = { requestType: 'StatusRequest', responseType: 'StatusResponse' };
    const broken = Root.fromJSON(json);
    broken.resolveAll();
    const problems = compareSubset(upstream, collect(broken), 'runtime.v1.');
    expect(problems).toEqual(expect.arrayContaining([
      'field runtime.v1.ContainerStatus.exit_code: ours singular int32 = 17, upstream singular int32 = 7',
      'field runtime.v1.ExecSyncRequest.timeout: ours singular int32 = 3, upstream singular int64 = 3',
      'field runtime.v1.PodSandboxConfig.linux_config: not upstream (ours singular runtime.v1.LinuxPodSandboxConfig = 8)',
      expect.stringMatching(/^enum runtime\.v1\.ContainerState: ours \{.*CONTAINER_PAUSED=4.*\}/),
      'rpc runtime.v1.RuntimeService.Pause: not upstream',
    ]));
    expect(problems).toHaveLength(5);
  });
});

/**
 * The static codecs a built shim runs (dist/proto-static.js, scripts/build-proto-json.js) against
 * the reflection the sources run on: for every message type the shim defines, a message with every
 * field set (and an empty one) must encode to the same bytes and decode to the same object, and
 * the shapes the build wrote must be the ones reflection derives.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { Enum, Field, Namespace, ReflectionObject, Type } from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Codecs, codec, protoRoot, shapeOf, staticRegistry, type StaticModule } from '../../src/common/proto';

const REPO = path.resolve(__dirname, '..', '..');

function messageTypes(): Type[] {
  const out: Type[] = [];
  const visit = (obj: ReflectionObject): void => {
    if ('fieldsArray' in obj) out.push(obj as Type);
    if ('nestedArray' in obj) (obj as Namespace).nestedArray.forEach(visit);
  };
  visit(protoRoot());
  return out;
}

const nameOf = (type: Type): string => type.fullName.slice(1);

/** A value for every field (the first member of each oneof), nested messages down to `depth`. */
function sample(type: Type, depth: number): Record<string, unknown> {
  const message: Record<string, unknown> = {};
  const skipped = new Set<string>();
  for (const oneof of type.oneofsArray) for (const member of oneof.oneof.slice(1)) skipped.add(member);
  for (const field of type.fieldsArray) {
    if (skipped.has(field.name)) continue;
    field.resolve();
    const one = (): unknown => value(field, depth);
    if (field.map) message[field.name] = { k1: one(), k2: one() };
    else if (field.repeated) message[field.name] = [one(), one()];
    else message[field.name] = one();
  }
  return message;
}

function value(field: Field, depth: number): unknown {
  const resolved = field.resolvedType;
  if (resolved && 'fieldsArray' in resolved) return depth > 0 ? sample(resolved as Type, depth - 1) : {};
  if (resolved) return Object.values((resolved as Enum).values).find((v) => v !== 0) ?? 0;
  switch (field.type) {
    case 'string':
      return `v-${field.name}`;
    case 'bytes':
      return Buffer.from([1, 2, 3, 250]);
    case 'bool':
      return true;
    case 'double':
      return 1.5;
    case 'float':
      return 0.5;
    case 'int64':
    case 'sint64':
    case 'sfixed64':
      return -1234567890123;
    case 'uint64':
    case 'fixed64':
      return '9007199254740993'; // beyond 2^53, as a decimal string
    case 'int32':
    case 'sint32':
    case 'sfixed32':
      return -7;
    default:
      return 7; // uint32, fixed32
  }
}

describe('static codecs (dist/proto-static.js) against reflection', () => {
  // Written inside the repository, where its require('protobufjs/minimal') resolves.
  const tmp = fs.mkdtempSync(path.join(REPO, 'node_modules', '.tshim-proto-static-'));
  let codecs: Codecs;
  let mod: StaticModule;
  const types = messageTypes();

  beforeAll(() => {
    execFileSync(process.execPath, [path.join(REPO, 'scripts', 'build-proto-json.js'), path.join(tmp, 'proto.json')], { stdio: 'pipe' });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(path.join(tmp, 'proto-static.js')) as StaticModule;
    codecs = new Codecs(staticRegistry(mod));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('has every message type, with the shape reflection gives it, and nothing else', () => {
    expect(types.length).toBeGreaterThan(100);
    expect(Object.keys(mod.$shapes).sort()).toEqual(types.map(nameOf).sort());
    for (const type of types) expect(mod.$shapes[nameOf(type)], nameOf(type)).toEqual(shapeOf(type));
    expect(codecs.has('containerd.runc.v1.Options')).toBe(true);
    expect(codecs.has('containerd.v1.types.Status')).toBe(false); // an enum
    expect(codecs.has('runc.v1.Options')).toBe(false);
  });

  it('encodes every type to the same bytes and decodes them to the same object', () => {
    let compared = 0;
    for (const type of types) {
      for (const message of [{}, sample(type, 2)]) {
        const name = nameOf(type);
        const bytes = codec(name).encode(message);
        expect(codecs.codec(name).encode(message).toString('hex'), name).toBe(bytes.toString('hex'));
        expect(codecs.codec(name).decode(bytes), name).toEqual(codec(name).decode(bytes));
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(200);
  });

  it('prunes zeros as Go does and rejects what reflection rejects', () => {
    const exit = codecs.codec<Record<string, unknown>>('containerd.events.TaskExit');
    // a zero exit status and zero nanos stay off the wire, as containerd writes them
    const bytes = exit.encode({ containerId: 'c', pid: 0, exitStatus: 0, exitedAt: { seconds: 5, nanos: 0 } });
    expect(bytes.toString('hex')).toBe(codec('containerd.events.TaskExit').encode({ containerId: 'c', exitedAt: { seconds: 5 } }).toString('hex'));
    const truncated = Buffer.from([0x0a, 0x05, 0x61]); // a 5-byte string field with 1 byte present
    expect(() => exit.decode(truncated)).toThrow(/cannot decode containerd.events.TaskExit/);
    expect(() => codec('containerd.events.TaskExit').decode(truncated)).toThrow(/cannot decode containerd.events.TaskExit/);
  });

  it('is what the built shim runs: no reflection is loaded', () => {
    const script = [
      `const proto = require(${JSON.stringify(path.join(REPO, 'dist', 'common', 'proto.js'))});`,
      `const exit = proto.codec('containerd.events.TaskExit');`,
      `exit.decode(exit.encode({ containerId: 'c', exitStatus: 3 }));`,
      `const loaded = Object.keys(require.cache).filter((f) => f.includes('protobufjs'));`,
      `console.log(JSON.stringify(loaded.map((f) => f.slice(f.lastIndexOf('protobufjs')))));`,
    ].join('\n');
    const loaded = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as string[];
    expect(loaded).toContain('protobufjs/minimal.js');
    const reflection = /^protobufjs\/(light|index|src\/(type|root|namespace|field|converter|encoder|decoder))\.js$/;
    expect(loaded.filter((f) => reflection.test(f))).toEqual([]);
  });
});

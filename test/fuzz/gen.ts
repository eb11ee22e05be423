/**
 * The fuzzer's generator and mutators: a seeded PRNG, byte-level mutation, protobuf wire-level
 * mutation (fields re-ordered, duplicated, dropped, wire types swapped, lengths lied about,
 * varints stretched), and schema-driven random messages built from our own proto definitions.
 *
 * Hand-written rather than a library: the inputs that matter here are *almost* valid protobuf
 * and ttrpc frames, which needs knowledge of the wire format (a generic byte fuzzer rarely gets
 * past the first length prefix), and a property-testing library such as fast-check would add a
 * dependency and shrinking machinery we do not need, while costing throughput at 10^6 inputs.
 * Everything is a pure function of the seed, so any finding replays from `seed` + `index`.
 */
import { Type, type Field } from 'protobufjs';
import { protoRoot } from '../../src/common/proto';

/** sfc32, seeded through splitmix32: fast, 128-bit state, good enough for fuzzing. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** 0 <= n < max */
  int(max: number): number {
    return max <= 1 ? 0 : this.u32() % max;
  }

  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A derived, independent generator (one per input keeps inputs replayable one by one). */
  fork(salt: number): Rng {
    return new Rng((this.u32() ^ Math.imul(salt, 0x9e3779b1)) >>> 0);
  }
}

/** Seed of input `index` of a run seeded with `seed`: replay one input without the others. */
export function inputSeed(seed: number, index: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) + Math.imul(index, 0x165667b1)) >>> 0;
}

// --- interesting values ------------------------------------------------------------------------

const INTERESTING_INTS = [0, 1, -1, 2, 7, 9, 15, 19, 127, 128, 255, 256, 0x7fff, 0xffff, 0x7fffffff, -0x80000000, 0xffffffff, 2 ** 53 - 1];
const INTERESTING_STRINGS = [
  '',
  'c1',
  'e1',
  'init',
  '.',
  '..',
  '../../etc/passwd',
  '/',
  '/dev/zero',
  '/proc/self/fd/0',
  '$(touch /tmp/tshim-fuzz-pwned)',
  '`id`',
  '; rm -rf /',
  '-',
  '--help',
  '\u0000',
  'a\u0000b',
  '\n\r\t',
  '\uFFFD\uD800',
  'é€𝄞',
  'x'.repeat(300),
  'constructor',
  '__proto__',
  'toString',
  'unix:///run/containerd/s/x',
  'file:///tmp/x?a=b',
  'binary:///bin/true',
  'fifo:///tmp/x',
  'containerd.runc.v1.Options',
  'runtimeoptions.v1.Options',
  'types.containerd.io/opencontainers/runtime-spec/1/Process',
];

export function randomString(rng: Rng): string {
  switch (rng.int(4)) {
    case 0:
      return rng.pick(INTERESTING_STRINGS);
    case 1:
      return rng.bytes(rng.int(24)).toString('latin1');
    case 2:
      return rng.bytes(rng.int(16)).toString('utf8');
    default: {
      const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-_./';
      let s = '';
      const n = 1 + rng.int(20);
      for (let i = 0; i < n; i++) s += alphabet[rng.int(alphabet.length)];
      return s;
    }
  }
}

export function randomInt(rng: Rng): number {
  return rng.chance(0.5) ? rng.pick(INTERESTING_INTS) : rng.u32() - (rng.chance(0.3) ? 0x80000000 : 0);
}

// --- byte mutation ----------------------------------------------------------------------------

/** Classic havoc: 1..4 stacked byte-level edits. */
export function mutateBytes(rng: Rng, input: Buffer): Buffer {
  let buf = Buffer.from(input);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    const pos = rng.int(buf.length + 1);
    switch (rng.int(9)) {
      case 0: // flip a bit
        if (buf.length > 0) buf[pos % buf.length] ^= 1 << rng.int(8);
        break;
      case 1: // random byte
        if (buf.length > 0) buf[pos % buf.length] = rng.u32() & 0xff;
        break;
      case 2: // interesting byte
        if (buf.length > 0) buf[pos % buf.length] = rng.pick([0x00, 0x01, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x08]);
        break;
      case 3: // insert random bytes
        buf = Buffer.concat([buf.subarray(0, pos), rng.bytes(1 + rng.int(8)), buf.subarray(pos)]);
        break;
      case 4: // delete a span
        buf = Buffer.concat([buf.subarray(0, pos), buf.subarray(Math.min(buf.length, pos + 1 + rng.int(8)))]);
        break;
      case 5: // truncate
        buf = buf.subarray(0, pos);
        break;
      case 6: {
        // duplicate a span
        const end = Math.min(buf.length, pos + 1 + rng.int(16));
        buf = Buffer.concat([buf.subarray(0, end), buf.subarray(pos, end), buf.subarray(end)]);
        break;
      }
      case 7: // an over-long varint (0xff...) somewhere
        buf = Buffer.concat([buf.subarray(0, pos), Buffer.alloc(1 + rng.int(11), 0xff), buf.subarray(pos)]);
        break;
      default: // arithmetic on a byte
        if (buf.length > 0) buf[pos % buf.length] = (buf[pos % buf.length]! + rng.int(70) - 35) & 0xff;
        break;
    }
  }
  return buf;
}

// --- protobuf wire-level mutation ---------------------------------------------------------------

interface RawField {
  key: Buffer;
  body: Buffer;
  no: number;
  type: number;
}

export function encodeVarint(value: bigint): Buffer {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  while (v > 0x7fn) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}

/** Best-effort split into fields; stops at the first thing that does not parse. */
function splitFields(buf: Buffer): { fields: RawField[]; rest: Buffer } {
  const fields: RawField[] = [];
  let pos = 0;
  // Numbers, not bigint: only positions and lengths matter here, and huge ones are invalid anyway.
  const varint = (): number | undefined => {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= buf.length) return undefined;
      const b = buf[pos++]!;
      v += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return v;
      mul *= 128;
    }
    return undefined;
  };
  while (pos < buf.length) {
    const start = pos;
    const key = varint();
    if (key === undefined) break;
    const keyEnd = pos;
    const type = key % 8;
    let ok = true;
    if (type === 0) ok = varint() !== undefined;
    else if (type === 1) pos += 8;
    else if (type === 5) pos += 4;
    else if (type === 2) {
      const len = varint();
      if (len === undefined || len > buf.length - pos) ok = false;
      else pos += len;
    } else ok = false;
    if (!ok || pos > buf.length) {
      pos = start;
      break;
    }
    fields.push({ key: buf.subarray(start, keyEnd), body: buf.subarray(keyEnd, pos), no: Math.floor(key / 8), type });
  }
  return { fields, rest: buf.subarray(pos) };
}

/** One structural edit of a protobuf message, recursing into length-delimited fields sometimes. */
export function mutateProto(rng: Rng, input: Buffer, depth = 0): Buffer {
  const { fields, rest } = splitFields(input);
  if (fields.length === 0) return mutateBytes(rng, input);
  const i = rng.int(fields.length);
  const f = fields[i]!;
  const join = (fs: RawField[]): Buffer => Buffer.concat([...fs.flatMap((x) => [x.key, x.body]), rest]);
  switch (rng.int(10)) {
    case 0: // drop a field
      return join(fields.filter((_, j) => j !== i));
    case 1: // duplicate a field (last one wins for scalars, appends for repeated)
      return join([...fields.slice(0, i + 1), f, ...fields.slice(i + 1)]);
    case 2: {
      // swap two fields
      const j = rng.int(fields.length);
      const copy = [...fields];
      copy[i] = fields[j]!;
      copy[j] = f;
      return join(copy);
    }
    case 3: {
      // change the wire type (keeps the body: a lie the reader must catch)
      const key = encodeVarint(BigInt((f.no << 3) | rng.pick([0, 1, 2, 3, 4, 5, 6, 7])));
      return join(fields.map((x, j) => (j === i ? { ...x, key } : x)));
    }
    case 4: {
      // change the field number
      const no = rng.pick([0, 1, 2, 3, 15, 16, 100, 536870911, 536870912, f.no + 1]);
      const key = encodeVarint(BigInt(no) * 8n + BigInt(f.type));
      return join(fields.map((x, j) => (j === i ? { ...x, key } : x)));
    }
    case 5: {
      // rewrite a varint / length to an interesting value
      const values = [0n, 1n, 0x7fn, 0x80n, 0xffffffffn, 0x7fffffffn, (1n << 63n) - 1n, (1n << 64n) - 1n, BigInt(rng.u32())];
      const v = rng.pick(values);
      if (f.type === 0) return join(fields.map((x, j) => (j === i ? { ...x, body: encodeVarint(v) } : x)));
      if (f.type === 2) {
        // a length that lies, followed by whatever was there
        const { payloadStart } = lengthOf(f.body);
        const body = Buffer.concat([encodeVarint(v), f.body.subarray(payloadStart)]);
        return join(fields.map((x, j) => (j === i ? { ...x, body } : x)));
      }
      return mutateBytes(rng, input);
    }
    case 6:
    case 7: {
      // recurse into a nested message / string / bytes
      if (f.type !== 2 || depth > 4) return mutateBytes(rng, input);
      const { payloadStart } = lengthOf(f.body);
      const inner = f.body.subarray(payloadStart);
      const mutated = rng.chance(0.7) ? mutateProto(rng, inner, depth + 1) : mutateBytes(rng, inner);
      const body = Buffer.concat([encodeVarint(BigInt(mutated.length)), mutated]);
      return join(fields.map((x, j) => (j === i ? { ...x, body } : x)));
    }
    case 8: {
      // replace a string field with an interesting string
      if (f.type !== 2) return mutateBytes(rng, input);
      const s = Buffer.from(randomString(rng), 'utf8');
      const body = Buffer.concat([encodeVarint(BigInt(s.length)), s]);
      return join(fields.map((x, j) => (j === i ? { ...x, body } : x)));
    }
    default: // append a random field
      return Buffer.concat([input, encodeVarint(BigInt(1 + rng.int(20)) * 8n + BigInt(rng.pick([0, 1, 2, 5]))), rng.bytes(rng.int(10))]);
  }
}

function lengthOf(body: Buffer): { payloadStart: number } {
  let pos = 0;
  while (pos < body.length && (body[pos]! & 0x80) !== 0) pos++;
  return { payloadStart: Math.min(body.length, pos + 1) };
}

// --- schema-driven messages ---------------------------------------------------------------------

const SCALAR_GEN: Record<string, (rng: Rng) => unknown> = {
  string: randomString,
  bytes: (rng) => rng.bytes(rng.int(32)),
  bool: (rng) => rng.chance(0.5),
  int32: (rng) => randomInt(rng) | 0,
  sint32: (rng) => randomInt(rng) | 0,
  sfixed32: (rng) => randomInt(rng) | 0,
  uint32: (rng) => randomInt(rng) >>> 0,
  fixed32: (rng) => randomInt(rng) >>> 0,
  int64: (rng) => (rng.chance(0.2) ? '-9223372036854775808' : randomInt(rng)),
  sint64: (rng) => randomInt(rng),
  sfixed64: (rng) => randomInt(rng),
  uint64: (rng) => (rng.chance(0.2) ? '18446744073709551615' : Math.abs(randomInt(rng))),
  fixed64: (rng) => Math.abs(randomInt(rng)),
  double: (rng) => rng.pick([0, -0, 1.5, NaN, Infinity, -Infinity, 1e308]),
  float: (rng) => rng.pick([0, 1.5, NaN, Infinity]),
};

const types = new Map<string, Type>();

function lookupType(name: string): Type {
  let type = types.get(name);
  if (!type) {
    type = protoRoot().lookupType(name);
    for (const field of type.fieldsArray) field.resolve();
    types.set(name, type);
  }
  return type;
}

/** A random (schema-valid) object for a message type, fields present with probability ~1/2. */
export function randomMessage(rng: Rng, typeName: string, depth = 0, presets: Record<string, () => unknown> = {}): Record<string, unknown> {
  const type = lookupType(typeName);
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const preset = presets[field.name];
    if (preset && rng.chance(0.8)) {
      out[field.name] = preset();
      continue;
    }
    if (!rng.chance(0.5)) continue;
    const value = (): unknown => fieldValue(rng, field, depth, presets);
    if (field.map) {
      const m: Record<string, unknown> = {};
      for (let i = rng.int(3); i > 0; i--) m[randomString(rng) || 'k'] = value();
      out[field.name] = m;
    } else if (field.repeated) {
      out[field.name] = Array.from({ length: rng.int(4) }, value);
    } else {
      out[field.name] = value();
    }
  }
  return out;
}

function fieldValue(rng: Rng, field: Field, depth: number, presets: Record<string, () => unknown>): unknown {
  const resolved = field.resolvedType;
  if (resolved instanceof Type) {
    if (depth > 3) return {};
    if (resolved.fullName === '.google.protobuf.Any') return randomAny(rng);
    return randomMessage(rng, resolved.fullName.slice(1), depth + 1, presets);
  }
  if (resolved) {
    // enum: a declared value or any int
    const values = Object.values((resolved as unknown as { values: Record<string, number> }).values);
    return rng.chance(0.8) ? rng.pick(values) : randomInt(rng) | 0;
  }
  const gen = SCALAR_GEN[field.type];
  return gen ? gen(rng) : undefined;
}

export const KNOWN_TYPE_URLS = [
  'containerd.runc.v1.Options',
  'runtimeoptions.v1.Options',
  'containerd.linux.runc.RuncOptions',
  'containerd.linux.runc.CreateOptions',
  'type.googleapis.com/containerd.runc.v1.Options',
  'types.containerd.io/opencontainers/runtime-spec/1/Process',
  'containerd.runc.v1.CheckpointOptions',
  'io.containerd.cgroups.v1.Metrics',
  'google.protobuf.Empty',
  'x',
  '',
];

export function randomAny(rng: Rng): { typeUrl: string; value: Buffer } {
  return { typeUrl: rng.pick(KNOWN_TYPE_URLS), value: rng.bytes(rng.int(24)) };
}

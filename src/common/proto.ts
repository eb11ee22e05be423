/**
 * Protobuf codecs for every message the shim speaks (task API, events, options, metrics), built
 * from our own definitions under `<repo>/proto`.
 *
 * A built shim runs the static codecs in `dist/proto-static.js` (protobufjs-cli's static code over
 * protobufjs/minimal, written by scripts/build-proto-json.js): no reflection to load and no code to
 * generate at run time, which halves what a daemon started cold spends on protobuf before its first
 * reply (loading and first use of the task API codecs: 48 → 24 ms). Sources run through vitest have
 * no static module next to them and use reflection over the parsed .proto files (as does anything
 * asking for protoRoot()). Both are the same code: the static target emits the encoders, decoders
 * and converters that reflection generates at run time (test/unit/proto-static.test.ts compares
 * them type by type). Either way the codecs are loaded on first use, so importing this module is
 * free.
 *
 * Object conventions (what callers build and get back): camelCase field names, 64-bit integers as
 * numbers (decimal strings are accepted on encode for values beyond 2^53), enums as numbers, bytes
 * as Buffer, absent messages as null, repeated fields as arrays and maps as plain objects.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { IConversionOptions, INamespace, Namespace, ReflectionObject, Root, Type } from 'protobufjs';
import { Reader } from 'protobufjs/minimal';
import { internal, invalidArgument } from './errors';
import { embeddedText, isSingleExecutable } from './sea';

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export interface AnyMessage {
  typeUrl: string;
  value: Buffer;
}

export interface Codec<T> {
  encode(message: T): Buffer;
  decode(bytes: Uint8Array): T;
}

/** Go's zero time (0001-01-01T00:00:00Z); containerd reads it as "not set", unlike 1970-01-01. */
export const GO_ZERO_TIME: Timestamp = Object.freeze({ seconds: -62135596800, nanos: 0 });

const DECODE_OPTIONS: IConversionOptions = {
  longs: Number,
  enums: Number,
  bytes: Buffer,
  defaults: true,
  arrays: true,
  objects: true,
};

const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_JSON = path.join(__dirname, '..', 'proto.json');
const PROTO_STATIC = path.join(__dirname, '..', 'proto-static.js');

// Always part of the root, even if no .proto imported them: Any, Timestamp and Empty are used
// directly by callers (packAny, Empty replies).
const WELL_KNOWN = ['google/protobuf/any.proto', 'google/protobuf/timestamp.proto', 'google/protobuf/empty.proto'];

/**
 * What a codec needs of a message type; protobufjs's reflected Type and the classes of its static
 * code both have it.
 */
export interface MessageClass {
  fromObject(object: Record<string, unknown>): object;
  encode(message: object): { finish(): Uint8Array };
  decode(reader: Reader): object;
  toObject(message: object, options: IConversionOptions): Record<string, unknown>;
}

/** Which of a message's fields lose their zeros on encode, and which hold messages. */
export interface MessageShape {
  /** Singular scalar/enum fields without presence: proto3 leaves them off the wire when zero. */
  implicit: readonly string[];
  /** Message-typed fields (with their types' full names), whose contents get the same treatment. */
  nested: readonly { name: string; type: string; shape: 'single' | 'repeated' | 'map' }[];
}

/** Where message types come from: the static module, or reflection over parsed definitions. */
export interface MessageRegistry {
  /** undefined for a name that is not a message type (unknown, or an enum). Codecs caches it. */
  find(fullName: string): { type: MessageClass; shape: MessageShape } | undefined;
}

/** dist/proto-static.js: protobufjs-cli's static module, plus every type's shape (the build's). */
export interface StaticModule {
  $shapes: Record<string, MessageShape>;
  [pkg: string]: unknown;
}

export function staticRegistry(mod: StaticModule): MessageRegistry {
  return {
    find(fullName) {
      const shape = Object.prototype.hasOwnProperty.call(mod.$shapes, fullName) ? mod.$shapes[fullName] : undefined;
      if (!shape) return undefined;
      let type: unknown = mod;
      for (const part of fullName.split('.')) type = (type as Record<string, unknown>)[part];
      return { type: type as MessageClass, shape };
    },
  };
}

function reflectionRegistry(root: Root): MessageRegistry {
  const types = indexTypes(root);
  return {
    find(fullName) {
      const type = types.get(fullName);
      return type && { type: type as unknown as MessageClass, shape: shapeOf(type) };
    },
  };
}

/**
 * A type's shape, from its reflection (shapesOf: the ones the build writes into the static module).
 */
export function shapeOf(type: Type): MessageShape {
  const implicit: string[] = [];
  const nested: { name: string; type: string; shape: 'single' | 'repeated' | 'map' }[] = [];
  for (const field of type.fieldsArray) {
    field.resolve();
    if (field.resolvedType && 'fieldsArray' in field.resolvedType) {
      const shape = field.map ? 'map' : field.repeated ? 'repeated' : 'single';
      nested.push({ name: field.name, type: stripDot(field.resolvedType.fullName), shape });
    } else if (!field.repeated && !field.map && !field.hasPresence) {
      implicit.push(field.name);
    }
  }
  return { implicit, nested };
}

/** The codecs of one registry; this module's functions use the shim's own (codecs()). */
export class Codecs {
  private readonly cache = new Map<string, Codec<unknown>>();
  /** Every encode prunes through these, nested types included: looked up once per type. */
  private readonly found = new Map<string, ReturnType<MessageRegistry['find']>>();

  constructor(private readonly registry: MessageRegistry) {}

  has(fullName: string): boolean {
    return this.find(stripDot(fullName)) !== undefined;
  }

  private find(name: string): ReturnType<MessageRegistry['find']> {
    if (!this.found.has(name)) this.found.set(name, this.registry.find(name));
    return this.found.get(name);
  }

  /** Cached codec for a fully-qualified message name, e.g. 'containerd.task.v2.CreateTaskRequest'. */
  codec<T>(fullName: string): Codec<T> {
    const name = stripDot(fullName);
    let cached = this.cache.get(name);
    if (!cached) {
      const found = this.find(name);
      if (!found) throw internal(`unknown protobuf message type ${JSON.stringify(fullName)}`);
      cached = makeCodec(name, found.type, (message) => this.prune(name, message));
      this.cache.set(name, cached);
    }
    return cached as Codec<T>;
  }

  /** See warmCodecs. */
  warm(names: Iterable<string>): void {
    const all = new Set<string>();
    const visit = (name: string): void => {
      if (all.has(name)) return;
      const found = this.find(name);
      if (!found) return;
      all.add(name);
      for (const field of found.shape.nested) visit(field.type);
    };
    for (const name of names) {
      if (!this.has(name)) this.codec(name); // throws: unknown type
      visit(stripDot(name));
    }
    for (const name of all) {
      const c = this.codec<object>(name);
      try {
        c.decode(c.encode({}));
      } catch {
        // a type whose empty form does not round-trip is still compiled as far as it got
      }
    }
  }

  /**
   * protobufjs writes every field that is set on the message, zeros included, while Go's proto3
   * encoder omits zero scalars. Dropping them keeps our bytes identical to containerd's (e.g. a
   * Timestamp without `nanos: 0`, a ConnectResponse without an empty `version`), which the observed
   * wire samples in the spec and byte-level tests rely on.
   */
  private prune(name: string, message: MessageObject): void {
    const found = this.find(name);
    if (!found) return;
    for (const field of found.shape.implicit) {
      if (Object.prototype.hasOwnProperty.call(message, field) && isZeroValue(message[field])) delete message[field];
    }
    for (const { name: field, type, shape } of found.shape.nested) {
      const value = message[field];
      if (value === null || value === undefined) continue;
      if (shape === 'single') this.prune(type, value as MessageObject);
      else if (shape === 'repeated') for (const item of value as MessageObject[]) this.prune(type, item);
      else for (const item of Object.values(value as Record<string, MessageObject>)) this.prune(type, item);
    }
  }
}

let shimCodecs: Codecs | undefined;
let reflected: Root | undefined;

/** The shim's codecs: static where built, else reflection over the parsed .proto files. */
function codecs(): Codecs {
  shimCodecs ??= new Codecs(loadRegistry());
  return shimCodecs;
}

/** protobufjs's reflection of our definitions (tests; the codecs when run from source). */
export function protoRoot(): Root {
  reflected ??= loadRoot();
  return reflected;
}

export function hasType(fullName: string): boolean {
  return codecs().has(fullName);
}

/** Cached codec for a fully-qualified message name, e.g. 'containerd.task.v2.CreateTaskRequest'. */
export function codec<T>(fullName: string): Codec<T> {
  return codecs().codec<T>(fullName);
}

/**
 * Builds the codecs of `names` and of every message type they contain, and runs each once both
 * ways, so their encoders, decoders and converters are compiled now (a spare daemon, before it is
 * adopted) and not on the first request (after it was). The contained types matter: a type's code
 * is compiled on its first own use, so an empty TaskCreate leaves Mount's for the first Create,
 * ~3 ms on its reply.
 */
export function warmCodecs(names: Iterable<string>): void {
  codecs().warm(names);
}

/** Loads the codecs without running any (a spare, before it compiles eagerly what it runs). */
export function loadCodecs(): void {
  codecs();
}

/** The type URL is the bare full name, as containerd's typeurl registry writes it. */
export function packAny<T>(fullName: string, message: T): AnyMessage {
  const name = stripDot(fullName);
  return { typeUrl: name, value: codec<T>(name).encode(message) };
}

/**
 * Decodes an Any whose type we define. Returns undefined when the Any is absent or names a type we
 * do not know (callers ignore unknown option types rather than fail). Throws InvalidArgument when
 * the type is known but the bytes do not decode.
 */
export function unpackAny<T>(any: AnyMessage | null | undefined): { name: string; message: T } | undefined {
  if (!any || !any.typeUrl) return undefined;
  const name = typeName(any);
  if (!hasType(name)) return undefined;
  const value = any.value ?? Buffer.alloc(0);
  return { name, message: codec<T>(name).decode(value) };
}

/**
 * The message name of an Any: protobuf's rule is that it follows the last '/', so
 * 'type.googleapis.com/containerd.runc.v1.Options' and 'containerd.runc.v1.Options' both name
 * containerd.runc.v1.Options. Non-protobuf typeurl registrations (e.g. containerd's
 * 'types.containerd.io/opencontainers/runtime-spec/1/Process' for JSON) must be compared on the
 * raw typeUrl instead.
 */
export function typeName(any: AnyMessage): string {
  const url = any.typeUrl ?? '';
  return url.slice(url.lastIndexOf('/') + 1);
}

/** undefined means "not set" and becomes Go's zero time, never 1970-01-01. */
export function toTimestamp(date: Date | undefined): Timestamp {
  if (date === undefined) return { ...GO_ZERO_TIME };
  const millis = date.getTime();
  if (Number.isNaN(millis)) throw internal('cannot convert an invalid Date to a protobuf Timestamp');
  const seconds = Math.floor(millis / 1000);
  return { seconds, nanos: (millis - seconds * 1000) * 1_000_000 };
}

/** Absent timestamps and Go's zero time both mean "not set". Sub-millisecond precision is dropped. */
export function fromTimestamp(ts: Timestamp | null | undefined): Date | undefined {
  if (!ts) return undefined;
  const seconds = Number(ts.seconds ?? 0);
  const nanos = Number(ts.nanos ?? 0);
  if (seconds === GO_ZERO_TIME.seconds && nanos === 0) return undefined;
  return new Date(seconds * 1000 + Math.floor(nanos / 1_000_000));
}

function makeCodec<T>(name: string, type: MessageClass, prune: (message: MessageObject) => void): Codec<T> {
  return {
    encode(message: T): Buffer {
      try {
        // fromObject (not create) so 64-bit fields accept numbers and decimal strings alike.
        const instance = type.fromObject(message as unknown as Record<string, unknown>);
        prune(instance as MessageObject);
        const bytes = type.encode(instance).finish();
        return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      } catch (err) {
        throw internal(`cannot encode ${name}: ${errorMessage(err)}`, err);
      }
    },
    decode(bytes: Uint8Array): T {
      // Copy so decoded bytes fields never alias a frame buffer the transport may reuse; a
      // Buffer input also makes protobufjs hand out Buffers for bytes fields. The plain Reader
      // (not the BufferReader protobufjs would pick for a Buffer) bounds-checks string lengths,
      // so a truncated message is rejected instead of silently shortened.
      const reader = new Reader(Buffer.from(bytes));
      try {
        return type.toObject(type.decode(reader), DECODE_OPTIONS) as T;
      } catch (err) {
        throw invalidArgument(`cannot decode ${name}: ${errorMessage(err)}`);
      }
    },
  };
}

type MessageObject = Record<string, unknown>;

function isZeroValue(value: unknown): boolean {
  if (value === 0 || value === '' || value === false) return true;
  if (value instanceof Uint8Array) return value.length === 0;
  if (typeof value === 'object' && value !== null && 'low' in value && 'high' in value) {
    const long = value as { low: number; high: number };
    return long.low === 0 && long.high === 0;
  }
  return false;
}

function loadRegistry(): MessageRegistry {
  try {
    const mod = loadStaticModule();
    return mod ? staticRegistry(mod) : reflectionRegistry(protoRoot());
  } catch (err) {
    throw internal(`cannot load protobuf definitions: ${errorMessage(err)}`, err);
  }
}

/** The build writes it into dist/; the single executable carries it in its bundle. */
function loadStaticModule(): StaticModule | undefined {
  if (!isSingleExecutable() && !fs.existsSync(PROTO_STATIC)) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('../proto-static') as StaticModule;
}

function loadRoot(): Root {
  try {
    const embedded = embeddedText('proto.json'); // the single executable carries it (sea.ts)
    if (embedded !== undefined) return rootFromJson(JSON.parse(embedded) as INamespace);
    return fs.existsSync(PROTO_JSON) ? loadJson(PROTO_JSON) : loadProtoFiles(PROTO_DIR);
  } catch (err) {
    throw internal(`cannot load protobuf definitions: ${errorMessage(err)}`, err);
  }
}

function loadJson(file: string): Root {
  return rootFromJson(JSON.parse(fs.readFileSync(file, 'utf8')) as INamespace);
}

/** Running from source (tests): the .proto files themselves, through protobufjs's parser. */
function loadProtoFiles(dir: string): Root {
  // Rebuilt through JSON, exactly like dist/proto.json is made and loaded, so both paths yield
  // the same root.
  return rootFromJson(definitionsJson(dir));
}

/**
 * The shim's definitions as protobufjs JSON, parsed from the .proto files under `dir`: what
 * scripts/build-proto-json.js writes to dist/proto.json.
 */
export function definitionsJson(dir: string = PROTO_DIR): INamespace {
  // The full build: the parser, and the well-known types it serves for google/protobuf imports.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const full = require('protobufjs') as typeof import('protobufjs');
  const parsed = new full.Root();
  // Imports are written as containerd's Go import paths ("github.com/containerd/...") rooted at
  // proto/; google/protobuf/* never reaches this hook because protobufjs serves its bundled copies.
  parsed.resolvePath = (_origin: string, target: string): string =>
    path.isAbsolute(target) ? target : path.join(dir, target);
  parsed.loadSync([...WELL_KNOWN, ...listProtoFiles(dir)]);
  return camelCaseAny(parsed.toJSON());
}

/** Every message type's shape, by full name (the static module carries these). */
export function shapesOf(root: Root): Record<string, MessageShape> {
  const shapes: Record<string, MessageShape> = {};
  for (const [name, type] of indexTypes(root)) shapes[name] = shapeOf(type);
  return shapes;
}

function rootFromJson(json: INamespace): Root {
  // protobufjs's light build (reflection without the .proto parser), loaded only where reflection
  // is used: a daemon running the static codecs never loads it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Root: LightRoot } = require('protobufjs/light') as typeof import('protobufjs/light');
  const root = LightRoot.fromJSON(camelCaseAny(json));
  root.resolveAll();
  return root;
}

interface JsonNamespace {
  nested?: Record<string, JsonNamespace>;
  fields?: Record<string, unknown>;
}

/**
 * protobufjs serves google/protobuf/any.proto from bundled JSON that keeps the snake_case
 * `type_url`, while every field parsed from .proto text is camelCased; renaming it makes Any
 * `{typeUrl, value}` like the rest. Done on the JSON descriptor (before protobufjs resolves field
 * features) and idempotent: proto.json, made by definitionsJson, already carries the rename.
 */
function camelCaseAny(json: INamespace): INamespace {
  const any = (json as JsonNamespace).nested?.['google']?.nested?.['protobuf']?.nested?.['Any'];
  const fields = any?.fields;
  if (!any || !fields || !('type_url' in fields)) return json;
  const { type_url: typeUrl, ...rest } = fields;
  any.fields = { typeUrl, ...rest };
  return json;
}

/**
 * Definitions only the tests' clients use (the CRI API under proto/k8s.io): the shim never speaks
 * them, so they stay out of its root.
 */
const CLIENT_ONLY = new Set([path.join(PROTO_DIR, 'k8s.io')]);

function listProtoFiles(dir: string): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (CLIENT_ONLY.has(full)) continue;
    if (entry.isDirectory()) found.push(...listProtoFiles(full));
    else if (entry.isFile() && entry.name.endsWith('.proto')) found.push(full);
  }
  return found.sort();
}

function indexTypes(root: Root): Map<string, Type> {
  const types = new Map<string, Type>();
  // By shape, not instanceof: the classes come from a build of protobufjs loaded on demand.
  const visit = (obj: ReflectionObject): void => {
    if ('fieldsArray' in obj) types.set(obj.fullName.slice(1), obj as Type);
    if ('nestedArray' in obj) (obj as Namespace).nestedArray.forEach(visit);
  };
  root.nestedArray.forEach(visit);
  return types;
}

function stripDot(name: string): string {
  return name.startsWith('.') ? name.slice(1) : name;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runtime options, from whichever message containerd (or CRI) sends, normalised into one shape.
 *
 * Decoding uses the small wire reader instead of protobufjs: `start` reads the same options from
 * stdin and must stay fast, and these messages are flat scalars.
 */

import { constants as fsConstants, promises as fsp } from 'fs';
import type * as smolToml from 'smol-toml';
import { invalidArgument, ShimError } from './errors';
import { logger } from './log';
import { decodeAny, typeNameOf, WireMessage, type AnyMessage } from './wire';

export interface RuntimeOptions {
  binaryName: string;
  root: string;
  systemdCgroup: boolean;
  noPivotRoot: boolean;
  noNewKeyring: boolean;
  shimCgroup: string;
  ioUid: number;
  ioGid: number;
  criuPath: string;
  criuImagePath: string;
  criuWorkPath: string;
  /** tshim's own: never adopt or keep a spare daemon for this runtime (see spare.ts) */
  noSpareDaemon: boolean;
  /** tshim's own: which containers share a daemon, `container` | `pod` | `namespace` (group.ts); empty: TSHIM_SHIM_GROUP, else pod */
  shimGroup: string;
}

export const DEFAULT_OPTIONS: RuntimeOptions = Object.freeze({
  binaryName: 'runc',
  root: '/run/containerd/runc',
  systemdCgroup: false,
  noPivotRoot: false,
  noNewKeyring: false,
  shimCgroup: '',
  ioUid: 0,
  ioGid: 0,
  criuPath: '',
  criuImagePath: '',
  criuWorkPath: '',
  noSpareDaemon: false,
  shimGroup: '',
});

export const RUNC_OPTIONS_TYPE = 'containerd.runc.v1.Options';
export const CRI_RUNTIME_OPTIONS_TYPE = 'runtimeoptions.v1.Options';
export const LEGACY_RUNC_OPTIONS_TYPE = 'containerd.linux.runc.RuncOptions';
export const LEGACY_CREATE_OPTIONS_TYPE = 'containerd.linux.runc.CreateOptions';

type OptionKey = keyof RuntimeOptions;
type FieldKind = 'string' | 'bool' | 'uint32';

/** [our key, kind] per field number, for each option message we understand directly. */
const RUNC_V1_FIELDS: Record<number, [OptionKey, FieldKind]> = {
  1: ['noPivotRoot', 'bool'],
  2: ['noNewKeyring', 'bool'],
  3: ['shimCgroup', 'string'],
  4: ['ioUid', 'uint32'],
  5: ['ioGid', 'uint32'],
  6: ['binaryName', 'string'],
  7: ['root', 'string'],
  8: ['criuPath', 'string'],
  9: ['systemdCgroup', 'bool'],
  10: ['criuImagePath', 'string'],
  11: ['criuWorkPath', 'string'],
};

const LEGACY_RUNC_FIELDS: Record<number, [OptionKey, FieldKind]> = {
  1: ['binaryName', 'string'],
  2: ['root', 'string'],
  3: ['criuPath', 'string'],
  4: ['systemdCgroup', 'bool'],
};

const LEGACY_CREATE_FIELDS: Record<number, [OptionKey, FieldKind]> = {
  1: ['noPivotRoot', 'bool'],
  8: ['noNewKeyring', 'bool'],
  9: ['shimCgroup', 'string'],
  10: ['ioUid', 'uint32'],
  11: ['ioGid', 'uint32'],
  12: ['criuWorkPath', 'string'],
  13: ['criuImagePath', 'string'],
};

/**
 * proto3 cannot tell "unset" from a zero value, so only non-zero fields override the base. With
 * the default base this is exactly the Go runc shim's rule (empty BinaryName → runc, empty Root →
 * /run/containerd/runc).
 */
function decodeFields(value: Buffer, table: Record<number, [OptionKey, FieldKind]>): Partial<RuntimeOptions> {
  const msg = new WireMessage(value);
  const out: Partial<Record<OptionKey, string | number | boolean>> = {};
  for (const [no, [key, kind]] of Object.entries(table)) {
    const n = Number(no);
    if (!msg.has(n)) continue;
    const v = kind === 'string' ? msg.string(n) : kind === 'bool' ? msg.bool(n) : msg.uint32(n);
    if (v !== '' && v !== false && v !== 0) out[key] = v;
  }
  return out as Partial<RuntimeOptions>;
}

/** Go field name in CRI/shim TOML → our key and expected kind. */
export const TOML_KEYS: Readonly<Record<string, [OptionKey, FieldKind]>> = {
  BinaryName: ['binaryName', 'string'],
  Root: ['root', 'string'],
  SystemdCgroup: ['systemdCgroup', 'bool'],
  NoPivotRoot: ['noPivotRoot', 'bool'],
  NoNewKeyring: ['noNewKeyring', 'bool'],
  ShimCgroup: ['shimCgroup', 'string'],
  IoUid: ['ioUid', 'uint32'],
  IoGid: ['ioGid', 'uint32'],
  CriuPath: ['criuPath', 'string'],
  CriuImagePath: ['criuImagePath', 'string'],
  CriuWorkPath: ['criuWorkPath', 'string'],
  NoSpareDaemon: ['noSpareDaemon', 'bool'],
  ShimGroup: ['shimGroup', 'string'],
};

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/**
 * Parses runtime options written as TOML with the Go field names, either at the top level (a CRI
 * `config_body`) or under an `[options]` table (a runtime config file). Unknown keys are ignored;
 * a known key with the wrong type or invalid TOML is InvalidArgument.
 */
export function parseTomlOptions(text: string): Partial<RuntimeOptions> {
  // Loaded on demand: only CRI's runtimeoptions carry TOML, and `start` should not pay for it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { parse } = require('smol-toml') as typeof smolToml;
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    throw invalidArgument(`invalid runtime options TOML: ${err instanceof Error ? err.message : String(err)}`);
  }
  const tables = [doc];
  if (isTable(doc.options)) tables.push(doc.options);
  const out: Partial<Record<OptionKey, string | number | boolean>> = {};
  for (const table of tables) {
    for (const [name, raw] of Object.entries(table)) {
      const spec = TOML_KEYS[name];
      if (!spec) continue;
      const [key, kind] = spec;
      out[key] = tomlValue(name, raw, kind);
    }
  }
  return out as Partial<RuntimeOptions>;
}

function tomlValue(name: string, raw: unknown, kind: FieldKind): string | number | boolean {
  if (kind === 'string' && typeof raw === 'string') return raw;
  if (kind === 'bool' && typeof raw === 'boolean') return raw;
  if (kind === 'uint32') {
    // smol-toml yields bigint only for integers beyond 2^53, which are out of range anyway.
    if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 0 && raw <= 0xffffffff) return raw;
  }
  throw invalidArgument(`runtime option ${name}: expected ${kind === 'uint32' ? 'a uint32' : `a ${kind}`}`);
}

/** Far above any real options file; a bigger one is not runtime options. */
export const MAX_OPTIONS_FILE_BYTES = 1 << 20;

/**
 * Reads the TOML file a runtimeoptions ConfigPath names. Only a regular file of at most 1 MiB: a
 * FIFO would block `start` and every Create forever, and a device such as /dev/zero would be read
 * until memory runs out. O_NONBLOCK makes opening a FIFO return at once, so fstat can refuse it.
 */
async function readOptionsFile(configPath: string): Promise<string> {
  const fail = (why: string): never => {
    throw invalidArgument(`cannot read runtime options file ${configPath}: ${why}`);
  };
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(configPath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
  const fh = handle as fsp.FileHandle;
  try {
    const st = await fh.stat();
    if (!st.isFile()) fail('not a regular file');
    if (st.size > MAX_OPTIONS_FILE_BYTES) fail(`larger than ${MAX_OPTIONS_FILE_BYTES} bytes`);
    // Read one byte past the cap, in case the file grew since fstat.
    const buf = Buffer.alloc(Math.min(st.size, MAX_OPTIONS_FILE_BYTES) + 1);
    let filled = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, filled, buf.length - filled, null);
      if (bytesRead === 0) break;
      filled += bytesRead;
      if (filled === buf.length) {
        if (filled > MAX_OPTIONS_FILE_BYTES) fail(`larger than ${MAX_OPTIONS_FILE_BYTES} bytes`);
        break;
      }
    }
    return buf.toString('utf8', 0, filled);
  } catch (err) {
    if (err instanceof ShimError) throw err;
    return fail(err instanceof Error ? err.message : String(err));
  } finally {
    await fh.close();
  }
}

async function decodeCriRuntimeOptions(value: Buffer): Promise<Partial<RuntimeOptions>> {
  const msg = new WireMessage(value);
  const configPath = msg.string(2);
  if (configPath) {
    return parseTomlOptions(await readOptionsFile(configPath));
  }
  const body = msg.bytes(3);
  return body.length > 0 ? parseTomlOptions(body.toString('utf8')) : {};
}

/**
 * Decodes an options Any by its type URL, overlaying the non-zero fields on `base`. Unknown types
 * are ignored with a warning (the Go runc shim panics; we would rather run with defaults).
 */
export async function decodeOptions(
  any: AnyMessage | null | undefined,
  base: RuntimeOptions = DEFAULT_OPTIONS,
): Promise<RuntimeOptions> {
  if (!any || !any.typeUrl) return { ...base };
  const name = typeNameOf(any.typeUrl);
  let partial: Partial<RuntimeOptions>;
  switch (name) {
    case RUNC_OPTIONS_TYPE:
      partial = decodeFields(any.value, RUNC_V1_FIELDS);
      break;
    case LEGACY_RUNC_OPTIONS_TYPE:
      partial = decodeFields(any.value, LEGACY_RUNC_FIELDS);
      break;
    case LEGACY_CREATE_OPTIONS_TYPE:
      partial = decodeFields(any.value, LEGACY_CREATE_FIELDS);
      break;
    case CRI_RUNTIME_OPTIONS_TYPE:
      partial = await decodeCriRuntimeOptions(any.value);
      break;
    default:
      logger.warn('ignoring runtime options of unknown type', { type_url: any.typeUrl });
      return { ...base };
  }
  return { ...base, ...partial };
}

// ---------------------------------------------------------------------------------------------
// options.json: written at create so the `delete` subcommand (a fresh process with no request
// options) can find the runc binary and root. Snake_case keys, zero values omitted, like the Go
// runc shim's json.Marshal of its Options.

const JSON_KEYS: Record<OptionKey, string> = {
  binaryName: 'binary_name',
  root: 'root',
  systemdCgroup: 'systemd_cgroup',
  noPivotRoot: 'no_pivot_root',
  noNewKeyring: 'no_new_keyring',
  shimCgroup: 'shim_cgroup',
  ioUid: 'io_uid',
  ioGid: 'io_gid',
  criuPath: 'criu_path',
  criuImagePath: 'criu_image_path',
  criuWorkPath: 'criu_work_path',
  noSpareDaemon: 'no_spare_daemon',
  shimGroup: 'shim_group',
};

export function toOptionsJson(o: RuntimeOptions): string {
  const out: Record<string, string | number | boolean> = {};
  for (const key of Object.keys(JSON_KEYS) as OptionKey[]) {
    const v = o[key];
    if (v !== '' && v !== false && v !== 0) out[JSON_KEYS[key]] = v;
  }
  return JSON.stringify(out);
}

/** Reads options.json (ours or the Go shim's; protojson camelCase keys are accepted too). */
export function fromOptionsJson(text: string): RuntimeOptions {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`invalid options.json: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!isTable(doc)) throw invalidArgument('invalid options.json: not an object');
  const out: RuntimeOptions = { ...DEFAULT_OPTIONS };
  const mutable = out as unknown as Record<OptionKey, unknown>;
  for (const key of Object.keys(JSON_KEYS) as OptionKey[]) {
    const raw = doc[JSON_KEYS[key]] ?? doc[key];
    if (raw === undefined || raw === null) continue;
    const wrongNumber = typeof raw === 'number' && (!Number.isInteger(raw) || raw < 0 || raw > 0xffffffff);
    if (typeof raw !== typeof DEFAULT_OPTIONS[key] || wrongNumber) {
      throw invalidArgument(`invalid options.json: bad value for ${JSON_KEYS[key]}`);
    }
    if (raw !== '') mutable[key] = raw;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// start's stdin

export interface BootstrapInfo {
  namespace: string;
  containerdVersion: string;
  ttrpcAddress: string;
  grpcAddress: string;
  containerdBinary: string;
  socketDir?: string;
  /** containerd.runtime.bootstrap.v1.LogLevel: INFO 0, TRACE -8, DEBUG -4, WARN 4, ERROR 8, ... */
  logLevel: number;
}

const KNOWN_OPTION_TYPES = new Set([
  RUNC_OPTIONS_TYPE,
  CRI_RUNTIME_OPTIONS_TYPE,
  LEGACY_RUNC_OPTIONS_TYPE,
  LEGACY_CREATE_OPTIONS_TYPE,
]);

/**
 * Interprets `start`'s stdin: empty → nothing; containerd 2.3 BootstrapParams (recognised by
 * field 1 instance_id being our id, which a plain Any's type URL never is) → its bootstrap data
 * and the options extension; anything else is the options Any itself. Malformed bytes are
 * InvalidArgument.
 */
export function parseStartStdin(
  bytes: Buffer,
  id: string,
): { options?: AnyMessage; bootstrap?: BootstrapInfo } {
  if (bytes.length === 0) return {};
  const bootstrap = tryBootstrapParams(bytes, id);
  if (bootstrap) return bootstrap;
  const any = decodeAny(bytes);
  return any.typeUrl ? { options: any } : {};
}

function tryBootstrapParams(bytes: Buffer, id: string): { options?: AnyMessage; bootstrap: BootstrapInfo } | undefined {
  let msg: WireMessage;
  try {
    msg = new WireMessage(bytes);
    if (!id || msg.string(1) !== id) return undefined;
  } catch {
    return undefined;
  }
  const bootstrap: BootstrapInfo = {
    namespace: msg.string(2),
    logLevel: msg.int32(3),
    containerdVersion: msg.string(4),
    ttrpcAddress: msg.string(5),
    grpcAddress: msg.string(6),
    containerdBinary: msg.string(7),
  };
  if (msg.has(9)) bootstrap.socketDir = msg.string(9);

  // Extension{value 1 Any}. Prefer an options type we understand, else the first non-empty one.
  const anys = msg
    .repeatedBytes(8)
    .map((ext) => new WireMessage(ext))
    .filter((ext) => ext.has(1))
    .map((ext) => decodeAny(ext.bytes(1)))
    .filter((any) => any.typeUrl !== '');
  const options = anys.find((a) => KNOWN_OPTION_TYPES.has(typeNameOf(a.typeUrl))) ?? anys[0];
  return options ? { options, bootstrap } : { bootstrap };
}

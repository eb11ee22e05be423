/**
 * Reading and parsing cgroup control files. Every uint64 the stats readers produce is a decimal
 * string (`U64`): cgroup counters and the v2 "max" sentinel (2^64-1) do not fit a JS number, and
 * the proto layer accepts decimal strings for 64-bit fields. Using strings for all of them, not
 * only the large ones, keeps the shape of a metrics object independent of the values in it.
 */
import { readFileSync } from 'fs';
import { errnoCode } from '../../common/errors';

/** A uint64 as a canonical decimal string (no sign, no leading zeros). */
export type U64 = string;

export const U64_MAX: U64 = '18446744073709551615';
export const U32_MAX = 0xffffffff;

const U64_MAX_BIG = 18446744073709551615n;

/**
 * Errors that mean "this file is not there for this cgroup": the file was never created (controller
 * not enabled, kernel too old), the cgroup was removed under us, or the kernel refuses the read for
 * a control file that only exists for writing on this configuration.
 */
const ABSENT_CODES = new Set(['ENOENT', 'ENOTDIR', 'ENODEV', 'ESRCH', 'EOPNOTSUPP', 'EINVAL']);

/**
 * Contents of a control file, or undefined when the file does not exist for this cgroup. Read
 * synchronously: cgroupfs is the kernel's, a read never waits on a device, and Stats reads dozens
 * of them (a threadpool round trip each, when asynchronous).
 */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code !== undefined && ABSENT_CODES.has(code)) return undefined;
    throw err;
  }
}

/**
 * Parses an unsigned decimal the way containerd's cgroups library does: negative numbers (some
 * kernels report e.g. -1 for unlimited or transiently negative counters) read as 0, values beyond
 * 64 bits saturate. Returns undefined for anything that is not an integer.
 */
export function parseU64(text: string): U64 | undefined {
  const s = text.trim();
  if (!/^[+-]?\d+$/.test(s)) return undefined;
  if (s.startsWith('-')) return '0';
  const v = BigInt(s.startsWith('+') ? s.slice(1) : s);
  return (v > U64_MAX_BIG ? U64_MAX_BIG : v).toString();
}

/** A single-value file that may hold "max" (meaning unlimited), which maps to `maxValue`. */
export function parseU64OrMax(text: string, maxValue: U64): U64 | undefined {
  return text.trim() === 'max' ? maxValue : parseU64(text);
}

/**
 * Parses "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control). Lines
 * whose value is not a number are skipped rather than failing the whole read, since newer kernels
 * keep adding keys.
 */
export function parseKeyValues(text: string): Map<string, U64> {
  const out = new Map<string, U64>();
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2) continue;
    const v = parseU64(parts[1]);
    if (v !== undefined) out.set(parts[0], v);
  }
  return out;
}

/** Copies the listed keys of a parsed key/value file into an object under their camelCase names. */
export function pickCamel(values: Map<string, U64>, keys: readonly string[]): Record<string, U64> {
  const out: Record<string, U64> = {};
  for (const key of keys) {
    const v = values.get(key);
    if (v !== undefined) out[snakeToCamel(key)] = v;
  }
  return out;
}

export function snakeToCamel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** Reads a single-number file; undefined when absent or not a number. */
export async function readU64(path: string): Promise<U64 | undefined> {
  const text = await readOptional(path);
  return text === undefined ? undefined : parseU64(text);
}

export async function readU64OrMax(path: string, maxValue: U64): Promise<U64 | undefined> {
  const text = await readOptional(path);
  return text === undefined ? undefined : parseU64OrMax(text, maxValue);
}

export async function readKeyValues(path: string): Promise<Map<string, U64> | undefined> {
  const text = await readOptional(path);
  return text === undefined ? undefined : parseKeyValues(text);
}

export interface RdmaEntry {
  device: string;
  hcaHandles: number;
  hcaObjects: number;
}

/** rdma.current / rdma.max lines: "<device> hca_handle=<n|max> hca_object=<n|max>". */
export function parseRdma(text: string): RdmaEntry[] {
  const out: RdmaEntry[] = [];
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 3) continue;
    const entry: RdmaEntry = { device: parts[0], hcaHandles: 0, hcaObjects: 0 };
    for (const kv of parts.slice(1)) {
      const [key, raw] = kv.split('=');
      if (raw === undefined) continue;
      const value = raw === 'max' ? U32_MAX : Number.parseInt(raw, 10);
      if (!Number.isInteger(value) || value < 0) continue;
      const clamped = Math.min(value, U32_MAX);
      if (key === 'hca_handle') entry.hcaHandles = clamped;
      else if (key === 'hca_object') entry.hcaObjects = clamped;
    }
    out.push(entry);
  }
  return out;
}

/** Drops undefined values so the object carries only fields that were actually read. */
export function defined<T extends Record<string, unknown>>(obj: T): Partial<T> {
  const out: Partial<T> = {};
  for (const key of Object.keys(obj) as (keyof T)[]) {
    if (obj[key] !== undefined) out[key] = obj[key];
  }
  return out;
}

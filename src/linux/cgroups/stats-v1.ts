/**
 * cgroup v1 statistics as an `io.containerd.cgroups.v1.Metrics` object (camelCase field names,
 * uint64 fields as decimal strings, see files.ts). Files follow containerd's cgroups library: a
 * controller that is not mounted or a file the kernel does not provide leaves its fields out
 * instead of failing the whole read.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import {
  type RdmaEntry,
  type U64,
  defined,
  parseRdma,
  parseU64,
  readKeyValues,
  readOptional,
  readU64,
  readU64OrMax,
  snakeToCamel,
} from './files';

export const V1_METRICS_TYPE = 'io.containerd.cgroups.v1.Metrics';

export interface V1MemoryEntry {
  limit?: U64;
  usage?: U64;
  max?: U64;
  failcnt?: U64;
}

export interface V1BlkIOEntry {
  op: string;
  device: string;
  major: U64;
  minor: U64;
  value: U64;
}

export interface V1Metrics {
  hugetlb?: { usage?: U64; max?: U64; failcnt?: U64; pagesize: string }[];
  pids?: { current?: U64; limit?: U64 };
  cpu?: {
    usage: { total?: U64; kernel?: U64; user?: U64; perCpu?: U64[] };
    throttling: { periods?: U64; throttledPeriods?: U64; throttledTime?: U64 };
  };
  memory?: Record<string, U64 | V1MemoryEntry>;
  blkio?: Partial<Record<BlkioField, V1BlkIOEntry[]>>;
  rdma?: { current: RdmaEntry[]; limit: RdmaEntry[] };
  memoryOomControl?: { oomKillDisable?: U64; underOom?: U64; oomKill?: U64 };
}

export interface V1ReadOptions {
  /** where `partitions` is read from to name block devices; /proc unless testing */
  procRoot?: string;
}

/**
 * cpuacct.stat counts USER_HZ ticks. USER_HZ is 100 on every Linux architecture containerd
 * supports, and containerd hard-codes it too, so the conversion matches its numbers exactly.
 */
const USER_HZ = 100n;
const NS_PER_SEC = 1_000_000_000n;

export async function readMetricsV1(
  paths: ReadonlyMap<string, string>,
  opts: V1ReadOptions = {},
): Promise<V1Metrics> {
  const metrics: V1Metrics = {};
  const dir = (controller: string): string | undefined => paths.get(controller);
  const [pids, cpu, memory, blkio, hugetlb, rdma] = await Promise.all([
    ifDir(dir('pids'), readPids),
    readCpu(dir('cpu'), dir('cpuacct')),
    ifDir(dir('memory'), readMemory),
    ifDir(dir('blkio'), (d) => readBlkio(d, opts.procRoot ?? '/proc')),
    ifDir(dir('hugetlb'), readHugetlb),
    ifDir(dir('rdma'), readRdma),
  ]);
  if (hugetlb !== undefined && hugetlb.length > 0) metrics.hugetlb = hugetlb;
  if (pids !== undefined) metrics.pids = pids;
  metrics.cpu = cpu;
  if (memory !== undefined) {
    metrics.memory = memory.memory;
    if (memory.oom !== undefined) metrics.memoryOomControl = memory.oom;
  }
  if (blkio !== undefined) metrics.blkio = blkio;
  if (rdma !== undefined) metrics.rdma = rdma;
  return metrics;
}

async function ifDir<T>(dir: string | undefined, read: (dir: string) => Promise<T>): Promise<T | undefined> {
  return dir === undefined ? undefined : read(dir);
}

async function readPids(dir: string): Promise<V1Metrics['pids']> {
  const [current, limit] = await Promise.all([
    readU64(path.join(dir, 'pids.current')),
    // v1 reports an unlimited pids.max as 0, unlike v2
    readU64OrMax(path.join(dir, 'pids.max'), '0'),
  ]);
  if (current === undefined && limit === undefined) return undefined;
  return defined({ current, limit });
}

/** containerd always reports the cpu section, even with both controllers missing. */
async function readCpu(cpuDir: string | undefined, acctDir: string | undefined): Promise<NonNullable<V1Metrics['cpu']>> {
  const cpu: NonNullable<V1Metrics['cpu']> = { usage: {}, throttling: {} };
  if (acctDir !== undefined) {
    const [total, perCpuText, statText] = await Promise.all([
      readU64(path.join(acctDir, 'cpuacct.usage')),
      readOptional(path.join(acctDir, 'cpuacct.usage_percpu')),
      readKeyValues(path.join(acctDir, 'cpuacct.stat')),
    ]);
    const ticksToNs = (ticks: U64 | undefined): U64 | undefined =>
      ticks === undefined ? undefined : ((BigInt(ticks) * NS_PER_SEC) / USER_HZ).toString();
    cpu.usage = defined({
      total,
      kernel: ticksToNs(statText?.get('system')),
      user: ticksToNs(statText?.get('user')),
      perCpu: perCpuText === undefined ? undefined : parsePerCpu(perCpuText),
    });
  }
  if (cpuDir !== undefined) {
    const stat = await readKeyValues(path.join(cpuDir, 'cpu.stat'));
    if (stat !== undefined) {
      cpu.throttling = defined({
        periods: stat.get('nr_periods'),
        throttledPeriods: stat.get('nr_throttled'),
        throttledTime: stat.get('throttled_time'),
      });
    }
  }
  return cpu;
}

function parsePerCpu(text: string): U64[] {
  const out: U64[] = [];
  for (const field of text.trim().split(/\s+/)) {
    const v = parseU64(field);
    if (v !== undefined) out.push(v);
  }
  return out;
}

/** memory.stat keys in MemoryStat field order; the hierarchical ones are renamed below. */
const MEMORY_STAT_KEYS = [
  'cache', 'rss', 'rss_huge', 'mapped_file', 'dirty', 'writeback', 'pgpgin', 'pgpgout', 'pgfault',
  'pgmajfault', 'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable',
] as const;

/** MemoryStat spells the page-in/out counters differently from the kernel file. */
const MEMORY_FIELD_NAMES: Readonly<Record<string, string>> = {
  pgpgin: 'pgPgIn', pgpgout: 'pgPgOut', pgfault: 'pgFault', pgmajfault: 'pgMajFault',
};

/** MemoryEntry name → file infix (memory.<infix>.usage_in_bytes); "" is the plain memory.* files */
const MEMORY_ENTRIES: readonly (readonly [string, string])[] = [
  ['usage', ''], ['swap', 'memsw.'], ['kernel', 'kmem.'], ['kernelTcp', 'kmem.tcp.'],
];

interface MemoryResult {
  memory: NonNullable<V1Metrics['memory']>;
  oom: V1Metrics['memoryOomControl'];
}

async function readMemory(dir: string): Promise<MemoryResult> {
  const [stat, oomControl, entries] = await Promise.all([
    readKeyValues(path.join(dir, 'memory.stat')),
    readKeyValues(path.join(dir, 'memory.oom_control')),
    Promise.all(MEMORY_ENTRIES.map(([, infix]) => readMemoryEntry(dir, infix))),
  ]);
  const memory: NonNullable<V1Metrics['memory']> = {};
  if (stat !== undefined) {
    for (const key of MEMORY_STAT_KEYS) {
      const name = MEMORY_FIELD_NAMES[key] ?? snakeToCamel(key);
      const local = stat.get(key);
      if (local !== undefined) memory[name] = local;
      const total = stat.get(`total_${key}`);
      if (total !== undefined) memory[`total${name[0].toUpperCase()}${name.slice(1)}`] = total;
    }
    const hierMem = stat.get('hierarchical_memory_limit');
    if (hierMem !== undefined) memory.hierarchicalMemoryLimit = hierMem;
    const hierSwap = stat.get('hierarchical_memsw_limit');
    if (hierSwap !== undefined) memory.hierarchicalSwapLimit = hierSwap;
  }
  MEMORY_ENTRIES.forEach(([name], i) => {
    memory[name] = entries[i];
  });
  const oom =
    oomControl === undefined
      ? undefined
      : defined({
          oomKillDisable: oomControl.get('oom_kill_disable'),
          underOom: oomControl.get('under_oom'),
          oomKill: oomControl.get('oom_kill'),
        });
  return { memory, oom };
}

async function readMemoryEntry(dir: string, infix: string): Promise<V1MemoryEntry> {
  const file = (name: string): string => path.join(dir, `memory.${infix}${name}`);
  const [limit, usage, max, failcnt] = await Promise.all([
    readU64(file('limit_in_bytes')),
    readU64(file('usage_in_bytes')),
    readU64(file('max_usage_in_bytes')),
    readU64(file('failcnt')),
  ]);
  return defined({ limit, usage, max, failcnt });
}

type BlkioField =
  | 'ioServiceBytesRecursive'
  | 'ioServicedRecursive'
  | 'ioQueuedRecursive'
  | 'ioServiceTimeRecursive'
  | 'ioWaitTimeRecursive'
  | 'ioMergedRecursive'
  | 'ioTimeRecursive'
  | 'sectorsRecursive';

/** CFQ/BFQ-era per-cgroup files, only present when the kernel's IO scheduler accounts them. */
const BLKIO_RECURSIVE: readonly (readonly [BlkioField, string])[] = [
  ['sectorsRecursive', 'blkio.sectors_recursive'],
  ['ioServiceBytesRecursive', 'blkio.io_service_bytes_recursive'],
  ['ioServicedRecursive', 'blkio.io_serviced_recursive'],
  ['ioQueuedRecursive', 'blkio.io_queued_recursive'],
  ['ioServiceTimeRecursive', 'blkio.io_service_time_recursive'],
  ['ioWaitTimeRecursive', 'blkio.io_wait_time_recursive'],
  ['ioMergedRecursive', 'blkio.io_merged_recursive'],
  ['ioTimeRecursive', 'blkio.time_recursive'],
];

/** What containerd falls back to when the scheduler files are absent or empty (e.g. blk-mq). */
const BLKIO_THROTTLE: readonly (readonly [BlkioField, string])[] = [
  ['ioServicedRecursive', 'blkio.throttle.io_serviced'],
  ['ioServiceBytesRecursive', 'blkio.throttle.io_service_bytes'],
];

async function readBlkio(dir: string, procRoot: string): Promise<NonNullable<V1Metrics['blkio']>> {
  const devices = parsePartitions((await readOptional(path.join(procRoot, 'partitions'))) ?? '');
  type Blkio = NonNullable<V1Metrics['blkio']>;
  const readSet = async (set: readonly (readonly [BlkioField, string])[]): Promise<Blkio> => {
    const texts = await Promise.all(set.map(([, file]) => readOptional(path.join(dir, file))));
    const out: Blkio = {};
    set.forEach(([field], i) => {
      const entries = parseBlkioEntries(texts[i] ?? '', devices);
      if (entries.length > 0) out[field] = entries;
    });
    return out;
  };
  const recursive = await readSet(BLKIO_RECURSIVE);
  if (Object.keys(recursive).length > 0) return recursive;
  return readSet(BLKIO_THROTTLE);
}

/** /proc/partitions: two header lines, then "major minor #blocks name"; first name per device wins. */
export function parsePartitions(text: string): Map<string, string> {
  const devices = new Map<string, string>();
  for (const line of text.split('\n').slice(2)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const key = `${f[0]}:${f[1]}`;
    if (!devices.has(key)) devices.set(key, `/dev/${f[3]}`);
  }
  return devices;
}

/** Lines "maj:min Op value" or "maj:min value"; the trailing "Total n" line is skipped. */
export function parseBlkioEntries(text: string, devices: ReadonlyMap<string, string>): V1BlkIOEntry[] {
  const out: V1BlkIOEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/[\s:]+/).filter((s) => s !== '');
    if (f.length < 3) continue;
    const major = parseU64(f[0]);
    const minor = parseU64(f[1]);
    const value = parseU64(f.length >= 4 ? f[3] : f[2]);
    if (major === undefined || minor === undefined || value === undefined) continue;
    out.push({
      op: f.length >= 4 ? f[2] : '',
      device: devices.get(`${major}:${minor}`) ?? '',
      major,
      minor,
      value,
    });
  }
  return out;
}

async function readHugetlb(dir: string): Promise<NonNullable<V1Metrics['hugetlb']>> {
  const sizes = (await listDir(dir))
    .map((name) => /^hugetlb\.([^.]+)\.usage_in_bytes$/.exec(name)?.[1])
    .filter((s): s is string => s !== undefined)
    .sort();
  return Promise.all(
    sizes.map(async (pagesize) => {
      const file = (name: string): string => path.join(dir, `hugetlb.${pagesize}.${name}`);
      const [usage, max, failcnt] = await Promise.all([
        readU64(file('usage_in_bytes')),
        readU64(file('max_usage_in_bytes')),
        readU64(file('failcnt')),
      ]);
      return { ...defined({ usage, max, failcnt }), pagesize };
    }),
  );
}

async function readRdma(dir: string): Promise<V1Metrics['rdma']> {
  const [current, max] = await Promise.all([
    readOptional(path.join(dir, 'rdma.current')),
    readOptional(path.join(dir, 'rdma.max')),
  ]);
  if (current === undefined || max === undefined) return undefined;
  const cur = parseRdma(current);
  const lim = parseRdma(max);
  // a device that disappeared between the two reads makes the lists disagree; containerd drops both
  if (cur.length !== lim.length) return undefined;
  return { current: cur, limit: lim };
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch {
    return [];
  }
}

/**
 * cgroup v2 statistics as an `io.containerd.cgroups.v2.Metrics` object (camelCase field names,
 * uint64 fields as decimal strings, see files.ts). Everything lives in the one cgroup directory;
 * files that are absent (controller not enabled in the parent's subtree_control, kernel too old
 * for memory.peak) leave their fields out.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import {
  type RdmaEntry,
  type U64,
  U64_MAX,
  defined,
  parseRdma,
  parseU64,
  parseU64OrMax,
  pickCamel,
  readKeyValues,
  readOptional,
  readU64,
  readU64OrMax,
} from './files';

export const V2_METRICS_TYPE = 'io.containerd.cgroups.v2.Metrics';

export interface V2IOEntry {
  major: U64;
  minor: U64;
  rbytes?: U64;
  wbytes?: U64;
  rios?: U64;
  wios?: U64;
}

export interface V2Metrics {
  pids: { current?: U64; limit?: U64 };
  cpu: Record<string, U64>;
  memory: Record<string, U64>;
  rdma: { current: RdmaEntry[]; limit: RdmaEntry[] };
  io: { usage: V2IOEntry[] };
  hugetlb: { current?: U64; max?: U64; pagesize: string }[];
  memoryEvents?: { low?: U64; high?: U64; max?: U64; oom?: U64; oomKill?: U64 };
}

const CPU_STAT_KEYS = ['usage_usec', 'user_usec', 'system_usec', 'nr_periods', 'nr_throttled', 'throttled_usec'];

/** memory.stat keys that MemoryStat carries, in field order (1–31). */
const MEMORY_STAT_KEYS = [
  'anon', 'file', 'kernel_stack', 'slab', 'sock', 'shmem', 'file_mapped', 'file_dirty',
  'file_writeback', 'anon_thp', 'inactive_anon', 'active_anon', 'inactive_file', 'active_file',
  'unevictable', 'slab_reclaimable', 'slab_unreclaimable', 'pgfault', 'pgmajfault',
  'workingset_refault', 'workingset_activate', 'workingset_nodereclaim', 'pgrefill', 'pgscan',
  'pgsteal', 'pgactivate', 'pgdeactivate', 'pglazyfree', 'pglazyfreed', 'thp_fault_alloc',
  'thp_collapse_alloc',
];

const MEMORY_EVENT_KEYS = ['low', 'high', 'max', 'oom', 'oom_kill'];

export async function readMetricsV2(dir: string): Promise<V2Metrics> {
  const file = (name: string): string => path.join(dir, name);
  const [
    pidsCurrent, pidsMax, cpuStat, memStat, usage, usageLimit, swapUsage, swapLimit, maxUsage,
    swapMaxUsage, events, ioStat, rdmaCurrent, rdmaMax, hugetlb,
  ] = await Promise.all([
    readU64(file('pids.current')),
    readU64OrMax(file('pids.max'), U64_MAX),
    readKeyValues(file('cpu.stat')),
    readKeyValues(file('memory.stat')),
    readU64(file('memory.current')),
    readU64OrMax(file('memory.max'), U64_MAX),
    readU64(file('memory.swap.current')),
    readU64OrMax(file('memory.swap.max'), U64_MAX),
    // memory.peak and memory.swap.peak exist from Linux 5.19 (swap.peak 6.5); newer containerd
    // cgroups versions report them as max_usage / swap_max_usage
    readU64(file('memory.peak')),
    readU64(file('memory.swap.peak')),
    readKeyValues(file('memory.events')),
    readOptional(file('io.stat')),
    readOptional(file('rdma.current')),
    readOptional(file('rdma.max')),
    readHugetlb(dir),
  ]);
  const metrics: V2Metrics = {
    pids: defined({ current: pidsCurrent, limit: pidsMax }),
    cpu: cpuStat === undefined ? {} : pickCamel(cpuStat, CPU_STAT_KEYS),
    memory: {
      ...(memStat === undefined ? {} : pickCamel(memStat, MEMORY_STAT_KEYS)),
      ...defined({ usage, usageLimit, swapUsage, swapLimit, maxUsage, swapMaxUsage }),
    },
    rdma: {
      current: rdmaCurrent === undefined ? [] : parseRdma(rdmaCurrent),
      limit: rdmaMax === undefined ? [] : parseRdma(rdmaMax),
    },
    io: { usage: ioStat === undefined ? [] : parseIoStat(ioStat) },
    hugetlb,
  };
  // containerd leaves memory_events unset when the file is missing or empty
  if (events !== undefined && events.size > 0) metrics.memoryEvents = pickCamel(events, MEMORY_EVENT_KEYS);
  return metrics;
}

/** io.stat lines: "maj:min rbytes=n wbytes=n rios=n wios=n dbytes=n dios=n". */
export function parseIoStat(text: string): V2IOEntry[] {
  const out: V2IOEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    const majMin = /^(\d+):(\d+)$/.exec(fields[0]);
    if (majMin === null) continue;
    const entry: V2IOEntry = { major: majMin[1], minor: majMin[2] };
    for (const kv of fields.slice(1)) {
      const eq = kv.indexOf('=');
      if (eq < 0) continue;
      const key = kv.slice(0, eq);
      const value = parseU64(kv.slice(eq + 1));
      if (value === undefined) continue;
      if (key === 'rbytes' || key === 'wbytes' || key === 'rios' || key === 'wios') entry[key] = value;
    }
    entry.major = parseU64(entry.major) ?? '0';
    entry.minor = parseU64(entry.minor) ?? '0';
    out.push(entry);
  }
  return out;
}

/** hugetlb.<size>.current / hugetlb.<size>.max, one entry per page size present. */
async function readHugetlb(dir: string): Promise<V2Metrics['hugetlb']> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return [];
  }
  const sizes = [
    ...new Set(
      names
        .map((n) => /^hugetlb\.([^.]+)\.(?:current|max)$/.exec(n)?.[1])
        .filter((s): s is string => s !== undefined),
    ),
  ].sort();
  return Promise.all(
    sizes.map(async (pagesize) => {
      const [currentText, maxText] = await Promise.all([
        readOptional(path.join(dir, `hugetlb.${pagesize}.current`)),
        readOptional(path.join(dir, `hugetlb.${pagesize}.max`)),
      ]);
      return {
        ...defined({
          current: currentText === undefined ? undefined : parseU64OrMax(currentText, U64_MAX),
          max: maxText === undefined ? undefined : parseU64OrMax(maxText, U64_MAX),
        }),
        pagesize,
      };
    }),
  );
}

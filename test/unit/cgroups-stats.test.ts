/**
 * Stats readers against fixture trees: exact field mapping for realistic file contents of both
 * hierarchies, and the resulting objects encoded with containerd's own cgroups metrics schema.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code } from '../../src/common/errors';
import { readMetrics } from '../../src/linux/cgroups/metrics';
import { V1_METRICS_TYPE, readMetricsV1 } from '../../src/linux/cgroups/stats-v1';
import { V2_METRICS_TYPE } from '../../src/linux/cgroups/stats-v2';
import { V1_PROTO, V2_PROTO, expectEncodes, loadMetricsType } from './fixtures/cgroups/proto-check';

const U64_MAX = '18446744073709551615';
let tmp: string;

function writeTree(root: string, files: Record<string, string>): void {
  for (const [rel, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), content);
  }
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-cgroups-stats-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const V2_FILES: Record<string, string> = {
  'cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n',
  'pids.current': '3\n',
  'pids.max': 'max\n',
  'cpu.stat':
    'usage_usec 2345678\nuser_usec 2000000\nsystem_usec 345678\ncore_sched.force_idle_usec 0\n' +
    'nr_periods 10\nnr_throttled 2\nthrottled_usec 5000\nnr_bursts 0\nburst_usec 0\n',
  'memory.stat':
    'anon 1056768\nfile 8192\nkernel 462848\nkernel_stack 32768\npagetables 36864\nsec_pagetables 0\n' +
    'percpu 0\nsock 0\nvmalloc 0\nshmem 0\nzswap 0\nzswapped 0\nfile_mapped 4096\nfile_dirty 0\n' +
    'file_writeback 0\nswapcached 0\nanon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 1040384\n' +
    'active_anon 16384\ninactive_file 8192\nactive_file 0\nunevictable 0\nslab_reclaimable 86016\n' +
    'slab_unreclaimable 291568\nslab 377584\nworkingset_refault_anon 0\nworkingset_refault_file 0\n' +
    'workingset_activate_anon 0\nworkingset_activate_file 0\nworkingset_restore_anon 0\n' +
    'workingset_restore_file 0\nworkingset_nodereclaim 0\npgscan 0\npgsteal 0\npgscan_kswapd 0\n' +
    'pgfault 1401\npgmajfault 1\npgrefill 0\npgactivate 4\npgdeactivate 0\npglazyfree 0\n' +
    'pglazyfreed 0\nthp_fault_alloc 0\nthp_collapse_alloc 0\n',
  'memory.current': '1523712\n',
  'memory.max': 'max\n',
  'memory.swap.current': '0\n',
  'memory.swap.max': '268435456\n',
  'memory.peak': '4403200\n',
  'memory.events': 'low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n',
  'io.stat': '254:0 rbytes=1048576 wbytes=4096 rios=12 wios=1 dbytes=0 dios=0\n',
  'rdma.current': 'mlx5_0 hca_handle=1 hca_object=20\n',
  'rdma.max': 'mlx5_0 hca_handle=max hca_object=max\n',
  'hugetlb.2MB.current': '2097152\n',
  'hugetlb.2MB.max': 'max\n',
  'hugetlb.2MB.rsvd.current': '0\n',
  'hugetlb.2MB.events': 'max 0\n',
  'hugetlb.1GB.current': '0\n',
  'hugetlb.1GB.max': '0\n',
};

describe('v2 metrics', () => {
  it('maps every cgroup v2 file to io.containerd.cgroups.v2.Metrics', async () => {
    const dir = path.join(tmp, 'v2', 'c1');
    writeTree(dir, V2_FILES);
    const result = await readMetrics({ mode: 'v2', paths: dir });
    expect(result.typeName).toBe(V2_METRICS_TYPE);
    expect(result.typeName).toBe('io.containerd.cgroups.v2.Metrics');
    expect(result.metrics).toEqual({
      pids: { current: '3', limit: U64_MAX },
      cpu: {
        usageUsec: '2345678', userUsec: '2000000', systemUsec: '345678',
        nrPeriods: '10', nrThrottled: '2', throttledUsec: '5000',
      },
      memory: {
        anon: '1056768', file: '8192', kernelStack: '32768', slab: '377584', sock: '0', shmem: '0',
        fileMapped: '4096', fileDirty: '0', fileWriteback: '0', anonThp: '0', inactiveAnon: '1040384',
        activeAnon: '16384', inactiveFile: '8192', activeFile: '0', unevictable: '0',
        slabReclaimable: '86016', slabUnreclaimable: '291568', pgfault: '1401', pgmajfault: '1',
        workingsetNodereclaim: '0', pgrefill: '0', pgscan: '0', pgsteal: '0', pgactivate: '4',
        pgdeactivate: '0', pglazyfree: '0', pglazyfreed: '0', thpFaultAlloc: '0', thpCollapseAlloc: '0',
        usage: '1523712', usageLimit: U64_MAX, swapUsage: '0', swapLimit: '268435456', maxUsage: '4403200',
      },
      rdma: {
        current: [{ device: 'mlx5_0', hcaHandles: 1, hcaObjects: 20 }],
        limit: [{ device: 'mlx5_0', hcaHandles: 4294967295, hcaObjects: 4294967295 }],
      },
      io: { usage: [{ major: '254', minor: '0', rbytes: '1048576', wbytes: '4096', rios: '12', wios: '1' }] },
      hugetlb: [
        { current: '0', max: '0', pagesize: '1GB' },
        { current: '2097152', max: U64_MAX, pagesize: '2MB' },
      ],
      memoryEvents: { low: '0', high: '0', max: '12', oom: '2', oomKill: '1' },
    });
    // max_usage / swap_max_usage (36, 37) are from newer containerd cgroups than the v1.0.4 copy
    const type = loadMetricsType(V2_PROTO, 'io.containerd.cgroups.v2.Metrics', {
      'io.containerd.cgroups.v2.MemoryStat': { maxUsage: 36, swapMaxUsage: 37 },
    });
    expectEncodes(type, result.metrics);
  });

  it('skips missing files and leaves memoryEvents out when memory.events is absent', async () => {
    const dir = path.join(tmp, 'v2', 'bare');
    writeTree(dir, { 'cgroup.controllers': '', 'cpu.stat': 'usage_usec 5\nuser_usec 3\nsystem_usec 2\n' });
    const { metrics } = await readMetrics({ mode: 'v2', paths: dir });
    expect(metrics).toEqual({
      pids: {},
      cpu: { usageUsec: '5', userUsec: '3', systemUsec: '2' },
      memory: {},
      rdma: { current: [], limit: [] },
      io: { usage: [] },
      hugetlb: [],
    });
    expectEncodes(loadMetricsType(V2_PROTO, 'io.containerd.cgroups.v2.Metrics'), metrics);
  });

  it('reports a missing cgroup directory as NotFound', async () => {
    await expect(readMetrics({ mode: 'v2', paths: path.join(tmp, 'v2', 'nope') })).rejects.toMatchObject({
      code: Code.NotFound,
      message: 'cgroup does not exist',
    });
  });
});

const V1_FILES: Record<string, string> = {
  'proc/partitions': 'major minor  #blocks  name\n\n 254        0  268435456 vda\n   8        0  1000 sda\n',
  'memory/c1/memory.stat':
    'cache 8192\nrss 1056768\nrss_huge 0\nshmem 0\nmapped_file 4096\ndirty 0\nwriteback 0\n' +
    'swap 0\npgpgin 700\npgpgout 400\npgfault 1401\npgmajfault 1\ninactive_anon 1040384\n' +
    'active_anon 16384\ninactive_file 8192\nactive_file 0\nunevictable 0\n' +
    'hierarchical_memory_limit 9223372036854771712\nhierarchical_memsw_limit 9223372036854771712\n' +
    'total_cache 16384\ntotal_rss 2113536\ntotal_rss_huge 0\ntotal_shmem 0\ntotal_mapped_file 8192\n' +
    'total_dirty 0\ntotal_writeback 0\ntotal_swap 0\ntotal_pgpgin 1400\ntotal_pgpgout 800\n' +
    'total_pgfault 2802\ntotal_pgmajfault 2\ntotal_inactive_anon 2080768\ntotal_active_anon 32768\n' +
    'total_inactive_file 16384\ntotal_active_file 0\ntotal_unevictable -4096\n',
  'memory/c1/memory.usage_in_bytes': '1523712\n',
  'memory/c1/memory.limit_in_bytes': '9223372036854771712\n',
  'memory/c1/memory.max_usage_in_bytes': '4403200\n',
  'memory/c1/memory.failcnt': '0\n',
  'memory/c1/memory.memsw.usage_in_bytes': '1523712\n',
  'memory/c1/memory.memsw.limit_in_bytes': '9223372036854771712\n',
  'memory/c1/memory.memsw.max_usage_in_bytes': '4403200\n',
  'memory/c1/memory.memsw.failcnt': '0\n',
  'memory/c1/memory.kmem.usage_in_bytes': '462848\n',
  'memory/c1/memory.kmem.max_usage_in_bytes': '500000\n',
  'memory/c1/memory.kmem.failcnt': '0\n',
  'memory/c1/memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 3\n',
  'cpu/c1/cpu.stat': 'nr_periods 10\nnr_throttled 2\nthrottled_time 5000000\nnr_bursts 0\nburst_time 0\n',
  'cpuacct/c1/cpuacct.usage': '2345678901\n',
  'cpuacct/c1/cpuacct.usage_percpu': '1345678901 1000000000 0 0 \n',
  'cpuacct/c1/cpuacct.stat': 'user 150\nsystem 30\n',
  'pids/c1/pids.current': '3\n',
  'pids/c1/pids.max': 'max\n',
  // BFQ-era kernel: the CFQ recursive files exist but are empty, so containerd falls back to throttle.*
  'blkio/c1/blkio.io_serviced_recursive': 'Total 0\n',
  'blkio/c1/blkio.io_service_bytes_recursive': 'Total 0\n',
  'blkio/c1/blkio.throttle.io_serviced': '254:0 Read 12\n254:0 Write 1\n254:0 Sync 13\n254:0 Total 13\nTotal 13\n',
  'blkio/c1/blkio.throttle.io_service_bytes': '254:0 Read 1048576\n254:0 Write 4096\nTotal 1052672\n',
  'blkio/c2/blkio.io_serviced_recursive': '8:0 Read 5\n8:0 Write 6\nTotal 11\n',
  'blkio/c2/blkio.time_recursive': '8:0 99\n',
  'blkio/c2/blkio.throttle.io_serviced': '8:0 Read 1000\n',
  'hugetlb/c1/hugetlb.2MB.usage_in_bytes': '2097152\n',
  'hugetlb/c1/hugetlb.2MB.max_usage_in_bytes': '4194304\n',
  'hugetlb/c1/hugetlb.2MB.failcnt': '1\n',
  'hugetlb/c1/hugetlb.2MB.limit_in_bytes': '9223372036854771712\n',
  'hugetlb/c1/hugetlb.2MB.rsvd.usage_in_bytes': '0\n',
  'rdma/c1/rdma.current': 'mlx4_0 hca_handle=2 hca_object=2000\n',
  'rdma/c1/rdma.max': 'mlx4_0 hca_handle=max hca_object=max\n',
};

describe('v1 metrics', () => {
  let root: string;
  const v1Paths = (cg: string): Map<string, string> =>
    new Map(['memory', 'cpu', 'cpuacct', 'pids', 'blkio', 'hugetlb', 'rdma'].map((c) => [c, path.join(root, c, cg)]));

  beforeAll(() => {
    root = path.join(tmp, 'v1');
    writeTree(root, V1_FILES);
  });

  it('maps every cgroup v1 file to io.containerd.cgroups.v1.Metrics', async () => {
    const metrics = await readMetricsV1(v1Paths('c1'), { procRoot: path.join(root, 'proc') });
    expect(metrics).toEqual({
      hugetlb: [{ usage: '2097152', max: '4194304', failcnt: '1', pagesize: '2MB' }],
      pids: { current: '3', limit: '0' },
      cpu: {
        // cpuacct.stat is in USER_HZ (100/s) ticks: 150 ticks = 1.5 s
        usage: { total: '2345678901', kernel: '300000000', user: '1500000000', perCpu: ['1345678901', '1000000000', '0', '0'] },
        throttling: { periods: '10', throttledPeriods: '2', throttledTime: '5000000' },
      },
      memory: {
        cache: '8192', rss: '1056768', rssHuge: '0', mappedFile: '4096', dirty: '0', writeback: '0',
        pgPgIn: '700', pgPgOut: '400', pgFault: '1401', pgMajFault: '1', inactiveAnon: '1040384',
        activeAnon: '16384', inactiveFile: '8192', activeFile: '0', unevictable: '0',
        hierarchicalMemoryLimit: '9223372036854771712', hierarchicalSwapLimit: '9223372036854771712',
        totalCache: '16384', totalRss: '2113536', totalRssHuge: '0', totalMappedFile: '8192', totalDirty: '0',
        totalWriteback: '0', totalPgPgIn: '1400', totalPgPgOut: '800', totalPgFault: '2802',
        totalPgMajFault: '2', totalInactiveAnon: '2080768', totalActiveAnon: '32768',
        totalInactiveFile: '16384', totalActiveFile: '0', totalUnevictable: '0',
        usage: { limit: '9223372036854771712', usage: '1523712', max: '4403200', failcnt: '0' },
        swap: { limit: '9223372036854771712', usage: '1523712', max: '4403200', failcnt: '0' },
        // newer kernels dropped kmem.limit_in_bytes; the entry keeps what exists
        kernel: { usage: '462848', max: '500000', failcnt: '0' },
        kernelTcp: {},
      },
      blkio: {
        ioServicedRecursive: [
          { op: 'Read', device: '/dev/vda', major: '254', minor: '0', value: '12' },
          { op: 'Write', device: '/dev/vda', major: '254', minor: '0', value: '1' },
          { op: 'Sync', device: '/dev/vda', major: '254', minor: '0', value: '13' },
          { op: 'Total', device: '/dev/vda', major: '254', minor: '0', value: '13' },
        ],
        ioServiceBytesRecursive: [
          { op: 'Read', device: '/dev/vda', major: '254', minor: '0', value: '1048576' },
          { op: 'Write', device: '/dev/vda', major: '254', minor: '0', value: '4096' },
        ],
      },
      rdma: {
        current: [{ device: 'mlx4_0', hcaHandles: 2, hcaObjects: 2000 }],
        limit: [{ device: 'mlx4_0', hcaHandles: 4294967295, hcaObjects: 4294967295 }],
      },
      memoryOomControl: { oomKillDisable: '0', underOom: '0', oomKill: '3' },
    });
    expectEncodes(loadMetricsType(V1_PROTO, 'io.containerd.cgroups.v1.Metrics'), metrics);
  });

  it('prefers the scheduler recursive blkio files when they have entries', async () => {
    const metrics = await readMetricsV1(new Map([['blkio', path.join(root, 'blkio', 'c2')]]), {
      procRoot: path.join(root, 'proc'),
    });
    expect(metrics.blkio).toEqual({
      ioServicedRecursive: [
        { op: 'Read', device: '/dev/sda', major: '8', minor: '0', value: '5' },
        { op: 'Write', device: '/dev/sda', major: '8', minor: '0', value: '6' },
      ],
      ioTimeRecursive: [{ op: '', device: '/dev/sda', major: '8', minor: '0', value: '99' }],
    });
    // containerd always reports the cpu section
    expect(metrics.cpu).toEqual({ usage: {}, throttling: {} });
  });

  it('readMetrics skips controllers whose directory is gone and reports NotFound when all are', async () => {
    const paths = v1Paths('c1');
    paths.set('memory', path.join(root, 'memory', 'gone'));
    const result = await readMetrics({ mode: 'v1', paths });
    expect(result.typeName).toBe(V1_METRICS_TYPE);
    expect(result.typeName).toBe('io.containerd.cgroups.v1.Metrics');
    expect(result.metrics).not.toHaveProperty('memory');
    expect(result.metrics).toHaveProperty('pids', { current: '3', limit: '0' });
    await expect(readMetrics({ mode: 'v1', paths: v1Paths('gone') })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    await expect(readMetrics({ mode: 'v1', paths: '/sys/fs/cgroup' })).rejects.toMatchObject({
      code: Code.InvalidArgument,
    });
  });
});

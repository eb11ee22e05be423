import * as fs from 'fs';
import { describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import { parseKeyValues, parseRdma, parseU64, parseU64OrMax, U64_MAX } from '../../src/linux/cgroups/files';
import { cgroupMode, cgroupOfPid, parseProcCgroup } from '../../src/linux/cgroups/ref';
import { parseBlkioEntries, parsePartitions } from '../../src/linux/cgroups/stats-v1';
import { parseIoStat } from '../../src/linux/cgroups/stats-v2';

function codeOf(fn: () => unknown): Code | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof ShimError ? err.code : undefined;
  }
  return undefined;
}

describe('parseProcCgroup', () => {
  // a systemd host with co-mounted cpu,cpuacct and net_cls,net_prio, plus the hybrid unified line
  const v1Text = [
    '12:pids:/system.slice/containerd.service/k8s/c1',
    '11:cpu,cpuacct:/k8s/c1',
    '10:memory:/k8s/c1',
    '9:net_cls,net_prio:/k8s/c1',
    '8:blkio:/k8s/c1',
    '1:name=systemd:/k8s/c1',
    '0::/k8s/c1',
    '',
  ].join('\n');

  it('maps every v1 controller to its hierarchy directory', () => {
    const ref = parseProcCgroup(v1Text, 'v1', '/sys/fs/cgroup');
    expect(ref.mode).toBe('v1');
    expect(ref.paths).toEqual(
      new Map([
        ['pids', '/sys/fs/cgroup/pids/system.slice/containerd.service/k8s/c1'],
        ['cpu', '/sys/fs/cgroup/cpu,cpuacct/k8s/c1'],
        ['cpuacct', '/sys/fs/cgroup/cpu,cpuacct/k8s/c1'],
        ['memory', '/sys/fs/cgroup/memory/k8s/c1'],
        ['net_cls', '/sys/fs/cgroup/net_cls,net_prio/k8s/c1'],
        ['net_prio', '/sys/fs/cgroup/net_cls,net_prio/k8s/c1'],
        ['blkio', '/sys/fs/cgroup/blkio/k8s/c1'],
      ]),
    );
  });

  it('uses the unified line for v2 and honours the mount root', () => {
    const ref = parseProcCgroup('0::/system.slice/containerd.service\n', 'v2', '/mnt/cg');
    expect(ref).toEqual({ mode: 'v2', paths: '/mnt/cg/system.slice/containerd.service' });
    // the hybrid text read in v2 mode picks the 0:: line only
    expect(parseProcCgroup(v1Text, 'v2', '/sys/fs/cgroup').paths).toBe('/sys/fs/cgroup/k8s/c1');
  });

  it('keeps colons inside the path', () => {
    const ref = parseProcCgroup('0::/kubepods/pod1/cri-containerd:abc\n', 'v2', '/sys/fs/cgroup');
    expect(ref.paths).toBe('/sys/fs/cgroup/kubepods/pod1/cri-containerd:abc');
    const v1 = parseProcCgroup('4:memory:/system.slice:cri:abc\n', 'v1', '/sys/fs/cgroup');
    expect((v1.paths as Map<string, string>).get('memory')).toBe('/sys/fs/cgroup/memory/system.slice:cri:abc');
  });

  it('reports a removed cgroup as NotFound and malformed text as InvalidArgument', () => {
    expect(codeOf(() => parseProcCgroup('0::/gone (deleted)\n', 'v2', '/sys/fs/cgroup'))).toBe(Code.NotFound);
    expect(codeOf(() => parseProcCgroup('garbage\n', 'v1', '/sys/fs/cgroup'))).toBe(Code.InvalidArgument);
    expect(codeOf(() => parseProcCgroup('0::/\n', 'v1', '/sys/fs/cgroup'))).toBe(Code.InvalidArgument);
    expect(codeOf(() => parseProcCgroup('4:memory:/a\n', 'v2', '/sys/fs/cgroup'))).toBe(Code.InvalidArgument);
  });
});

describe('cgroupMode and cgroupOfPid on this host', () => {
  it('agrees with /proc/mounts about /sys/fs/cgroup', () => {
    const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n');
    const unified = mounts.some((l) => l.split(' ')[1] === '/sys/fs/cgroup' && l.split(' ')[2] === 'cgroup2');
    expect(cgroupMode()).toBe(unified ? 'v2' : 'v1');
  });

  it('finds the cgroup of this process', async () => {
    const ref = await cgroupOfPid(process.pid);
    expect(ref.mode).toBe(cgroupMode());
    const own = fs.readFileSync(`/proc/${process.pid}/cgroup`, 'utf8');
    if (ref.mode === 'v1') {
      const paths = ref.paths as Map<string, string>;
      const memLine = own.split('\n').find((l) => l.split(':')[1] === 'memory');
      expect(memLine).toBeDefined();
      expect(paths.get('memory')).toBe(`/sys/fs/cgroup/memory${memLine!.split(':')[2] === '/' ? '' : memLine!.split(':')[2]}`);
      for (const dir of paths.values()) expect(fs.statSync(dir).isDirectory()).toBe(true);
    } else {
      expect(fs.statSync(ref.paths as string).isDirectory()).toBe(true);
    }
  });

  it('reports a process that does not exist as NotFound', async () => {
    await expect(cgroupOfPid(0x3ffffff)).rejects.toMatchObject({ code: Code.NotFound, message: 'cgroup does not exist' });
    await expect(cgroupOfPid(-1)).rejects.toMatchObject({ code: Code.InvalidArgument });
  });
});

describe('control file parsing', () => {
  it('parses numbers like containerd: negatives are 0, "max" per caller', () => {
    expect(parseU64('123\n')).toBe('123');
    expect(parseU64('0007')).toBe('7');
    expect(parseU64('-1')).toBe('0');
    expect(parseU64('18446744073709551615')).toBe(U64_MAX);
    expect(parseU64('99999999999999999999999')).toBe(U64_MAX);
    expect(parseU64('max')).toBeUndefined();
    expect(parseU64OrMax('max\n', '0')).toBe('0');
    expect(parseU64OrMax('max', U64_MAX)).toBe(U64_MAX);
    expect(parseU64OrMax('42', U64_MAX)).toBe('42');
  });

  it('parses key/value files, skipping lines that are not "key number"', () => {
    const kv = parseKeyValues('cache 4096\nrss 9223372036854775807\nweird line here\nnote text\n\n');
    expect([...kv]).toEqual([
      ['cache', '4096'],
      ['rss', '9223372036854775807'],
    ]);
  });

  it('parses rdma lines with "max" as 2^32-1', () => {
    expect(parseRdma('mlx4_0 hca_handle=2 hca_object=2000\nocrdma1 hca_handle=3 hca_object=max\n')).toEqual([
      { device: 'mlx4_0', hcaHandles: 2, hcaObjects: 2000 },
      { device: 'ocrdma1', hcaHandles: 3, hcaObjects: 4294967295 },
    ]);
  });

  it('parses /proc/partitions and blkio files, naming devices and skipping Total', () => {
    const devices = parsePartitions(
      'major minor  #blocks  name\n\n 254        0  268435456 vda\n   8       16  1000 sdb\n   8       16  1000 sdb-dup\n',
    );
    expect(devices).toEqual(new Map([['254:0', '/dev/vda'], ['8:16', '/dev/sdb']]));
    const entries = parseBlkioEntries('254:0 Read 4096\n254:0 Write 8192\n7:1 Total 5\nTotal 12288\n', devices);
    expect(entries).toEqual([
      { op: 'Read', device: '/dev/vda', major: '254', minor: '0', value: '4096' },
      { op: 'Write', device: '/dev/vda', major: '254', minor: '0', value: '8192' },
      { op: 'Total', device: '', major: '7', minor: '1', value: '5' },
    ]);
    // sectors_recursive / time_recursive have no op column
    expect(parseBlkioEntries('8:16 77\n', devices)).toEqual([
      { op: '', device: '/dev/sdb', major: '8', minor: '16', value: '77' },
    ]);
  });

  it('parses io.stat including keys it does not map', () => {
    expect(parseIoStat('254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n8:0 rbytes=10\n\n')).toEqual([
      { major: '254', minor: '0', rbytes: '1', wbytes: '2', rios: '3', wios: '4' },
      { major: '8', minor: '0', rbytes: '10' },
    ]);
  });
});

/**
 * The Stats entry point: picks the v1 or v2 reader for a cgroup and reports a vanished cgroup as
 * NotFound, the way the runc shim answers Stats for a container whose cgroup is gone.
 */
import { promises as fsp } from 'fs';
import { ShimError, invalidArgument, notFound, unknown } from '../../common/errors';
import type { CgroupRef } from './ref';
import { V1_METRICS_TYPE, readMetricsV1 } from './stats-v1';
import { V2_METRICS_TYPE, readMetricsV2 } from './stats-v2';

export interface MetricsResult {
  /** full protobuf message name, e.g. io.containerd.cgroups.v1.Metrics, for packing into an Any */
  typeName: string;
  /** plain object with camelCase field names; every uint64 field is a decimal string */
  metrics: object;
}

export async function readMetrics(ref: CgroupRef): Promise<MetricsResult> {
  try {
    if (ref.mode === 'v2') {
      if (typeof ref.paths !== 'string') throw invalidArgument('v2 CgroupRef needs a single directory');
      if (!(await exists(ref.paths))) throw notFound('cgroup does not exist');
      return { typeName: V2_METRICS_TYPE, metrics: await readMetricsV2(ref.paths) };
    }
    if (typeof ref.paths === 'string') throw invalidArgument('v1 CgroupRef needs a controller map');
    const live = new Map<string, string>();
    for (const [controller, dir] of ref.paths) if (await exists(dir)) live.set(controller, dir);
    if (live.size === 0) throw notFound('cgroup does not exist');
    return { typeName: V1_METRICS_TYPE, metrics: await readMetricsV1(live) };
  } catch (err) {
    if (err instanceof ShimError) throw err;
    throw unknown(`read cgroup stats: ${(err as Error).message}`, err);
  }
}

async function exists(dir: string): Promise<boolean> {
  try {
    await fsp.access(dir);
    return true;
  } catch {
    return false;
  }
}

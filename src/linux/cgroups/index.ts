/**
 * Container cgroups: locating them, reading their statistics for the Stats RPC and watching them
 * for OOM kills.
 */
export { type CgroupMode, type CgroupRef, DEFAULT_CGROUP_ROOT, cgroupMode, cgroupOfPid, parseProcCgroup } from './ref';
export { type MetricsResult, readMetrics } from './metrics';
export { V1_METRICS_TYPE, type V1Metrics } from './stats-v1';
export { V2_METRICS_TYPE, type V2Metrics } from './stats-v2';
export { OomWatcher } from './oom';
export { type SubtreeOptions, enableSubtreeControllers } from './subtree';
export { type U64, U64_MAX } from './files';

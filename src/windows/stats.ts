/**
 * HCS property documents → the messages containerd decodes (spec §4.3, §6.7): Stats as
 * `containerd.runhcs.stats.v1.Statistics` (CRI decodes exactly that type) and Pids details as
 * `containerd.runhcs.v1.ProcessDetails`. HCS counts time in 100 ns units; Statistics wants ns.
 */
import { toTimestamp, type Timestamp } from '../common/proto';

export interface HcsStatistics {
  Timestamp?: string;
  ContainerStartTime?: string;
  Uptime100ns?: number;
  Processor?: { TotalRuntime100ns?: number; RuntimeUser100ns?: number; RuntimeKernel100ns?: number };
  Memory?: { MemoryUsageCommitBytes?: number; MemoryUsageCommitPeakBytes?: number; MemoryUsagePrivateWorkingSetBytes?: number };
  Storage?: { ReadCountNormalized?: number; ReadSizeBytes?: number; WriteCountNormalized?: number; WriteSizeBytes?: number };
}

export interface HcsProcessListEntry {
  ProcessId: number;
  ImageName?: string;
  CreateTimestamp?: string;
  UserTime100ns?: number;
  KernelTime100ns?: number;
  MemoryCommitBytes?: number;
  MemoryWorkingSetPrivateBytes?: number;
  MemoryWorkingSetSharedBytes?: number;
}

function time(text: string | undefined): Timestamp {
  if (!text) return toTimestamp(undefined);
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? toTimestamp(undefined) : toTimestamp(d);
}

const ns = (v: number | undefined): number => (v ?? 0) * 100;

export function statistics(s: HcsStatistics): object {
  return {
    windows: {
      timestamp: time(s.Timestamp),
      containerStartTime: time(s.ContainerStartTime),
      uptimeNs: ns(s.Uptime100ns),
      processor: {
        totalRuntimeNs: ns(s.Processor?.TotalRuntime100ns),
        runtimeUserNs: ns(s.Processor?.RuntimeUser100ns),
        runtimeKernelNs: ns(s.Processor?.RuntimeKernel100ns),
      },
      memory: {
        memoryUsageCommitBytes: s.Memory?.MemoryUsageCommitBytes ?? 0,
        memoryUsageCommitPeakBytes: s.Memory?.MemoryUsageCommitPeakBytes ?? 0,
        memoryUsagePrivateWorkingSetBytes: s.Memory?.MemoryUsagePrivateWorkingSetBytes ?? 0,
      },
      storage: {
        readCountNormalized: s.Storage?.ReadCountNormalized ?? 0,
        readSizeBytes: s.Storage?.ReadSizeBytes ?? 0,
        writeCountNormalized: s.Storage?.WriteCountNormalized ?? 0,
        writeSizeBytes: s.Storage?.WriteSizeBytes ?? 0,
      },
    },
  };
}

export function processDetails(p: HcsProcessListEntry, execId: string): object {
  return {
    imageName: p.ImageName ?? '',
    createdAt: time(p.CreateTimestamp),
    kernelTime_100Ns: p.KernelTime100ns ?? 0,
    memoryCommitBytes: p.MemoryCommitBytes ?? 0,
    memoryWorkingSetPrivateBytes: p.MemoryWorkingSetPrivateBytes ?? 0,
    memoryWorkingSetSharedBytes: p.MemoryWorkingSetSharedBytes ?? 0,
    processId: p.ProcessId,
    userTime_100Ns: p.UserTime100ns ?? 0,
    execId,
  };
}

// Container usage from a StatsSample: cgroup CPU time, working-set memory and pids from either
// cgroup version's Metrics, plus the init process's own numbers. CPU % needs two samples.
import { io } from '../gen/proto';
import type { StatsSampleMessage } from '../diag/introspection';
import { TypeUrl } from '../types/typeurls';

export interface Usage {
  cpuNs: number | null; // cumulative cgroup CPU time
  memoryBytes: number | null; // usage minus inactive file cache (the "working set")
  memoryLimit: number | null;
  pids: number | null;
}

const n = (v: unknown): number => (v === null || v === undefined ? 0 : Number(String(v)));
// cgroup v1 reports "no limit" as a huge page-aligned number; v2 as 2^64-1.
const limitOrNull = (v: number): number | null => (v > 0 && v < 2 ** 60 ? v : null);

/** Everything tsshim's clients read from a StatsSample's cgroup metrics; null where the cgroup has no such section. */
export interface CgroupUsage {
  cpuNs: number | null;
  cpuUserNs: number | null;
  cpuSystemNs: number | null;
  memoryUsageBytes: number | null;
  workingSetBytes: number | null; // usage minus inactive file cache
  memoryLimit: number | null; // null also when unlimited
  pids: number | null;
  pidsLimit: number | null; // 0 when unlimited
  oomKills: number | null;
}

/** Decodes either cgroup version's Metrics; null when there are none or they do not decode. */
export function cgroupUsage(s: StatsSampleMessage): CgroupUsage | null {
  if (!s.metrics || !s.metrics.value.length) return null;
  const type = s.metrics.type_url.replace(/^.*\//, '');
  try {
    if (type === TypeUrl.CgroupsV1Metrics) {
      const m = io.containerd.cgroups.v1.Metrics.decode(s.metrics.value);
      const usage = n(m.memory?.usage?.usage);
      return {
        cpuNs: m.cpu?.usage ? n(m.cpu.usage.total) : null,
        cpuUserNs: m.cpu?.usage ? n(m.cpu.usage.user) : null,
        cpuSystemNs: m.cpu?.usage ? n(m.cpu.usage.kernel) : null,
        memoryUsageBytes: m.memory ? usage : null,
        workingSetBytes: m.memory ? Math.max(0, usage - n(m.memory.total_inactive_file)) : null,
        memoryLimit: m.memory?.usage ? limitOrNull(n(m.memory.usage.limit)) : null,
        pids: m.pids ? n(m.pids.current) : null,
        pidsLimit: m.pids ? (limitOrNull(n(m.pids.limit)) ?? 0) : null,
        oomKills: m.memory_oom_control ? n(m.memory_oom_control.oom_kill) : null,
      };
    }
    if (type === TypeUrl.CgroupsV2Metrics) {
      const m = io.containerd.cgroups.v2.Metrics.decode(s.metrics.value);
      const usage = n(m.memory?.usage);
      return {
        cpuNs: m.cpu ? n(m.cpu.usage_usec) * 1000 : null,
        cpuUserNs: m.cpu ? n(m.cpu.user_usec) * 1000 : null,
        cpuSystemNs: m.cpu ? n(m.cpu.system_usec) * 1000 : null,
        memoryUsageBytes: m.memory ? usage : null,
        workingSetBytes: m.memory ? Math.max(0, usage - n(m.memory.inactive_file)) : null,
        memoryLimit: m.memory ? limitOrNull(n(m.memory.usage_limit)) : null,
        pids: m.pids ? n(m.pids.current) : null,
        pidsLimit: m.pids ? (limitOrNull(n(m.pids.limit)) ?? 0) : null,
        oomKills: m.memory_events ? n(m.memory_events.oom_kill) : null,
      };
    }
  } catch {
    /* undecodable metrics */
  }
  return null;
}

export function usageOf(s: StatsSampleMessage): Usage {
  const u = cgroupUsage(s);
  if (!u) return { cpuNs: null, memoryBytes: null, memoryLimit: null, pids: null }; // shown as dashes
  return { cpuNs: u.cpuNs, memoryBytes: u.workingSetBytes, memoryLimit: u.memoryLimit, pids: u.pids };
}

function atNs(s: StatsSampleMessage): number {
  return s.at.seconds * 1e9 + s.at.nanos;
}

/** Percent of one CPU between two cumulative CPU-time readings, or null when not measurable. */
export function cpuPercent(
  prevNs: number | null,
  curNs: number | null,
  prev: StatsSampleMessage,
  cur: StatsSampleMessage
): number | null {
  const wall = atNs(cur) - atNs(prev);
  if (prevNs === null || curNs === null || wall <= 0 || curNs < prevNs) return null;
  return ((curNs - prevNs) / wall) * 100;
}

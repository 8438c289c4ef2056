// Container usage from a StatsSample: cgroup CPU time, working-set memory and pids from either
// cgroup version's Metrics, plus the init process's own numbers. CPU % needs two samples.
import { io } from '../gen/proto';
import type { StatsSampleMessage } from '../task/shim-service';

export interface Usage {
  cpuNs: number | null;      // cumulative cgroup CPU time
  memoryBytes: number | null; // usage minus inactive file cache (the "working set")
  memoryLimit: number | null;
  pids: number | null;
}

const n = (v: unknown): number => (v === null || v === undefined ? 0 : Number(String(v)));
// cgroup v1 reports "no limit" as a huge page-aligned number; v2 as 2^64-1.
const limitOrNull = (v: number): number | null => (v > 0 && v < 2 ** 60 ? v : null);

export function usageOf(s: StatsSampleMessage): Usage {
  const none: Usage = { cpuNs: null, memoryBytes: null, memoryLimit: null, pids: null };
  if (!s.metrics || !s.metrics.value.length) return none;
  const type = s.metrics.type_url.replace(/^.*\//, '');
  try {
    if (type === 'io.containerd.cgroups.v1.Metrics') {
      const m = io.containerd.cgroups.v1.Metrics.decode(s.metrics.value);
      const usage = n(m.memory?.usage?.usage);
      return {
        cpuNs: m.cpu?.usage ? n(m.cpu.usage.total) : null,
        memoryBytes: m.memory ? Math.max(0, usage - n(m.memory.total_inactive_file)) : null,
        memoryLimit: m.memory?.usage ? limitOrNull(n(m.memory.usage.limit)) : null,
        pids: m.pids ? n(m.pids.current) : null,
      };
    }
    if (type === 'io.containerd.cgroups.v2.Metrics') {
      const m = io.containerd.cgroups.v2.Metrics.decode(s.metrics.value);
      return {
        cpuNs: m.cpu ? n(m.cpu.usage_usec) * 1000 : null,
        memoryBytes: m.memory ? Math.max(0, n(m.memory.usage) - n(m.memory.inactive_file)) : null,
        memoryLimit: m.memory ? limitOrNull(n(m.memory.usage_limit)) : null,
        pids: m.pids ? n(m.pids.current) : null,
      };
    }
  } catch { /* undecodable metrics: show dashes */ }
  return none;
}

function atNs(s: StatsSampleMessage): number {
  return s.at.seconds * 1e9 + s.at.nanos;
}

/** Percent of one CPU between two cumulative CPU-time readings, or null when not measurable. */
export function cpuPercent(prevNs: number | null, curNs: number | null, prev: StatsSampleMessage, cur: StatsSampleMessage): number | null {
  const wall = atNs(cur) - atNs(prev);
  if (prevNs === null || curNs === null || wall <= 0 || curNs < prevNs) return null;
  return ((curNs - prevNs) / wall) * 100;
}

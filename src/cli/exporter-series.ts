// What the exporter says about one shim and its containers. Per-container resource series follow
// cAdvisor's container_* names and units (see README "Exporter" for where they differ); per-shim
// series keep the names the shim's own metrics endpoint uses (tsshim_*).
import type { InspectReport } from './shim-client';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { StatsSampleMessage } from '../diag/introspection';
import type { Exposition, Labels } from './exporter-text';
import type { ShimSnapshot } from './exporter-scrape';
import { cgroupUsage } from './usage';

const n = (v: unknown): number => (v === null || v === undefined ? 0 : Number(String(v)));

// ---- CRI annotations in the bundle ----------------------------------------------------------------

export interface PodLabels {
  pod: string;
  pod_namespace: string;
  container_name: string;
}

const NO_POD: PodLabels = { pod: '', pod_namespace: '', container_name: '' };

/** Reads each bundle's config.json once per container life (a spec does not change after Create). */
export class AnnotationCache {
  private byKey = new Map<string, PodLabels>();

  get(key: string, bundle: string): PodLabels {
    let v = this.byKey.get(key);
    if (!v) {
      v = readPodLabels(bundle);
      this.byKey.set(key, v);
    }
    return v;
  }

  /** Forget containers not seen in the last scrape. */
  keepOnly(keys: Set<string>): void {
    for (const k of this.byKey.keys()) if (!keys.has(k)) this.byKey.delete(k);
  }

  get size(): number {
    return this.byKey.size;
  }
}

export function readPodLabels(bundle: string): PodLabels {
  if (!bundle) return NO_POD;
  try {
    const a = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8'))?.annotations ?? {};
    const str = (k: string) => (typeof a[k] === 'string' ? a[k] : '');
    return {
      pod: str('io.kubernetes.cri.sandbox-name'),
      pod_namespace: str('io.kubernetes.cri.sandbox-namespace'),
      container_name: str('io.kubernetes.cri.container-name'),
    };
  } catch {
    return NO_POD; // bundle gone (container being deleted) or unreadable: no pod labels
  }
}

// ---- cgroup metrics -> container usage ------------------------------------------------------------

export interface ContainerUsage {
  cpuSeconds: number;
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
  memoryUsageBytes: number;
  workingSetBytes: number;
  /** 0 when unlimited (as cAdvisor reports it). */
  memoryLimitBytes: number;
  threads: number | null;
  threadsMax: number | null;
  oomKills: number | null;
}

/** The cgroup usage `tsshim top` shows too, in cAdvisor's units; 0 where cAdvisor reports 0 (no limit). */
export function containerUsage(s: StatsSampleMessage): ContainerUsage | null {
  const u = cgroupUsage(s);
  if (!u) return null;
  return {
    cpuSeconds: (u.cpuNs ?? 0) / 1e9,
    cpuUserSeconds: (u.cpuUserNs ?? 0) / 1e9,
    cpuSystemSeconds: (u.cpuSystemNs ?? 0) / 1e9,
    memoryUsageBytes: u.memoryUsageBytes ?? 0,
    workingSetBytes: u.workingSetBytes ?? 0,
    memoryLimitBytes: u.memoryLimit ?? 0,
    threads: u.pids,
    threadsMax: u.pidsLimit,
    oomKills: u.oomKills,
  };
}

// ---- families -------------------------------------------------------------------------------------

export function declareFamilies(x: Exposition): void {
  x.family(
    'container_cpu_usage_seconds_total',
    'counter',
    'Cumulative CPU time consumed by the container cgroup, in seconds.'
  )
    .family(
      'container_cpu_user_seconds_total',
      'counter',
      'Cumulative user CPU time consumed by the container cgroup, in seconds.'
    )
    .family(
      'container_cpu_system_seconds_total',
      'counter',
      'Cumulative system CPU time consumed by the container cgroup, in seconds.'
    )
    .family(
      'container_memory_usage_bytes',
      'gauge',
      'Memory usage of the container cgroup, page cache included, in bytes.'
    )
    .family('container_memory_working_set_bytes', 'gauge', 'Memory usage minus inactive file cache, in bytes.')
    .family(
      'container_spec_memory_limit_bytes',
      'gauge',
      'Memory limit of the container cgroup in bytes (0: no limit).'
    )
    .family('container_threads', 'gauge', 'Tasks (threads) in the container cgroup (pids.current).')
    .family('container_threads_max', 'gauge', 'Task limit of the container cgroup (pids.max; 0: no limit).')
    .family(
      'container_oom_events_total',
      'counter',
      'Processes of the container killed by the OOM killer (the cgroup oom_kill counter).'
    )
    .family('container_start_time_seconds', 'gauge', 'Time the shim created the container, seconds since the epoch.')
    .family('tsshim_container_info', 'gauge', 'Constant 1 per container, labelled with the shim that holds it.')
    .family('tsshim_info', 'gauge', 'Constant 1 per shim, labelled with its build.')
    .family('tsshim_start_time_seconds', 'gauge', 'Start time of the shim daemon, seconds since the epoch.')
    .family('tsshim_uptime_seconds', 'gauge', 'Seconds since the shim daemon started.')
    .family('tsshim_resident_memory_bytes', 'gauge', 'Resident set size of the shim process.')
    .family('tsshim_open_fds', 'gauge', 'Open file descriptors of the shim process.')
    .family('tsshim_containers', 'gauge', 'Containers the shim holds.')
    .family('tsshim_execs', 'gauge', 'Exec processes the shim holds.')
    .family('tsshim_events_sent_total', 'counter', 'Events containerd accepted.')
    .family('tsshim_events_pending', 'gauge', 'Events in the outbox, not yet accepted by containerd.')
    .family(
      'tsshim_events_oldest_pending_age_seconds',
      'gauge',
      'Age of the oldest event in the outbox (0 when empty).'
    )
    .family('tsshim_event_retries_total', 'counter', 'Failed event deliveries that were retried.')
    .family(
      'tsshim_events_discarded_total',
      'counter',
      'Undelivered events of a previous shim on this socket, dropped at start-up.'
    )
    .family('tsshim_processes_reaped_total', 'counter', 'Child processes reaped by the shim.')
    .family('tsshim_exits_published_total', 'counter', 'TaskExit events published.')
    .family('tsshim_rpc_duration_seconds', 'histogram', 'Task API call latency by method.')
    .family('tsshim_rpc_errors_total', 'counter', 'Task API calls that answered an error, by method.')
    .family('tsshim_scrape_error', 'gauge', '1 when the last scrape of this shim socket failed or timed out, else 0.')
    .family('tsshim_scrape_duration_seconds', 'gauge', 'Time the exporter took to scrape this shim.');
}

/**
 * Labels of per-shim series. `container` is the shim's group key, which for a per-container shim
 * (the default) is its container's id, so per-shim series join container series on it.
 */
function shimLabels(i: InspectReport): Labels {
  const group = String(i.group ?? '');
  return {
    namespace: String(i.namespace ?? ''),
    container: group,
    group,
    shim_pid: String(i.pid ?? ''),
    version: String(i.version ?? ''),
  };
}

export function shimSeries(x: Exposition, snap: ShimSnapshot, now: number): void {
  const i = snap.inspect;
  const l = shimLabels(i);
  const started = Date.parse(i.started_at ?? '') / 1000;
  x.sample('tsshim_info', 1, { ...l, revision: String(i.revision ?? ''), node: String(i.node ?? '') });
  if (Number.isFinite(started)) {
    x.sample('tsshim_start_time_seconds', started, l);
    x.sample('tsshim_uptime_seconds', Math.max(0, now / 1000 - started), l);
  }
  if (i.memory) x.sample('tsshim_resident_memory_bytes', n(i.memory.rss), l);
  if (i.fds) x.sample('tsshim_open_fds', n(i.fds.count), l);
  const containers = i.containers ?? [];
  x.sample('tsshim_containers', containers.length, l);
  x.sample(
    'tsshim_execs',
    containers.reduce((k, c) => k + (c.execs?.length ?? 0), 0),
    l
  );
  const ev = i.events ?? {};
  const outbox = ev.outbox ?? [];
  x.sample('tsshim_events_sent_total', n(ev.sent), l);
  x.sample('tsshim_events_pending', outbox.length, l);
  x.sample('tsshim_events_oldest_pending_age_seconds', outbox.reduce((m, e) => Math.max(m, n(e.age_ms)), 0) / 1000, l);
  x.sample('tsshim_event_retries_total', n(ev.retries), l);
  x.sample('tsshim_events_discarded_total', n(ev.discarded), l);
  x.sample('tsshim_processes_reaped_total', n(i.counters?.reaped), l);
  x.sample('tsshim_exits_published_total', n(i.counters?.exitsPublished), l);
  const rpc = i.rpc ?? {};
  for (const method of Object.keys(rpc).sort()) {
    const r = rpc[method];
    const ml = { ...l, method };
    const buckets = Object.entries(r.le_ms ?? {})
      .map(([ms, count]) => [Number(ms), n(count)] as const)
      .sort((a, b) => a[0] - b[0]);
    for (const [ms, count] of buckets)
      x.sample(
        'tsshim_rpc_duration_seconds',
        count,
        { ...ml, le: String(ms / 1000) },
        'tsshim_rpc_duration_seconds_bucket'
      );
    x.sample('tsshim_rpc_duration_seconds', n(r.count), { ...ml, le: '+Inf' }, 'tsshim_rpc_duration_seconds_bucket');
    x.sample('tsshim_rpc_duration_seconds', n(r.total_ms) / 1000, ml, 'tsshim_rpc_duration_seconds_sum');
    x.sample('tsshim_rpc_duration_seconds', n(r.count), ml, 'tsshim_rpc_duration_seconds_count');
    x.sample('tsshim_rpc_errors_total', n(r.errors), ml);
  }
}

/** Per-container series of one shim; returns the container keys seen (for the annotation cache). */
export function containerSeries(x: Exposition, snap: ShimSnapshot, pods: AnnotationCache): string[] {
  const i = snap.inspect;
  const shim = shimLabels(i);
  const keys: string[] = [];
  for (const c of i.containers ?? []) {
    const key = `${c.namespace}/${c.id}`;
    keys.push(key);
    const pod = pods.get(key, String(c.bundle ?? ''));
    const l: Labels = { namespace: String(c.namespace), container: String(c.id), shim_pid: shim.shim_pid, ...pod };
    x.sample('tsshim_container_info', 1, { ...l, group: shim.group, version: shim.version });
    const created = Date.parse(c.created_at ?? '') / 1000;
    if (Number.isFinite(created)) x.sample('container_start_time_seconds', created, l);
    const s = snap.samples.get(key);
    const u = s && c.status !== 'stopped' ? containerUsage(s) : null;
    if (!u) continue;
    x.sample('container_cpu_usage_seconds_total', u.cpuSeconds, l);
    x.sample('container_cpu_user_seconds_total', u.cpuUserSeconds, l);
    x.sample('container_cpu_system_seconds_total', u.cpuSystemSeconds, l);
    x.sample('container_memory_usage_bytes', u.memoryUsageBytes, l);
    x.sample('container_memory_working_set_bytes', u.workingSetBytes, l);
    x.sample('container_spec_memory_limit_bytes', u.memoryLimitBytes, l);
    if (u.threads !== null) x.sample('container_threads', u.threads, l);
    if (u.threadsMax !== null) x.sample('container_threads_max', u.threadsMax, l);
    if (u.oomKills !== null) x.sample('container_oom_events_total', u.oomKills, l);
  }
  return keys;
}

// The Prometheus text a shim serves on its metrics endpoint (metrics-endpoint.ts).
import * as fs from 'node:fs';
import type { DaemonView } from './daemon-view';
import { LATENCY_BUCKETS_MS } from '../task/rpc';
import { VERSION, REVISION } from '../shim/version';

// ---- text format --------------------------------------------------------------------------------

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

class TextWriter {
  private lines: string[] = [];
  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): this {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    return this;
  }
  sample(name: string, value: number, l: Record<string, string> = {}): this {
    this.lines.push(`${name}${labels(l)} ${num(value)}`);
    return this;
  }
  text(): string {
    return this.lines.join('\n') + '\n';
  }
}

function countFds(): number {
  try {
    return fs.readdirSync('/proc/self/fd').length - 1;
  } catch {
    return 0;
  } // minus the readdir's own fd
}

/** The Prometheus text exposition (format 0.0.4) of the daemon's counters. */
export function renderMetrics(daemon: DaemonView, now = Date.now()): string {
  const w = new TextWriter();
  const methods = [...daemon.rpcStats.calls.entries()].sort(([a], [b]) => a.localeCompare(b));

  w.family('tsshim_rpc_duration_seconds', 'histogram', 'Task API call latency by method.');
  for (const [method, s] of methods) {
    // RpcStats buckets are already cumulative (a call counts in every bucket it fits).
    LATENCY_BUCKETS_MS.forEach((b, i) =>
      w.sample('tsshim_rpc_duration_seconds_bucket', s.buckets[i], { method, le: String(b / 1000) })
    );
    w.sample('tsshim_rpc_duration_seconds_bucket', s.count, { method, le: '+Inf' });
    w.sample('tsshim_rpc_duration_seconds_sum', s.totalMs / 1000, { method });
    w.sample('tsshim_rpc_duration_seconds_count', s.count, { method });
  }
  w.family('tsshim_rpc_errors_total', 'counter', 'Task API calls that answered an error, by method.');
  for (const [method, s] of methods) w.sample('tsshim_rpc_errors_total', s.errors, { method });

  const ev = daemon.publisher.stats;
  const pending = daemon.publisher.pending();
  w.family('tsshim_events_sent_total', 'counter', 'Events containerd accepted.').sample(
    'tsshim_events_sent_total',
    ev.sent
  );
  w.family('tsshim_events_pending', 'gauge', 'Events in the outbox, not yet accepted by containerd.').sample(
    'tsshim_events_pending',
    pending.length
  );
  w.family(
    'tsshim_events_oldest_pending_age_seconds',
    'gauge',
    'Age of the oldest event in the outbox (0 when empty).'
  ).sample(
    'tsshim_events_oldest_pending_age_seconds',
    pending.length ? Math.max(0, now - Math.min(...pending.map((e) => e.at))) / 1000 : 0
  );
  w.family(
    'tsshim_events_discarded_total',
    'counter',
    'Undelivered events of a previous shim on this socket, dropped at start-up.'
  ).sample('tsshim_events_discarded_total', ev.discarded);
  w.family(
    'tsshim_event_journal_failures_total',
    'counter',
    'Event journal writes that failed (state dir full or read-only); the events were still sent.'
  ).sample('tsshim_event_journal_failures_total', ev.journalFailures ?? 0);
  w.family('tsshim_event_retries_total', 'counter', 'Failed event deliveries that were retried.').sample(
    'tsshim_event_retries_total',
    ev.retries
  );

  const counters = daemon.service.counters;
  w.family('tsshim_processes_reaped_total', 'counter', 'Child processes reaped by the shim.').sample(
    'tsshim_processes_reaped_total',
    counters.reaped
  );
  w.family('tsshim_exits_published_total', 'counter', 'TaskExit events published.').sample(
    'tsshim_exits_published_total',
    counters.exitsPublished
  );

  const containers = daemon.service.list();
  w.family('tsshim_containers', 'gauge', 'Containers this shim holds.').sample('tsshim_containers', containers.length);
  w.family('tsshim_execs', 'gauge', 'Exec processes this shim holds.').sample(
    'tsshim_execs',
    containers.reduce((n, c) => n + c.execs.size, 0)
  );

  w.family('tsshim_resident_memory_bytes', 'gauge', 'Resident set size of the shim process.').sample(
    'tsshim_resident_memory_bytes',
    process.memoryUsage().rss
  );
  w.family('tsshim_idle_gc_total', 'counter', 'Full garbage collections run after the shim went idle.').sample(
    'tsshim_idle_gc_total',
    daemon.idleGc?.collections ?? 0
  );
  w.family(
    'tsshim_idle_gc_skipped_total',
    'counter',
    'Quiet periods without a collection: memory had not changed enough since the last one.'
  ).sample('tsshim_idle_gc_skipped_total', daemon.idleGc?.skipped ?? 0);
  w.family('tsshim_open_fds', 'gauge', 'Open file descriptors of the shim process.').sample(
    'tsshim_open_fds',
    countFds()
  );
  w.family('tsshim_uptime_seconds', 'gauge', 'Seconds since the shim daemon started.').sample(
    'tsshim_uptime_seconds',
    (now - daemon.startedAt.getTime()) / 1000
  );
  w.family('tsshim_start_time_seconds', 'gauge', 'Start time of the shim daemon, seconds since the epoch.').sample(
    'tsshim_start_time_seconds',
    daemon.startedAt.getTime() / 1000
  );
  w.family('tsshim_info', 'gauge', 'Constant 1, labelled with the shim build and identity.').sample('tsshim_info', 1, {
    version: VERSION,
    revision: REVISION,
    namespace: daemon.namespace,
    group: daemon.group,
    pid: String(process.pid),
  });
  return w.text();
}

// tsshim.v1.Shim: the shim's own diagnostics service, served on the shim socket next to the Task
// API. List and Inspect answer from in-memory state; Stats streams samples until the client goes.
import * as fs from 'node:fs';
import { tsshim } from '../gen/proto';
import { toNumber } from '../types/long';
import { ServiceName } from '../types/typeurls';
import { timestampFromDate } from '../types/timestamp';
import { unixTime, wallClockNow } from '../sys/clock';
import { ownFds } from '../sys/proc-fds';
import { Code, TtrpcError, type CallContext, type Server } from '../ttrpc';
import type { DaemonView } from './daemon-view';
import type { Container } from '../task/container';
import type { Process } from '../task/process';
import { LATENCY_BUCKETS_MS } from '../task/rpc';
import { VERSION, REVISION } from '../shim/version';

export type { DaemonView } from './daemon-view';

export const SHIM_SERVICE = ServiceName.Shim;
export const DEFAULT_STATS_INTERVAL_MS = 1000;
export const MIN_STATS_INTERVAL_MS = 20;

// ---- container status ----------------------------------------------------------------------

/** The status word containerd users know ("created", "running", "stopped", "paused", "pausing"). */
export function containerStatus(c: Container): string {
  if (c.init.pausing) return 'pausing';
  switch (c.init.state) {
    case 'created':
    case 'created-checkpoint':
      return 'created';
    case 'running':
      return 'running';
    case 'paused':
      return 'paused';
    default:
      return 'stopped';
  }
}

function processStatus(p: Process & { state?: string }): string {
  return p.state === 'created-checkpoint'
    ? 'created'
    : p.state === 'deleted'
      ? 'stopped'
      : String(p.state ?? 'unknown');
}

// ---- per-process usage from /proc ------------------------------------------------------------

const CLK_TCK = 100; // USER_HZ; 100 on every Linux ABI Node supports
const PAGE_SIZE = 4096;

export interface ProcessUsage {
  cpuNs: number;
  rssBytes: number;
  threads: number;
}

/** CPU time (user+system) and RSS of one pid, or null when it is gone. */
export function processUsage(pid: number): ProcessUsage | null {
  if (!pid) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    const threads = Number(f[17]); // num_threads (field 20)
    const rssPages = Number(f[21]); // rss (field 24)
    return { cpuNs: (ticks * 1e9) / CLK_TCK, rssBytes: rssPages * PAGE_SIZE, threads };
  } catch {
    return null; // the process is gone: no usage, as documented
  }
}

/** Entries of /proc/self/fd grouped by kind (socket, pipe, anon_inode:..., file, ...). */
export function openFds(): { count: number; kinds: Record<string, number> } {
  const kinds: Record<string, number> = {};
  for (const target of ownFds().values()) {
    const kind = /^(socket|pipe):/.test(target)
      ? target.slice(0, target.indexOf(':'))
      : target.startsWith('anon_inode:')
        ? target.replace(/\[.*$/, '')
        : target.startsWith('/dev/')
          ? 'device'
          : 'file';
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return { count: Object.values(kinds).reduce((a, b) => a + b, 0), kinds };
}

// ---- StatsSample ------------------------------------------------------------------------------

/** A StatsSample as the CLI uses it: the generated type's fields, with plain numbers for its uint64s. */
export interface StatsSampleMessage {
  id: string;
  exec_id: string;
  pid: number;
  status: string;
  metrics: { type_url: string; value: Uint8Array } | null;
  at: { seconds: number; nanos: number };
  namespace: string;
  process_cpu_ns: number;
  process_rss_bytes: number;
}

export function encodeStatsSample(s: StatsSampleMessage): Uint8Array {
  return tsshim.v1.StatsSample.encode({ ...s, process_cpu_ns: Math.round(s.process_cpu_ns) }).finish();
}

export function decodeStatsSample(buf: Uint8Array): StatsSampleMessage {
  const m = tsshim.v1.StatsSample.decode(buf);
  return {
    id: m.id,
    exec_id: m.exec_id,
    pid: m.pid,
    status: m.status,
    metrics: m.metrics ? { type_url: m.metrics.type_url ?? '', value: m.metrics.value ?? new Uint8Array() } : null,
    at: { seconds: toNumber(m.at?.seconds), nanos: m.at?.nanos ?? 0 },
    namespace: m.namespace,
    process_cpu_ns: toNumber(m.process_cpu_ns),
    process_rss_bytes: toNumber(m.process_rss_bytes),
  };
}

// ---- the three methods --------------------------------------------------------------------------

export function listContainers(daemon: DaemonView): Uint8Array {
  return tsshim.v1.ListResponse.encode({
    containers: daemon.service.list().map((c) => ({
      id: c.id,
      namespace: c.namespace,
      pid: c.init.pid,
      status: containerStatus(c),
      bundle: c.bundle,
      started_at: timestampFromDate(c.createdAt),
      exec_count: c.execs.size,
    })),
  }).finish();
}

function describeProcess(p: Process & { state?: string }, now: number) {
  return {
    exec_id: p.execId || undefined,
    pid: p.pid,
    state: processStatus(p),
    exit: p.exit ? { status: p.exit.status, at: p.exit.at.toISOString(), ago_ms: now - p.exit.at.getTime() } : null,
    io: {
      open: p.io !== null,
      terminal: p.stdio.terminal,
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
    },
    usage: p.exit ? null : processUsage(p.pid),
  };
}

/** The shim's internal state as a plain object (InspectResponse.json). */
export function inspectState(daemon: DaemonView): Record<string, unknown> {
  const now = Date.now();
  const rpc: Record<string, unknown> = {};
  for (const [method, s] of daemon.rpcStats.calls) {
    rpc[method] = {
      count: s.count,
      errors: s.errors,
      total_ms: Number(s.totalMs.toFixed(3)),
      mean_ms: s.count ? Number((s.totalMs / s.count).toFixed(3)) : 0,
      le_ms: Object.fromEntries(LATENCY_BUCKETS_MS.map((b, i) => [String(b), s.buckets[i]])),
    };
  }
  const mem = process.memoryUsage();
  return {
    version: VERSION,
    revision: REVISION,
    pid: process.pid,
    node: process.version,
    started_at: daemon.startedAt.toISOString(),
    uptime_s: Number(((now - daemon.startedAt.getTime()) / 1000).toFixed(3)),
    socket: daemon.socket,
    metrics_socket: daemon.metricsSocket ?? null,
    namespace: daemon.namespace,
    group: daemon.group,
    containers: daemon.service.list().map((c) => ({
      namespace: c.namespace,
      id: c.id,
      bundle: c.bundle,
      status: containerStatus(c),
      created_at: c.createdAt.toISOString(),
      init: describeProcess(c.init, now),
      execs: [...c.execs.values()].map((e) => describeProcess(e, now)),
    })),
    events: {
      ...daemon.publisher.stats,
      outbox: daemon.publisher
        .pending()
        .map((e) => ({ seq: e.seq, namespace: e.namespace, topic: e.topic, age_ms: now - e.at })),
    },
    rpc,
    counters: { ...daemon.service.counters },
    memory: {
      rss: mem.rss,
      heap_total: mem.heapTotal,
      heap_used: mem.heapUsed,
      external: mem.external,
      array_buffers: mem.arrayBuffers,
    },
    fds: openFds(),
  };
}

async function sampleOf(daemon: DaemonView, c: Container): Promise<StatsSampleMessage> {
  let metrics: StatsSampleMessage['metrics'] = null;
  if (!c.init.exit && c.init.pid) {
    // A container without a cgroup (not started, gone) still gets a sample with its status.
    metrics = await daemon.service.stats(c.namespace, c.id).then(
      (s) => ({ type_url: s.typeUrl, value: s.value }),
      () => null
    );
  }
  const usage = c.init.exit ? null : processUsage(c.init.pid);
  return {
    id: c.id,
    exec_id: '',
    pid: c.init.pid,
    status: containerStatus(c),
    metrics,
    at: unixTime(wallClockNow()),
    namespace: c.namespace,
    process_cpu_ns: usage?.cpuNs ?? 0,
    process_rss_bytes: usage?.rssBytes ?? 0,
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

async function streamStats(
  daemon: DaemonView,
  payload: Buffer,
  ctx: CallContext,
  send: (m: Uint8Array) => Promise<void>
): Promise<void> {
  const req = tsshim.v1.StatsStreamRequest.decode(payload);
  const interval = Math.max(MIN_STATS_INTERVAL_MS, req.interval_ms || DEFAULT_STATS_INTERVAL_MS);
  const pick = () => daemon.service.list().filter((c) => !req.id || c.id === req.id);
  if (req.id && pick().length === 0) throw new TtrpcError(Code.NOT_FOUND, `container ${req.id} not found`);
  while (!ctx.signal.aborted) {
    const containers = pick();
    // The container was deleted: the stream has nothing more to say.
    if (req.id && containers.length === 0) return;
    for (const c of containers) {
      const sample = await sampleOf(daemon, c);
      if (ctx.signal.aborted) return;
      await send(encodeStatsSample(sample));
    }
    daemon.idleGc?.background?.(); // allocates, but is not Task activity: see idle-gc.ts
    await sleep(interval, ctx.signal);
  }
}

export function registerShimService(server: Server, daemon: DaemonView): void {
  server.register(SHIM_SERVICE, {
    List: () => {
      daemon.idleGc?.background?.();
      return listContainers(daemon);
    },
    Inspect: (payload) => {
      tsshim.v1.InspectRequest.decode(payload);
      daemon.idleGc?.background?.();
      return tsshim.v1.InspectResponse.encode({ json: JSON.stringify(inspectState(daemon)) }).finish();
    },
  });
  server.registerServerStream(SHIM_SERVICE, 'Stats', (payload, ctx, send) => streamStats(daemon, payload, ctx, send));
}

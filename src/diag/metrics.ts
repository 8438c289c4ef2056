// Opt-in Prometheus endpoint: `GET /metrics` over HTTP on a unix socket (mode 0600), one per shim.
//
// Where the socket goes (read from the shim's environment, which containerd passes on):
//   TSSHIM_METRICS_SOCKET=<path>  exactly this path. For a single shim: a second shim finding the
//                                 socket alive leaves it alone and serves no metrics.
//   TSSHIM_METRICS_DIR=<dir>      <dir>/<shim socket basename>.metrics.sock, one per shim; the
//                                 way to enable it for a whole containerd (e.g. /run/tsshim/metrics).
//   neither                       no endpoint (the default).
// Scrape with `tsshim metrics <socket|container id>` or `curl --unix-socket <path> http://x/metrics`.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import type { DaemonView } from './daemon-view';
import { LATENCY_BUCKETS_MS } from '../task/rpc';
import { VERSION, REVISION } from '../shim/version';

const MAX_SOCKET_PATH = 107;
const METRICS_SUFFIX = '.metrics.sock';

/** Where the metrics endpoint goes (configuration): an exact socket, else a directory, else off. */
export interface MetricsPlacement {
  metricsSocket: string;
  metricsDir: string;
}

/** The metrics socket path for a shim listening on `shimSocket`, or null when metrics are off. */
export function metricsSocketPath(where: MetricsPlacement, shimSocket: string, pid = process.pid): string | null {
  if (where.metricsSocket) return where.metricsSocket;
  const dir = where.metricsDir;
  if (!dir) return null;
  let base = shimSocket ? path.basename(shimSocket) : `pid-${pid}`;
  // Shim sockets are 64 hex chars: shorten rather than fail when the dir is deep.
  const room = MAX_SOCKET_PATH - Buffer.byteLength(path.join(dir, METRICS_SUFFIX)) - 1;
  if (base.length > room) base = base.slice(0, Math.max(room, 16));
  return path.join(dir, base + METRICS_SUFFIX);
}

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

// ---- the endpoint ---------------------------------------------------------------------------------

function isAlive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A running endpoint. */
export interface MetricsEndpoint {
  socket: string;
  /** The listening fd, for an in-place upgrade to hand over (null when unknown). */
  listenFd(): number | null;
  /** At the exec of an upgrade: drop the open connections, leave the listening socket as it is. */
  handOver(): void;
  close(): void;
}

/**
 * Serves /metrics on `socketPath`. `inheritedFd`: the listening socket a previous program of this
 * process handed over (in-place upgrade): scrapes that connect during the swap wait in its backlog.
 */
export async function startMetricsEndpoint(
  socketPath: string,
  daemon: DaemonView,
  inheritedFd?: number
): Promise<MetricsEndpoint> {
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
  if (inheritedFd === undefined && fs.existsSync(socketPath)) {
    if (await isAlive(socketPath)) {
      throw Object.assign(new Error(`metrics socket ${socketPath} is served by another process`), {
        code: 'EADDRINUSE',
      });
    }
    fs.rmSync(socketPath, { force: true }); // left by a shim that died
  }
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    let body: string;
    try {
      body = renderMetrics(daemon);
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(e as Error).message}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    res.end(req.method === 'HEAD' ? undefined : body);
    daemon.idleGc?.background?.(); // a scrape allocates but must not postpone the idle collection
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(inheritedFd === undefined ? socketPath : { fd: inheritedFd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  if (inheritedFd === undefined) fs.chmodSync(socketPath, 0o600);
  // The endpoint must never keep a finished shim alive.
  server.unref();
  let closed = false;
  return {
    socket: socketPath,
    listenFd() {
      const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
      return typeof fd === 'number' && fd >= 0 ? fd : null;
    },
    handOver() {
      closed = true;
      server.closeAllConnections();
    },
    close() {
      if (closed) return;
      closed = true;
      server.close();
      server.closeAllConnections();
      fs.rmSync(socketPath, { force: true });
    },
  };
}

/**
 * What the daemon calls: start the endpoint the configuration asks for. Never throws: a shim without
 * metrics is better than no shim. Returns null when metrics are off or could not start.
 */
export async function startConfiguredMetrics(
  daemon: DaemonView & { log: { info(m: string, f?: object): void; warn(m: string, f?: object): void } },
  where: MetricsPlacement,
  inherited?: { fd: number; socket: string }
): Promise<MetricsEndpoint | null> {
  const socketPath = metricsSocketPath(where, daemon.socket);
  const takeOver = inherited && inherited.socket === socketPath ? inherited.fd : undefined;
  if (inherited && takeOver === undefined) {
    // This build places (or turns off) the endpoint differently: the old one goes.
    fs.closeSync(inherited.fd);
    fs.rmSync(inherited.socket, { force: true });
  }
  if (!socketPath) return null;
  try {
    const endpoint = await startMetricsEndpoint(socketPath, daemon, takeOver);
    daemon.log.info('metrics endpoint listening', { socket: socketPath });
    return endpoint;
  } catch (e) {
    daemon.log.warn('metrics endpoint not started', { socket: socketPath, error: (e as Error).message });
    return null;
  }
}

// Opt-in Prometheus endpoint: `GET /metrics` over HTTP on a unix socket (mode 0600), one per shim.
//
// Where the socket goes (read from the shim's environment, which containerd passes on):
//   TSSHIM_METRICS_SOCKET=<path>  exactly this path. For a single shim: a second shim finding the
//                                 socket alive leaves it alone and serves no metrics.
//   TSSHIM_METRICS_DIR=<dir>      <dir>/<shim socket basename>.metrics.sock, one per shim; the
//                                 way to enable it for a whole containerd (e.g. /run/tsshim/metrics).
//   neither                       no endpoint (the default).
// Scrape with `tsshim metrics <socket|container id>` or `curl --unix-socket <path> http://x/metrics`.
//
// The HTTP server never binds the path itself: it serves an fd. A server that bound a path
// unlinks it when it closes, and an in-place upgrade must be able to stop serving (quiesce) while
// the socket, its path and the connections waiting in its backlog live on for the next program.
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { close as closeFd, dupCloexec } from '../sys/libc';
import type { DaemonView } from './daemon-view';
import { renderMetrics } from './metrics';

const MAX_SOCKET_PATH = 107;
const METRICS_SUFFIX = '.metrics.sock';
/** How long scrapes already accepted get to finish when the endpoint quiesces. */
const QUIESCE_SCRAPES_MS = 1000;

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

function listenFdOf(server: net.Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('the metrics socket has no fd');
  return fd;
}

function listen(server: net.Server, target: string | { fd: number }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(target, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * A listening socket at `socketPath` (0600), as an fd no server owns: bound through a temporary
 * name and renamed into place, so closing the binding server unlinks nothing of ours.
 */
async function bindSocket(socketPath: string): Promise<number> {
  const tmp = `${socketPath}.${process.pid}.new`;
  fs.rmSync(tmp, { force: true });
  const binder = net.createServer();
  await listen(binder, tmp);
  try {
    fs.chmodSync(tmp, 0o600);
    const fd = dupCloexec(listenFdOf(binder));
    fs.renameSync(tmp, socketPath);
    return fd;
  } finally {
    binder.close();
    fs.rmSync(tmp, { force: true });
  }
}

function metricsServer(daemon: DaemonView): http.Server {
  // node:http (nine of Node's modules, compiled when loaded: a daemon's V8 flags make Node reject its
  // built-in code cache) only for a shim that serves metrics: not on a daemon's way to its first Create.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded when an endpoint starts
  const { createServer }: typeof import('node:http') = require('node:http');
  const server = createServer((req, res) => {
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
  return server;
}

/** A running endpoint. */
export interface MetricsEndpoint {
  socket: string;
  /**
   * In-place upgrade: stops serving once the scrapes already accepted are answered; the socket
   * stays (new scrapes wait in its backlog). Returns its fd (close-on-exec: the upgrade clears that).
   */
  quiesce(): Promise<number>;
  /** The upgrade was given up: serve again. */
  resume(): Promise<void>;
  close(): void;
}

/**
 * Serves /metrics on `socketPath`. `inheritedFd`: the listening socket a previous program of this
 * process handed over (in-place upgrade).
 */
export async function startMetricsEndpoint(
  socketPath: string,
  daemon: DaemonView,
  inheritedFd?: number
): Promise<MetricsEndpoint> {
  let fd = inheritedFd;
  if (fd === undefined) {
    fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
    if (fs.existsSync(socketPath)) {
      if (await isAlive(socketPath)) {
        throw Object.assign(new Error(`metrics socket ${socketPath} is served by another process`), {
          code: 'EADDRINUSE',
        });
      }
      fs.rmSync(socketPath, { force: true }); // left by a shim that died
    }
    fd = await bindSocket(socketPath);
  }
  let server: http.Server | null = null;
  /** The socket while no server serves it (quiesced). */
  let spare: number | null = null;
  const serve = async (listenFd: number) => {
    const s = metricsServer(daemon);
    await listen(s, { fd: listenFd });
    s.unref(); // the endpoint must never keep a finished shim alive
    server = s;
  };
  await serve(fd);
  let closed = false;
  return {
    socket: socketPath,
    async quiesce() {
      const s = server!;
      // A duplicate keeps the socket open once the server closes its fd.
      spare = dupCloexec(listenFdOf(s));
      server = null;
      const done = new Promise<void>((r) => s.close(() => r()));
      s.closeIdleConnections();
      const timer = setTimeout(() => s.closeAllConnections(), QUIESCE_SCRAPES_MS);
      await done;
      clearTimeout(timer);
      return spare;
    },
    async resume() {
      if (spare === null || closed) return;
      const listenFd = spare;
      spare = null;
      await serve(listenFd);
    },
    close() {
      if (closed) return;
      closed = true;
      if (server) {
        server.close();
        server.closeAllConnections();
      }
      if (spare !== null) closeFd(spare);
      fs.rmSync(socketPath, { force: true });
    },
  };
}

/**
 * What the daemon calls: start the endpoint the configuration asks for. Never throws: a shim without
 * metrics is better than no shim. Returns null when metrics are off or could not start.
 * `inherited`: the endpoint's socket handed over by an in-place upgrade.
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
    closeFd(inherited.fd);
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

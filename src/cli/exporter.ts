// `tsshim exporter`: one HTTP endpoint per node for Prometheus. Each GET /metrics finds the running
// tsshim shims the way `tsshim ps` does, scrapes them over ttrpc (bounded concurrency, a deadline
// per shim) and answers one exposition; a shim that fails or hangs gets tsshim_scrape_error 1.
import * as http from 'node:http';
import * as net from 'node:net';
import { candidateSockets, type DiscoverOptions } from './discover';
import { parseArgs, flagNumber, flagString, UsageError } from './args';
import { Exposition } from './exporter-text';
import { scrapeShim, NotTsshim, type ShimSnapshot } from './exporter-scrape';
import { mapLimit } from './limit';
import { AnnotationCache, containerSeries, declareFamilies, shimSeries } from './exporter-series';
import type { CliContext } from './io';

export const DEFAULT_LISTEN = '127.0.0.1:9743';
export const DEFAULT_SHIM_TIMEOUT_MS = 2000;
export const DEFAULT_CONCURRENCY = 4;

export interface ExporterOptions {
  /** containerd state dirs; none: scan socketDir. */
  states: string[];
  socketDir?: string;
  shimTimeoutMs: number;
  concurrency: number;
}

type ScrapeOutcome = { socket: string; ms: number } & ({ snap: ShimSnapshot } | { error: string } | { foreign: true });

/** Every value of a repeatable `--name v` / `--name=v` flag, in order. */
export function repeatedFlag(argv: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') break;
    if (argv[i] === `--${name}` && i + 1 < argv.length) out.push(argv[++i]);
    else if (argv[i].startsWith(`--${name}=`)) out.push(argv[i].slice(name.length + 3));
  }
  return out;
}

/** host:port, [v6]:port. Throws UsageError on anything else. */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535)
    throw new UsageError(`--listen wants host:port (e.g. ${DEFAULT_LISTEN}), got ${JSON.stringify(s)}`);
  return { host: m[1] ?? m[2] ?? '', port };
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1' || /^::ffff:127\./i.test(host);
}

function candidates(opts: ExporterOptions): string[] {
  if (opts.states.length === 0) return candidateSockets({ socketDir: opts.socketDir });
  const all = new Set<string>();
  for (const state of opts.states) {
    // A state dir where no task ever ran has no task dir yet: nothing to scrape there, not an error.
    try {
      for (const s of candidateSockets({ state } as DiscoverOptions)) all.add(s);
    } catch {
      /* none */
    }
  }
  return [...all];
}

export class Exporter {
  private pods = new AnnotationCache();
  private inFlight: Promise<string> | null = null;
  private failing = new Set<string>();

  constructor(
    private readonly opts: ExporterOptions,
    private readonly warn: (msg: string) => void = () => {}
  ) {}

  /** One exposition; concurrent callers share the scrape in flight. */
  scrape(): Promise<string> {
    this.inFlight ??= this.scrapeNow().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async scrapeNow(): Promise<string> {
    const t0 = Date.now();
    const outcomes = await mapLimit(candidates(this.opts), this.opts.concurrency, (socket) => this.scrapeOne(socket));
    const x = new Exposition();
    declareFamilies(x);
    x.family('tsshim_exporter_shims', 'gauge', 'tsshim shims found in the last scrape (answering or not).').family(
      'tsshim_exporter_scrape_duration_seconds',
      'gauge',
      'Time the last scrape of all shims took.'
    );
    const seen = new Set<string>();
    let shims = 0;
    for (const o of outcomes) {
      if ('foreign' in o) continue;
      shims++;
      x.sample('tsshim_scrape_error', 'error' in o ? 1 : 0, { socket: o.socket });
      x.sample('tsshim_scrape_duration_seconds', o.ms / 1000, { socket: o.socket });
      if ('snap' in o) {
        shimSeries(x, o.snap, Date.now());
        for (const k of containerSeries(x, o.snap, this.pods)) seen.add(k);
      }
    }
    this.pods.keepOnly(seen);
    x.sample('tsshim_exporter_shims', shims);
    x.sample('tsshim_exporter_scrape_duration_seconds', (Date.now() - t0) / 1000);
    return x.text();
  }

  private async scrapeOne(socket: string): Promise<ScrapeOutcome> {
    const t0 = Date.now();
    try {
      const snap = await scrapeShim(socket, t0 + this.opts.shimTimeoutMs);
      if (this.failing.delete(socket)) this.warn(`${socket}: answers again`);
      return { socket, ms: Date.now() - t0, snap };
    } catch (e) {
      if (e instanceof NotTsshim) return { socket, ms: Date.now() - t0, foreign: true };
      const error = (e as Error)?.message ?? String(e);
      if (!this.failing.has(socket)) this.warn(`${socket}: scrape failed (skipped until it answers): ${error}`);
      this.failing.add(socket);
      return { socket, ms: Date.now() - t0, error };
    }
  }
}

export function handler(exporter: Exporter): http.RequestListener {
  return (req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(req.method === 'HEAD' ? undefined : 'ok\n');
      return;
    }
    if (url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
      return;
    }
    exporter.scrape().then(
      (body) => {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (e: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`scrape failed: ${e.message}\n`);
      }
    );
  };
}

/** The command: listens until ctx.signal aborts. */
export async function exporter(ctx: CliContext, argv: string[]): Promise<number> {
  const p = parseArgs(argv);
  if (p.positional.length > 1) throw new UsageError('exporter takes no arguments');
  const listen = parseListen(flagString(p, 'listen') ?? DEFAULT_LISTEN);
  const opts: ExporterOptions = {
    states: repeatedFlag(argv, 'state'),
    socketDir: flagString(p, 'socket-dir') ?? ctx.env.TSSHIM_SOCKET_DIR,
    shimTimeoutMs: Math.max(50, flagNumber(p, 'timeout', DEFAULT_SHIM_TIMEOUT_MS)),
    concurrency: Math.max(1, Math.floor(flagNumber(p, 'concurrency', DEFAULT_CONCURRENCY))),
  };
  if (!isLoopback(listen.host)) {
    ctx.err.write(
      `tsshim exporter: WARNING: listening on ${listen.host || 'every address'}:${listen.port}, not loopback: ` +
        'anyone who can reach this port reads container names, pod names and resource usage (no authentication, no TLS)\n'
    );
  }
  const exp = new Exporter(opts, (m) => ctx.err.write(`tsshim exporter: ${m}\n`));
  const server = http.createServer(handler(exp));
  server.keepAliveTimeout = 30_000; // Prometheus keeps its connection between scrapes
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host || undefined, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as net.AddressInfo;
  ctx.err.write(
    `tsshim exporter: listening on http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}/metrics\n`
  );
  await new Promise<void>((resolve) => {
    if (ctx.signal.aborted) return resolve();
    ctx.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  server.close();
  server.closeAllConnections();
  return 0;
}

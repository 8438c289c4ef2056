// The Prometheus endpoint: scraped over its unix socket with a fake daemon, checked line by line
// against the text exposition format, plus socket placement and life cycle.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { renderMetrics } from '../../src/diag/metrics';
import { startMetricsEndpoint, startConfiguredMetrics, metricsSocketPath } from '../../src/diag/metrics-endpoint';
import { httpGetUnix } from '../../src/cli/http';
import { readConfig } from '../../src/shim/config';
import { fakeDaemon, tempDir, type FakeDaemon } from '../support/shim-service-fixture';

const tmp = tempDir('tsshim-metrics-');
const socket = tmp.path('m/shim.metrics.sock');
let daemon: FakeDaemon;
let endpoint: { socket: string; close(): void };

before(async () => {
  daemon = fakeDaemon();
  endpoint = await startMetricsEndpoint(socket, daemon);
});

after(() => {
  endpoint.close();
  tmp.remove();
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A strict-enough parser of the text format: every line is a comment, blank, or a sample. */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    if (line.startsWith('# HELP ')) {
      assert.match(line, /^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* \S.*$/);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      assert.ok(m, `bad TYPE line: ${line}`);
      assert.ok(!types.has(m[1]), `TYPE repeated for ${m[1]}`);
      types.set(m[1], m[2]);
      continue;
    }
    const m =
      /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$/.exec(line);
    assert.ok(m, `bad sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    const value = m[3] === '+Inf' ? Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value), `bad value in ${line}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(m[1]) || types.get(family) === 'histogram', `sample ${m[1]} before its TYPE`);
    samples.push({ name: m[1], labels, value });
  }
  return { samples, types };
}

const one = (s: Sample[], name: string, labels: Record<string, string> = {}) => {
  const hits = s.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  assert.equal(hits.length, 1, `${name} ${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0].value;
};

test('GET /metrics over the socket: valid text format with every family', async () => {
  const res = await httpGetUnix(socket, '/metrics');
  assert.equal(res.status, 200);
  assert.match(res.contentType, /^text\/plain; version=0\.0\.4/);
  const { samples, types } = parseExposition(res.body);
  assert.equal(types.get('tsshim_rpc_duration_seconds'), 'histogram');
  assert.equal(types.get('tsshim_rpc_errors_total'), 'counter');
  assert.equal(types.get('tsshim_events_pending'), 'gauge');

  // Histogram: cumulative buckets in seconds, +Inf = count, sum in seconds.
  const buckets = samples.filter(
    (s) => s.name === 'tsshim_rpc_duration_seconds_bucket' && s.labels.method === 'Create'
  );
  assert.deepEqual(
    buckets.map((b) => b.labels.le),
    ['0.001', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '5', '+Inf']
  );
  assert.deepEqual(
    buckets.map((b) => b.value),
    [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
  );
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value);
  assert.equal(one(samples, 'tsshim_rpc_duration_seconds_count', { method: 'Create' }), 2);
  assert.equal(one(samples, 'tsshim_rpc_duration_seconds_sum', { method: 'Create' }), 0.033);
  assert.equal(one(samples, 'tsshim_rpc_duration_seconds_count', { method: 'State' }), 1);
  assert.equal(one(samples, 'tsshim_rpc_errors_total', { method: 'State' }), 1);
  assert.equal(one(samples, 'tsshim_rpc_errors_total', { method: 'Create' }), 0);

  assert.equal(one(samples, 'tsshim_events_sent_total'), 40);
  assert.equal(one(samples, 'tsshim_events_pending'), 2);
  assert.equal(one(samples, 'tsshim_events_discarded_total'), 1);
  assert.equal(one(samples, 'tsshim_event_retries_total'), 5);
  const age = one(samples, 'tsshim_events_oldest_pending_age_seconds');
  assert.ok(age >= 3 && age < 10, `oldest pending ${age}`);
  assert.equal(one(samples, 'tsshim_processes_reaped_total'), 7);
  assert.equal(one(samples, 'tsshim_exits_published_total'), 2);
  assert.equal(one(samples, 'tsshim_containers'), 3);
  assert.equal(one(samples, 'tsshim_execs'), 1);
  assert.ok(one(samples, 'tsshim_resident_memory_bytes') > 10 * 1024 * 1024);
  const fds = one(samples, 'tsshim_open_fds');
  assert.ok(Math.abs(fds - (fs.readdirSync('/proc/self/fd').length - 1)) <= 2, `open fds ${fds}`);
  const uptime = one(samples, 'tsshim_uptime_seconds');
  assert.ok(uptime >= 120 && uptime < 200, `uptime ${uptime}`);
  assert.equal(one(samples, 'tsshim_info', { group: 'web', namespace: 'default', pid: String(process.pid) }), 1);
});

test('label values are escaped', () => {
  const d = fakeDaemon();
  d.group = 'a"b\\c\nd';
  const text = renderMetrics(d);
  assert.ok(
    text.includes('group="a\\"b\\\\c\\nd"'),
    text.split('\n').find((l) => l.startsWith('tsshim_info'))
  );
  parseExposition(text);
});

test('no RPC yet: histogram family present with no samples', () => {
  const d = fakeDaemon([]);
  d.rpcStats = { calls: new Map() };
  const { samples, types } = parseExposition(renderMetrics(d));
  assert.equal(types.get('tsshim_rpc_duration_seconds'), 'histogram');
  assert.equal(samples.filter((s) => s.name.startsWith('tsshim_rpc_')).length, 0);
  assert.equal(one(samples, 'tsshim_containers'), 0);
  assert.equal(one(samples, 'tsshim_events_oldest_pending_age_seconds') >= 0, true);
});

test('other paths are 404, other methods 405, HEAD has no body; the socket is 0600', async () => {
  assert.equal((await httpGetUnix(socket, '/')).status, 404);
  assert.equal((await httpGetUnix(socket, '/metrics?x=1')).status, 200);
  const status = (method: string) =>
    new Promise<[number, string]>((resolve, reject) => {
      const req = http.request({ socketPath: socket, path: '/metrics', method }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve([res.statusCode!, body]));
      });
      req.on('error', reject);
      req.end();
    });
  assert.equal((await status('POST'))[0], 405);
  assert.deepEqual(await status('HEAD'), [200, '']);
  assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
  assert.equal(endpoint.socket, socket);
});

test('socket placement: exact path, per-shim name in a dir, shortened when too long, off by default', () => {
  const shim = '/run/containerd/s/' + 'a'.repeat(64);
  assert.equal(metricsSocketPath(readConfig({}), shim), null);
  assert.equal(
    metricsSocketPath(readConfig({ TSSHIM_METRICS_SOCKET: '/x/m.sock', TSSHIM_METRICS_DIR: '/d' }), shim),
    '/x/m.sock'
  );
  assert.equal(
    metricsSocketPath(readConfig({ TSSHIM_METRICS_DIR: '/run/tsshim/metrics' }), shim),
    `/run/tsshim/metrics/${'a'.repeat(64)}.metrics.sock`
  );
  assert.equal(metricsSocketPath(readConfig({ TSSHIM_METRICS_DIR: '/d' }), '', 42), '/d/pid-42.metrics.sock');
  const deep = '/tmp/' + 'x'.repeat(40);
  const p = metricsSocketPath(readConfig({ TSSHIM_METRICS_DIR: deep }), shim)!;
  assert.ok(Buffer.byteLength(p) <= 107, `${p.length}: ${p}`);
  assert.match(path.basename(p), /^a{16,}\.metrics\.sock$/);
});

test('a live socket is not taken over; a stale one is replaced; close removes it', async () => {
  await assert.rejects(startMetricsEndpoint(socket, daemon), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
  assert.equal((await httpGetUnix(socket, '/metrics')).status, 200, 'first endpoint still serves');

  // A socket file nobody listens on (a shim that was SIGKILLed).
  const stale = tmp.path('stale.sock');
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(stale, r));
  // Closing a listening net.Server unlinks its path; make a stale file by hard-linking it first.
  const kept = tmp.path('stale-kept.sock');
  fs.linkSync(stale, kept);
  await new Promise<void>((r) => srv.close(() => r()));
  assert.ok(fs.existsSync(kept));
  const e2 = await startMetricsEndpoint(kept, daemon);
  assert.equal((await httpGetUnix(kept, '/metrics')).status, 200);
  e2.close();
  assert.equal(fs.existsSync(kept), false, 'close removes the socket file');
});

test('startConfiguredMetrics: null when off, null (and a warning) when the path cannot be used', async () => {
  const warnings: string[] = [];
  const d = {
    ...fakeDaemon(),
    log: {
      info() {},
      warn: (m: string) => {
        warnings.push(m);
      },
    },
  };
  assert.equal(await startConfiguredMetrics(d, readConfig({})), null);
  assert.equal(await startConfiguredMetrics(d, readConfig({ TSSHIM_METRICS_SOCKET: socket })), null);
  assert.deepEqual(warnings, ['metrics endpoint not started']);
  const dir = tmp.path('perdir');
  const ep = await startConfiguredMetrics(
    { ...d, socket: '/run/containerd/s/feed' },
    readConfig({ TSSHIM_METRICS_DIR: dir })
  );
  assert.ok(ep);
  assert.ok(fs.statSync(path.join(dir, 'feed.metrics.sock')).isSocket());
  ep.close();
});

test('quiesce keeps the socket and its waiting scrapes; the next server of the fd (an upgrade) answers them', async () => {
  const sock = tmp.path('q/shim.metrics.sock');
  const first = await startMetricsEndpoint(sock, daemon);
  assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
  assert.equal((await httpGetUnix(sock, '/metrics')).status, 200);
  const fd = await first.quiesce();
  assert.ok(fs.statSync(sock).isSocket(), 'the path stays while quiesced');
  let answered: number | null = null;
  const waiting = httpGetUnix(sock, '/metrics', 10_000).then((r) => (answered = r.status));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(answered, null, 'nobody serves while quiesced: the scrape waits');
  const next = await startMetricsEndpoint(sock, daemon, fd); // what the upgraded program does
  await waiting;
  assert.equal(answered, 200, 'the scrape that waited is answered');
  // Given up instead: the same endpoint serves again.
  const fd2 = await next.quiesce();
  assert.equal(typeof fd2, 'number');
  await next.resume();
  assert.equal((await httpGetUnix(sock, '/metrics')).status, 200);
  next.close();
  assert.equal(fs.existsSync(sock), false, 'close removes the socket file');
  assert.deepEqual(
    fs.readdirSync(path.dirname(sock)).filter((n) => n.includes('.new')),
    [],
    'no temporary socket left'
  );
});

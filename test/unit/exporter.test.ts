// tsshim exporter against in-process shims: the exposition format (families once, escaping, no
// duplicate series), per-container and per-shim series with pod labels from the bundle, a hanging
// shim answered with tsshim_scrape_error within the deadline, foreign and dead sockets skipped,
// the HTTP endpoint, and --listen parsing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { Server } from '../../src/ttrpc';
import { Exposition, formatLabels } from '../../src/cli/exporter-text';
import { Exporter, handler, isLoopback, parseListen, repeatedFlag } from '../../src/cli/exporter';
import { mapLimit } from '../../src/cli/limit';
import { UsageError } from '../../src/cli/args';
import {
  fakeContainer,
  fakeDaemon,
  serveShim,
  serveForeignAndDeadSockets,
  tempDir,
  MiB,
} from '../support/shim-service-fixture';

const tmp = tempDir('tsshim-exp-');
const sockets = tmp.path('s');
const shimA = path.join(sockets, 'aaaa'); // fixture defaults: web (running), db (pausing), old (stopped)
const shimB = path.join(sockets, 'bbbb'); // one pod container, CRI annotations in its bundle
const runcLike = path.join(sockets, 'cccc'); // answers Unimplemented
const dead = path.join(sockets, 'dddd'); // socket file, nobody listening
const hung = path.join(sockets, 'eeee'); // accepts, never answers
const servers: Server[] = [];
const hungServer = net.createServer(() => {
  /* never answers */
});

function bundleWithAnnotations(annotations: Record<string, string>): string {
  const dir = tmp.path(`bundle-${Object.keys(annotations).length}-${Math.random().toString(16).slice(2)}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations }));
  return dir;
}

before(async () => {
  fs.mkdirSync(sockets);
  servers.push(await serveShim(shimA, fakeDaemon()));
  const pod = fakeContainer({ namespace: 'k8s.io', id: 'c1', pid: process.pid, state: 'running' });
  (pod as any).bundle = bundleWithAnnotations({
    'io.kubernetes.cri.sandbox-name': 'web-7d9f"x\\y',
    'io.kubernetes.cri.sandbox-namespace': 'shop',
    'io.kubernetes.cri.container-name': 'nginx',
  });
  // Both fake shims live in this process (same pid): another group keeps their series apart.
  servers.push(await serveShim(shimB, { ...fakeDaemon([pod]), group: 'pod1' }));
  servers.push(await serveForeignAndDeadSockets(runcLike, dead, tmp.dir));
  await new Promise<void>((r) => hungServer.listen(hung, r));
});

after(async () => {
  for (const s of servers) await s.shutdown(100);
  hungServer.close();
  tmp.remove();
});

/** name{labels} -> value, for the samples of an exposition. */
function samples(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    assert.ok(!m.has(line.slice(0, i)), `duplicate series ${line.slice(0, i)}`);
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

function find(s: Map<string, number>, name: string, ...parts: string[]): [string, number][] {
  return [...s].filter(([k]) => (k === name || k.startsWith(name + '{')) && parts.every((p) => k.includes(p)));
}

function promtoolCheck(text: string): { ok: boolean; out: string } | null {
  if (!fs.existsSync('/usr/bin/promtool')) return null;
  const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  // Lint remarks (e.g. counters without _total) exit 3; parse errors exit 1.
  return {
    ok: r.status === 0 || (r.status === 3 && !/error while linting|parse/i.test(r.stderr + r.stdout)),
    out: r.stderr + r.stdout,
  };
}

test('exposition: HELP/TYPE once per family, sorted label names, escaped values, duplicates dropped', () => {
  const x = new Exposition();
  x.family('b_total', 'counter', 'B.\nsecond line')
    .family('a', 'gauge', 'A.')
    .family('empty', 'gauge', 'never sampled');
  x.sample('b_total', 1, { z: '1', a: 'q"\\\n' });
  x.sample('a', 2);
  x.sample('b_total', 9, { a: 'q"\\\n', z: '1' }); // same series, other label order: dropped
  x.sample('b_total', 3, { a: 'other', empty: '' });
  assert.equal(
    x.text(),
    [
      '# HELP a A.',
      '# TYPE a gauge',
      'a 2',
      '# HELP b_total B.\\nsecond line',
      '# TYPE b_total counter',
      'b_total{a="q\\"\\\\\\n",z="1"} 1',
      'b_total{a="other"} 3',
      '',
    ].join('\n')
  );
  assert.throws(() => x.family('a', 'counter', 'again'), /declared as gauge and counter/);
  assert.throws(() => x.sample('nope', 1), /undeclared/);
  assert.throws(() => x.sample('a', 1, {}, 'a_bucket'), /does not belong/);
  assert.throws(() => formatLabels({ 'bad-name': 'x' }), /invalid label name/);
});

test('exporter: container and shim series for every tsshim shim; foreign and dead sockets skipped; a hung shim is an error, not a wait', async () => {
  const exp = new Exporter({ states: [], socketDir: sockets, shimTimeoutMs: 500, concurrency: 2 });
  const t0 = Date.now();
  const text = await exp.scrape();
  assert.ok(Date.now() - t0 < 10_000, 'bounded by the per-shim deadline');
  const s = samples(text);

  // Every family's HELP and TYPE exactly once.
  const types = text
    .split('\n')
    .filter((l) => l.startsWith('# TYPE '))
    .map((l) => l.split(' ')[2]);
  assert.deepEqual(types, [...new Set(types)].sort());

  // Running containers have resource series (fixture: 13 MiB used, 1 MiB inactive file, 512 MiB limit, 3 pids).
  const web = 'container="web"';
  assert.equal(find(s, 'container_memory_usage_bytes', web)[0]?.[1], 13 * MiB);
  assert.equal(find(s, 'container_memory_working_set_bytes', web)[0]?.[1], 12 * MiB);
  assert.equal(find(s, 'container_spec_memory_limit_bytes', web)[0]?.[1], 512 * MiB);
  assert.equal(find(s, 'container_threads', web)[0]?.[1], 3);
  assert.ok(find(s, 'container_cpu_usage_seconds_total', web)[0]?.[1] > 0);
  assert.equal(find(s, 'container_memory_usage_bytes', 'container="db"').length, 1, 'pausing container still sampled');
  // A stopped container keeps its info series but has no resource series.
  assert.equal(find(s, 'tsshim_container_info', 'container="old"').length, 1);
  assert.equal(find(s, 'container_memory_usage_bytes', 'container="old"').length, 0);

  // Labels: namespace, container, shim_pid; pod labels from the bundle's CRI annotations, escaped.
  const c1 = find(s, 'container_memory_usage_bytes', 'container="c1"');
  assert.equal(c1.length, 1, text);
  assert.match(c1[0][0], /container_name="nginx"/);
  assert.match(c1[0][0], /namespace="k8s\.io"/);
  assert.match(c1[0][0], /pod="web-7d9f\\"x\\\\y"/);
  assert.match(c1[0][0], /pod_namespace="shop"/);
  assert.match(c1[0][0], new RegExp(`shim_pid="${process.pid}"`));

  // Per-shim series carry namespace, container, group, shim_pid, version.
  const info = find(s, 'tsshim_info');
  assert.equal(info.length, 2, 'two tsshim shims');
  for (const [k] of info)
    for (const l of ['namespace=', 'container=', 'group=', 'shim_pid=', 'version=']) assert.ok(k.includes(l), k);
  assert.equal(find(s, 'tsshim_events_pending')[0]?.[1], 2);
  assert.ok(find(s, 'tsshim_events_oldest_pending_age_seconds')[0]?.[1] >= 2.9);
  assert.equal(find(s, 'tsshim_rpc_duration_seconds_count', 'method="Create"')[0]?.[1], 2);
  assert.equal(find(s, 'tsshim_rpc_duration_seconds_bucket', 'method="Create"', 'le="+Inf"')[0]?.[1], 2);

  // Scrape errors: the hung shim only; runc-like and dead sockets are not shims at all.
  assert.equal(find(s, 'tsshim_scrape_error', `socket="${hung}"`)[0]?.[1], 1);
  assert.equal(find(s, 'tsshim_scrape_error', `socket="${shimA}"`)[0]?.[1], 0);
  assert.equal(find(s, 'tsshim_scrape_error', `socket="${runcLike}"`).length, 0);
  assert.equal(find(s, 'tsshim_scrape_error', `socket="${dead}"`).length, 0);
  assert.equal(find(s, 'tsshim_exporter_shims')[0]?.[1], 3);

  const check = promtoolCheck(text);
  if (check) assert.ok(check.ok, `promtool check metrics: ${check.out}`);
});

test('exporter: concurrent GETs share one scrape; /healthz; unknown path 404', async () => {
  const exp = new Exporter({ states: [], socketDir: sockets, shimTimeoutMs: 300, concurrency: 4 });
  const a = exp.scrape();
  assert.equal(exp.scrape(), a);
  await a;
  const server = http.createServer(handler(exp));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const get = (p: string) =>
    new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: p }, (res) => {
          let body = '';
          res.on('data', (d) => {
            body += d;
          });
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body })
          );
        })
        .on('error', reject);
    });
  try {
    const m = await get('/metrics');
    assert.equal(m.status, 200);
    assert.match(m.type, /^text\/plain; version=0\.0\.4/);
    assert.match(m.body, /^container_cpu_usage_seconds_total\{/m);
    assert.deepEqual([(await get('/healthz')).status, (await get('/healthz')).body], [200, 'ok\n']);
    assert.equal((await get('/nope')).status, 404);
  } finally {
    server.close();
    server.closeAllConnections();
  }
});

test('exporter: a state dir without tasks yet is empty, not an error', async () => {
  const exp = new Exporter({ states: [tmp.path('no-such-state')], shimTimeoutMs: 300, concurrency: 1 });
  const s = samples(await exp.scrape());
  assert.equal(find(s, 'tsshim_exporter_shims')[0]?.[1], 0);
});

test('--listen parsing, loopback detection, repeated --state', () => {
  assert.deepEqual(parseListen('127.0.0.1:9743'), { host: '127.0.0.1', port: 9743 });
  assert.deepEqual(parseListen('[::1]:80'), { host: '::1', port: 80 });
  assert.deepEqual(parseListen(':9743'), { host: '', port: 9743 });
  assert.throws(() => parseListen('9743'), UsageError);
  assert.throws(() => parseListen('h:70000'), UsageError);
  assert.ok(isLoopback('127.0.0.1') && isLoopback('127.1.2.3') && isLoopback('::1') && isLoopback('localhost'));
  assert.ok(!isLoopback('0.0.0.0') && !isLoopback('') && !isLoopback('10.0.0.1') && !isLoopback('::'));
  assert.deepEqual(repeatedFlag(['exporter', '--state', '/a', '--state=/b', '--listen', 'x:1'], 'state'), ['/a', '/b']);
});

test('mapLimit keeps at most `limit` in flight and the input order', async () => {
  let inFlight = 0;
  let most = 0;
  const out = await mapLimit([5, 1, 4, 2, 3], 2, async (n) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, n));
    inFlight--;
    return n * 10;
  });
  assert.deepEqual(out, [50, 10, 40, 20, 30]);
  assert.equal(most, 2);
});

test("a scrape tells the shim's idle collector about its garbage (background), never as Task activity", async () => {
  let background = 0;
  const d = {
    ...fakeDaemon(),
    idleGc: {
      collections: 0,
      background: () => {
        background++;
      },
    },
  };
  const socket = path.join(tmp.dir, 'bg.sock');
  const server = await serveShim(socket, d);
  try {
    const exp = new Exporter({ states: [], socketDir: tmp.dir, shimTimeoutMs: 2000, concurrency: 1 });
    const s = samples(await exp.scrape());
    assert.equal(find(s, 'tsshim_scrape_error', `socket="${socket}"`)[0]?.[1], 0);
    assert.ok(background >= 1, 'Inspect (and the Stats round) signal background work');
  } finally {
    await server.shutdown(100);
  }
});

test('tsshim exporter warns when told to listen beyond loopback, and not otherwise', async () => {
  const { run } = await import('../../src/cli/main');
  const start = async (listen: string) => {
    let err = '';
    const ac = new AbortController();
    const ctx = {
      out: { write() {} },
      err: {
        write: (s: string) => {
          err += s;
          if (s.includes('listening on')) ac.abort();
        },
      },
      env: {},
      signal: ac.signal,
    };
    const code = await run(['exporter', '--listen', listen, '--socket-dir', sockets], ctx);
    return { code, err };
  };
  const wide = await start('0.0.0.0:0');
  assert.equal(wide.code, 0, wide.err);
  assert.match(wide.err, /WARNING: listening on 0\.0\.0\.0:0, not loopback/);
  const local = await start('127.0.0.1:0');
  assert.equal(local.code, 0, local.err);
  assert.doesNotMatch(local.err, /WARNING/);
  assert.match(local.err, /listening on http:\/\/127\.0\.0\.1:\d+\/metrics/);
  assert.equal((await start('nonsense')).code, 2);
});

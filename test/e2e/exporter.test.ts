// `tsshim exporter` scraped by a real Prometheus (Debian's prometheus package): a private containerd
// runs tsshim containers in every shim mode (one per-container shim, a pod-grouped pair with CRI
// annotations, one per-node shim in its own namespace); Prometheus scrapes the exporter every
// second on loopback, and its HTTP query API must show every running container's series, a deleted
// container's series gone stale, an OOM kill counted, and the exporter target up without error
// (Prometheus rejects a whole scrape on any format error, so lastError catches those).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { startContainerd, uniqueId, repoRoot, pidAlive, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import { makeRootfs, PATH_ENV_ARGS } from '../support/rootfs';
import { until as untilShared } from '../support/wait';

const PROMETHEUS = '/usr/bin/prometheus';
const skip = fs.existsSync(PROMETHEUS)
  ? false
  : `${PROMETHEUS} is missing: apt-get install prometheus (Debian 12: 2.42)`;

let c: Containerd;
let exporterProc: ChildProcess | undefined;
let promProc: ChildProcess | undefined;
let promPort = 0;
let exporterPort = 0;
let exporterLog = '';
let promLog = '';

const NODE_NS = 'exp-node';
const single = uniqueId('exp-one');
const podA = uniqueId('exp-poda');
const podB = uniqueId('exp-podb');
const perNode = uniqueId('exp-node');
const POD = 'shop-frontend-5f7d';
const POD_NS = 'shop';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function get(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath}: timeout`)));
    req.on('error', reject);
  });
}

/** Prometheus scrapes every few seconds and answers errors while starting: both logs on a timeout. */
const until = <T>(what: string, fn: () => Promise<T>, timeoutMs = 90_000) =>
  untilShared(fn, what, {
    timeoutMs,
    everyMs: 500,
    retryErrors: true,
    detail: () => `exporter log:\n${exporterLog.slice(-3000)}\nprometheus log:\n${promLog.slice(-3000)}`,
  });

interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(q: string): Promise<PromSample[]> {
  const r = await get(promPort, `/api/v1/query?query=${encodeURIComponent(q)}`);
  const j = JSON.parse(r.body);
  if (j.status !== 'success') throw new Error(`query ${q}: ${r.body}`);
  return j.data.result as PromSample[];
}

async function exporterTarget(): Promise<{ health: string; lastError: string; lastScrape: string }> {
  const j = JSON.parse((await get(promPort, '/api/v1/targets?state=active')).body);
  const t = (j.data.activeTargets as any[]).find((x) => x.labels?.job === 'tsshim');
  if (!t) throw new Error(`no tsshim target in ${JSON.stringify(j.data.activeTargets)}`);
  return t;
}

/** The target is up and its last scrape had no error; else throws Prometheus's lastError. */
async function targetHealthy(): Promise<true> {
  const t = await exporterTarget();
  if (t.health !== 'up' || t.lastError)
    throw new Error(`target ${t.health}, lastError: ${JSON.stringify(t.lastError)}`);
  return true;
}

async function runDetached(id: string, extra: string[], ns?: string): Promise<void> {
  const r = await c.ctr(
    [
      'run',
      '-d',
      '--runtime',
      TSSHIM_RUNTIME,
      ...PATH_ENV_ARGS,
      ...extra,
      '--rootfs',
      makeRootfs(c.dir),
      id,
      '/bin/sleep',
      '100000',
    ],
    { timeoutMs: 60_000, namespace: ns }
  );
  assert.equal(r.code, 0, `ctr run ${id}: ${r.stderr}\n${c.logTail(3000)}`);
}

async function removeContainer(id: string, ns?: string): Promise<void> {
  await c.ctr(['task', 'kill', '-s', 'SIGKILL', id], { namespace: ns }).catch(() => {});
  await c.ctr(['task', 'delete', '--force', id], { timeoutMs: 30_000, namespace: ns }).catch(() => {});
  await c.ctr(['container', 'rm', id], { namespace: ns }).catch(() => {});
}

function stopByPid(p: ChildProcess | undefined): Promise<void> {
  if (!p?.pid || p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      if (pidAlive(p.pid!)) process.kill(p.pid!, 'SIGKILL');
    }, 10_000);
    p.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    process.kill(p.pid!, 'SIGTERM');
  });
}

before(async () => {
  if (skip) return;
  c = await startContainerd({ logLevel: 'info' });
  const podAnnotations = [
    '--annotation',
    `io.containerd.tsshim.v2.group=${POD}`,
    '--annotation',
    `io.kubernetes.cri.sandbox-name=${POD}`,
    '--annotation',
    `io.kubernetes.cri.sandbox-namespace=${POD_NS}`,
  ];
  // 32 MiB: an exec that allocates 128 MiB is OOM-killed while the container lives on.
  await runDetached(single, ['--memory-limit', String(32 << 20)]);
  await runDetached(podA, [...podAnnotations, '--annotation', 'io.kubernetes.cri.container-name=app']);
  await runDetached(podB, [...podAnnotations, '--annotation', 'io.kubernetes.cri.container-name=sidecar']);
  const perNodeToml = path.join(c.dir, 'per-node.toml');
  fs.writeFileSync(perNodeToml, 'PerNode = true\n');
  await runDetached(perNode, ['--runtime-config-path', perNodeToml], NODE_NS);

  exporterPort = await freePort();
  exporterProc = spawn(
    process.execPath,
    [
      path.join(repoRoot(), 'bin', 'tsshim'),
      'exporter',
      '--listen',
      `127.0.0.1:${exporterPort}`,
      '--state',
      c.state,
      '--timeout',
      '800',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] }
  );
  exporterProc.stdout!.on('data', (d) => {
    exporterLog += d;
  });
  exporterProc.stderr!.on('data', (d) => {
    exporterLog += d;
  });
  await until('exporter /healthz', async () => (await get(exporterPort, '/healthz')).status === 200);

  const promDir = fs.mkdtempSync(path.join(c.dir, 'prom-'));
  promPort = await freePort();
  fs.writeFileSync(
    path.join(promDir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s', // the exporter's own per-shim deadline (--timeout) is shorter
      'scrape_configs:',
      '  - job_name: tsshim',
      '    static_configs:',
      `      - targets: ['127.0.0.1:${exporterPort}']`,
      '',
    ].join('\n')
  );
  // Our own process on our own port and data dir; a system prometheus (if any) is never touched.
  promProc = spawn(
    PROMETHEUS,
    [
      `--config.file=${path.join(promDir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(promDir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      '--log.level=warn',
    ],
    { cwd: promDir, stdio: ['ignore', 'pipe', 'pipe'] }
  );
  promProc.stdout!.on('data', (d) => {
    promLog += d;
  });
  promProc.stderr!.on('data', (d) => {
    promLog += d;
  });
  await until('prometheus ready', async () => (await get(promPort, '/-/ready')).status === 200);
});

after(async () => {
  await stopByPid(promProc);
  await stopByPid(exporterProc);
  if (c) {
    for (const id of [single, podA, podB]) await removeContainer(id);
    await removeContainer(perNode, NODE_NS);
    await c.stop();
  }
});

/** Samples Prometheus dropped from scrapes (duplicates, out of order): these do not fail a scrape. */
async function droppedSamples(): Promise<string[]> {
  const body = (await get(promPort, '/metrics')).body;
  return body
    .split('\n')
    .filter(
      (l) =>
        /^prometheus_target_scrapes_sample_(duplicate_timestamp|out_of_order|out_of_bounds)_total /.test(l) &&
        Number(l.split(' ')[1]) !== 0
    );
}

test(
  'Prometheus scrapes the exporter: target up, no scrape error, no dropped sample, and promtool accepts the exposition',
  { skip },
  async () => {
    // A format error fails every scrape, so waiting out a scrape that a loaded machine made slow
    // cannot hide one: the wait ends with Prometheus's own lastError.
    await until('the exporter target to be up without error', targetHealthy);
    assert.deepEqual(await droppedSamples(), [], 'Prometheus dropped samples of the exposition');
    const body = (await get(exporterPort, '/metrics')).body;
    // promtool parses with the strict parser (a family split in two, a second HELP or TYPE fail here).
    const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool check metrics: ${r.stderr}${r.stdout}`);
    const series = body
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.slice(0, l.lastIndexOf(' ')));
    assert.deepEqual(
      series.filter((s, i) => series.indexOf(s) !== i),
      [],
      'duplicate series'
    );
  }
);

test(
  'every running container has its series, with shim and pod labels, in all three shim modes',
  { skip },
  async () => {
    const expected = [
      { id: single, ns: c.namespace },
      { id: podA, ns: c.namespace },
      { id: podB, ns: c.namespace },
      { id: perNode, ns: NODE_NS },
    ];
    for (const { id, ns } of expected) {
      for (const metric of [
        'container_cpu_usage_seconds_total',
        'container_memory_usage_bytes',
        'container_memory_working_set_bytes',
        'container_spec_memory_limit_bytes',
        'container_threads',
        'container_oom_events_total',
        'tsshim_container_info',
      ]) {
        const rows = await until(`${metric} of ${id}`, async () => {
          const rows = await query(`${metric}{container="${id}"}`);
          return rows.length ? rows : undefined;
        });
        assert.equal(rows.length, 1, `${metric}{container="${id}"}: ${JSON.stringify(rows)}`);
        assert.equal(rows[0].metric.namespace, ns);
        assert.ok(
          c.shimPids().includes(Number(rows[0].metric.shim_pid)),
          `${id}: shim_pid ${rows[0].metric.shim_pid} is one of ${c.shimPids()}`
        );
      }
    }
    const limit = await query(`container_spec_memory_limit_bytes{container="${single}"}`);
    assert.equal(Number(limit[0].value[1]), 32 << 20);
    assert.equal(Number((await query(`container_threads{container="${single}"}`))[0].value[1]), 1, 'one sleep');

    // The pod pair shares one shim and carries the CRI pod labels; the others carry none.
    const info = async (id: string) => (await query(`tsshim_container_info{container="${id}"}`))[0].metric;
    const [a, b, one, node] = [await info(podA), await info(podB), await info(single), await info(perNode)];
    assert.equal(a.shim_pid, b.shim_pid);
    assert.notEqual(a.shim_pid, one.shim_pid);
    assert.deepEqual([a.pod, a.pod_namespace, a.container_name, b.container_name], [POD, POD_NS, 'app', 'sidecar']);
    assert.equal(one.pod, undefined);
    assert.equal(node.group, '.tsshim-per-node');

    // Per-shim series: one tsshim_info per shim (three shims), each with the identity labels.
    const shims = await query('tsshim_info');
    assert.equal(new Set(shims.map((s) => s.metric.shim_pid)).size, 3, JSON.stringify(shims));
    for (const s of shims)
      for (const l of ['namespace', 'group', 'shim_pid', 'version'])
        assert.ok(s.metric[l], `${l} in ${JSON.stringify(s.metric)}`);
    assert.ok((await query('tsshim_events_pending')).length >= 3);
    // Every shim answers (a scrape slowed down by a loaded machine may fail once: wait it out).
    await until('no shim scrape errors', async () => (await query('tsshim_scrape_error == 1')).length === 0);
    assert.equal((await query('tsshim_scrape_error == 0')).length, 3);
  }
);

test('an OOM kill in a container raises its container_oom_events_total', { skip }, async () => {
  const { before } = await until('OOM counter present', async () => {
    const r = await query(`container_oom_events_total{container="${single}"}`);
    return r.length ? { before: Number(r[0].value[1]) } : undefined;
  });
  const r = await c.ctr(
    ['task', 'exec', '--exec-id', 'hog', single, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=128M', 'count=1'],
    { timeoutMs: 60_000 }
  );
  assert.equal(r.code, 137, `the exec should be OOM-killed: ${r.stderr}`);
  const after = await until('the OOM counter to rise', async () => {
    const q = await query(`container_oom_events_total{container="${single}"}`);
    const v = q.length ? Number(q[0].value[1]) : 0;
    return v > before ? v : undefined;
  });
  assert.ok(after >= before + 1);
  assert.equal(
    (await query(`container_memory_usage_bytes{container="${single}"}`)).length,
    1,
    'the container lives on'
  );
});

test("a deleted container's series go stale; its pod neighbour keeps its own", { skip }, async () => {
  await until(
    'podB series',
    async () => (await query(`container_memory_usage_bytes{container="${podB}"}`)).length === 1
  );
  await removeContainer(podB);
  await until('podB series to go stale', async () => {
    const rows = await query(`{container="${podB}"}`);
    return rows.length === 0;
  });
  assert.equal((await query(`container_memory_usage_bytes{container="${podA}"}`)).length, 1);
  await until('the exporter target to be up without error', targetHealthy);
  assert.deepEqual(await droppedSamples(), []);
});

test('the PromQL queries in README run on this Prometheus', { skip }, async () => {
  const readme = fs.readFileSync(path.join(repoRoot(), 'README.md'), 'utf8');
  const block = /```promql\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, 'README has a promql block');
  const queries = block[1].split('\n').filter((l) => l.trim() && !l.startsWith('#'));
  assert.ok(queries.length >= 5, queries.join('\n'));
  for (const q of queries) await query(q); // throws on a parse or evaluation error
  // The memory-limit question finds the container with a limit (its working set is far below 90%).
  assert.equal(
    (await query(`container_memory_working_set_bytes{container="${single}"} / (container_spec_memory_limit_bytes > 0)`))
      .length,
    1
  );
});

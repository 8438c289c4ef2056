// tsshim.v1.Shim over a real unix socket with a fake daemon: List, Inspect JSON, the Stats stream
// (timing, ids, cancellation) and the StatsSample extension fields.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Reader, Writer } from 'protobufjs/minimal';
import { google, io, tsshim } from '../../src/gen/proto';
import { Client, Code, TtrpcError, type Server } from '../../src/ttrpc';
import {
  SHIM_SERVICE,
  decodeStatsSample,
  encodeStatsSample,
  processUsage,
  openFds,
  type StatsSampleMessage,
} from '../../src/diag/introspection';
import {
  CPU_PER_SAMPLE_NS,
  MiB,
  fakeDaemon,
  serveShim,
  tempDir,
  type FakeDaemon,
} from '../support/shim-service-fixture';

const tmp = tempDir();
const socket = tmp.path('shim.sock');
let daemon: FakeDaemon;
let server: Server;
let client: Client;

before(async () => {
  daemon = fakeDaemon();
  server = await serveShim(socket, daemon);
  client = await Client.connect(socket);
});

after(async () => {
  client.close();
  await server.shutdown(100);
  tmp.remove();
});

// ttrpc has no cancel message: a server stream stops when its connection closes, so every stream
// test uses a connection of its own and closes it.
async function streamSamples(
  id: string,
  interval: number,
  until: (got: StatsSampleMessage[]) => boolean
): Promise<StatsSampleMessage[]> {
  const c = await Client.connect(socket);
  const got: StatsSampleMessage[] = [];
  try {
    for await (const m of c.serverStream(SHIM_SERVICE, 'Stats', statsReq(id, interval))) {
      got.push(decodeStatsSample(m));
      if (until(got)) break;
    }
  } finally {
    c.close();
  }
  return got;
}

const statsReq = (id: string, interval: number) =>
  tsshim.v1.StatsStreamRequest.encode({ id, interval_ms: interval }).finish();

test('List: one summary per container with status words, pid, bundle, start time and exec count', async () => {
  const res = tsshim.v1.ListResponse.decode(
    await client.call(SHIM_SERVICE, 'List', google.protobuf.Empty.encode({}).finish())
  );
  const byId = new Map(res.containers.map((c) => [c.id, c]));
  assert.deepEqual([...byId.keys()].sort(), ['db', 'old', 'web']);
  const web = byId.get('web')!;
  assert.equal(web.namespace, 'default');
  assert.equal(web.pid, process.pid);
  assert.equal(web.status, 'running');
  assert.equal(web.bundle, '/run/bundles/default/web');
  assert.equal(web.exec_count, 1);
  const started = Number(web.started_at!.seconds) * 1000;
  assert.ok(Math.abs(Date.now() - 65_000 - started) < 5000, `started_at ${started}`);
  assert.equal(byId.get('db')!.status, 'pausing', 'pausing wins over the running state');
  assert.equal(byId.get('db')!.namespace, 'k8s.io');
  assert.equal(byId.get('old')!.status, 'stopped');
  assert.equal(byId.get('old')!.exec_count, 0);
});

test('Inspect: JSON with identity, processes, outbox, rpc stats, counters, memory and fds', async () => {
  const res = tsshim.v1.InspectResponse.decode(
    await client.call(SHIM_SERVICE, 'Inspect', tsshim.v1.InspectRequest.encode({}).finish())
  );
  const j = JSON.parse(res.json);
  assert.equal(j.pid, process.pid);
  assert.equal(j.socket, '/run/containerd/s/0123abcd');
  assert.equal(j.group, 'web');
  assert.equal(j.namespace, 'default');
  assert.ok(j.uptime_s >= 119 && j.uptime_s < 200, `uptime ${j.uptime_s}`);
  assert.equal(typeof j.version, 'string');
  const web = j.containers.find((c: any) => c.id === 'web');
  assert.equal(web.init.pid, process.pid);
  assert.equal(web.init.state, 'running');
  assert.equal(web.init.exit, null);
  assert.equal(web.init.io.open, true);
  assert.ok(web.init.usage.rssBytes > 0, 'init usage read from /proc');
  assert.deepEqual(
    web.execs.map((e: any) => [e.exec_id, e.state]),
    [['sh', 'running']]
  );
  const old = j.containers.find((c: any) => c.id === 'old');
  assert.equal(old.init.exit.status, 137);
  assert.equal(old.init.io.open, false);
  assert.deepEqual(
    j.events.outbox.map((e: any) => [e.seq, e.topic]),
    [
      [41, '/tasks/exit'],
      [42, '/tasks/delete'],
    ]
  );
  assert.ok(j.events.outbox[0].age_ms >= 3000 && j.events.outbox[0].age_ms < 10_000);
  assert.equal(j.events.retries, 5);
  assert.equal(j.rpc.Create.count, 2);
  assert.equal(j.rpc.Create.mean_ms, 16.5);
  assert.equal(j.rpc.Create.le_ms['5'], 1);
  assert.equal(j.rpc.State.errors, 1);
  assert.deepEqual(j.counters, { reaped: 7, exitsPublished: 2 });
  assert.ok(j.memory.rss > 10 * MiB);
  assert.ok(j.fds.count >= 3 && j.fds.kinds.socket >= 2, JSON.stringify(j.fds));
});

test('Stats stream for one container: decodable metrics, init usage, one sample per interval', async () => {
  const t0 = Date.now();
  const samples = await streamSamples('web', 40, (got) => got.length === 4);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 110, `4 samples 40 ms apart took ${elapsed} ms`);
  for (const s of samples) {
    assert.equal(s.id, 'web');
    assert.equal(s.namespace, 'default');
    assert.equal(s.pid, process.pid);
    assert.equal(s.status, 'running');
    assert.equal(s.metrics!.type_url, 'io.containerd.cgroups.v1.Metrics');
    assert.ok(s.process_rss_bytes > 10 * MiB, 'RSS of the init pid from /proc');
    assert.ok(s.process_cpu_ns > 0);
  }
  const cpu = samples.map((s) => Number(io.containerd.cgroups.v1.Metrics.decode(s.metrics!.value).cpu!.usage!.total));
  for (let i = 1; i < cpu.length; i++) assert.equal(cpu[i] - cpu[i - 1], CPU_PER_SAMPLE_NS);
  const at = samples.map((s) => s.at.seconds * 1000 + s.at.nanos / 1e6);
  assert.ok(at[3] - at[0] >= 110, 'sample timestamps are spaced by the interval');
});

test('Stats stream with an empty id samples every container; a stopped one has no metrics', async () => {
  const seen = new Map<string, StatsSampleMessage>();
  await streamSamples('', 30, (got) => {
    for (const s of got) seen.set(`${s.namespace}/${s.id}`, s);
    return seen.size === 3;
  });
  assert.deepEqual([...seen.keys()].sort(), ['default/old', 'default/web', 'k8s.io/db']);
  assert.equal(seen.get('default/old')!.metrics, null);
  assert.equal(seen.get('default/old')!.status, 'stopped');
  assert.equal(seen.get('default/old')!.process_rss_bytes, 0);
  assert.ok(seen.get('k8s.io/db')!.metrics);
});

test('Stats stream for an unknown container fails with NotFound', async () => {
  await assert.rejects(
    async () => {
      for await (const _ of client.serverStream(SHIM_SERVICE, 'Stats', statsReq('nope', 30))) {
        /* nothing */
      }
    },
    (e: TtrpcError) => e.code === Code.NOT_FOUND && /nope/.test(e.message)
  );
});

test('Stats stream ends when its container is deleted, and stops sampling when the client goes', async () => {
  const c = await Client.connect(socket);
  const it = c.serverStream(SHIM_SERVICE, 'Stats', statsReq('db', 20))[Symbol.asyncIterator]();
  assert.equal((await it.next()).done, false);
  const saved = daemon.containers;
  daemon.containers = saved.filter((x) => x.id !== 'db');
  try {
    let n = 0;
    while (!(await it.next()).done) n++;
    assert.ok(n <= 2, 'at most the samples already in flight');
  } finally {
    daemon.containers = saved;
  }
  // A stream on another connection: closing that connection stops the handler.
  const c2 = await Client.connect(socket);
  let got = 0;
  for await (const _ of c2.serverStream(SHIM_SERVICE, 'Stats', statsReq('web', 20))) if (++got === 2) break;
  c2.close();
  await sleep(60);
  const calls = daemon.statsCalls;
  await sleep(100);
  assert.equal(daemon.statsCalls, calls, 'no sampling after the client closed');
  c.close();
});

test('StatsSample namespace and init usage round-trip; the generated decoder reads them', () => {
  const s: StatsSampleMessage = {
    id: 'x',
    exec_id: '',
    pid: 12,
    status: 'running',
    metrics: { type_url: 't', value: new Uint8Array([1, 2]) },
    at: { seconds: 1700000000, nanos: 5 },
    namespace: 'ns1',
    process_cpu_ns: 2 ** 40,
    process_rss_bytes: 123 * MiB,
  };
  const bytes = encodeStatsSample(s);
  assert.deepEqual(decodeStatsSample(bytes), { ...s, metrics: { type_url: 't', value: Buffer.from([1, 2]) } });
  const plain = tsshim.v1.StatsSample.decode(bytes);
  assert.equal(plain.id, 'x');
  assert.equal(plain.namespace, 'ns1');
  assert.equal(Number(plain.process_cpu_ns), 2 ** 40);
});

test('StatsSample: the wire numbers (100-102) and types of the shims that hand-encoded them', () => {
  // What shims sent before tsshim.proto declared the fields: the base message plus fields appended
  // by hand. A new CLI must decode it; a new shim must write the same tags, which old CLIs read.
  const w = new Writer();
  tsshim.v1.StatsSample.encode({ id: 'old', pid: 3, status: 'running', at: { seconds: 1, nanos: 2 } }, w);
  w.uint32((100 << 3) | 2).string('ns-old');
  w.uint32(101 << 3).uint64(5_000_000);
  w.uint32(102 << 3).uint64(4096);
  const old = decodeStatsSample(w.finish());
  assert.equal(old.namespace, 'ns-old');
  assert.equal(old.process_cpu_ns, 5_000_000);
  assert.equal(old.process_rss_bytes, 4096);
  const tags = new Map<number, number>();
  const r = Reader.create(encodeStatsSample({ ...old, metrics: null }));
  while (r.pos < r.len) {
    const tag = r.uint32();
    tags.set(tag >>> 3, tag & 7);
    r.skipType(tag & 7);
  }
  assert.equal(tags.get(100), 2, 'namespace: length-delimited');
  assert.equal(tags.get(101), 0, 'process_cpu_ns: varint');
  assert.equal(tags.get(102), 0, 'process_rss_bytes: varint');
});

test('processUsage and openFds read /proc', () => {
  const me = processUsage(process.pid)!;
  assert.ok(me.rssBytes > 10 * MiB && me.threads >= 1 && me.cpuNs > 0, JSON.stringify(me));
  assert.equal(processUsage(0), null);
  assert.equal(processUsage(2 ** 22 + 1), null);
  const fds = openFds();
  assert.ok(Math.abs(fds.count - (fs.readdirSync('/proc/self/fd').length - 1)) <= 1, JSON.stringify(fds));
});

test('fixture: fake daemon fits the view and its stats grow', async () => {
  const d = fakeDaemon();
  const a = io.containerd.cgroups.v1.Metrics.decode((await d.service.stats('default', 'web')).value);
  const b = io.containerd.cgroups.v1.Metrics.decode((await d.service.stats('default', 'web')).value);
  assert.equal(Number(b.cpu!.usage!.total) - Number(a.cpu!.usage!.total), CPU_PER_SAMPLE_NS);
  await assert.rejects(d.service.stats('default', 'old'), /cgroup does not exist/);
});

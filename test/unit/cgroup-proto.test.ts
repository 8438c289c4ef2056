// Our metrics objects must carry exactly the proto field names (keep-case), or protobufjs would
// silently drop the misspelt ones. Checked against proto/ itself, and encoded + decoded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import * as protobuf from 'protobufjs';
import { collectEncodedMetrics, collectMetrics, metricsAny } from '../../src/task/cgroups/metrics';

const REPO = resolve(__dirname, '../../..');
const V1 = join(REPO, 'test/fixtures/cgroup-v1');

function load(rel: string, name: string): protobuf.Type {
  const root = new protobuf.Root();
  root.loadSync(join(REPO, 'proto', rel), { keepCase: true });
  return root.lookupType(name);
}

/** Every property of `obj` is a field of `type`, recursively; returns how many were checked. */
function checkNames(type: protobuf.Type, obj: Record<string, unknown>, path: string): number {
  let n = 0;
  for (const [k, v] of Object.entries(obj)) {
    const f = type.fields[k];
    assert.ok(f, `${path}.${k} is not a field of ${type.fullName}`);
    n++;
    f.resolve();
    if (f.resolvedType instanceof protobuf.Type) {
      for (const item of Array.isArray(v) ? v : [v])
        n += checkNames(f.resolvedType, item as Record<string, unknown>, `${path}.${k}`);
    }
  }
  return n;
}

test('v1 metrics use io.containerd.cgroups.v1 field names and survive encode/decode', async () => {
  const Metrics = load('io/containerd/cgroups/v1/metrics.proto', 'io.containerd.cgroups.v1.Metrics');
  const paths: Record<string, string> = {};
  for (const c of ['cpu', 'cpuacct', 'memory', 'pids', 'blkio', 'hugetlb', 'rdma'])
    paths[c] = join(V1, 'sys/fs/cgroup', c, 'default/ctr1');
  const { metrics } = await collectMetrics(
    { version: 1, paths },
    { procRoot: join(V1, 'proc'), hugepagesDir: join(V1, 'hugepages') }
  );
  assert.ok(checkNames(Metrics, metrics as unknown as Record<string, unknown>, 'v1') > 100);
  const bytes = Metrics.encode(Metrics.create(metrics)).finish();
  const back = Metrics.toObject(Metrics.decode(bytes), { longs: String, defaults: false });
  assert.equal(back.memory.hierarchical_swap_limit, '9223372036854771712');
  assert.equal(back.memory.usage.limit, '268435456');
  assert.deepEqual(back.cpu.usage.per_cpu, ['33116070103', '53233248088']);
  assert.equal(back.blkio.io_service_bytes_recursive[0].device, '/dev/sda');
  assert.equal(back.hugetlb[1].pagesize, '2MB');
});

test('v2 metrics use io.containerd.cgroups.v2 field names and survive encode/decode (2^64-1 exact)', async () => {
  const Metrics = load('io/containerd/cgroups/v2/metrics.proto', 'io.containerd.cgroups.v2.Metrics');
  const { metrics } = await collectMetrics({ version: 2, dir: join(REPO, 'test/fixtures/cgroup-v2/default/ctr1') });
  assert.ok(checkNames(Metrics, metrics as unknown as Record<string, unknown>, 'v2') > 60);
  const decoded = Metrics.decode(Metrics.encode(Metrics.create(metrics)).finish());
  const back = Metrics.toObject(decoded, { longs: String });
  assert.equal(back.pids.limit, '18446744073709551615');
  assert.equal(back.memory.swap_limit, '18446744073709551615');
  assert.equal(back.memory_events.oom_kill, '2');
  assert.equal(back.cpu.psi.some.avg10, 1.25);
});

test('metricsAny / collectEncodedMetrics use the generated module (src/gen/proto.js) and the right type URLs', async () => {
  const Metrics = load('io/containerd/cgroups/v2/metrics.proto', 'io.containerd.cgroups.v2.Metrics');
  const h = { version: 2 as const, dir: join(REPO, 'test/fixtures/cgroup-v2/default/ctr1') };
  const any = metricsAny(await collectMetrics(h));
  assert.equal(any.type_url, 'io.containerd.cgroups.v2.Metrics');
  const back = Metrics.toObject(Metrics.decode(any.value), { longs: String });
  assert.equal(back.memory.usage, '17301504');
  assert.equal(back.pids.limit, '18446744073709551615');
  const enc = await collectEncodedMetrics(h);
  assert.equal(enc.typeUrl, 'io.containerd.cgroups.v2.Metrics');
  assert.deepEqual(Buffer.from(enc.value), Buffer.from(any.value));

  const V1M = load('io/containerd/cgroups/v1/metrics.proto', 'io.containerd.cgroups.v1.Metrics');
  const paths = { memory: join(V1, 'sys/fs/cgroup/memory/default/ctr1') };
  const v1 = await collectEncodedMetrics({ version: 1, paths });
  assert.equal(v1.typeUrl, 'io.containerd.cgroups.v1.Metrics');
  const m1 = V1M.toObject(V1M.decode(v1.value), { longs: String });
  assert.equal(m1.memory.kernel_tcp.failcnt, '1');
  assert.equal(m1.memory_oom_control.oom_kill, '3');
});

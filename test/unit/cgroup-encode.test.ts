// The metrics messages are written by hand (src/task/cgroups/encode.ts): byte for byte what the
// generated protobufjs encoder makes of the same object, for the fixtures, the live cgroup of this
// process, and the edge cases of the wire format (64-bit values, long nested messages, strings).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import * as proto from '../../src/gen/proto';
import { cgroupForPid } from '../../src/task/cgroups/discovery';
import { encodeMetricsV1, encodeMetricsV2 } from '../../src/task/cgroups/encode';
import { collectMetrics, releaseCgroupFiles } from '../../src/task/cgroups/metrics';
import type { MetricsV1 } from '../../src/task/cgroups/stats-v1';
import type { MetricsV2 } from '../../src/task/cgroups/stats-v2';
import { u64, MAX_U64 } from '../../src/task/cgroups/u64';

const REPO = resolve(__dirname, '../../..');
const V1 = join(REPO, 'test/fixtures/cgroup-v1');
const G1 = proto.io.containerd.cgroups.v1.Metrics;
const G2 = proto.io.containerd.cgroups.v2.Metrics;

function generatedV1(m: MetricsV1): Buffer {
  return Buffer.from(G1.encode(G1.create(m as never)).finish());
}
function generatedV2(m: MetricsV2): Buffer {
  return Buffer.from(G2.encode(G2.create(m as never)).finish());
}

function v1Fixture(): Promise<{ metrics: MetricsV1 }> {
  const paths: Record<string, string> = {};
  for (const c of ['cpu', 'cpuacct', 'memory', 'pids', 'blkio', 'hugetlb', 'rdma'])
    paths[c] = join(V1, 'sys/fs/cgroup', c, 'default/ctr1');
  return collectMetrics(
    { version: 1, paths },
    { procRoot: join(V1, 'proc'), hugepagesDir: join(V1, 'hugepages') }
  ) as Promise<{ metrics: MetricsV1 }>;
}

test('v1 and v2 fixtures: the same bytes as the generated encoder', async () => {
  const { metrics: m1 } = await v1Fixture();
  assert.ok(m1.blkio && m1.hugetlb.length > 0 && m1.rdma && m1.memory_oom_control, 'the fixture covers every field');
  assert.deepEqual(Buffer.from(encodeMetricsV1(m1)), generatedV1(m1));
  for (const dir of ['ctr1', 'nocpu']) {
    const h = { version: 2 as const, dir: join(REPO, 'test/fixtures/cgroup-v2/default', dir) };
    const { metrics } = (await collectMetrics(h)) as { metrics: MetricsV2 };
    assert.deepEqual(Buffer.from(encodeMetricsV2(metrics)), generatedV2(metrics), dir);
    releaseCgroupFiles(h);
  }
});

test("this process's own cgroup: the same bytes as the generated encoder", async () => {
  const h = cgroupForPid(process.pid);
  if (!h) return; // no cgroups here
  try {
    const c = await collectMetrics(h);
    const bytes = c.typeUrl.includes('v2')
      ? [encodeMetricsV2(c.metrics as MetricsV2), generatedV2(c.metrics as MetricsV2)]
      : [encodeMetricsV1(c.metrics as MetricsV1), generatedV1(c.metrics as MetricsV1)];
    assert.deepEqual(Buffer.from(bytes[0]), bytes[1]);
  } finally {
    releaseCgroupFiles(h);
  }
});

test('edge cases: 2^64-1 and other 64-bit values, long nested messages (2- and 3-byte lengths), UTF-8, PSI doubles', () => {
  const big = u64(MAX_U64);
  const v1: MetricsV1 = {
    hugetlb: [{ usage: 2 ** 53 - 1, max: big, failcnt: u64(9223372036854771712n), pagesize: '2MB' }],
    pids: { current: 0, limit: 0 },
    cpu: {
      usage: {
        total: 2 ** 32,
        kernel: 2 ** 31,
        user: 127,
        per_cpu: Array.from({ length: 300 }, (_, i) => i * 2 ** 40),
      },
      throttling: { periods: 128, throttled_periods: 16383, throttled_time: 16384 },
    },
    blkio: {
      io_service_bytes_recursive: Array.from({ length: 400 }, (_, i) => ({
        op: i % 2 ? 'Read' : 'Wrïte',
        device: `/dev/sd${'é'.repeat(i % 5)}`,
        major: 8,
        minor: i,
        value: u64(BigInt(i) << 50n),
      })),
      io_serviced_recursive: [],
      io_queued_recursive: [],
      io_service_time_recursive: [],
      io_wait_time_recursive: [],
      io_merged_recursive: [],
      io_time_recursive: [],
      sectors_recursive: [{ op: '', device: '', major: 0, minor: 0, value: 0 }],
    },
    rdma: {
      current: [{ device: 'mlx', hca_handles: 4294967295, hca_objects: 0 }],
      limit: [],
    },
  };
  assert.deepEqual(Buffer.from(encodeMetricsV1(v1)), generatedV1(v1));
  const v2 = {
    pids: { current: 1, limit: big },
    cpu: {
      usage_usec: 1,
      user_usec: 2,
      system_usec: 3,
      nr_periods: 4,
      nr_throttled: 5,
      throttled_usec: 6,
      nr_bursts: 0,
      psi: {
        some: { avg10: 1.25, avg60: 0, avg300: 99.99, total: big },
        full: { avg10: 0, avg60: 0, avg300: 0, total: 0 },
      },
    },
    memory: {
      usage: 1,
      usage_limit: big,
      swap_usage: 0,
      swap_limit: big,
      anon: 5,
      psi: { full: { avg10: 0.5, avg60: 1, avg300: 2, total: 3 } },
    },
    rdma: { current: [], limit: [{ device: 'd', hca_handles: 1, hca_objects: 2 }] },
    io: { usage: [{ major: 259, minor: 0, rbytes: big, wbytes: 1, rios: 2, wios: 3 }], psi: {} },
    hugetlb: [{ current: 0, max: big, pagesize: '1GB', failcnt: 7 }],
    memory_events: { low: 0, high: 1, max: 2, oom: 3, oom_kill: 4 },
  } as unknown as MetricsV2;
  assert.deepEqual(Buffer.from(encodeMetricsV2(v2)), generatedV2(v2));
  // Encodings do not share a buffer with the next call.
  const a = encodeMetricsV2(v2);
  const copy = Buffer.from(a);
  encodeMetricsV1(v1);
  assert.deepEqual(Buffer.from(a), copy);
});

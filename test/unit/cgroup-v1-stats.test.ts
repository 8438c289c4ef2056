import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { existsSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import { join, resolve } from 'node:path';
import { cgroupForPid, type CgroupHandle } from '../../src/task/cgroups/discovery';
import { CgroupNotFoundError } from '../../src/task/cgroups/errors';
import { collectMetrics, METRICS_V1_TYPE_URL } from '../../src/task/cgroups/metrics';
import { fields, lines, parseKV, readOnce } from '../../src/task/cgroups/files';
import { parseFlatKeyed } from '../../src/task/cgroups/stats-v2';
import { collectV1, hugePageSizeName, type MetricsV1 } from '../../src/task/cgroups/stats-v1';
import { parseU64, u64ToBigInt, type U64 } from '../../src/task/cgroups/u64';
import { rmdirRetry } from '../support/cgroup';

const FIX = resolve(__dirname, '../../../test/fixtures/cgroup-v1');
const ROOT = join(FIX, 'sys/fs/cgroup');
const opts = { procRoot: join(FIX, 'proc'), hugepagesDir: join(FIX, 'hugepages') };
const BIG = 9223372036854771712n; // v1 "unlimited"
const big = (v: U64 | undefined) => u64ToBigInt(v);

function ctr1(): CgroupHandle {
  const paths: Record<string, string> = {};
  for (const c of ['cpu', 'cpuacct', 'memory', 'pids', 'blkio', 'hugetlb', 'rdma'])
    paths[c] = join(ROOT, c, 'default/ctr1');
  return { version: 1, paths };
}

async function collect(h: CgroupHandle): Promise<MetricsV1> {
  const r = await collectMetrics(h, opts);
  assert.equal(r.typeUrl, METRICS_V1_TYPE_URL);
  return r.metrics as MetricsV1;
}

test('v1 fixture: cpu from cpuacct (USER_HZ ticks -> ns) and cpu.stat throttling', async () => {
  const m = await collect(ctr1());
  assert.deepEqual(m.cpu, {
    usage: { total: 86349318191, user: 62500000000, kernel: 23840000000, per_cpu: [33116070103, 53233248088] },
    throttling: { periods: 250, throttled_periods: 12, throttled_time: 987654321 },
  });
});

test('v1 fixture: memory.stat fields, the four MemoryEntry groups and oom_control', async () => {
  const m = await collect(ctr1());
  const mem = m.memory!;
  const expectScalars: Record<string, number> = {
    cache: 245702656,
    rss: 37998592,
    rss_huge: 2097152,
    mapped_file: 50302976,
    dirty: 671744,
    writeback: 4096,
    pg_pg_in: 1728959,
    pg_pg_out: 1667855,
    pg_fault: 2873992,
    pg_maj_fault: 782,
    inactive_anon: 37789696,
    active_anon: 77824,
    inactive_file: 120004608,
    active_file: 125698048,
    unevictable: 8192,
    hierarchical_memory_limit: 268435456,
    total_cache: 245706752,
    total_rss: 38002688,
    total_rss_huge: 2097152,
    total_mapped_file: 50307072,
    total_dirty: 675840,
    total_writeback: 4096,
    total_pg_pg_in: 1728960,
    total_pg_pg_out: 1667856,
    total_pg_fault: 2873993,
    total_pg_maj_fault: 783,
    total_inactive_anon: 37793792,
    total_active_anon: 77825,
    total_inactive_file: 120008704,
    total_active_file: 125702144,
    total_unevictable: 8193,
  };
  for (const [k, v] of Object.entries(expectScalars)) assert.equal((mem as unknown as Record<string, U64>)[k], v, k);
  assert.equal(big(mem.hierarchical_swap_limit), BIG); // > 2^53: carried exactly as a Long
  assert.equal(Object.keys(mem).length, 32 + 4, 'exactly the 32 scalar fields and 4 entries');
  assert.deepEqual(mem.usage, { limit: 268435456, usage: 283705344, max: 290000896, failcnt: 17 });
  assert.deepEqual(
    { ...mem.swap, limit: big(mem.swap.limit) },
    { limit: BIG, usage: 283709440, max: 290004992, failcnt: 0 }
  );
  assert.deepEqual(
    { ...mem.kernel, limit: big(mem.kernel.limit) },
    { limit: BIG, usage: 1171456, max: 2342912, failcnt: 0 }
  );
  assert.deepEqual(
    { ...mem.kernel_tcp, limit: big(mem.kernel_tcp.limit) },
    { limit: BIG, usage: 8192, max: 16384, failcnt: 1 }
  );
  assert.deepEqual(m.memory_oom_control, { oom_kill_disable: 0, under_oom: 0, oom_kill: 3 });
});

test('v1 fixture: pids ("max" is 0 in v1), hugetlb per page size, rdma', async () => {
  const m = await collect(ctr1());
  assert.deepEqual(m.pids, { current: 3, limit: 0 });
  assert.deepEqual(m.hugetlb, [
    { usage: 0, max: 0, failcnt: 0, pagesize: '1GB' },
    { usage: 2097152, max: 4194304, failcnt: 1, pagesize: '2MB' },
  ]);
  assert.deepEqual(m.rdma, {
    current: [{ device: 'mlx4_0', hca_handles: 1, hca_objects: 20 }],
    limit: [{ device: 'mlx4_0', hca_handles: 2, hca_objects: 4294967295 }],
  });
  assert.equal(hugePageSizeName('hugepages-64kB'), '64KB');
  assert.equal(hugePageSizeName('hugepages-32768kB'), '32MB');
  assert.equal(hugePageSizeName('hugepages-1536kB'), '1.5MB');
});

test('v1 fixture: blkio recursive files with device names; per-device Total lines kept, bare Total skipped', async () => {
  const m = await collect(ctr1());
  const b = m.blkio!;
  assert.deepEqual(b.sectors_recursive, [
    { op: '', device: '/dev/sda', major: 8, minor: 0, value: 2048 },
    { op: '', device: '/dev/vda', major: 254, minor: 0, value: 16 },
  ]);
  assert.equal(b.io_service_bytes_recursive.length, 12);
  assert.deepEqual(b.io_service_bytes_recursive[0], {
    op: 'Read',
    device: '/dev/sda',
    major: 8,
    minor: 0,
    value: 1048576,
  });
  assert.deepEqual(b.io_service_bytes_recursive[5], {
    op: 'Total',
    device: '/dev/sda',
    major: 8,
    minor: 0,
    value: 1052672,
  });
  assert.deepEqual(b.io_service_bytes_recursive[6], {
    op: 'Read',
    device: '/dev/vda',
    major: 254,
    minor: 0,
    value: 8192,
  });
  assert.deepEqual(
    b.io_serviced_recursive.map((e) => [e.op, e.value]),
    [
      ['Read', 256],
      ['Write', 1],
      ['Sync', 257],
      ['Async', 0],
      ['Discard', 0],
      ['Total', 257],
    ]
  );
  assert.deepEqual(b.io_time_recursive, [{ op: '', device: '/dev/sda', major: 8, minor: 0, value: 15 }]);
  for (const k of [
    'io_queued_recursive',
    'io_service_time_recursive',
    'io_wait_time_recursive',
    'io_merged_recursive',
  ] as const) {
    assert.deepEqual(b[k], [], k);
  }
});

test('v1 fixture: missing memsw (no swap accounting) ends memory collection; empty CFQ files fall back to throttle', async () => {
  const m = await collect({
    version: 1,
    paths: { memory: join(ROOT, 'memory/default/ctr2'), blkio: join(ROOT, 'blkio/default/ctr2') },
  });
  const mem = m.memory!;
  assert.equal(mem.cache, 4096);
  assert.equal(mem.rss, 8192);
  assert.equal(mem.total_cache, 0);
  assert.deepEqual(mem.usage, { limit: 16777216, usage: 12288, max: 16384, failcnt: 2 });
  assert.deepEqual(mem.swap, { limit: 0, usage: 0, max: 0, failcnt: 0 });
  assert.deepEqual(mem.kernel, { limit: 0, usage: 0, max: 0, failcnt: 0 }, 'kmem is not read after memsw is missing');
  assert.deepEqual(m.memory_oom_control, { oom_kill_disable: 1, under_oom: 1, oom_kill: 0 });
  const b = m.blkio!;
  assert.equal(b.io_serviced_recursive.length, 7);
  assert.deepEqual(b.io_serviced_recursive[0], { op: 'Read', device: '/dev/vdb', major: 254, minor: 16, value: 12 });
  assert.deepEqual(b.io_serviced_recursive[6], { op: 'Read', device: '', major: 7, minor: 0, value: 4 });
  assert.equal(b.io_service_bytes_recursive.length, 6);
  assert.deepEqual(b.io_service_bytes_recursive[1], {
    op: 'Write',
    device: '/dev/vdb',
    major: 254,
    minor: 16,
    value: 12288,
  });
  assert.deepEqual(b.sectors_recursive, []);
  // cpu is always present, empty
  assert.deepEqual(m.cpu, {
    usage: { total: 0, kernel: 0, user: 0, per_cpu: [] },
    throttling: { periods: 0, throttled_periods: 0, throttled_time: 0 },
  });
  assert.equal(m.pids, undefined);
});

test('v1 blkio: without the CFQ set only io_serviced_recursive is probed, then the throttle files are read', async () => {
  const asked: string[] = [];
  const read = (p: string) => (asked.push(p.slice(p.lastIndexOf('/') + 1)), readOnce(p));
  const noCfq = fs.mkdtempSync(join(os.tmpdir(), 'tsshim-blkio-'));
  try {
    for (const f of ['blkio.throttle.io_serviced', 'blkio.throttle.io_service_bytes'])
      fs.copyFileSync(join(ROOT, 'blkio/default/ctr2', f), join(noCfq, f));
    const m = await collectV1({ blkio: noCfq }, { procRoot: join(FIX, 'proc') }, read);
    assert.deepEqual(asked, [
      'partitions',
      'blkio.io_serviced_recursive',
      'blkio.throttle.io_serviced',
      'blkio.throttle.io_service_bytes',
    ]);
    assert.equal(m.blkio!.io_serviced_recursive.length, 7);
  } finally {
    fs.rmSync(noCfq, { recursive: true, force: true });
  }
});

test('v1: a controller dir gone -> CgroupNotFoundError; no handle -> CgroupNotFoundError', async () => {
  await assert.rejects(
    collectMetrics({ version: 1, paths: { memory: join(ROOT, 'memory/gone'), pids: join(ROOT, 'pids/default/ctr1') } }),
    CgroupNotFoundError
  );
  await assert.rejects(collectMetrics(null), /cgroup does not exist: not found/);
});

test('v1: malformed content is an error, not silently zero', async () => {
  const dir = await fsp.mkdtemp('/tmp/tsshim-cg-');
  try {
    await fsp.writeFile(join(dir, 'pids.current'), 'lots\n');
    await fsp.writeFile(join(dir, 'pids.max'), 'max\n');
    await assert.rejects(collectMetrics({ version: 1, paths: { pids: dir } }), /invalid unsigned integer/);
    await fsp.writeFile(join(dir, 'pids.current'), '-1\n'); // negative reads as 0, like Go
    const m = (await collectMetrics({ version: 1, paths: { pids: dir } })).metrics as MetricsV1;
    assert.deepEqual(m.pids, { current: 0, limit: 0 });
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

const LIVE_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'blkio'];
const canLive =
  process.getuid?.() === 0 && LIVE_CONTROLLERS.every((c) => existsSync(join('/sys/fs/cgroup', c, 'cgroup.procs')));

test(
  'live v1: a busy child moved into fresh cgroups reports sensible numbers',
  { skip: !canLive && 'needs root and cgroup v1 controllers' },
  async () => {
    const name = `tsshim-test-${randomBytes(4).toString('hex')}`;
    const dirs = LIVE_CONTROLLERS.map((c) => join('/sys/fs/cgroup', c, name));
    // v1 charges memory where pages are first touched, so the child allocates only once it has
    // been moved (a line on stdin says so), then spins.
    const script = 'read go; x=$(head -c 2000000 /dev/zero | tr "\\0" a); while :; do :; done';
    const child = spawn('sh', ['-c', script], { stdio: ['pipe', 'ignore', 'ignore'] });
    const exited = new Promise((r) => child.once('exit', r));
    try {
      for (const d of dirs) await fsp.mkdir(d);
      await fsp.writeFile(join('/sys/fs/cgroup/memory', name, 'memory.limit_in_bytes'), String(64 * 1024 * 1024));
      await fsp.writeFile(join('/sys/fs/cgroup/pids', name, 'pids.max'), '50');
      for (const d of dirs) await fsp.writeFile(join(d, 'cgroup.procs'), String(child.pid));
      child.stdin!.write('go\n');
      await new Promise((r) => setTimeout(r, 100));

      const h = cgroupForPid(child.pid!);
      assert.ok(h && h.version === 1);
      for (const c of LIVE_CONTROLLERS) assert.equal(h.paths[c], join('/sys/fs/cgroup', c, name), c);
      // The machine is shared: wait until the spinner got 50ms of CPU (bounded), rather than assume.
      let r = await collectMetrics(h);
      for (
        const until = Date.now() + 5000;
        big((r.metrics as MetricsV1).cpu.usage.total) < 50_000_000n && Date.now() < until;
      ) {
        await new Promise((res) => setTimeout(res, 100));
        r = await collectMetrics(h);
      }
      assert.equal(r.typeUrl, METRICS_V1_TYPE_URL);
      const m = r.metrics as MetricsV1;
      const total = big(m.cpu.usage.total);
      assert.ok(total >= 50_000_000n, `cpu total ${total}ns`);
      assert.ok(m.cpu.usage.per_cpu.length >= 1);
      const perCpuSum = m.cpu.usage.per_cpu.reduce<bigint>((s, v) => s + big(v), 0n);
      assert.ok(perCpuSum > 0n && perCpuSum <= total + 50_000_000n, `per-cpu sum ${perCpuSum} vs total ${total}`);
      assert.ok(big(m.cpu.usage.user) + big(m.cpu.usage.kernel) > 0n, 'user+system ticks');
      assert.equal(m.memory!.usage.limit, 64 * 1024 * 1024);
      assert.ok(big(m.memory!.usage.usage) > 0n, 'memory usage');
      assert.equal(m.memory!.hierarchical_memory_limit, 64 * 1024 * 1024);
      assert.equal(m.pids!.limit, 50);
      assert.ok(big(m.pids!.current) >= 1n);
      assert.ok(m.blkio, 'blkio collected');
      assert.ok(m.memory_oom_control);

      child.kill('SIGKILL');
      await exited;
      for (const d of dirs) await rmdirRetry(d);
      await assert.rejects(collectMetrics(h), CgroupNotFoundError);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      for (const d of dirs) await rmdirRetry(d).catch(() => {});
    }
  }
);

test('parseKV / parseFlatKeyed: the short path for "<key> <digits>" agrees with fields() + parseU64 on every shape', () => {
  // The reference: what both parsers did for every line before the short path.
  const reference = (text: string): Map<string, U64> | string => {
    const out = new Map<string, U64>();
    for (const line of lines(text)) {
      const f = fields(line);
      if (f.length !== 2) return 'error';
      try {
        out.set(f[0], parseU64(f[1]));
      } catch {
        return 'error';
      }
    }
    return out;
  };
  const texts = [
    'cache 4096\nrss 0\n',
    'a 1\n\n  \nb 2',
    'a  1\n',
    '\ta 1\n',
    'a\t1\n',
    'a 1 \n',
    'a 1\r\n',
    'a 999999999999999\nb 1000000000000000\nc 18446744073709551615\n',
    'a -1\n',
    'a 1x\n',
    'a\n',
    'a 1 2\n',
    ' a 1\n',
    'a 0001\n',
  ];
  for (const t of texts) {
    const want = reference(t);
    let got: Map<string, U64> | string;
    try {
      got = parseKV(t, 'f');
    } catch {
      got = 'error';
    }
    assert.deepEqual(got, want, JSON.stringify(t));
    if (want !== 'error') assert.deepEqual(parseFlatKeyed(t, 'f'), want, JSON.stringify(t));
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { CgroupNotFoundError } from '../../src/task/cgroups/errors';
import { collectMetrics, METRICS_V2_TYPE_URL } from '../../src/task/cgroups/metrics';
import { parseIoStat, parsePressure, type MetricsV2 } from '../../src/task/cgroups/stats-v2';
import { MAX_U64, u64ToBigInt, type U64 } from '../../src/task/cgroups/u64';

const FIX = resolve(__dirname, '../../../test/fixtures/cgroup-v2');
const big = (v: U64 | undefined) => u64ToBigInt(v);

async function collect(dir: string): Promise<MetricsV2> {
  const r = await collectMetrics({ version: 2, dir });
  assert.equal(r.typeUrl, METRICS_V2_TYPE_URL);
  return r.metrics as MetricsV2;
}

test('v2 fixture: pids ("max" -> 2^64-1) and cpu.stat incl. bursts and PSI', async () => {
  const m = await collect(join(FIX, 'default/ctr1'));
  assert.equal(m.pids.current, 5);
  assert.equal(big(m.pids.limit), MAX_U64);
  const { psi, ...cpu } = m.cpu;
  assert.deepEqual(cpu, {
    usage_usec: 1234567,
    user_usec: 1000001,
    system_usec: 234566,
    nr_periods: 100,
    nr_throttled: 7,
    throttled_usec: 54321,
    nr_bursts: 2,
    burst_usec: 1500,
  });
  assert.deepEqual(psi, {
    some: { avg10: 1.25, avg60: 0.5, avg300: 0.1, total: 987654 },
    full: { avg10: 0, avg60: 0, avg300: 0, total: 12345 },
  });
});

test('v2 fixture: memory.stat fields, usage/limits (max -> 2^64-1), peaks', async () => {
  const m = await collect(join(FIX, 'default/ctr1'));
  const { psi, swap_limit, ...mem } = m.memory;
  assert.deepEqual(mem, {
    anon: 4308992,
    file: 12288000,
    kernel_stack: 98304,
    slab: 846536,
    sock: 8192,
    shmem: 4096,
    file_mapped: 7729152,
    file_dirty: 16384,
    file_writeback: 4096,
    anon_thp: 2097152,
    inactive_anon: 4321280,
    active_anon: 4096,
    inactive_file: 9453568,
    active_file: 2834432,
    unevictable: 0,
    slab_reclaimable: 603864,
    slab_unreclaimable: 242672,
    pgfault: 6273,
    pgmajfault: 43,
    workingset_refault: 0, // newer kernels split it into _anon/_file: not mapped, as in containerd
    workingset_activate: 0,
    workingset_nodereclaim: 5,
    pgrefill: 9,
    pgscan: 120,
    pgsteal: 110,
    pgactivate: 715,
    pgdeactivate: 8,
    pglazyfree: 2,
    pglazyfreed: 1,
    thp_fault_alloc: 1,
    thp_collapse_alloc: 4,
    usage: 17301504,
    usage_limit: 268435456,
    swap_usage: 0,
    max_usage: 25165824,
    swap_max_usage: 4096,
  });
  assert.equal(big(swap_limit), MAX_U64);
  assert.deepEqual(psi, {
    some: { avg10: 0, avg60: 0, avg300: 0, total: 0 },
    full: { avg10: 0, avg60: 0, avg300: 0, total: 0 },
  });
});

test('v2 fixture: memory.events, io.stat, rdma, hugetlb (rsvd counters ignored)', async () => {
  const m = await collect(join(FIX, 'default/ctr1'));
  assert.deepEqual(m.memory_events, { low: 0, high: 0, max: 12, oom: 3, oom_kill: 2 });
  assert.deepEqual(m.io.usage, [
    { major: 8, minor: 0, rbytes: 1459200, wbytes: 314773504, rios: 192, wios: 353 },
    { major: 254, minor: 16, rbytes: 4096, wbytes: 0, rios: 1, wios: 0 },
  ]);
  assert.deepEqual(m.io.psi, {
    some: { avg10: 3.1, avg60: 2.05, avg300: 0.75, total: 5550001 },
    full: { avg10: 2, avg60: 1, avg300: 0.5, total: 4440001 },
  });
  assert.deepEqual(m.rdma, {
    current: [
      { device: 'mlx5_0', hca_handles: 2, hca_objects: 2000 },
      { device: 'ocrdma1', hca_handles: 3, hca_objects: 4294967295 },
    ],
    limit: [
      { device: 'mlx5_0', hca_handles: 4294967295, hca_objects: 4294967295 },
      { device: 'ocrdma1', hca_handles: 16, hca_objects: 4294967295 },
    ],
  });
  assert.equal(m.hugetlb.length, 2);
  const [gb, mb] = m.hugetlb;
  assert.deepEqual({ ...gb, max: big(gb.max) }, { current: 0, max: MAX_U64, pagesize: '1GB', failcnt: 0 });
  assert.deepEqual(mb, { current: 4194304, max: 8388608, pagesize: '2MB', failcnt: 6 });
});

test('v2: cpu.stat/memory.stat only for enabled controllers; missing files -> 0; no memory.events -> absent', async () => {
  const m = await collect(join(FIX, 'default/nocpu'));
  assert.equal(m.cpu.usage_usec, 0, 'cpu not in cgroup.controllers');
  assert.equal(m.memory.anon, 0, 'memory not in cgroup.controllers');
  assert.equal(m.memory.usage, 0);
  assert.equal(m.memory.usage_limit, 0);
  assert.deepEqual(m.pids, { current: 1, limit: 64 });
  assert.equal(m.memory_events, undefined);
  assert.deepEqual(m.io, { usage: [] });
  assert.deepEqual(m.rdma, { current: [], limit: [] });
  assert.deepEqual(m.hugetlb, []);
  assert.equal(m.cpu.psi, undefined);
  assert.equal(m.memory.max_usage, undefined);
});

test('v2: removed cgroup -> CgroupNotFoundError', async () => {
  await assert.rejects(collectMetrics({ version: 2, dir: join(FIX, 'default/gone') }), CgroupNotFoundError);
});

test('v2 parsers: io.stat oddities and pressure lines', () => {
  assert.deepEqual(parseIoStat('259:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6 junk rbytes=x\n\nbad\n'), [
    { major: 259, minor: 0, rbytes: 1, wbytes: 2, rios: 3, wios: 4 },
  ]);
  assert.deepEqual(parsePressure('some avg10=0.25 avg60=0.00 avg300=0.00 total=42\n'), {
    some: { avg10: 0.25, avg60: 0, avg300: 0, total: 42 },
  });
});

test('v2: malformed stat line is an error', async () => {
  const dir = await fsp.mkdtemp('/tmp/tsshim-cg2-');
  try {
    await fsp.writeFile(join(dir, 'cgroup.controllers'), 'cpu\n');
    await fsp.writeFile(join(dir, 'cpu.stat'), 'usage_usec 1 2\n');
    await assert.rejects(collectMetrics({ version: 2, dir }), /error while parsing/);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

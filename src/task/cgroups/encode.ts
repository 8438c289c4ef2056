// The metrics messages (io.containerd.cgroups.v1.Metrics and v2.Metrics) written straight into one
// reused buffer: no protobufjs message objects, no writer operation list. A Stats call mostly runs
// cold (a container is asked a few times, far below what V8 optimises), so the straight-line code
// here costs a fraction of the generic encoder's. The bytes are the generated encoder's for the same
// object (test/unit/cgroup-encode.test.ts): a field is written when present (not null/undefined),
// zeros included, in field-number order; nested messages and packed fields are length-delimited.
import {
  MEMORY_STAT_KEYS as V1_MEMORY_STAT_KEYS,
  type MetricsV1,
  type BlkIOEntry,
  type BlkIOStat,
  type MemoryEntryV1,
  type RdmaEntry,
} from './stats-v1';
import { CPU_STAT_KEYS, MEMORY_STAT_KEYS, type MetricsV2, type PSIStats, type PSIData } from './stats-v2';
import type { U64 } from './u64';

let buf = Buffer.allocUnsafe(4096);
let pos = 0;

function ensure(n: number): void {
  if (pos + n <= buf.length) return;
  const bigger = Buffer.allocUnsafe(Math.max(buf.length * 2, pos + n));
  buf.copy(bigger, 0, 0, pos);
  buf = bigger;
}

/** A non-negative integer below 2^53 as a varint. */
function varint(n: number): void {
  ensure(10);
  while (n > 0x7f) {
    buf[pos++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[pos++] = n;
}

/** A uint64 (number or unsigned Long) as a varint, as protobufjs's writer.uint64 does. */
function u64(v: U64): void {
  if (typeof v === 'number') {
    varint(v);
    return;
  }
  ensure(10);
  let lo = v.low >>> 0;
  let hi = v.high >>> 0;
  while (hi) {
    buf[pos++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  while (lo > 0x7f) {
    buf[pos++] = (lo & 0x7f) | 0x80;
    lo >>>= 7;
  }
  buf[pos++] = lo;
}

/** Field `f` (varint wire type) when present. */
function fU64(f: number, v: U64 | null | undefined): void {
  if (v == null) return;
  varint(f << 3);
  u64(v);
}

/**
 * Fields 1, 2, ... (varint wire type), each when present, from the properties `names` lists in
 * field-number order: one loop for the runs of uint64 fields most messages begin with.
 */
function u64Fields<K extends string>(msg: NoInfer<{ readonly [P in K]?: U64 | null }>, names: readonly K[]): void {
  for (let i = 0; i < names.length; i++) fU64(i + 1, msg[names[i]]);
}

function fU32(f: number, v: number | null | undefined): void {
  if (v == null) return;
  varint(f << 3);
  varint(v >>> 0);
}

function fDouble(f: number, v: number | null | undefined): void {
  if (v == null) return;
  varint((f << 3) | 1);
  ensure(8);
  buf.writeDoubleLE(v, pos);
  pos += 8;
}

function fString(f: number, s: string | null | undefined): void {
  if (s == null) return;
  varint((f << 3) | 2);
  const n = Buffer.byteLength(s);
  varint(n);
  ensure(n);
  pos += buf.write(s, pos, 'utf8');
}

/** Starts length-delimited field `f`; one byte is reserved for the length (end() widens it). */
function begin(f: number): number {
  varint((f << 3) | 2);
  ensure(1);
  return pos++;
}

function end(at: number): void {
  const len = pos - at - 1;
  if (len < 0x80) {
    buf[at] = len;
    return;
  }
  let extra = 0;
  for (let n = len; n > 0x7f; n = Math.floor(n / 0x80)) extra++;
  ensure(extra);
  buf.copy(buf, at + 1 + extra, at + 1, pos);
  const save = pos + extra;
  pos = at;
  varint(len);
  pos = save;
}

function finish(): Uint8Array {
  const out = Buffer.allocUnsafe(pos);
  buf.copy(out, 0, 0, pos);
  return out;
}

// Each message's runs of uint64 fields, in field-number order from the first named.
const PIDS_FIELDS = ['current', 'limit'] as const;
const MEMORY_ENTRY_FIELDS = ['limit', 'usage', 'max', 'failcnt'] as const;
const CPU_USAGE_FIELDS = ['total', 'kernel', 'user'] as const;
const THROTTLING_FIELDS = ['periods', 'throttled_periods', 'throttled_time'] as const;
const OOM_CONTROL_FIELDS = ['oom_kill_disable', 'under_oom', 'oom_kill'] as const;
const IO_ENTRY_FIELDS = ['major', 'minor', 'rbytes', 'wbytes', 'rios', 'wios'] as const;
const MEMORY_EVENTS_FIELDS = ['low', 'high', 'max', 'oom', 'oom_kill'] as const;

function memoryEntry(f: number, e: MemoryEntryV1 | null | undefined): void {
  if (e == null) return;
  const at = begin(f);
  u64Fields(e, MEMORY_ENTRY_FIELDS);
  end(at);
}

function blkioEntries(f: number, list: BlkIOEntry[] | null | undefined): void {
  if (list == null) return;
  for (const e of list) {
    const at = begin(f);
    fString(1, e.op);
    fString(2, e.device);
    fU64(3, e.major);
    fU64(4, e.minor);
    fU64(5, e.value);
    end(at);
  }
}

function rdma(f: number, r: { current: RdmaEntry[]; limit: RdmaEntry[] } | null | undefined): void {
  if (r == null) return;
  const at = begin(f);
  for (const [g, list] of [
    [1, r.current],
    [2, r.limit],
  ] as const) {
    if (list == null) continue;
    for (const e of list) {
      const a = begin(g);
      fString(1, e.device);
      fU32(2, e.hca_handles);
      fU32(3, e.hca_objects);
      end(a);
    }
  }
  end(at);
}

// io.containerd.cgroups.v1.MemoryStat's uint64 fields 1-32, in field-number order.
const V1_MEMORY_FIELDS = V1_MEMORY_STAT_KEYS.map(([field]) => field);
// Its MemoryEntry fields 33-36, and BlkIOStat's entry lists 1-8.
const V1_MEMORY_ENTRIES = ['usage', 'swap', 'kernel', 'kernel_tcp'] as const;
const BLKIO_LISTS: readonly (keyof BlkIOStat)[] = [
  'io_service_bytes_recursive',
  'io_serviced_recursive',
  'io_queued_recursive',
  'io_service_time_recursive',
  'io_wait_time_recursive',
  'io_merged_recursive',
  'io_time_recursive',
  'sectors_recursive',
];

/** io.containerd.cgroups.v1.Metrics. */
export function encodeMetricsV1(m: MetricsV1): Uint8Array {
  pos = 0;
  if (m.hugetlb != null) {
    for (const h of m.hugetlb) {
      const at = begin(1);
      fU64(1, h.usage);
      fU64(2, h.max);
      fU64(3, h.failcnt);
      fString(4, h.pagesize);
      end(at);
    }
  }
  if (m.pids != null) {
    const at = begin(2);
    u64Fields(m.pids, PIDS_FIELDS);
    end(at);
  }
  if (m.cpu != null) {
    const at = begin(3);
    const u = m.cpu.usage;
    if (u != null) {
      const a = begin(1);
      u64Fields(u, CPU_USAGE_FIELDS);
      if (u.per_cpu != null && u.per_cpu.length) {
        const p = begin(4);
        for (const v of u.per_cpu) u64(v);
        end(p);
      }
      end(a);
    }
    const t = m.cpu.throttling;
    if (t != null) {
      const a = begin(2);
      u64Fields(t, THROTTLING_FIELDS);
      end(a);
    }
    end(at);
  }
  const mem = m.memory;
  if (mem != null) {
    const at = begin(4);
    u64Fields(mem, V1_MEMORY_FIELDS);
    for (let i = 0; i < V1_MEMORY_ENTRIES.length; i++) memoryEntry(33 + i, mem[V1_MEMORY_ENTRIES[i]]);
    end(at);
  }
  const b = m.blkio;
  if (b != null) {
    const at = begin(5);
    for (let i = 0; i < BLKIO_LISTS.length; i++) blkioEntries(i + 1, b[BLKIO_LISTS[i]]);
    end(at);
  }
  rdma(6, m.rdma);
  const o = m.memory_oom_control;
  if (o != null) {
    const at = begin(9);
    u64Fields(o, OOM_CONTROL_FIELDS);
    end(at);
  }
  return finish();
}

function psiData(f: number, d: PSIData | null | undefined): void {
  if (d == null) return;
  const at = begin(f);
  fDouble(1, d.avg10);
  fDouble(2, d.avg60);
  fDouble(3, d.avg300);
  fU64(4, d.total);
  end(at);
}

function psi(f: number, p: PSIStats | null | undefined): void {
  if (p == null) return;
  const at = begin(f);
  psiData(1, p.some);
  psiData(2, p.full);
  end(at);
}

// io.containerd.cgroups.v2.MemoryStat's uint64 fields 1-37, in field-number order: memory.stat's
// keys, then the single-value files.
const V2_MEMORY_FIELDS = [
  ...MEMORY_STAT_KEYS,
  'usage',
  'usage_limit',
  'swap_usage',
  'swap_limit',
  'max_usage',
  'swap_max_usage',
] as const;

/** io.containerd.cgroups.v2.Metrics. */
export function encodeMetricsV2(m: MetricsV2): Uint8Array {
  pos = 0;
  if (m.pids != null) {
    const at = begin(1);
    u64Fields(m.pids, PIDS_FIELDS);
    end(at);
  }
  const c = m.cpu;
  if (c != null) {
    const at = begin(2);
    u64Fields(c, CPU_STAT_KEYS);
    psi(7, c.psi);
    fU64(8, c.nr_bursts);
    fU64(9, c.burst_usec);
    end(at);
  }
  const mem = m.memory;
  if (mem != null) {
    const at = begin(4);
    u64Fields(mem, V2_MEMORY_FIELDS);
    psi(38, mem.psi);
    end(at);
  }
  rdma(5, m.rdma);
  const io = m.io;
  if (io != null) {
    const at = begin(6);
    if (io.usage != null) {
      for (const e of io.usage) {
        const a = begin(1);
        u64Fields(e, IO_ENTRY_FIELDS);
        end(a);
      }
    }
    psi(2, io.psi);
    end(at);
  }
  if (m.hugetlb != null) {
    for (const h of m.hugetlb) {
      const at = begin(7);
      fU64(1, h.current);
      fU64(2, h.max);
      fString(3, h.pagesize);
      fU64(4, h.failcnt);
      end(at);
    }
  }
  const ev = m.memory_events;
  if (ev != null) {
    const at = begin(8);
    u64Fields(ev, MEMORY_EVENTS_FIELDS);
    end(at);
  }
  return finish();
}

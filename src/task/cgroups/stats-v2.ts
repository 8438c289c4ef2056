// cgroup v2 -> io.containerd.cgroups.v2.Metrics (plain object, proto field names), from one
// directory. Follows containerd's cgroups library: missing single-value files read as 0, "max" as
// 2^64-1; cpu.stat and memory.stat are read only for controllers enabled in cgroup.controllers.
import * as fs from 'node:fs';
import { CgroupNotFoundError } from './errors';
import { at, fields, lines, readAll, readOnce, scanKeyed, type FileReader } from './files';
import { parseRdmaEntries, type RdmaEntry } from './stats-v1';
import { ParseError, parseU64, parseU64Big, parseU64OrMax, u64, type U64 } from './u64';

export interface PSIData {
  avg10: number;
  avg60: number;
  avg300: number;
  total: U64;
}
export interface PSIStats {
  some?: PSIData;
  full?: PSIData;
}
export interface IOEntry {
  major: U64;
  minor: U64;
  rbytes: U64;
  wbytes: U64;
  rios: U64;
  wios: U64;
}
export type MemoryStatV2 = Record<(typeof MEMORY_STAT_KEYS)[number], U64> & {
  usage: U64;
  usage_limit: U64;
  swap_usage: U64;
  swap_limit: U64;
  max_usage?: U64;
  swap_max_usage?: U64;
  psi?: PSIStats;
};
export interface MetricsV2 {
  pids: { current: U64; limit: U64 };
  cpu: {
    usage_usec: U64;
    user_usec: U64;
    system_usec: U64;
    nr_periods: U64;
    nr_throttled: U64;
    throttled_usec: U64;
    nr_bursts?: U64;
    burst_usec?: U64;
    psi?: PSIStats;
  };
  memory: MemoryStatV2;
  rdma: { current: RdmaEntry[]; limit: RdmaEntry[] };
  io: { usage: IOEntry[]; psi?: PSIStats };
  hugetlb: { current: U64; max: U64; pagesize: string; failcnt?: U64 }[];
  memory_events?: { low: U64; high: U64; max: U64; oom: U64; oom_kill: U64 };
}

/**
 * The memory.stat keys io.containerd.cgroups.v2.MemoryStat carries, in its field-number order
 * (fields 1-31; encode.ts writes them by this list).
 */
export const MEMORY_STAT_KEYS = [
  'anon',
  'file',
  'kernel_stack',
  'slab',
  'sock',
  'shmem',
  'file_mapped',
  'file_dirty',
  'file_writeback',
  'anon_thp',
  'inactive_anon',
  'active_anon',
  'inactive_file',
  'active_file',
  'unevictable',
  'slab_reclaimable',
  'slab_unreclaimable',
  'pgfault',
  'pgmajfault',
  'workingset_refault',
  'workingset_activate',
  'workingset_nodereclaim',
  'pgrefill',
  'pgscan',
  'pgsteal',
  'pgactivate',
  'pgdeactivate',
  'pglazyfree',
  'pglazyfreed',
  'thp_fault_alloc',
  'thp_collapse_alloc',
] as const;

/** cpu.stat's keys io.containerd.cgroups.v2.CPUStat carries as its fields 1-6, in that order. */
export const CPU_STAT_KEYS = [
  'usage_usec',
  'user_usec',
  'system_usec',
  'nr_periods',
  'nr_throttled',
  'throttled_usec',
] as const;

/** A value that is not an unsigned integer reads as absent (0 to the callers), like Go. */
function u64OrAbsent(text: string): U64 | undefined {
  try {
    return parseU64(text);
  } catch {
    return undefined; // non-numeric value: absent
  }
}

function flatKeyedError(file: string, line: string): Error {
  return new ParseError(`error while parsing ${file} (line=${JSON.stringify(line)})`);
}

/** "key value" lines; values that are not unsigned integers are ignored (read as 0), like Go. */
export function parseFlatKeyed(text: string, file: string, into = new Map<string, U64>()): Map<string, U64> {
  return scanKeyed(text, file, into, flatKeyedError, u64OrAbsent);
}

/** Single-value files: missing -> 0, "max" -> 2^64-1, garbage -> 0. */
function singleValue(text: string | null): U64 {
  if (text === null) return 0;
  try {
    return parseU64OrMax(text.trim());
  } catch {
    return 0; // garbage reads as 0, as in Go's cgroups library
  }
}

/** io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N" per device. */
export function parseIoStat(text: string): IOEntry[] {
  const out: IOEntry[] = [];
  for (const line of text.split('\n')) {
    const parts = line.split(' ');
    if (parts.length < 2) continue;
    const majmin = parts[0].split(':');
    if (majmin.length !== 2) continue;
    let major: bigint;
    let minor: bigint;
    try {
      major = parseU64Big(majmin[0]);
      minor = parseU64Big(majmin[1]);
    } catch {
      break; // Go stops at the first malformed device number
    }
    const e: IOEntry = { major: u64(major), minor: u64(minor), rbytes: 0, wbytes: 0, rios: 0, wios: 0 };
    for (const kv of parts.slice(1)) {
      const [key, value, extra] = kv.split('=');
      if (value === undefined || extra !== undefined || !(key in e) || key === 'major' || key === 'minor') continue;
      if (!/^\d+$/.test(value)) continue;
      (e as unknown as Record<string, U64>)[key] = parseU64(value);
    }
    out.push(e);
  }
  return out;
}

/** PSI files ("some avg10=0.00 avg60=0.00 avg300=0.00 total=0", and "full ..."). */
export function parsePressure(text: string): PSIStats {
  const out: PSIStats = {};
  for (const line of lines(text)) {
    const [kind, ...kvs] = fields(line);
    if (kind !== 'some' && kind !== 'full') continue;
    const d: PSIData = { avg10: 0, avg60: 0, avg300: 0, total: 0 };
    for (const kv of kvs) {
      const [k, v] = kv.split('=');
      if (v === undefined) continue;
      if (k === 'total') d.total = parseU64(v);
      else if (k === 'avg10' || k === 'avg60' || k === 'avg300') d[k] = Number(v) || 0;
    }
    out[kind] = d;
  }
  return out;
}

function hugetlb(dir: string, read: FileReader): MetricsV2['hugetlb'] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return []; // the cgroup is gone: no hugetlb files to report
  }
  // hugetlb.<size>.current / .max (not the .rsvd.* reservation counters of newer kernels).
  const sizes = [
    ...new Set(names.map((n) => /^hugetlb\.([^.]+)\.(current|max)$/.exec(n)?.[1]).filter((s): s is string => !!s)),
  ].sort();
  return sizes.map((size) => {
    const [current, max, events] = readAll(
      dir,
      [`hugetlb.${size}.current`, `hugetlb.${size}.max`, `hugetlb.${size}.events`],
      read
    );
    const stat: MetricsV2['hugetlb'][number] = { current: singleValue(current), max: singleValue(max), pagesize: size };
    if (events !== null) stat.failcnt = parseFlatKeyed(events, `hugetlb.${size}.events`).get('max') ?? 0;
    return stat;
  });
}

/**
 * Collects a v2 cgroup directory, reading files with `read` (a container's CgroupFiles keeps them
 * open between calls); CgroupNotFoundError when it no longer exists.
 */
export async function collectV2(dir: string, read: FileReader = readOnce): Promise<MetricsV2> {
  const controllersText = read(at(dir, 'cgroup.controllers'));
  if (controllersText === null) throw new CgroupNotFoundError(dir);
  const controllers = new Set(fields(controllersText));
  const statFiles = ['cpu', 'memory'].filter((c) => controllers.has(c)).map((c) => `${c}.stat`);
  const statTexts = readAll(dir, statFiles, read);
  const single = readAll(
    dir,
    [
      'pids.current',
      'pids.max',
      'memory.current',
      'memory.max',
      'memory.swap.current',
      'memory.swap.max',
      'memory.peak',
      'memory.swap.peak',
      'memory.events',
      'io.stat',
      'rdma.current',
      'rdma.max',
    ],
    read
  );
  const pressure = readAll(dir, ['cpu.pressure', 'memory.pressure', 'io.pressure'], read);
  const hugetlbStats = hugetlb(dir, read);
  const [
    pidsCurrent,
    pidsMax,
    memCurrent,
    memMax,
    swapCurrent,
    swapMax,
    memPeak,
    swapPeak,
    events,
    ioStat,
    rdmaCurrent,
    rdmaMax,
  ] = single;
  const kv = new Map<string, U64>();
  statTexts.forEach((t, i) => {
    if (t !== null) parseFlatKeyed(t, at(dir, statFiles[i]), kv);
  });
  const get = (k: string): U64 => kv.get(k) ?? 0;

  const cpu = Object.fromEntries(CPU_STAT_KEYS.map((k) => [k, get(k)])) as unknown as MetricsV2['cpu'];
  if (kv.has('nr_bursts')) cpu.nr_bursts = get('nr_bursts');
  if (kv.has('burst_usec')) cpu.burst_usec = get('burst_usec');
  if (pressure[0] !== null) cpu.psi = parsePressure(pressure[0]);

  const memory = Object.fromEntries(MEMORY_STAT_KEYS.map((k) => [k, get(k)])) as unknown as MemoryStatV2;
  memory.usage = singleValue(memCurrent);
  memory.usage_limit = singleValue(memMax);
  memory.swap_usage = singleValue(swapCurrent);
  memory.swap_limit = singleValue(swapMax);
  if (memPeak !== null) memory.max_usage = singleValue(memPeak);
  if (swapPeak !== null) memory.swap_max_usage = singleValue(swapPeak);
  if (pressure[1] !== null) memory.psi = parsePressure(pressure[1]);

  const m: MetricsV2 = {
    pids: { current: singleValue(pidsCurrent), limit: singleValue(pidsMax) },
    cpu,
    memory,
    rdma: {
      current: rdmaCurrent === null ? [] : parseRdmaEntries(rdmaCurrent),
      limit: rdmaMax === null ? [] : parseRdmaEntries(rdmaMax),
    },
    io: { usage: ioStat === null ? [] : parseIoStat(ioStat) },
    hugetlb: hugetlbStats,
  };
  if (pressure[2] !== null) m.io.psi = parsePressure(pressure[2]);
  const ev = events === null ? new Map<string, U64>() : parseFlatKeyed(events, at(dir, 'memory.events'));
  if (ev.size > 0) {
    m.memory_events = {
      low: ev.get('low') ?? 0,
      high: ev.get('high') ?? 0,
      max: ev.get('max') ?? 0,
      oom: ev.get('oom') ?? 0,
      oom_kill: ev.get('oom_kill') ?? 0,
    };
  }
  return m;
}

// cgroup v1 -> io.containerd.cgroups.v1.Metrics (plain object, proto field names). Each controller
// is collected on its own, all at once; a missing file ends that controller's collection quietly
// (the kernel or the configuration may lack it), other failures fail the whole call.
import * as fs from 'node:fs';
import { at, fields, lines, parseKV, readAll, readOnce, type FileReader } from './files';
import { ParseError, parseRdmaValue, parseU64, parseU64Big, u64, type U64 } from './u64';

export interface MemoryEntryV1 {
  limit: U64;
  usage: U64;
  max: U64;
  failcnt: U64;
}
export interface BlkIOEntry {
  op: string;
  device: string;
  major: U64;
  minor: U64;
  value: U64;
}
export interface RdmaEntry {
  device: string;
  hca_handles: number;
  hca_objects: number;
}
export interface BlkIOStat {
  io_service_bytes_recursive: BlkIOEntry[];
  io_serviced_recursive: BlkIOEntry[];
  io_queued_recursive: BlkIOEntry[];
  io_service_time_recursive: BlkIOEntry[];
  io_wait_time_recursive: BlkIOEntry[];
  io_merged_recursive: BlkIOEntry[];
  io_time_recursive: BlkIOEntry[];
  sectors_recursive: BlkIOEntry[];
}
export interface MemoryStatV1 extends Record<(typeof MEMORY_STAT_KEYS)[number][0], U64> {
  usage: MemoryEntryV1;
  swap: MemoryEntryV1;
  kernel: MemoryEntryV1;
  kernel_tcp: MemoryEntryV1;
}
export interface MetricsV1 {
  hugetlb: { usage: U64; max: U64; failcnt: U64; pagesize: string }[];
  pids?: { current: U64; limit: U64 };
  cpu: {
    usage: { total: U64; kernel: U64; user: U64; per_cpu: U64[] };
    throttling: { periods: U64; throttled_periods: U64; throttled_time: U64 };
  };
  memory?: MemoryStatV1;
  blkio?: BlkIOStat;
  rdma?: { current: RdmaEntry[]; limit: RdmaEntry[] };
  memory_oom_control?: { oom_kill_disable: U64; under_oom: U64; oom_kill: U64 };
}

export interface V1Options {
  /** For /proc/partitions (block device names). */
  procRoot?: string;
  /** Huge page sizes come from here (/sys/kernel/mm/hugepages/hugepages-<N>kB). */
  hugepagesDir?: string;
}

// The Go library hard-codes USER_HZ = 100: sysconf(_SC_CLK_TCK) is 100 on every Linux ABI.
const CLOCK_TICKS = 100n;
const NS_PER_SEC = 1_000_000_000n;

/** [proto field, memory.stat key], in MemoryStat's field-number order (1-32: encode.ts writes them so). */
export const MEMORY_STAT_KEYS = [
  ['cache', 'cache'],
  ['rss', 'rss'],
  ['rss_huge', 'rss_huge'],
  ['mapped_file', 'mapped_file'],
  ['dirty', 'dirty'],
  ['writeback', 'writeback'],
  ['pg_pg_in', 'pgpgin'],
  ['pg_pg_out', 'pgpgout'],
  ['pg_fault', 'pgfault'],
  ['pg_maj_fault', 'pgmajfault'],
  ['inactive_anon', 'inactive_anon'],
  ['active_anon', 'active_anon'],
  ['inactive_file', 'inactive_file'],
  ['active_file', 'active_file'],
  ['unevictable', 'unevictable'],
  ['hierarchical_memory_limit', 'hierarchical_memory_limit'],
  ['hierarchical_swap_limit', 'hierarchical_memsw_limit'],
  ['total_cache', 'total_cache'],
  ['total_rss', 'total_rss'],
  ['total_rss_huge', 'total_rss_huge'],
  ['total_mapped_file', 'total_mapped_file'],
  ['total_dirty', 'total_dirty'],
  ['total_writeback', 'total_writeback'],
  ['total_pg_pg_in', 'total_pgpgin'],
  ['total_pg_pg_out', 'total_pgpgout'],
  ['total_pg_fault', 'total_pgfault'],
  ['total_pg_maj_fault', 'total_pgmajfault'],
  ['total_inactive_anon', 'total_inactive_anon'],
  ['total_active_anon', 'total_active_anon'],
  ['total_inactive_file', 'total_inactive_file'],
  ['total_active_file', 'total_active_file'],
  ['total_unevictable', 'total_unevictable'],
] as const;

/** [file suffix, MemoryEntry field], in the order the Go library reads them. */
const MEMORY_ENTRY_FILES = [
  ['usage_in_bytes', 'usage'],
  ['max_usage_in_bytes', 'max'],
  ['failcnt', 'failcnt'],
  ['limit_in_bytes', 'limit'],
] as const;
const MEMORY_MODULES = [
  ['usage', 'memory.'],
  ['swap', 'memory.memsw.'],
  ['kernel', 'memory.kmem.'],
  ['kernel_tcp', 'memory.kmem.tcp.'],
] as const;

const emptyEntry = (): MemoryEntryV1 => ({ limit: 0, usage: 0, max: 0, failcnt: 0 });
const u64Of = (text: string): U64 => parseU64(text.trim());

function cpuacct(dir: string, m: MetricsV1, read: FileReader): void {
  const [stat, usage, percpu] = readAll(dir, ['cpuacct.stat', 'cpuacct.usage', 'cpuacct.usage_percpu'], read);
  if (stat === null || usage === null || percpu === null) return;
  const f = fields(stat);
  if (f.length !== 4 || f[0] !== 'user' || f[2] !== 'system') {
    throw new ParseError(`${at(dir, 'cpuacct.stat')}: expected "user N system N", got ${JSON.stringify(stat)}`);
  }
  const ticksToNs = (t: string) => u64((parseU64Big(t) * NS_PER_SEC) / CLOCK_TICKS);
  m.cpu.usage.user = ticksToNs(f[1]);
  m.cpu.usage.kernel = ticksToNs(f[3]);
  m.cpu.usage.total = u64Of(usage);
  m.cpu.usage.per_cpu = fields(percpu).map(parseU64);
}

function cpu(dir: string, m: MetricsV1, read: FileReader): void {
  const stat = read(at(dir, 'cpu.stat'));
  if (stat === null) return;
  const kv = parseKV(stat, at(dir, 'cpu.stat'));
  const t = m.cpu.throttling;
  t.periods = kv.get('nr_periods') ?? t.periods;
  t.throttled_periods = kv.get('nr_throttled') ?? t.throttled_periods;
  t.throttled_time = kv.get('throttled_time') ?? t.throttled_time;
}

const MEMORY_FILES = [
  'memory.stat',
  'memory.oom_control',
  ...MEMORY_MODULES.flatMap(([, prefix]) => MEMORY_ENTRY_FILES.map(([f]) => prefix + f)),
];

function memory(dir: string, m: MetricsV1, read: FileReader): void {
  const [stat, oom, ...entryTexts] = readAll(dir, MEMORY_FILES, read);
  if (stat === null) return;
  const kv = parseKV(stat, at(dir, 'memory.stat'));
  const mem = {
    usage: emptyEntry(),
    swap: emptyEntry(),
    kernel: emptyEntry(),
    kernel_tcp: emptyEntry(),
  } as MemoryStatV1;
  for (const [field, key] of MEMORY_STAT_KEYS) mem[field] = kv.get(key) ?? 0;
  m.memory = mem;
  if (oom === null) return;
  const oc = parseKV(oom, at(dir, 'memory.oom_control'));
  m.memory_oom_control = {
    oom_kill_disable: oc.get('oom_kill_disable') ?? 0,
    under_oom: oc.get('under_oom') ?? 0,
    oom_kill: oc.get('oom_kill') ?? 0,
  };
  // In Go's order: the first missing file (e.g. memsw without swap accounting) ends the walk.
  let i = 0;
  for (const [module] of MEMORY_MODULES) {
    for (const [, field] of MEMORY_ENTRY_FILES) {
      const text = entryTexts[i++];
      if (text === null) return;
      mem[module][field] = u64Of(text);
    }
  }
}

function pids(dir: string, m: MetricsV1, read: FileReader): void {
  const [current, max] = readAll(dir, ['pids.current', 'pids.max'], read);
  if (current === null || max === null) return;
  const limit = max.trim() === 'max' ? 0 : u64Of(max); // v1 reports "no limit" as 0
  m.pids = { current: u64Of(current), limit };
}

/** /proc/partitions -> "major:minor" -> "/dev/<name>" (first two lines are the header). */
export function parsePartitions(text: string): Map<string, string> {
  const out = new Map<string, string>();
  text
    .split('\n')
    .slice(2)
    .forEach((line) => {
      const f = fields(line);
      if (f.length < 4) return;
      const key = `${Number(f[0])}:${Number(f[1])}`;
      if (!out.has(key)) out.set(key, `/dev/${f[3]}`);
    });
  return out;
}

/** blkio lines "MAJ:MIN [Op] value"; "Total N" lines are skipped. */
export function parseBlkioEntries(text: string, devices: Map<string, string>, file: string): BlkIOEntry[] {
  const out: BlkIOEntry[] = [];
  for (const line of lines(text)) {
    const f = line.split(/[ :]+/).filter((s) => s !== '');
    if (f.length < 3) {
      if (f.length === 2 && f[0] === 'Total') continue;
      throw new ParseError(`invalid line found while parsing ${file}: ${line}`);
    }
    const hasOp = f.length === 4;
    const major = parseU64Big(f[0]);
    const minor = parseU64Big(f[1]);
    out.push({
      op: hasOp ? f[2] : '',
      device: devices.get(`${major}:${minor}`) ?? '',
      major: u64(major),
      minor: u64(minor),
      value: parseU64(hasOp ? f[3] : f[2]),
    });
  }
  return out;
}

const BLKIO_RECURSIVE: [keyof BlkIOStat, string][] = [
  ['sectors_recursive', 'blkio.sectors_recursive'],
  ['io_service_bytes_recursive', 'blkio.io_service_bytes_recursive'],
  ['io_serviced_recursive', 'blkio.io_serviced_recursive'],
  ['io_queued_recursive', 'blkio.io_queued_recursive'],
  ['io_service_time_recursive', 'blkio.io_service_time_recursive'],
  ['io_wait_time_recursive', 'blkio.io_wait_time_recursive'],
  ['io_merged_recursive', 'blkio.io_merged_recursive'],
  ['io_time_recursive', 'blkio.time_recursive'],
];
// Without CFQ (blk-mq kernels) the recursive files are absent or empty: use the throttle counters.
const BLKIO_THROTTLE: [keyof BlkIOStat, string][] = [
  ['io_serviced_recursive', 'blkio.throttle.io_serviced'],
  ['io_service_bytes_recursive', 'blkio.throttle.io_service_bytes'],
];

function blkio(dir: string, m: MetricsV1, procRoot: string, read: FileReader): void {
  const stat: BlkIOStat = {
    io_service_bytes_recursive: [],
    io_serviced_recursive: [],
    io_queued_recursive: [],
    io_service_time_recursive: [],
    io_wait_time_recursive: [],
    io_merged_recursive: [],
    io_time_recursive: [],
    sectors_recursive: [],
  };
  m.blkio = stat;
  const partitions = read(at(procRoot, 'partitions'));
  if (partitions === null) return;
  const devices = parsePartitions(partitions);
  // Each file read only when it is used: a missing CFQ set costs one probe, not eight.
  const fill = (table: [keyof BlkIOStat, string][]): boolean => {
    for (const [field, name] of table) {
      const text = read(at(dir, name));
      if (text === null) return false;
      stat[field].push(...parseBlkioEntries(text, devices, at(dir, name)));
    }
    return true;
  };
  // The recursive set is used only when io_serviced_recursive exists (as the Go code checks).
  if (read(at(dir, 'blkio.io_serviced_recursive')) !== null) {
    if (!fill(BLKIO_RECURSIVE)) return;
    if (Object.values(stat).some((list) => list.length > 0)) return;
  }
  fill(BLKIO_THROTTLE);
}

/** "hugepages-2048kB" -> "2MB", "hugepages-1048576kB" -> "1GB" (the Go library's size names). */
export function hugePageSizeName(dirName: string): string {
  const m = /^hugepages-(\d+)([kKmMgG]?)B$/.exec(dirName);
  if (!m) throw new ParseError(`invalid huge page dir ${JSON.stringify(dirName)}`);
  let size =
    Number(m[1]) * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as Record<string, number>)[m[2].toLowerCase()];
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  while (size >= 1024 && i < units.length - 1) {
    size /= 1024;
    i++;
  }
  return `${Number(size.toPrecision(6))}${units[i]}`;
}

// Huge page sizes are fixed at boot: read the directory once per process, as the Go library does.
const hugePageSizeCache = new Map<string, string[]>();

function hugePageSizes(hugepagesDir: string): string[] {
  let sizes = hugePageSizeCache.get(hugepagesDir);
  if (!sizes) {
    try {
      sizes = fs
        .readdirSync(hugepagesDir)
        .filter((n) => n.startsWith('hugepages-'))
        .sort()
        .map(hugePageSizeName);
    } catch {
      sizes = []; // no hugetlb controller here: no sizes to report, as Go's cgroups library does
    }
    hugePageSizeCache.set(hugepagesDir, sizes);
  }
  return sizes;
}

function hugetlb(dir: string, m: MetricsV1, hugepagesDir: string, read: FileReader): void {
  const sizes = hugePageSizes(hugepagesDir);
  const perSize = sizes.map((size) =>
    readAll(
      dir,
      ['usage_in_bytes', 'max_usage_in_bytes', 'failcnt'].map((f) => `hugetlb.${size}.${f}`),
      read
    )
  );
  for (let i = 0; i < sizes.length; i++) {
    const [usage, max, failcnt] = perSize[i];
    if (usage === null || max === null || failcnt === null) return;
    m.hugetlb.push({ usage: u64Of(usage), max: u64Of(max), failcnt: u64Of(failcnt), pagesize: sizes[i] });
  }
}

/** rdma.current / rdma.max lines "<dev> hca_handle=N hca_object=M" (shared with v2). */
export function parseRdmaEntries(text: string): RdmaEntry[] {
  const out: RdmaEntry[] = [];
  for (const line of text.split('\n')) {
    const f = fields(line);
    if (f.length !== 3) continue;
    const entry: RdmaEntry = { device: f[0], hca_handles: 0, hca_objects: 0 };
    for (const kv of f.slice(1)) {
      const parts = kv.split('=');
      if (parts.length !== 2) continue;
      if (parts[0] === 'hca_handle') entry.hca_handles = parseRdmaValue(parts[1]);
      else if (parts[0] === 'hca_object') entry.hca_objects = parseRdmaValue(parts[1]);
    }
    out.push(entry);
  }
  return out;
}

function rdma(dir: string, m: MetricsV1, read: FileReader): void {
  const [current, max] = readAll(dir, ['rdma.current', 'rdma.max'], read);
  if (current === null || max === null) return;
  // A device removed between the two reads: skip rather than pair the wrong lines.
  if (current.split('\n').length !== max.split('\n').length) return;
  m.rdma = { current: parseRdmaEntries(current), limit: parseRdmaEntries(max) };
}

/**
 * Collects every controller present in `paths` (controller name -> directory), reading files with
 * `read` (a container's CgroupFiles keeps them open between calls).
 */
export async function collectV1(
  paths: Record<string, string>,
  opts: V1Options = {},
  read: FileReader = readOnce
): Promise<MetricsV1> {
  const m: MetricsV1 = {
    hugetlb: [],
    cpu: {
      usage: { total: 0, kernel: 0, user: 0, per_cpu: [] },
      throttling: { periods: 0, throttled_periods: 0, throttled_time: 0 },
    },
  };
  const procRoot = opts.procRoot ?? '/proc';
  const collectors: Record<string, (dir: string) => void> = {
    cpu: (d) => cpu(d, m, read),
    cpuacct: (d) => cpuacct(d, m, read),
    memory: (d) => memory(d, m, read),
    pids: (d) => pids(d, m, read),
    blkio: (d) => blkio(d, m, procRoot, read),
    hugetlb: (d) => hugetlb(d, m, opts.hugepagesDir ?? '/sys/kernel/mm/hugepages', read),
    rdma: (d) => rdma(d, m, read),
  };
  for (const [controller, dir] of Object.entries(paths)) collectors[controller]?.(dir);
  return m;
}

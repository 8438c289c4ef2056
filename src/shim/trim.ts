// Trimming the daemon's resident set once it is idle. Most of a Node process's RSS is the node
// binary's own code and read-only data (~40 MiB here), touched while Node boots and never again.
// Those pages stay in the page cache, shared by every node process; dropping this process's
// mappings of them (MADV_DONTNEED) costs nothing but a minor fault when a page is needed again.
// Only mappings that cannot hold private changes qualify: file-backed, private, not writable and
// with no anonymous (copy-on-write) pages, e.g. never a RELRO section, whose relocated contents
// would be lost.
import * as fs from 'node:fs';
import { dropMappedPages, mallocTrim } from '../sys/libc';

export interface Mapping {
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
  anonymousKb: number;
  /** Resident kB (Rss), 0 when smaps says nothing. */
  rssKb: number;
}

/** /proc/<pid>/smaps as a list of mappings with their anonymous (COW'd) size. */
export function parseSmaps(text: string): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | null = null;
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      cur = {
        start: BigInt(`0x${m[1]}`),
        end: BigInt(`0x${m[2]}`),
        perms: m[3],
        path: m[4],
        anonymousKb: -1,
        rssKb: 0,
      };
      out.push(cur);
      continue;
    }
    const a = /^(Anonymous|Rss):\s+(\d+) kB/.exec(line);
    if (a && cur) {
      if (a[1] === 'Rss') cur.rssKb = Number(a[2]);
      else cur.anonymousKb = Number(a[2]);
    }
  }
  return out;
}

/** Mappings whose resident pages are exact copies of their file. */
export function trimmable(m: Mapping): boolean {
  return m.path.startsWith('/') && m.perms[1] !== 'w' && m.perms[3] === 'p' && m.anonymousKb === 0;
}

/** kB of this process's resident set: anonymous (heap, malloc, buffers) and pages of files (code, mostly). */
export interface ResidentKb {
  anonKb: number;
  fileKb: number;
}

/**
 * RssAnon and RssFile of /proc/self/status (kept by counters: no page walk, unlike smaps); zeros
 * when it cannot be read.
 */
export function residentKb(readStatus = () => fs.readFileSync('/proc/self/status', 'utf8')): ResidentKb {
  try {
    const text = readStatus();
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
    return { anonKb: kb('RssAnon'), fileKb: kb('RssFile') };
  } catch {
    return { anonKb: 0, fileKb: 0 };
  }
}

export interface TrimResult {
  mappings: number;
  bytes: number;
}

/** What trimResidentSet does to the process (replaced in tests). */
export interface TrimOps {
  readSmaps: () => string;
  drop: (start: bigint, length: number) => boolean;
  mallocTrim: () => void;
}

const processOps: TrimOps = {
  readSmaps: () => fs.readFileSync('/proc/self/smaps', 'utf8'),
  drop: dropMappedPages,
  mallocTrim,
};

/**
 * Drops clean file-backed pages and returns free malloc pages; never throws. `collectYoung` (a
 * scavenge) runs after /proc/self/smaps is parsed and before anything is dropped: reading and
 * splitting it leaves ~1 MiB of garbage in a young generation of 1 MiB semi-spaces
 * (node-flags.ts), and without it the next call paid for a scavenge, with the scavenger's code
 * faulted back in: ~3 ms more shim CPU per Stats after an idle period (bench/results/2026-12-03-idle.md).
 * `beforeDrop` runs after malloc_trim, right before the first page is dropped, with the resident kB
 * about to be dropped: whatever runs after the drop faults its code back in (a footprint read
 * there kept ~3.5 MiB of node's code resident in an idle per-node daemon,
 * bench/results/2026-12-03-mem3.md), so the drop comes last.
 */
export function trimResidentSet(
  collectYoung?: () => void,
  ops: TrimOps = processOps,
  beforeDrop?: (droppingKb: number) => void
): TrimResult {
  const r: TrimResult = { mappings: 0, bytes: 0 };
  try {
    const maps = parseSmaps(ops.readSmaps()).filter(trimmable);
    collectYoung?.();
    ops.mallocTrim();
    beforeDrop?.(maps.reduce((kb, m) => kb + m.rssKb, 0));
    for (const m of maps) {
      const len = Number(m.end - m.start);
      if (ops.drop(m.start, len)) {
        r.mappings++;
        r.bytes += len;
      }
    }
  } catch {
    /* no /proc or no koffi: nothing trimmed */
  }
  return r;
}

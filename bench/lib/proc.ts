// Process figures from /proc: memory (RSS, PSS), threads, CPU time, and shim discovery by argv.
import * as fs from 'node:fs';

const PAGE_TICKS = 100; // USER_HZ on Linux

export interface ProcMem {
  pid: number;
  rssKiB: number;
  pssKiB: number;
  threads: number;
}

function readOr(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function kib(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** RSS and threads from status, PSS from smaps_rollup; null when the process is gone. */
export function procMem(pid: number): ProcMem | null {
  const status = readOr(`/proc/${pid}/status`);
  const rollup = readOr(`/proc/${pid}/smaps_rollup`);
  if (!status) return null;
  const threads = /^Threads:\s+(\d+)/m.exec(status);
  return {
    pid,
    rssKiB: kib(status, 'VmRSS'),
    pssKiB: rollup ? kib(rollup, 'Pss') : 0,
    threads: threads ? Number(threads[1]) : 0,
  };
}

/** utime + stime of a process in milliseconds (children not included); NaN when gone. */
export function cpuMs(pid: number): number {
  const stat = readOr(`/proc/${pid}/stat`);
  if (!stat) return NaN;
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): utime is field 14, stime field 15.
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / PAGE_TICKS;
}

/**
 * CPU of every thread of `pid` so far, in ms, from /proc/<pid>/task/<tid>/schedstat (ns on the CPU):
 * the process's own work at ns resolution, without the children it waited for (runc); NaN when gone.
 */
export function threadsCpuMs(pid: number): number {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return NaN;
  }
  let ns = 0;
  for (const tid of tids) {
    const text = readOr(`/proc/${pid}/task/${tid}/schedstat`);
    if (text) ns += Number(text.split(' ')[0]); // a thread that is gone adds nothing
  }
  return ns / 1e6;
}

export function procState(pid: number): string | null {
  const stat = readOr(`/proc/${pid}/stat`);
  if (!stat) return null;
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

/** Zombie children of a process. */
export function zombieChildren(ppid: number): number {
  let count = 0;
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readOr(`/proc/${name}/stat`);
    if (!stat) continue;
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' && Number(rest[1]) === ppid) count++;
  }
  return count;
}

/**
 * Long-running shim daemons serving a containerd: processes whose command line carries
 * `-address <containerd socket>` and that are not a transient `start`/`delete`. The command line is
 * split on NULs and spaces, because tsshim's daemon rewrites its process title into one string.
 */
export function shimDaemons(containerdAddress: string, runtime?: 'runc' | 'tsshim'): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const raw = readOr(`/proc/${pid}/cmdline`);
    if (!raw) continue;
    const argv = raw.split(/[\0 ]+/).filter(Boolean);
    const i = argv.findIndex((a, j) => (a === '-address' || a === '--address') && argv[j + 1] === containerdAddress);
    if (i < 0) continue;
    // runc.v2's daemon is containerd-shim-runc-v2; tsshim's (and its warm spares) carry tsshim in the title.
    if (runtime === 'runc' && !argv[0].endsWith('containerd-shim-runc-v2')) continue;
    if (runtime === 'tsshim' && !raw.includes('tsshim')) continue;
    const last = argv[argv.length - 1];
    if (last === 'start' || last === 'delete') continue;
    const state = procState(pid);
    if (state === 'Z' || state === null) continue;
    out.push(pid);
  }
  return out;
}

export interface MemTotals {
  shims: number;
  rssKiB: number;
  pssKiB: number;
  threads: number;
  /** tsshim's warm spares (idle pre-booted shims, `containerd-shim-tsshim-v2 spare ...`), included above. */
  spares: number;
  spareRssKiB: number;
  sparePssKiB: number;
}

function isSpare(pid: number): boolean {
  const argv = (readOr(`/proc/${pid}/cmdline`) ?? '').split(/[\0 ]+/);
  return argv[1] === 'spare';
}

export function sumMem(pids: number[]): MemTotals {
  const t: MemTotals = { shims: 0, rssKiB: 0, pssKiB: 0, threads: 0, spares: 0, spareRssKiB: 0, sparePssKiB: 0 };
  for (const pid of pids) {
    const m = procMem(pid);
    if (!m) continue;
    t.shims++;
    t.rssKiB += m.rssKiB;
    t.pssKiB += m.pssKiB;
    t.threads += m.threads;
    if (isSpare(pid)) {
      t.spares++;
      t.spareRssKiB += m.rssKiB;
      t.sparePssKiB += m.pssKiB;
    }
  }
  return t;
}

/** The shim daemon serving container `id` (started for it: `-id <id>` on its command line). */
export function shimPidFor(containerdAddress: string, id: string): number | null {
  for (const pid of shimDaemons(containerdAddress)) {
    const argv = (readOr(`/proc/${pid}/cmdline`) ?? '').split(/[\0 ]+/);
    const i = argv.indexOf('-id');
    if (i >= 0 && argv[i + 1] === id) return pid;
  }
  return null;
}

/**
 * utime + stime of a process and of its reaped children (cutime + cstime) in milliseconds: a shim
 * daemon's own CPU plus that of the runc calls and container processes it has waited for. NaN when gone.
 */
export function cpuWithChildrenMs(pid: number): number {
  const stat = readOr(`/proc/${pid}/stat`);
  if (!stat) return NaN;
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3: utime 14, stime 15, cutime 16, cstime 17.
  return ((Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) * 1000) / PAGE_TICKS;
}

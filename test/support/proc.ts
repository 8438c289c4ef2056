// Process and host probes for every suite: zombies under a process, open fds, RSS, children,
// argv, mounts under a directory. Linux /proc only.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sleep } from './wait';
import { ownFds } from '../../src/sys/proc-fds';

export interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  rssPages: number;
}

export function procStat(pid: number): ProcStat | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm may hold spaces and parentheses: the fields start after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { pid, state: rest[0], ppid: Number(rest[1]), rssPages: Number(rest[21]) };
}

export function allPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** Zombies (state Z) whose parent is `parents` or one of them. */
export function zombiesOf(parents: number | Iterable<number>): number[] {
  const set = new Set(typeof parents === 'number' ? [parents] : parents);
  if (set.size === 0) return [];
  const out: number[] = [];
  for (const pid of allPids()) {
    const s = procStat(pid);
    if (s && s.state === 'Z' && set.has(s.ppid)) out.push(pid);
  }
  return out;
}

export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    } catch {
      /* thread gone */
    }
  }
  return out;
}

export function fdCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** This process's open fd numbers, sorted as strings (to compare before and after). */
export function openFds(): string[] {
  return fs.readdirSync('/proc/self/fd').sort();
}

/** Runs fn and asserts this process holds the same fds afterwards (sockets may take a few turns to close). */
export async function noFdLeak(fn: () => Promise<void>): Promise<void> {
  const before = openFds();
  await fn();
  for (let i = 0; i < 50 && openFds().length !== before.length; i++) await sleep(20);
  assert.deepEqual(openFds(), before, 'file descriptors leaked');
}

/**
 * A process's argv from /proc/<pid>/cmdline; null when it is gone. A daemon shim rewrites its argv
 * NUL-separated (proc-title.ts); a spare titles itself as one space-separated string (process.title).
 */
export function argvOf(pid: number): string[] | null {
  try {
    const argv = fs
      .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((s) => s !== '');
    return argv.length === 1 ? argv[0].split(' ') : argv;
  } catch {
    return null;
  }
}

/** Open fds of a process by kind: pipe, socket, anon_inode:..., or the path for files (fifos included). */
export function fdTargets(pid: number): string[] {
  return [...ownFds(`/proc/${pid}/fd`).values()];
}

/** Resident set size in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : -1;
  } catch {
    return -1;
  }
}

/**
 * Anonymous resident memory in bytes (RssAnon): what a process holds of its own, without the code
 * pages of its binary that an idle shim drops and its next call faults back in (src/shim/trim.ts).
 */
export function anonRssBytes(pid: number): number {
  try {
    const m = /RssAnon:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : -1;
  } catch {
    return -1;
  }
}

/** Alive and not a zombie. */
export function pidAlive(pid: number): boolean {
  const s = procStat(pid);
  return !!s && s.state !== 'Z' && s.state !== 'X';
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points at or under `dir` in our mount namespace. */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const out: string[] = [];
  let info = '';
  try {
    info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return out;
  }
  for (const line of info.split('\n')) {
    const f = line.split(' ');
    if (f.length < 5) continue;
    const mp = unescapeMount(f[4]);
    if (mp === dir || mp.startsWith(prefix)) out.push(mp);
  }
  return out;
}

/** Files directly in `dir` (empty when it does not exist). */
export function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

export interface ShimSample {
  pid: number;
  fds: number;
  rss: number;
  children: number;
  zombies: number;
  fdKinds: Record<string, number>;
}

/** One sample of a shim process's resources. */
export function sampleShim(pid: number): ShimSample {
  const fdKinds: Record<string, number> = {};
  for (const t of fdTargets(pid)) {
    const kind = t.startsWith('socket:')
      ? 'socket'
      : t.startsWith('pipe:')
        ? 'pipe'
        : t.startsWith('anon_inode:')
          ? t.slice('anon_inode:'.length).replace(/[[\]]/g, '')
          : 'file';
    fdKinds[kind] = (fdKinds[kind] ?? 0) + 1;
  }
  return {
    pid,
    fds: fdCount(pid),
    rss: rssBytes(pid),
    children: childrenOf(pid).length,
    zombies: zombiesOf(pid).length,
    fdKinds,
  };
}

export function mib(bytes: number): string {
  return (bytes / 1048576).toFixed(1) + ' MiB';
}

/** Reads `<bundle>/<name>`, trimmed; null when missing. */
export function readBundleFile(bundle: string, name: string): string | null {
  try {
    return fs.readFileSync(path.join(bundle, name), 'utf8').trim();
  } catch {
    return null;
  }
}

/** Seeded PRNG (mulberry32) so a failing stress run can be replayed with --seed. */
export class Random {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  /** k distinct elements of xs. */
  sample<T>(xs: readonly T[], k: number): T[] {
    const copy = [...xs];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [copy[i], copy[j]] = [copy[j], copy[i]];
    }
    return copy.slice(0, Math.min(k, copy.length));
  }
}

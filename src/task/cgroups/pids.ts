// A container's pids read from its cgroup, as `runc ps` lists them without starting runc (~6 ms of
// runc's CPU per Pids). runc ps prints libcontainer's GetAllPids: the cgroup.procs of the
// container's cgroup and of every cgroup below it, walked depth first in lexical order (Go's
// filepath.WalkDir), on v1 in the devices hierarchy (the fs and systemd managers both walk
// Path("devices")), on v2 in the unified one. Reading cgroup.procs works on a frozen cgroup too.
import { readFileSync, readdirSync } from 'node:fs';
import { posix } from 'node:path';
import type { CgroupHandle } from './discovery';

/** The directory runc's GetAllPids walks for this cgroup, or null when the handle has none. */
export function pidsDirOf(h: CgroupHandle): string | null {
  return h.version === 2 ? h.dir : (h.paths.devices ?? null);
}

/**
 * Every pid in `dir`'s cgroup.procs and in those of its descendants, parents first, children in
 * lexical order. A pid listed twice (a process that moved between two sub-cgroups during the walk,
 * a v2 threaded subtree) is kept once, at its first place. Null when any of it cannot be read or
 * parsed (the cgroup is gone, or going): the caller asks runc instead.
 */
export function readCgroupPids(dir: string): number[] | null {
  const out: number[] = [];
  const seen = new Set<number>();
  try {
    walk(dir, out, seen);
  } catch {
    return null; // gone or unreadable: runc ps says what it says about that
  }
  return out;
}

function walk(dir: string, out: number[], seen: Set<number>): void {
  const text = readFileSync(posix.join(dir, 'cgroup.procs'), 'latin1');
  for (let start = 0; start < text.length;) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    if (end > start) {
      const line = text.slice(start, end);
      const pid = Number(line);
      if (!/^\d+$/.test(line) || !Number.isSafeInteger(pid)) throw new Error(`bad pid ${JSON.stringify(line)}`);
      if (!seen.has(pid)) {
        seen.add(pid);
        out.push(pid);
      }
    }
    start = end + 1;
  }
  const subdirs = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort(byteOrder);
  for (const name of subdirs) walk(posix.join(dir, name), out, seen);
}

/** Go compares strings by their UTF-8 bytes; JavaScript's default sort by UTF-16 code units. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

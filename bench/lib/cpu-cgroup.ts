// CPU accounting per runtime with nanosecond resolution: a cpuacct cgroup (v1; cpu.stat on a v2-only
// host) per side. A process written into it takes its threads along, and every child it starts later
// (runc calls, spares) is born there; container processes leave it (runc moves them into the
// container's cgroups). Usage keeps what exited processes used. /proc/<pid>/stat counts in 10 ms
// ticks, too coarse for one operation of a few milliseconds.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Side } from './env';

interface Base {
  root: string;
  usageMs: (dir: string) => number;
}

function base(): Base | null {
  const v1 = '/sys/fs/cgroup/cpuacct';
  if (fs.existsSync(path.join(v1, 'cpuacct.usage'))) {
    return { root: v1, usageMs: (d) => Number(fs.readFileSync(path.join(d, 'cpuacct.usage'), 'utf8')) / 1e6 };
  }
  if (fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    return {
      root: '/sys/fs/cgroup',
      usageMs: (d) => Number(/usage_usec (\d+)/.exec(fs.readFileSync(path.join(d, 'cpu.stat'), 'utf8'))?.[1]) / 1e3,
    };
  }
  return null;
}

export interface CpuCgroups {
  /** The cgroup directory of a side ('' without cgroups). */
  dir(side: Side): string;
  /** Move a running process (all its threads) into the side's cgroup; false when that failed. */
  adopt(side: Side, pid: number): boolean;
  /** Cumulative CPU (ms) used in the side's cgroup; NaN without cgroups. */
  usageMs(side: Side): number;
  /** Move what is left back to the root cgroup and remove the directories (retrying while a process exits). */
  remove(): Promise<void>;
}

export function makeCpuCgroups(tag: string): CpuCgroups {
  const b = base();
  const top = b ? path.join(b.root, `tsshim-bench-${process.pid}-${tag}`) : '';
  const dirs: Partial<Record<Side, string>> = {};
  if (b) {
    for (const side of ['runc', 'tsshim'] as Side[]) {
      const d = path.join(top, side);
      try {
        fs.mkdirSync(d, { recursive: true });
        dirs[side] = d;
      } catch {
        /* no cgroup: CPU rows stay empty */
      }
    }
  }
  return {
    dir: (side) => dirs[side] ?? '',
    adopt(side, pid) {
      const d = dirs[side];
      if (!d) return false;
      try {
        fs.writeFileSync(path.join(d, 'cgroup.procs'), `${pid}\n`);
        return true;
      } catch {
        return false;
      }
    },
    usageMs(side) {
      const d = dirs[side];
      if (!d || !b) return NaN;
      try {
        return b.usageMs(d);
      } catch {
        return NaN;
      }
    },
    async remove() {
      if (!b) return;
      for (const d of Object.values(dirs)) {
        for (let attempt = 0; attempt < 40; attempt++) {
          let pids: string[] = [];
          try {
            pids = fs.readFileSync(path.join(d!, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
          } catch {
            /* gone */
          }
          for (const pid of pids) {
            try {
              fs.writeFileSync(path.join(b.root, 'cgroup.procs'), `${pid}\n`);
            } catch {
              /* exited */
            }
          }
          try {
            fs.rmdirSync(d!);
            break;
          } catch {
            await new Promise((r) => setTimeout(r, 50));
          } // a process still exiting
        }
      }
      try {
        fs.rmdirSync(top);
      } catch {
        /* not empty */
      }
    },
  };
}

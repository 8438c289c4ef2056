// Shim wrappers for a containerd of the benchmark's own: a directory put first on containerd's PATH
// with a bash script per shim binary. Each script
//   - moves itself into a cpuacct cgroup of its runtime (cgroup v1 here; v2 when that is all there
//     is), so the start command, the daemon it spawns, that daemon's runc calls and (for tsshim) the
//     spares it boots are all accounted there, even after they exit: CPU per container from
//     cpuacct.usage, which a per-process /proc reading cannot give once the shim has gone;
//   - for `start`, runs the real binary as its child and logs the wall time ($EPOCHREALTIME, no fork)
//     and the CPU of that command (bash `times`, its reaped child) to a log file;
//   - for anything else, execs the real binary.
// A `runc` wrapper there too logs every runc call's wall time and argv, so a shim's Create can be
// split into runc's own time and the shim's. bash's own start-up (~1-2 ms) lands before the clock
// starts, on both runtimes alike (for runc it adds to the shim's side of the split).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from '../../test/support/harness';
import type { Side } from './env';
import { makeCpuCgroups } from './cpu-cgroup';

const BINARY: Record<Side, string> = { runc: 'containerd-shim-runc-v2', tsshim: 'containerd-shim-tsshim-v2' };

export interface StartRecord {
  side: Side;
  id: string;
  /** Wall clock (ms since epoch) when `start` was run and when it exited. */
  t0: number;
  t1: number;
  /** CPU of the start command (user + sys, ms), its reaped children included. */
  cpuMs: number;
}

export interface RuncCall {
  /** The runc subcommand (create, start, delete, kill, exec, ...). */
  command: string;
  /** The last argument: the container id for most subcommands. */
  id: string;
  t0: number;
  t1: number;
}

const RUNC_COMMANDS = new Set([
  'create',
  'start',
  'delete',
  'kill',
  'exec',
  'state',
  'ps',
  'pause',
  'resume',
  'events',
  'update',
  'features',
]);

export interface ShimWrap {
  /** Put this first on containerd's PATH. */
  dir: string;
  /** Cumulative CPU (ms) of everything that ran in this runtime's cgroup; NaN without cgroups. */
  cgroupCpuMs(side: Side): number;
  /** `start` records logged so far. */
  starts(): StartRecord[];
  /** runc calls logged so far. */
  runcCalls(): RuncCall[];
  /** Remove the cgroups (once their processes are gone) and the directory. */
  remove(): Promise<void>;
}

function realBinary(side: Side): string {
  if (side === 'tsshim') return path.join(repoRoot(), 'bin', BINARY.tsshim);
  return execFileSync('sh', ['-c', `command -v ${BINARY.runc}`], { encoding: 'utf8' }).trim();
}

/** bash `times` line `0m0.012s 0m0.004s` -> ms. */
function timesMs(line: string): number {
  let total = 0;
  for (const m of line.matchAll(/(\d+)m([\d.]+)s/g)) total += Number(m[1]) * 60_000 + Number(m[2]) * 1000;
  return total;
}

export function makeShimWrap(parent: string, tag: string): ShimWrap {
  const dir = fs.mkdtempSync(path.join(parent, `shim-wrap-${tag}-`));
  const log = path.join(dir, 'starts.log');
  const cgroups = makeCpuCgroups(`wrap-${tag}`);
  for (const side of ['runc', 'tsshim'] as Side[]) {
    const cg = cgroups.dir(side);
    const script = [
      '#!/bin/bash',
      `# bench wrapper (bench/lib/shim-wrap.ts) for ${BINARY[side]}`,
      cg ? `echo $$ > ${cg}/cgroup.procs 2>/dev/null` : ':',
      `real=${realBinary(side)}`,
      'case "${@: -1}" in',
      '  start)',
      '    id=; prev=; for a; do [ "$prev" = -id ] && id=$a; prev=$a; done',
      '    t0=$EPOCHREALTIME',
      '    "$real" "$@"; rc=$?',
      '    t1=$EPOCHREALTIME',
      `    { echo "start ${side} $id $t0 $t1"; times; } >> ${log}`,
      '    exit $rc ;;',
      '  *) exec "$real" "$@" ;;',
      'esac',
      '',
    ].join('\n');
    fs.writeFileSync(path.join(dir, BINARY[side]), script, { mode: 0o755 });
  }
  const runcLog = path.join(dir, 'runc.log');
  const runcReal = execFileSync('sh', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim();
  fs.writeFileSync(
    path.join(dir, 'runc'),
    [
      '#!/bin/bash',
      '# bench wrapper (bench/lib/shim-wrap.ts) for runc: wall time of every call',
      't0=$EPOCHREALTIME',
      `${runcReal} "$@"; rc=$?`,
      `echo "$t0 $EPOCHREALTIME $*" >> ${runcLog}`,
      'exit $rc',
      '',
    ].join('\n'),
    { mode: 0o755 }
  );
  return {
    dir,
    runcCalls() {
      let text = '';
      try {
        text = fs.readFileSync(runcLog, 'utf8');
      } catch {
        return [];
      }
      const out: RuncCall[] = [];
      for (const line of text.split('\n')) {
        const [t0, t1, ...args] = line.split(' ');
        if (!args.length) continue;
        out.push({
          command: args.find((a) => RUNC_COMMANDS.has(a)) ?? '?',
          id: args[args.length - 1],
          t0: Number(t0) * 1000,
          t1: Number(t1) * 1000,
        });
      }
      return out;
    },
    cgroupCpuMs: (side) => cgroups.usageMs(side),
    starts() {
      let text = '';
      try {
        text = fs.readFileSync(log, 'utf8');
      } catch {
        return [];
      }
      const lines = text.split('\n');
      const out: StartRecord[] = [];
      for (let i = 0; i < lines.length; i++) {
        const m = /^start (\S+) (\S*) ([\d.]+) ([\d.]+)$/.exec(lines[i]);
        if (!m) continue;
        // `times`: the shell's own line, then its children's (the start command).
        out.push({
          side: m[1] as Side,
          id: m[2],
          t0: Number(m[3]) * 1000,
          t1: Number(m[4]) * 1000,
          cpuMs: timesMs(lines[i + 2] ?? ''),
        });
      }
      return out;
    },
    async remove() {
      await cgroups.remove();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

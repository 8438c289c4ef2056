// 9. tty output throughput: ctr on a real pseudo-terminal (node-pty, as test/e2e/tty.test.ts), the
// container writing N MiB of zeros with dd through its own pty (`ctr run -t --rm` and
// `ctr task exec -t` into a sleeping container). MiB/s from dd's first output byte to the last
// one (the N MiB-th), and the wall time of the whole command; shim CPU for the copy from a cpuacct
// cgroup, read at the first and at the last byte. The container prints `ready` and waits for a line
// on its terminal before dd starts: a new tsshim shim boots the next container's spare once quiet
// after Start (~0.3 s of CPU, src/shim/spare.ts), and that boot is no part of the copy (as in the
// detached suite), so the line is sent once the spare booted.
import * as pty from 'node-pty';
import type { Containerd } from '../../test/support/harness';
import { type BenchEnv, type Side, SIDES, newId, runArgs, removeContainer, runSleeper } from '../lib/env';
import { shimPidFor } from '../lib/proc';
import { spareBooted } from '../lib/spares';
import { makeCpuCgroups, type CpuCgroups } from '../lib/cpu-cgroup';
import type { Results } from '../lib/results';
import { nowMs, rotate } from '../lib/stats';

interface TtyRun {
  mibPerS: number;
  wallMs: number;
  cpuMs: number;
  lostBytes: number;
}

/** What the container prints before it waits for the line that starts dd. */
const READY = 'ready';

/** The container's command: no echo (the line sent is no output), `ready`, a line read, then dd. */
function ddAfterLine(mib: number): string[] {
  return ['sh', '-c', `stty -echo; echo ${READY}; read x; exec dd if=/dev/zero bs=65536 count=${mib * 16} 2>/dev/null`];
}

/**
 * ctr `args` on a pty; once the container said `ready` and `beforeCopy` resolved, sends the line
 * that starts dd; resolves once ctr exits after `bytes` bytes of output reached us.
 */
function ptyRun(
  c: Containerd,
  args: string[],
  bytes: number,
  side: Side,
  cg: CpuCgroups,
  shimOf: () => number | null,
  beforeCopy: () => Promise<void>
): Promise<TtyRun> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const term = pty.spawn('ctr', ['--address', c.address, '--namespace', c.namespace, ...args], {
      name: 'xterm',
      cols: 80,
      rows: 24,
      env: process.env as Record<string, string>,
      encoding: null,
    });
    let got = 0;
    let first = 0;
    let last = 0;
    let adopted = false;
    let cpuFirst = NaN;
    let cpuLast = NaN;
    let tail = '';
    const timer = setTimeout(() => {
      try {
        term.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }, 300_000);
    let intro = '';
    let started = false;
    term.onData((d) => {
      if (!started) {
        // Until dd runs: only `ready` (and ctr's own terminal set-up, if any) comes.
        if (intro.includes(READY)) return;
        intro += typeof d === 'string' ? d : (d as Buffer).toString('latin1');
        if (!intro.includes(READY)) return;
        void beforeCopy().then(
          () => {
            started = true;
            term.write('\n');
          },
          (err: unknown) => {
            tail = `before the copy: ${String(err)}`;
            term.kill('SIGKILL');
          }
        );
        return;
      }
      const n = typeof d === 'string' ? Buffer.byteLength(d) : (d as Buffer).length;
      if (!first) {
        first = nowMs();
        const shim = shimOf();
        adopted = shim !== null && cg.adopt(side, shim);
        if (adopted) cpuFirst = cg.usageMs(side);
      }
      got += n;
      last = nowMs();
      if (adopted) cpuLast = cg.usageMs(side);
      if (got < 2048 || got >= bytes)
        tail = (tail + (typeof d === 'string' ? d : (d as Buffer).toString('latin1'))).slice(-300);
    });
    term.onExit(async (e) => {
      clearTimeout(timer);
      const end = nowMs();
      // node-pty may report the exit before the last reads; give them a moment.
      await new Promise((r) => setTimeout(r, 300));
      // A tty can lose its last few KiB when the writer exits (seen with both shims): tolerate 1%.
      if (e.exitCode !== 0 || got < bytes * 0.99) {
        reject(
          new Error(
            `ctr ${args.join(' ')}: exit ${e.exitCode}, ${got} of ${bytes} bytes; tail ${JSON.stringify(tail.replace(/\0/g, ''))}`
          )
        );
        return;
      }
      resolve({
        mibPerS: got / (1 << 20) / ((last - first) / 1000),
        wallMs: end - t0,
        cpuMs: cpuLast - cpuFirst,
        lostBytes: Math.max(0, bytes - got),
      });
    });
  });
}

export async function ttySuite(env: BenchEnv, results: Results): Promise<void> {
  const c = env.main;
  const mib = env.quick ? 16 : 64;
  const bytes = mib << 20;
  const iterations = env.quick ? 2 : 5;
  const dd = ddAfterLine(mib);
  // The spare wait only matters for a shim that just started (run -t); exec's shim booted its spare long ago.
  const spareWait = (side: Side) => () => (side === 'tsshim' ? spareBooted(c.address, 3000) : Promise.resolve());
  const rows = {
    run: { runc: [] as TtyRun[], tsshim: [] as TtyRun[] },
    exec: { runc: [] as TtyRun[], tsshim: [] as TtyRun[] },
  };
  const sleepers: Record<Side, string> = { runc: newId('ttys-runc'), tsshim: newId('ttys-tsshim') };
  const cg = makeCpuCgroups('tty');
  try {
    for (const side of SIDES) await runSleeper(env, c, { side }, sleepers[side]);
    let execSeq = 0;
    for (let i = 0; i < iterations; i++) {
      for (const side of rotate(SIDES, i)) {
        const id = newId(`tty-${side}`);
        rows.run[side].push(
          await ptyRun(
            c,
            runArgs(env, { side }, ['-t', '--rm'], id, dd),
            bytes,
            side,
            cg,
            () => shimPidFor(c.address, id),
            spareWait(side)
          )
        );
      }
      for (const side of rotate(SIDES, i + 1)) {
        const args = ['task', 'exec', '-t', '--exec-id', `tty${++execSeq}`, sleepers[side], ...dd];
        rows.exec[side].push(
          await ptyRun(c, args, bytes, side, cg, () => shimPidFor(c.address, sleepers[side]), spareWait(side))
        );
      }
      env.log(`  tty: ${i + 1}/${iterations}`);
    }
  } finally {
    for (const side of SIDES) await removeContainer(c, sleepers[side]);
    await cg.remove();
  }
  const lost = SIDES.map(
    (s) =>
      `${s} ${[...rows.run[s], ...rows.exec[s]].filter((x) => x.lostBytes > 0).length} (max ${Math.max(0, ...[...rows.run[s], ...rows.exec[s]].map((x) => x.lostBytes))} B)`
  );
  results.note(
    `tty: runs whose output ended short of the ${mib} MiB written (the tail lost at exit): ${lost.join(', ')}`
  );
  const target = { text: 'ratio >= 1.0', on: 'ratio' as const, op: '>=' as const, value: 1.0 };
  for (const [kind, label] of [
    ['run', 'ctr run -t --rm'],
    ['exec', 'ctr task exec -t'],
  ] as const) {
    const r = rows[kind];
    const pick = (s: Side, f: (x: TtyRun) => number) => r[s].map(f);
    results.add({
      suite: 'tty',
      name: `${label}: ${mib} MiB through a pty, first to last byte`,
      unit: 'MiB/s',
      better: 'higher',
      runc: pick('runc', (x) => x.mibPerS),
      tsshim: pick('tsshim', (x) => x.mibPerS),
      target,
    });
    results.add({
      suite: 'tty',
      name: `${label}: ${mib} MiB, wall time`,
      unit: 'ms',
      runc: pick('runc', (x) => x.wallMs),
      tsshim: pick('tsshim', (x) => x.wallMs),
    });
    results.add({
      suite: 'tty',
      name: `${label}: shim CPU for ${mib} MiB (daemon + runc, cgroup)`,
      unit: 'ms',
      runc: pick('runc', (x) => x.cpuMs),
      tsshim: pick('tsshim', (x) => x.cpuMs),
    });
  }
}

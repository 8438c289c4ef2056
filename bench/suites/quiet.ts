// 12. Stats at the kubelet's pace: one detached container per side, `ctr task metrics` on both every
// QUIET_MS (the kubelet asks for each container's stats about every 10 s), the calls in rotated
// order. Per round and side, the shim's own CPU (schedstat of its threads, bench/lib/proc.ts) for the
// call and for the quiet period after it: what a shim spends when nothing is asked of it, e.g.
// tsshim's idle collection and trim (src/shim/idle-gc.ts), counts against the call that caused it.
import { type BenchEnv, type Side, SIDES, mustCtr, newId, removeContainer, runSleeper } from '../lib/env';
import type { Results } from '../lib/results';
import { shimPidFor, threadsCpuMs } from '../lib/proc';
import { rotate, sleep } from '../lib/stats';
import { spareBooted } from '../lib/spares';

export const QUIET_MS = 10_000;

export async function quietSuite(env: BenchEnv, results: Results): Promise<void> {
  const c = env.main;
  const rounds = env.quick ? 3 : 8;
  const ids: Record<Side, string> = { runc: newId('quiet-runc'), tsshim: newId('quiet-tsshim') };
  const pids: Partial<Record<Side, number>> = {};
  const call: Record<Side, number[]> = { runc: [], tsshim: [] };
  const total: Record<Side, number[]> = { runc: [], tsshim: [] };
  try {
    for (const side of SIDES) {
      await runSleeper(env, c, { side }, ids[side]);
      const pid = shimPidFor(c.address, ids[side]);
      if (pid === null) throw new Error(`quiet: no shim found for ${ids[side]}`);
      pids[side] = pid;
      if (side === 'tsshim') await spareBooted(c.address, 3000);
    }
    // The first call of a shim is another row's (detached: metrics, first call).
    for (const side of SIDES) await mustCtr(c, ['task', 'metrics', ids[side]]);
    await sleep(QUIET_MS);
    for (let i = 0; i < rounds; i++) {
      const before: Partial<Record<Side, number>> = {};
      for (const side of rotate(SIDES, i)) {
        const t0 = threadsCpuMs(pids[side]!);
        await mustCtr(c, ['task', 'metrics', ids[side]]);
        call[side].push(threadsCpuMs(pids[side]!) - t0);
        before[side] = t0;
      }
      await sleep(QUIET_MS);
      for (const side of SIDES) total[side].push(threadsCpuMs(pids[side]!) - before[side]!);
      env.log(`  quiet: ${i + 1}/${rounds}`);
    }
  } finally {
    for (const side of SIDES) await removeContainer(c, ids[side]).catch(() => undefined);
  }
  results.add({
    suite: 'quiet',
    name: `shim CPU: task metrics every ${QUIET_MS / 1000} s, the call`,
    unit: 'ms',
    runc: call.runc,
    tsshim: call.tsshim,
  });
  results.add({
    suite: 'quiet',
    name: `shim CPU: task metrics every ${QUIET_MS / 1000} s, the call and the quiet period after it`,
    unit: 'ms',
    runc: total.runc,
    tsshim: total.tsshim,
    target: { text: 'ratio <= 1.0 (CPU per operation)', on: 'ratio', op: '<=', value: 1.0 },
  });
}

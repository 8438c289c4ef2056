// 2. A detached container: exec latency, 20 concurrent execs, metrics (the first call on the
// container, then four more: the shim may keep state between them, e.g. open cgroup files), ps, pause, resume,
// kill -> STOPPED and delete, runc and tsshim alternating on every operation. Beside each latency, the
// shim's CPU for it: the daemon is moved into a cpuacct cgroup of its side right after `run -d`
// (bench/lib/cpu-cgroup.ts), so its CPU and that of the runc calls it makes are read in ns. For the
// operations that call runc, also the shim's own CPU without runc's (schedstat of its threads): runc
// is the same program with the same arguments under both shims, so that row shows what the shim
// itself adds.
import { waitTask } from '../../test/support/containerd-api';
import { type BenchEnv, type Side, SIDES, mustCtr, newId, runSleeper } from '../lib/env';
import type { Results } from '../lib/results';
import { shimPidFor, threadsCpuMs } from '../lib/proc';
import { makeCpuCgroups } from '../lib/cpu-cgroup';
import { nowMs, rotate } from '../lib/stats';
import { spareBooted } from '../lib/spares';

type Op =
  | 'run -d'
  | 'exec /bin/true'
  | '20 concurrent execs (total)'
  | 'task metrics, first call'
  | 'task metrics, calls 2-5'
  | 'task ps'
  | 'pause'
  | 'resume'
  | 'kill -> STOPPED'
  | 'task delete';
const OPS: Op[] = [
  'run -d',
  'exec /bin/true',
  '20 concurrent execs (total)',
  'task metrics, first call',
  'task metrics, calls 2-5',
  'task ps',
  'pause',
  'resume',
  'kill -> STOPPED',
  'task delete',
];
/** Metrics calls per container after the first (each one a sample; CPU per call). */
const STEADY_METRICS = 4;

const TARGETS: Partial<Record<Op, { text: string; value: number }>> = {
  'exec /bin/true': { text: 'ratio <= 0.9', value: 0.9 },
  '20 concurrent execs (total)': { text: 'ratio <= 0.7', value: 0.7 },
  'task metrics, first call': { text: 'ratio <= 0.8', value: 0.8 },
  'task metrics, calls 2-5': { text: 'ratio <= 0.8', value: 0.8 },
  'task ps': { text: 'ratio <= 1.0', value: 1.0 },
  pause: { text: 'ratio <= 1.0', value: 1.0 },
  resume: { text: 'ratio <= 1.0', value: 1.0 },
};

/** Operations whose shim CPU is read (the shim lives before and after them). */
const CPU_OPS = new Set<Op>([
  'exec /bin/true',
  '20 concurrent execs (total)',
  'task metrics, first call',
  'task metrics, calls 2-5',
  'task ps',
  'pause',
  'resume',
  'kill -> STOPPED',
]);
const CPU_TARGET = new Set<Op>(['exec /bin/true', 'task metrics, first call', 'task metrics, calls 2-5']);
/** Operations that call runc (under one shim at least): their CPU is also reported without runc's. */
const OWN_CPU_OPS = new Set<Op>([
  'exec /bin/true',
  '20 concurrent execs (total)',
  'task ps',
  'pause',
  'resume',
  'kill -> STOPPED',
]);

export async function detachedSuite(env: BenchEnv, results: Results): Promise<void> {
  const c = env.main;
  const iterations = env.quick ? 3 : 10;
  const execsPerIteration = 3;
  const times = new Map<string, number[]>();
  const push = (op: Op, side: Side, ms: number) => addTo(times, `${op}|${side}`, ms);
  const cpu = new Map<string, number[]>();
  const ownCpu = new Map<string, number[]>();
  const pids: Partial<Record<Side, number>> = {};
  const cg = makeCpuCgroups('detached');
  try {
    let execSeq = 0;
    for (let i = 0; i < iterations; i++) {
      const ids: Record<Side, string> = { runc: newId('det-runc'), tsshim: newId('det-tsshim') };
      const shims: Partial<Record<Side, boolean>> = {};
      for (const [k, op] of OPS.entries()) {
        for (const side of rotate(SIDES, i + k)) {
          const id = ids[side];
          const measured = !!shims[side] && CPU_OPS.has(op);
          const cpu0 = measured ? cg.usageMs(side) : NaN;
          const own0 = measured && OWN_CPU_OPS.has(op) ? threadsCpuMs(pids[side]!) : NaN;
          switch (op) {
            case 'run -d':
              push(op, side, (await runSleeper(env, c, { side }, id)).ms);
              {
                const pid = shimPidFor(c.address, id);
                shims[side] = pid !== null && cg.adopt(side, pid);
                if (pid !== null) pids[side] = pid;
                // tsshim boots the next container's spare once it went quiet after Start: that boot
                // (~250 ms of CPU, born in the side's cgroup) belongs to no operation measured below.
                if (side === 'tsshim') await spareBooted(c.address, 3000);
              }
              break;
            case 'exec /bin/true':
              for (let n = 0; n < execsPerIteration; n++) {
                push(op, side, (await mustCtr(c, ['task', 'exec', '--exec-id', `e${++execSeq}`, id, '/bin/true'])).ms);
              }
              break;
            case '20 concurrent execs (total)': {
              const t0 = nowMs();
              await Promise.all(
                Array.from({ length: 20 }, () =>
                  mustCtr(c, ['task', 'exec', '--exec-id', `c${++execSeq}`, id, '/bin/true'])
                )
              );
              push(op, side, nowMs() - t0);
              break;
            }
            case 'task metrics, first call':
              push(op, side, (await mustCtr(c, ['task', 'metrics', id])).ms);
              break;
            case 'task metrics, calls 2-5':
              for (let n = 0; n < STEADY_METRICS; n++) push(op, side, (await mustCtr(c, ['task', 'metrics', id])).ms);
              break;
            case 'task ps':
              push(op, side, (await mustCtr(c, ['task', 'ps', id])).ms);
              break;
            case 'pause':
              push(op, side, (await mustCtr(c, ['task', 'pause', id])).ms);
              break;
            case 'resume':
              push(op, side, (await mustCtr(c, ['task', 'resume', id])).ms);
              break;
            case 'kill -> STOPPED': {
              const exited = waitTask(c, id);
              await new Promise((r) => setTimeout(r, 20)); // Wait must be registered before the kill
              const t0 = nowMs();
              await mustCtr(c, ['task', 'kill', '-s', 'KILL', id]);
              await exited;
              push(op, side, nowMs() - t0);
              break;
            }
            case 'task delete':
              push(op, side, (await mustCtr(c, ['task', 'delete', id])).ms);
              await mustCtr(c, ['container', 'delete', id]);
              break;
          }
          // exec: three per iteration, CPU per exec is the third of the sum; metrics 2-5 likewise.
          const per =
            op === 'exec /bin/true' ? execsPerIteration : op === 'task metrics, calls 2-5' ? STEADY_METRICS : 1;
          const used = measured ? cg.usageMs(side) - cpu0 : NaN;
          if (Number.isFinite(used)) addTo(cpu, `${op}|${side}`, used / per);
          const own = Number.isFinite(own0) ? threadsCpuMs(pids[side]!) - own0 : NaN;
          if (Number.isFinite(own)) addTo(ownCpu, `${op}|${side}`, own / per);
        }
      }
      env.log(`  detached: ${i + 1}/${iterations}`);
    }
  } finally {
    await cg.remove();
  }
  for (const op of OPS) {
    const t = TARGETS[op];
    results.add({
      suite: 'detached',
      name: op,
      unit: 'ms',
      runc: times.get(`${op}|runc`),
      tsshim: times.get(`${op}|tsshim`),
      target: t ? { text: t.text, on: 'ratio', op: '<=', value: t.value } : undefined,
    });
    if (CPU_OPS.has(op)) {
      results.add({
        suite: 'detached',
        name: `shim CPU: ${op}`,
        unit: 'ms',
        runc: cpu.get(`${op}|runc`) ?? null,
        tsshim: cpu.get(`${op}|tsshim`) ?? null,
        target: CPU_TARGET.has(op)
          ? { text: 'ratio <= 1.0 (CPU per operation)', on: 'ratio', op: '<=', value: 1.0 }
          : undefined,
      });
    }
    if (OWN_CPU_OPS.has(op)) {
      results.add({
        suite: 'detached',
        name: `shim CPU without runc: ${op}`,
        unit: 'ms',
        runc: ownCpu.get(`${op}|runc`) ?? null,
        tsshim: ownCpu.get(`${op}|tsshim`) ?? null,
      });
    }
  }
}

function addTo(m: Map<string, number[]>, key: string, v: number): void {
  if (!m.has(key)) m.set(key, []);
  m.get(key)!.push(v);
}

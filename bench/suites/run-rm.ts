// 1. `ctr run --rm /bin/true`: wall time and its phases from containerd's debug log, for one shim
// per container, pod-grouped shims and tsshim's per-node shim, runc and tsshim interleaved.
import type { Containerd } from '../../test/support/harness';
import { readLines, runPhases, type RunPhases } from '../lib/containerd-log';
import {
  type BenchEnv,
  type RunSpec,
  type Side,
  SANDBOX_ANNOTATION,
  SIDES,
  logMark,
  mustCtr,
  newId,
  runArgs,
  runSleeper,
} from '../lib/env';
import type { Results } from '../lib/results';
import { rotate, sleep } from '../lib/stats';

const GROUP_ANNOTATION = 'io.containerd.tsshim.v2.group';

interface Variant {
  mode: 'single' | 'group' | 'per-node';
  side: Side;
  c: Containerd;
  spec: RunSpec;
  ms: number[];
  phases: RunPhases[];
  incomplete: number;
}

export interface RunRmSummary {
  /** Median `ctr run --rm /bin/true` per side with one shim per container (throughput subtracts it). */
  singleMedianMs: Record<Side, number>;
  sandboxes: { c: Containerd; id: string }[];
}

const PHASES: { key: keyof RunPhases; name: string }[] = [
  { key: 'ctrHead', name: 'phase: ctr + container create' },
  { key: 'start', name: 'phase: shim start (until serving)' },
  { key: 'create', name: 'phase: Create (serving -> /tasks/create)' },
  { key: 'startAndCreate', name: 'phase: start + Create' },
  { key: 'start_', name: 'phase: Start' },
  { key: 'exitSeen', name: 'phase: exit seen (Start -> /tasks/exit)' },
  { key: 'delete', name: 'phase: Delete' },
  { key: 'shutdown', name: 'phase: shutdown (Delete -> container removed)' },
  { key: 'ctrTail', name: 'phase: ctr exit' },
];
/** Issue 17's targets (tsshim/runc.v2): one shim per container, pod-grouped, per-node. */
const RUN_RM_TARGET = { single: 1.2, group: 1.0, 'per-node': 0.9 } as const;
/** Phases with a target of their own (issue 17: Start, exit seen and Delete no slower than Go's). */
const PHASE_TARGETED = new Set(['start_', 'exitSeen', 'delete']);

async function once(env: BenchEnv, v: Variant, record: boolean): Promise<void> {
  const id = newId(`rm-${v.side}`);
  const from = logMark(v.c);
  const t = await mustCtr(v.c, runArgs(env, v.spec, ['--rm'], id, ['/bin/true']));
  await sleep(40); // let the shim's last log lines reach containerd's log
  if (!record) return;
  v.ms.push(t.ms);
  const phases = runPhases(readLines(v.c.logFile, from, logMark(v.c)), t.spawnedAt, t.exitedAt);
  if (phases) v.phases.push(phases);
  else v.incomplete++;
}

export async function runRmSuite(env: BenchEnv, results: Results): Promise<RunRmSummary> {
  const iterations = env.quick ? 8 : 30;
  const sandboxes: { c: Containerd; id: string }[] = [];
  const variants: Variant[] = [];
  for (const side of SIDES) {
    variants.push({ mode: 'single', side, c: env.main, spec: { side }, ms: [], phases: [], incomplete: 0 });
  }
  // Pod-grouped: a long-lived sandbox container holds the group's shim; runc.v2 groups by CRI's
  // sandbox-id annotation, tsshim by its own group annotation (it also honours sandbox-id).
  for (const side of SIDES) {
    const pod = newId(`pod-${side}`);
    const annotations: Record<string, string> = { [SANDBOX_ANNOTATION]: pod };
    if (side === 'tsshim') annotations[GROUP_ANNOTATION] = pod;
    await runSleeper(env, env.main, { side, annotations }, pod);
    sandboxes.push({ c: env.main, id: pod });
    variants.push({ mode: 'group', side, c: env.main, spec: { side, annotations }, ms: [], phases: [], incomplete: 0 });
  }
  for (const side of SIDES) {
    variants.push({ mode: 'per-node', side, c: env.perNode, spec: { side }, ms: [], phases: [], incomplete: 0 });
  }
  // Warm-up (page cache, per-node shim start), not recorded.
  for (const v of variants) await once(env, v, false);
  for (let i = 0; i < iterations; i++) {
    for (const v of rotate(variants, i)) await once(env, v, true);
    if (i % 5 === 4) env.log(`  run --rm: ${i + 1}/${iterations} iterations`);
  }

  const byMode = (mode: Variant['mode'], side: Side) => variants.find((v) => v.mode === mode && v.side === side)!;
  for (const mode of ['single', 'group', 'per-node'] as const) {
    const r = byMode(mode, 'runc');
    const t = byMode(mode, 'tsshim');
    const target = {
      text: `ratio <= ${RUN_RM_TARGET[mode].toFixed(1)} (${mode})`,
      on: 'ratio' as const,
      op: '<=' as const,
      value: RUN_RM_TARGET[mode],
    };
    results.add({
      suite: 'run --rm',
      name: 'ctr run --rm /bin/true',
      mode,
      unit: 'ms',
      runc: r.ms,
      tsshim: t.ms,
      target,
      note:
        mode === 'per-node'
          ? 'runc.v2 has no per-node mode: its row is one shim per container in the per-node containerd'
          : undefined,
    });
    for (const p of PHASES) {
      const rv = r.phases.map((x) => x[p.key] as number | null).filter((x): x is number => x !== null);
      const tv = t.phases.map((x) => x[p.key] as number | null).filter((x): x is number => x !== null);
      if (rv.length === 0 && tv.length === 0) continue;
      results.add({
        suite: 'run --rm',
        name: p.name,
        mode,
        unit: 'ms',
        runc: rv.length ? rv : null,
        tsshim: tv.length ? tv : null,
        target:
          mode === 'single' && PHASE_TARGETED.has(p.key)
            ? { text: 'ratio <= 1.0', on: 'ratio', op: '<=', value: 1.0 }
            : undefined,
      });
    }
    // tsshim's own view: the daemon's rpc durations.
    for (const method of ['Create', 'Start', 'Wait', 'Delete', 'Shutdown']) {
      const tv = t.phases.map((x) => x.rpc[method]).filter((x): x is number => typeof x === 'number');
      if (tv.length)
        results.add({ suite: 'run --rm', name: `tsshim rpc ${method} (in-shim)`, mode, unit: 'ms', tsshim: tv });
    }
    if (r.incomplete || t.incomplete) {
      results.note(
        `run --rm ${mode}: ${r.incomplete} runc and ${t.incomplete} tsshim runs lacked a log marker (phases skipped for them)`
      );
    }
  }
  const median = (v: Variant) => [...v.ms].sort((a, b) => a - b)[Math.floor(v.ms.length / 2)];
  return {
    singleMedianMs: { runc: median(byMode('single', 'runc')), tsshim: median(byMode('single', 'tsshim')) },
    sandboxes,
  };
}

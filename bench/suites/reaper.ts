// 5. Reaping: a container whose shell leaves 10,000 orphans (double fork) behind, in the host pid
// namespace (the shim, a subreaper, reaps them) and in its own (the container's init does), plus
// an exec storm: 200 execs, 20 at a time.
import { waitTask } from '../../test/support/containerd-api';
import { type BenchEnv, type Side, SIDES, mustCtr, newId, removeContainer, runArgs, runSleeper } from '../lib/env';
import { cpuMs, shimPidFor, zombieChildren } from '../lib/proc';
import type { Results } from '../lib/results';
import { nowMs, rotate } from '../lib/stats';

type PidNs = 'host pid ns' | 'own pid ns';

async function orphanRun(
  env: BenchEnv,
  side: Side,
  ns: PidNs,
  count: number
): Promise<{ ms: number; cpu: number; zombies: number }> {
  const c = env.main;
  const id = newId(`reap-${side}`);
  const script = `i=0; while [ $i -lt ${count} ]; do (/bin/true &); i=$((i+1)); done`;
  // Our own pid namespace is the host's (/proc/1/ns may be unreadable inside a sandboxed host).
  const extra = ns === 'host pid ns' ? ['--with-ns', `pid:/proc/${process.pid}/ns/pid`] : [];
  const t0 = nowMs();
  await mustCtr(c, runArgs(env, { side, extra }, ['-d'], id, ['sh', '-c', script]));
  const shimPid = shimPidFor(c.address, id);
  if (shimPid === null) throw new Error(`no shim daemon found for ${id}`);
  const cpuAtStart = cpuMs(shimPid); // the shim's own start-up is not reaping
  try {
    const exit = await waitTask(c, id, { timeoutMs: 600_000 });
    const ms = nowMs() - t0;
    if (exit.exit_status !== 0) throw new Error(`${side} orphan loop exited ${exit.exit_status}`);
    await new Promise((r) => setTimeout(r, 200)); // the last orphans
    return { ms, cpu: cpuMs(shimPid) - cpuAtStart, zombies: zombieChildren(shimPid) };
  } finally {
    await removeContainer(c, id);
  }
}

async function execStorm(env: BenchEnv, side: Side, total: number, parallel: number): Promise<number> {
  const c = env.main;
  const id = newId(`storm-${side}`);
  await runSleeper(env, c, { side }, id);
  try {
    let next = 0;
    const t0 = nowMs();
    const worker = async () => {
      while (next < total) {
        const n = next++;
        await mustCtr(c, ['task', 'exec', '--exec-id', `s${n}`, id, '/bin/true']);
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    return nowMs() - t0;
  } finally {
    await removeContainer(c, id);
  }
}

export async function reaperSuite(env: BenchEnv, results: Results): Promise<void> {
  const count = env.quick ? 1000 : 10_000;
  const reps = env.quick ? 1 : 2;
  const data = new Map<string, { ms: number[]; cpu: number[]; zombies: number[] }>();
  const variants = SIDES.flatMap((side) => (['host pid ns', 'own pid ns'] as PidNs[]).map((ns) => ({ side, ns })));
  for (let rep = 0; rep < reps; rep++) {
    for (const v of rotate(variants, rep)) {
      const r = await orphanRun(env, v.side, v.ns, count);
      const k = `${v.ns}|${v.side}`;
      if (!data.has(k)) data.set(k, { ms: [], cpu: [], zombies: [] });
      const d = data.get(k)!;
      d.ms.push(r.ms);
      d.cpu.push(r.cpu);
      d.zombies.push(r.zombies);
      env.log(
        `  reaper ${v.ns} ${v.side}: ${(r.ms / 1000).toFixed(2)} s, shim CPU ${r.cpu.toFixed(0)} ms, zombies ${r.zombies}`
      );
    }
  }
  for (const ns of ['host pid ns', 'own pid ns'] as PidNs[]) {
    const r = data.get(`${ns}|runc`)!;
    const t = data.get(`${ns}|tsshim`)!;
    results.add({
      suite: 'reaper',
      name: `${count} orphans, run -d -> exit seen`,
      mode: ns,
      unit: 'ms',
      runc: r.ms,
      tsshim: t.ms,
    });
    results.add({
      suite: 'reaper',
      name: `${count} orphans, shim CPU time after run -d returned`,
      mode: ns,
      unit: 'ms',
      runc: r.cpu,
      tsshim: t.cpu,
    });
    if ([...r.zombies, ...t.zombies].some((z) => z > 0)) {
      results.note(
        `reaper ${ns}: zombies left under the shim after exit: runc ${r.zombies.join('/')}, tsshim ${t.zombies.join('/')}`
      );
    }
  }
  const stormTotal = env.quick ? 100 : 200;
  const storm: Record<Side, number[]> = { runc: [], tsshim: [] };
  const stormReps = env.quick ? 1 : 3;
  for (let rep = 0; rep < stormReps; rep++) {
    for (const side of rotate(SIDES, rep)) storm[side].push(await execStorm(env, side, stormTotal, 20));
    env.log(`  exec storm: ${rep + 1}/${stormReps}`);
  }
  results.add({
    suite: 'reaper',
    name: `exec storm: ${stormTotal} execs, 20 at a time (total)`,
    unit: 'ms',
    runc: storm.runc,
    tsshim: storm.tsshim,
  });
}

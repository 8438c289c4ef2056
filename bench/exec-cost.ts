// Shim CPU per `ctr task exec /bin/true` and per `ctr task metrics`, call by call (issue 17): how much
// the first calls of a shim cost against later ones, runc.v2 and tsshim alternating in one private
// containerd (debug log level, as `npm run bench`). The shim is moved into a cpuacct cgroup of its
// runtime once it has gone quiet (tsshim: after its spare booted), so its CPU and that of the runc
// calls it makes are read in ns (bench/lib/cpu-cgroup.ts). Usage:
//   node dist/bench/exec-cost.js [containers=4] [execs=10] [metrics=5] [gap ms=30]
// Rows: the cgroup's CPU (shim and runc) per call, the shim's own threads (schedstat) per exec, and
// its user/system split (ticks, summed over all execs).
// gap: a pause after each call, not measured (a bench run leaves ~1-3 s between a shim's operations, time for
// tsshim's idle collection and trim, idle-gc.ts, before the next one).
// EXEC_COST_V8: V8 flags set in tsshim's processes at start (a --require hook in NODE_OPTIONS), to
// try flags without a rebuild. EXEC_COST_PROF=<dir>: tsshim's daemons write a V8 CPU profile of the
// execs there (SIGUSR2 starts and stops the profiler in the hook). EXEC_COST_ENV="K=V ...": more
// environment for containerd and the shims (e.g. TSSHIM_TRIM=0).
import * as fs from 'node:fs';
import { shimPidFor, threadsCpuMs } from './lib/proc';
import { makeCpuCgroups } from './lib/cpu-cgroup';
import type { Side } from './lib/env';
import { profileHookEnv } from './lib/profile-hook';

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(containers: number, execs: number, metrics: number, gap: number): Promise<void> {
  const { startContainerd, TSSHIM_RUNTIME, RUNC_RUNTIME } = await import('../test/support/harness');
  const { makeRootfs, PATH_ENV_ARGS } = await import('../test/support/rootfs');
  const { runDetached, removeContainer } = await import('../test/support/containers');
  const profDir = process.env.EXEC_COST_PROF;
  const extra = Object.fromEntries(
    (process.env.EXEC_COST_ENV ?? '')
      .split(/\s+/)
      .filter((kv) => kv.includes('='))
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])
  );
  const c = await startContainerd({ logLevel: 'debug', env: { ...profileHookEnv('EXEC_COST'), ...extra } });
  const cg = makeCpuCgroups('exec-cost');
  const sides: [Side, string][] = [
    ['runc', RUNC_RUNTIME],
    ['tsshim', TSSHIM_RUNTIME],
  ];
  // cpu[side][call index] = CPU samples (ms)
  const execCpu: Record<string, number[][]> = { runc: [], tsshim: [] };
  const metricsCpu: Record<string, number[][]> = { runc: [], tsshim: [] };
  // The shim's own threads (schedstat, without runc), per exec; user/system ticks over all execs.
  const execOwn: Record<string, number[][]> = { runc: [], tsshim: [] };
  const ticks: Record<string, { user: number; sys: number; n: number }> = {
    runc: { user: 0, sys: 0, n: 0 },
    tsshim: { user: 0, sys: 0, n: 0 },
  };
  const userSys = (pid: number) => {
    const rest = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return { user: Number(rest[11]), sys: Number(rest[12]) };
  };
  const must = async (args: string[]) => {
    const r = await c.ctr(args);
    if (r.code !== 0) throw new Error(`ctr ${args.join(' ')}: ${r.stderr}`);
  };
  try {
    const rootfs = makeRootfs(c.dir);
    let seq = 0;
    for (let k = 0; k < containers; k++) {
      for (const [side, rt] of k % 2 ? [...sides].reverse() : sides) {
        const id = `execcost-${side}-${k}`;
        await runDetached(c, id, ['sleep', '1000'], { runtime: rt, rootfs, extra: PATH_ENV_ARGS });
        const pid = shimPidFor(c.address, id);
        if (!pid) throw new Error(`no shim found for ${id}`);
        await sleep(2500); // tsshim boots its next spare once quiet: not measured
        if (!cg.adopt(side, pid)) throw new Error('no cpu cgroup');
        const prof = profDir && side === 'tsshim';
        if (prof) {
          process.kill(pid, 'SIGUSR2');
          await sleep(200);
        }
        const us0 = userSys(pid);
        for (let n = 0; n < execs; n++) {
          const t0 = cg.usageMs(side);
          const o0 = threadsCpuMs(pid);
          await must(['task', 'exec', '--exec-id', `e${++seq}`, id, '/bin/true']);
          await sleep(30); // work after the reply (exit, events)
          (execCpu[side][n] ??= []).push(cg.usageMs(side) - t0);
          (execOwn[side][n] ??= []).push(threadsCpuMs(pid) - o0);
          await sleep(gap);
        }
        const us1 = userSys(pid);
        ticks[side].user += us1.user - us0.user;
        ticks[side].sys += us1.sys - us0.sys;
        ticks[side].n += execs;
        for (let n = 0; n < metrics; n++) {
          const t0 = cg.usageMs(side);
          await must(['task', 'metrics', id]);
          await sleep(30);
          (metricsCpu[side][n] ??= []).push(cg.usageMs(side) - t0);
          await sleep(gap);
        }
        if (prof) process.kill(pid, 'SIGUSR2');
        await removeContainer(c, id);
      }
    }
    if (profDir) await sleep(500);
  } finally {
    await cg.remove();
    await c.stop();
  }
  const row = (name: string, per: Record<string, number[][]>) => {
    console.log(`${name}: median shim CPU (ms) per call index, runc.v2 / tsshim`);
    const all: Record<string, number[]> = { runc: [], tsshim: [] };
    for (let n = 0; n < per.runc.length; n++) {
      const r = median(per.runc[n]);
      const t = median(per.tsshim[n]);
      all.runc.push(...per.runc[n]);
      all.tsshim.push(...per.tsshim[n]);
      console.log(`  call ${n + 1}: ${r.toFixed(2)} / ${t.toFixed(2)}  (${(t / r).toFixed(2)})`);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    console.log(
      `  all calls: mean ${mean(all.runc).toFixed(2)} / ${mean(all.tsshim).toFixed(2)} (${(mean(all.tsshim) / mean(all.runc)).toFixed(2)})`
    );
  };
  row('exec /bin/true (cgroup: shim and runc)', execCpu);
  row('exec /bin/true, own threads (schedstat, without runc)', execOwn);
  for (const side of ['runc', 'tsshim'])
    console.log(
      `  ${side}: user ${((ticks[side].user * 10) / ticks[side].n).toFixed(2)} ms, system ${((ticks[side].sys * 10) / ticks[side].n).toFixed(2)} ms per exec (10 ms ticks, all execs)`
    );
  row('task metrics (cgroup: shim and runc)', metricsCpu);
}

const args = process.argv.slice(2);
main(Number(args[0] ?? 4), Number(args[1] ?? 10), Number(args[2] ?? 5), Number(args[3] ?? 30)).catch((e) => {
  console.error(e);
  process.exit(1);
});

// Shim CPU per Task.Stats, straight on the shim's socket (no ctr, no containerd in the loop): runc.v2
// and tsshim, one private containerd, `containers` detached sleepers per runtime. Per container the
// first Stats call, then `calls` more at one in flight. CPU is the sum of the shim's threads'
// /proc/<pid>/task/<tid>/schedstat (ns), read before and after each measured part. Usage:
//   node dist/bench/stats-cost.js [containers=4] [calls=300]
// With STATS_COST_PROF=<dir>, tsshim's daemons write V8 CPU profiles there, one of the first call
// and one of the others (a --require hook in NODE_OPTIONS, as the bench's profile suite does;
// SIGUSR2 starts and stops the profiler). STATS_COST_V8: V8 flags set in the shims by the hook.
import * as fs from 'node:fs';
import { Client } from '../src/ttrpc';
import { shimPidFor, threadsCpuMs } from './lib/proc';
import { profileHookEnv } from './lib/profile-hook';

const TASK = 'containerd.task.v2.Task';

/** StatsRequest { string id = 1 } (ids are short ASCII). */
function idRequest(id: string): Buffer {
  const b = Buffer.from(id);
  return Buffer.concat([Buffer.from([0x0a, b.length]), b]);
}

/** Minor faults of `pid` so far. */
function minflt(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(containers: number, calls: number): Promise<void> {
  const { startContainerd, shimAddressOf, TSSHIM_RUNTIME, RUNC_RUNTIME } = await import('../test/support/harness');
  const { makeRootfs, PATH_ENV_ARGS } = await import('../test/support/rootfs');
  const { runDetached } = await import('../test/support/containers');
  const profDir = process.env.STATS_COST_PROF;
  const c = await startContainerd({ logLevel: 'info', env: profileHookEnv('STATS_COST') });
  const rows: string[] = [];
  try {
    const rootfs = makeRootfs(c.dir);
    for (const rt of [RUNC_RUNTIME, TSSHIM_RUNTIME]) {
      const name = rt === TSSHIM_RUNTIME ? 'tsshim' : 'runc.v2';
      const first: number[] = [];
      const faults: number[] = [];
      const steady: number[] = [];
      for (let k = 0; k < containers; k++) {
        const id = `statscost-${name.replace('.', '')}-${k}`;
        await runDetached(c, id, ['sleep', '1000'], { runtime: rt, rootfs, extra: PATH_ENV_ARGS });
        const address = shimAddressOf(c.bundleDir(id)).replace(/^unix:\/\//, '');
        const pid = shimPidFor(c.address, id);
        if (!pid) throw new Error(`no shim found for ${id}`);
        // Quiet shim: tsshim boots its next spare and collects garbage once idle.
        await new Promise((res) => setTimeout(res, 4000));
        const client = await Client.connect(address);
        try {
          const req = idRequest(id);
          // containerd's connection is up and has served other calls before a first Stats.
          await client.call(TASK, 'Connect', req);
          await new Promise((res) => setTimeout(res, 300));
          const prof = profDir && rt === TSSHIM_RUNTIME;
          if (prof) {
            process.kill(pid, 'SIGUSR2'); // profile the first call
            await new Promise((res) => setTimeout(res, 200));
          }
          const f0 = minflt(pid);
          const t0 = threadsCpuMs(pid);
          await client.call(TASK, 'Stats', req);
          await new Promise((res) => setTimeout(res, 50)); // work after the reply (GC, timers)
          first.push(threadsCpuMs(pid) - t0);
          faults.push(minflt(pid) - f0);
          if (prof) {
            process.kill(pid, 'SIGUSR2');
            await new Promise((res) => setTimeout(res, 200));
            process.kill(pid, 'SIGUSR2'); // and the steady calls
            await new Promise((res) => setTimeout(res, 200));
          }
          const t1 = threadsCpuMs(pid);
          for (let i = 0; i < calls; i++) await client.call(TASK, 'Stats', req);
          steady.push((threadsCpuMs(pid) - t1) / calls);
          if (prof) process.kill(pid, 'SIGUSR2');
        } finally {
          client.close();
        }
      }
      rows.push(
        `${name.padEnd(8)} first Stats: ${first.map((x) => x.toFixed(2)).join(' ')} ms (median ${median(first).toFixed(2)}), minor faults ${faults.join(' ')};` +
          ` calls 2-${calls + 1}: ${steady.map((x) => x.toFixed(3)).join(' ')} ms per call (median ${median(steady).toFixed(3)})`
      );
    }
    if (profDir) await new Promise((res) => setTimeout(res, 500));
  } finally {
    await c.stop();
  }
  console.log(`shim CPU per Task.Stats (schedstat of the shim's threads), ${containers} containers per runtime`);
  for (const r of rows) console.log(r);
}

const args = process.argv.slice(2);
main(Number(args[0] ?? 4), Number(args[1] ?? 300)).catch((e) => {
  console.error(e);
  process.exit(1);
});

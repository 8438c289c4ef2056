// Shim CPU per Task.Pids, Pause and Resume, straight on the shim's socket (no ctr in the measured
// call): runc.v2 and tsshim, one private containerd, the two sides alternating. Per operation: the
// CPU of the side's cpuacct cgroup (the shim, the runc it starts and, for tsshim, its waiting spare;
// bench/lib/cpu-cgroup.ts), of the shim's own threads (schedstat), and the wall time.
//   fresh (default): a new container (so a new shim, as in the bench's detached suite) per round,
//     warmed like the bench's (three execs and a metrics call first): each call is the shim's first.
//   steady: one container per side, every call after three warm-up rounds.
// Usage: node dist/bench/pause-cost.js [rounds=10] [fresh|steady]
// PAUSE_COST_HOLD=<s>: steady mode waits that long before measuring (to attach strace).
// PAUSE_COST_PROF=<dir> (steady mode): tsshim's daemons write a V8 CPU profile of the measured rounds
// there; PAUSE_COST_V8: V8 flags (bench/lib/profile-hook.ts).
import { Client } from '../src/ttrpc';
import { shimPidFor, threadsCpuMs } from './lib/proc';
import { makeCpuCgroups } from './lib/cpu-cgroup';
import type { Side } from './lib/env';
import { profileHookEnv } from './lib/profile-hook';
import { spareBooted } from './lib/spares';

const TASK = 'containerd.task.v2.Task';

const OPS = (process.env.PAUSE_COST_OPS ?? 'Pids,Pause,Resume').split(',') as ('State' | 'Pids' | 'Pause' | 'Resume')[];

/** PidsRequest / PauseRequest / ResumeRequest { string id = 1 } (ids are short ASCII). */
function idRequest(id: string): Buffer {
  const b = Buffer.from(id);
  return Buffer.concat([Buffer.from([0x0a, b.length]), b]);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

async function main(rounds: number, mode: string): Promise<void> {
  const { startContainerd, shimAddressOf, TSSHIM_RUNTIME, RUNC_RUNTIME } = await import('../test/support/harness');
  const { makeRootfs, PATH_ENV_ARGS } = await import('../test/support/rootfs');
  const { runDetached } = await import('../test/support/containers');
  const c = await startContainerd({ logLevel: 'info', env: profileHookEnv('PAUSE_COST') });
  const cg = makeCpuCgroups('pause-cost');
  const samples = new Map<string, number[]>(); // `${what}|${op}|${side}`
  const add = (k: string, v: number) => {
    if (!samples.has(k)) samples.set(k, []);
    samples.get(k)!.push(v);
  };
  const md = { metadata: { 'containerd-namespace-ttrpc': [c.namespace] } };
  const runtime = (side: Side) => (side === 'runc' ? RUNC_RUNTIME : TSSHIM_RUNTIME);
  let seq = 0;
  // PAUSE_COST_CTR=1: the measured call is `ctr task ps|pause|resume`, as in the bench.
  const viaCtr = process.env.PAUSE_COST_CTR === '1';
  try {
    const rootfs = makeRootfs(c.dir);
    // A container with a few processes: sh, two sleeps in the background, one in the foreground.
    const start = async (side: Side) => {
      const id = `pausecost-${side}-${++seq}`;
      await runDetached(c, id, ['sh', '-c', 'sleep 1000 & sleep 1000 & sleep 1000'], {
        runtime: runtime(side),
        rootfs,
        extra: PATH_ENV_ARGS,
      });
      const pid = shimPidFor(c.address, id);
      if (!pid || !cg.adopt(side, pid)) throw new Error(`no shim found for ${id} (or no cpuacct cgroup)`);
      if (side === 'tsshim') await spareBooted(c.address, 5000);
      const client = await Client.connect(shimAddressOf(c.bundleDir(id)).replace(/^unix:\/\//, ''));
      return { side, id, pid, client };
    };
    const measure = async (s: Awaited<ReturnType<typeof start>>, op: (typeof OPS)[number], record: boolean) => {
      const c0 = cg.usageMs(s.side);
      const o0 = threadsCpuMs(s.pid);
      const t0 = performance.now();
      if (viaCtr) {
        const r = await c.ctr(['task', op === 'Pids' ? 'ps' : op.toLowerCase(), s.id]);
        if (r.code !== 0) throw new Error(`ctr task ${op} failed: ${r.stderr}`);
      } else await s.client.call(TASK, op, idRequest(s.id), md);
      const t1 = performance.now();
      await sleep(30); // work after the reply (the event, GC)
      if (!record) return;
      add(`wall|${op}|${s.side}`, t1 - t0);
      add(`cgroup|${op}|${s.side}`, cg.usageMs(s.side) - c0);
      add(`own|${op}|${s.side}`, threadsCpuMs(s.pid) - o0);
    };
    const stop = async (s: Awaited<ReturnType<typeof start>>) => {
      s.client.close();
      await c.ctr(['task', 'kill', '-s', 'KILL', s.id]);
      for (let i = 0; i < 100; i++) {
        if ((await c.ctr(['task', 'delete', s.id])).code === 0) break;
        await sleep(50);
      }
      await c.ctr(['container', 'delete', s.id]);
    };
    if (mode === 'steady') {
      const sides = [await start('runc'), await start('tsshim')];
      const hold = Number(process.env.PAUSE_COST_HOLD ?? 0);
      if (hold) {
        console.log(`holding ${hold} s: shims ${sides.map((s) => s.pid).join(' ')}`);
        await sleep(hold * 1000);
      }
      const prof = !!process.env.PAUSE_COST_PROF;
      for (let r = -3; r < rounds; r++) {
        if (prof && r === 0) process.kill(sides[1].pid, 'SIGUSR2');
        for (const s of r % 2 ? sides : [...sides].reverse()) for (const op of OPS) await measure(s, op, r >= 0);
      }
      if (prof) {
        process.kill(sides[1].pid, 'SIGUSR2');
        await sleep(500);
      }
      for (const s of sides) await stop(s);
    } else {
      for (let r = 0; r < rounds; r++) {
        for (const side of (r % 2 ? ['runc', 'tsshim'] : ['tsshim', 'runc']) as Side[]) {
          const s = await start(side);
          // What the bench's detached suite does before ps: execs and a metrics call.
          for (let n = 0; n < 3; n++) await c.ctr(['task', 'exec', '--exec-id', `e${n}`, s.id, '/bin/true']);
          await c.ctr(['task', 'metrics', s.id]);
          for (const op of OPS) await measure(s, op, true);
          await stop(s);
        }
        console.log(`  round ${r + 1}/${rounds}`);
      }
    }
  } finally {
    await c.stop();
    await cg.remove();
  }
  console.log(
    `${mode}: medians of ${rounds} rounds, ms; cgroup = shim + runc children (+ tsshim's spare), own = shim threads`
  );
  console.log('op      side     wall  cgroup CPU  own CPU');
  for (const op of OPS) {
    for (const side of ['runc', 'tsshim'] as const) {
      const m = (what: string) => median(samples.get(`${what}|${op}|${side}`)!).toFixed(2);
      console.log(
        `${op.padEnd(7)} ${side.padEnd(7)} ${m('wall').padStart(6)} ${m('cgroup').padStart(11)} ${m('own').padStart(8)}`
      );
    }
  }
}

main(Number(process.argv[2] ?? 10), process.argv[3] ?? 'fresh').catch((e) => {
  console.error(e);
  process.exit(1);
});

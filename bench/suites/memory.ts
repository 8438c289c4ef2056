// 4. Memory: N sleeping containers, RSS / PSS / threads summed over the shim daemons serving them,
// for one shim per container, pod-grouped shims and tsshim's per-node shim; and the per-node
// daemon once idle again.
import type { Containerd } from '../../test/support/harness';
import {
  type BenchEnv,
  type RunSpec,
  type Side,
  SANDBOX_ANNOTATION,
  SIDES,
  newId,
  removeContainer,
  runSleeper,
} from '../lib/env';
import { shimDaemons, sumMem, type MemTotals } from '../lib/proc';
import type { Results } from '../lib/results';
import { rotate, sleep } from '../lib/stats';
import { IDLE_GC_MS } from '../../src/shim/idle-gc';

type Mode = 'single' | 'group' | 'per-node';
const MODES: Mode[] = ['single', 'group', 'per-node'];
const MiB = 1024;

interface Point {
  count: number;
  mem: MemTotals;
}

async function settledMem(address: string, side: Side, settleMs: number): Promise<MemTotals> {
  await sleep(settleMs); // transient start/delete processes gone, the daemon's start-up garbage collected
  return sumMem(shimDaemons(address, side));
}

/** The per-node daemon's resident memory once it has gone idle (no containers, idle collection done). */
const idlePerNodeRssMiB: number[] = [];

async function measureSide(env: BenchEnv, mode: Mode, side: Side, sizes: number[]): Promise<Point[]> {
  const c: Containerd = mode === 'per-node' ? env.perNode : env.main;
  const ids: string[] = [];
  const points: Point[] = [];
  let spec: RunSpec = { side };
  // The per-node shim is there before the first container and stays after the last: its memory
  // at N containers includes that base, the increment between sizes does not.
  const before = sumMem(shimDaemons(c.address, side));
  try {
    for (const size of sizes) {
      while (ids.length < size) {
        const id = newId(`mem-${side}`);
        if (mode === 'group' && ids.length === 0) {
          const annotations: Record<string, string> = { [SANDBOX_ANNOTATION]: id };
          if (side === 'tsshim') annotations['io.containerd.tsshim.v2.group'] = id;
          spec = { side, annotations };
        }
        await runSleeper(env, c, spec, id);
        ids.push(id);
      }
      points.push({ count: size, mem: await settledMem(c.address, side, 2500) });
    }
  } finally {
    for (let i = 0; i < ids.length; i += 10)
      await Promise.all(ids.slice(i, i + 10).map((id) => removeContainer(c, id)));
    // The next measurement must not count shims that are still shutting down.
    for (let waited = 0; waited < 15_000 && shimDaemons(c.address, side).length > before.shims; waited += 100)
      await sleep(100);
  }
  if (mode === 'per-node' && side === 'tsshim') {
    // After its last container: one idle collection (and malloc_trim) later, what stays resident.
    const idle = await settledMem(c.address, side, IDLE_GC_MS + 1500);
    if (idle.shims === 1) idlePerNodeRssMiB.push(idle.rssKiB / MiB);
  }
  env.log(
    `  memory ${mode}/${side}: ${points.map((p) => `${p.count}: ${(p.mem.rssKiB / MiB).toFixed(1)} MiB RSS in ${p.mem.shims} shims`).join(', ')}` +
      (before.shims ? ` (before: ${(before.rssKiB / MiB).toFixed(1)} MiB in ${before.shims})` : '')
  );
  return points;
}

export async function memorySuite(env: BenchEnv, results: Results): Promise<void> {
  const sizes = env.quick ? [10] : [10, 50];
  const reps = env.quick ? 1 : 2;
  const data = new Map<string, Point[][]>();
  for (let rep = 0; rep < reps; rep++) {
    for (const [m, mode] of MODES.entries()) {
      for (const side of rotate(SIDES, rep + m)) {
        const k = `${mode}|${side}`;
        if (!data.has(k)) data.set(k, []);
        data.get(k)!.push(await measureSide(env, mode, side, sizes));
      }
    }
  }
  results.add({
    suite: 'memory',
    name: 'idle per-node daemon RSS (no containers left)',
    mode: 'per-node',
    unit: 'MiB',
    tsshim: idlePerNodeRssMiB.splice(0),
    target: { text: 'tsshim <= 20 MiB', on: 'tsshim', op: '<=', value: 20 },
  });
  for (const mode of MODES) {
    const get = (side: Side) => data.get(`${mode}|${side}`)!;
    const at = (side: Side, size: number, f: (m: MemTotals) => number) =>
      get(side)
        .map((pts) => pts.find((p) => p.count === size))
        .filter((p): p is Point => !!p)
        .map((p) => f(p.mem) / size);
    const note = mode === 'per-node' ? 'runc.v2 has one shim per container here (no per-node mode)' : undefined;
    const hadSpares = get('tsshim').some((pts) => pts.some((p) => p.mem.spares > 0));
    /** A per-container figure with tsshim's warm spares' share taken out (a row only when it had spares). */
    const sparesLeftOut = (
      size: number,
      name: string,
      total: 'rssKiB' | 'pssKiB',
      spares: 'spareRssKiB' | 'sparePssKiB'
    ): void => {
      if (!hadSpares) return;
      results.add({
        suite: 'memory',
        name,
        mode,
        unit: 'MiB',
        runc: at('runc', size, (m) => m[total] / MiB),
        tsshim: at('tsshim', size, (m) => (m[total] - m[spares]) / MiB),
      });
    };
    for (const size of sizes) {
      results.add({
        suite: 'memory',
        name: `shim RSS per container @${size}`,
        mode,
        unit: 'MiB',
        runc: at('runc', size, (m) => m.rssKiB / MiB),
        tsshim: at('tsshim', size, (m) => m.rssKiB / MiB),
        target:
          mode === 'single' && size === 10 ? { text: 'ratio <= 3.0', on: 'ratio', op: '<=', value: 3.0 } : undefined,
        note,
      });
      sparesLeftOut(size, `shim RSS per container @${size}, tsshim's warm spare left out`, 'rssKiB', 'spareRssKiB');
      results.add({
        suite: 'memory',
        name: `shim PSS per container @${size}`,
        mode,
        unit: 'MiB',
        runc: at('runc', size, (m) => m.pssKiB / MiB),
        tsshim: at('tsshim', size, (m) => m.pssKiB / MiB),
        target:
          mode === 'single' && size === 10 ? { text: 'ratio <= 4.0', on: 'ratio', op: '<=', value: 4.0 } : undefined,
      });
      // What the shims serving the containers hold: the spares' share (two after a burst of
      // starts) is ~3 MiB per container at 10.
      sparesLeftOut(size, `shim PSS per container @${size}, tsshim's warm spares left out`, 'pssKiB', 'sparePssKiB');
      results.add({
        suite: 'memory',
        name: `shim threads per container @${size}`,
        mode,
        unit: 'threads',
        runc: at('runc', size, (m) => m.threads),
        tsshim: at('tsshim', size, (m) => m.threads),
      });
      results.add({
        suite: 'memory',
        name: `shim processes @${size}`,
        mode,
        unit: 'count',
        runc: at('runc', size, (m) => m.shims * size),
        tsshim: at('tsshim', size, (m) => m.shims * size),
        note: 'tsshim counts its warm spare',
      });
    }
    if (sizes.length > 1) {
      const lo = sizes[0];
      const hi = sizes[sizes.length - 1];
      const inc = (side: Side, f: (m: MemTotals) => number) =>
        get(side).map((pts) => {
          const a = pts.find((p) => p.count === lo)!;
          const b = pts.find((p) => p.count === hi)!;
          return (f(b.mem) - f(a.mem)) / (hi - lo);
        });
      results.add({
        suite: 'memory',
        name: `RSS increment per container ${lo}->${hi}`,
        mode,
        unit: 'MiB',
        runc: inc('runc', (m) => m.rssKiB / MiB),
        tsshim: inc('tsshim', (m) => m.rssKiB / MiB),
        target:
          mode === 'per-node'
            ? { text: 'tsshim <= 1.0 MiB per container', on: 'tsshim', op: '<=', value: 1.0 }
            : undefined,
        note,
      });
      results.add({
        suite: 'memory',
        name: `PSS increment per container ${lo}->${hi}`,
        mode,
        unit: 'MiB',
        runc: inc('runc', (m) => m.pssKiB / MiB),
        tsshim: inc('tsshim', (m) => m.pssKiB / MiB),
      });
    }
  }
}

// 8. The cold path: a container start with no warm spare (containerd started with TSSHIM_SPARES=0),
// beside the same run with spares on, each in a containerd of its own whose PATH starts with the
// shim wrappers of bench/lib/shim-wrap.ts (start wall time and CPU, a cpuacct cgroup per runtime).
// One run: `ctr run --rm` of `sh -c 'echo ready; exec cat'` with ctr's stdin a pipe; the first byte
// on ctr's stdout is the container's first output, then stdin is closed and the container ends.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoRoot, startContainerd, type Containerd } from '../../test/support/harness';
import { closeClients } from '../../test/support/containerd-api';
import { readLines, type LogLine } from '../lib/containerd-log';
import { type BenchEnv, type Side, SIDES, logMark, newId, removeContainer, runArgs, runSleeper } from '../lib/env';
import { shimDaemons } from '../lib/proc';
import type { Results } from '../lib/results';
import { makeShimWrap, type ShimWrap } from '../lib/shim-wrap';
import { nowMs, rotate, sleep } from '../lib/stats';
import { pidAlive } from '../../test/support/harness';

interface Mode {
  name: string;
  c: Containerd;
  wrap: ShimWrap;
  /** Sleeping containers that stay up for the whole suite (warm mode: one per side). */
  residents: string[];
}

interface Run {
  spawnedAt: number;
  firstOutputAt: number;
  exitedAt: number;
  cpuBefore: number;
  cpuAtFirstOutput: number;
  from: number;
  to: number;
}

const MEASURES = [
  'shim start (start command)',
  'Create (start exited -> /tasks/create)',
  'start + Create',
  'Start (/tasks/create -> /tasks/start)',
  'runc create (wall, inside Create)',
  'Create minus runc create',
  'runc start (wall, inside Start)',
  'Start minus runc start',
  'total: ctr spawned -> first output',
  'ctr run --rm wall time',
  'CPU: start command',
  'CPU: ctr spawned -> first output (shims + runc)',
  'CPU per container (shims + runc + spares, whole run)',
] as const;
type Measure = (typeof MEASURES)[number];

/** One `ctr run --rm`, timed to the container's first output. */
function runOnce(env: BenchEnv, mode: Mode, side: Side, id: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const from = logMark(mode.c);
    const cpuBefore = mode.wrap.cgroupCpuMs(side);
    const spawnedAt = nowMs();
    const child = mode.c.spawnCtr(runArgs(env, { side }, ['--rm'], id, ['sh', '-c', 'echo ready; exec cat']));
    let firstOutputAt = 0;
    let cpuAtFirstOutput = NaN;
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout!.on('data', () => {
      if (firstOutputAt) return;
      firstOutputAt = nowMs();
      cpuAtFirstOutput = mode.wrap.cgroupCpuMs(side);
      child.stdin!.end();
    });
    child.stderr!.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const exitedAt = nowMs();
      if (code !== 0 || !firstOutputAt) {
        reject(
          new Error(`cold ${mode.name} ${side}: ctr run exited ${code}: ${stderr.trim()}\n${mode.c.logTail(2000)}`)
        );
        return;
      }
      resolve({ spawnedAt, firstOutputAt, exitedAt, cpuBefore, cpuAtFirstOutput, from, to: 0 });
    });
  });
}

const topicAt = (lines: LogLine[], topic: string) =>
  lines.find((l) => l.fields.topic === topic && (l.msg === 'event published' || l.msg === 'event forwarded'))?.timeMs ??
  NaN;

async function stop(c: Containerd): Promise<void> {
  const shims = shimDaemons(c.address);
  closeClients(c);
  await c.stop();
  for (const pid of shims)
    if (pidAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
}

export async function coldSuite(env: BenchEnv, results: Results): Promise<void> {
  const iterations = env.quick ? 4 : 15;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-bench-cold-'));
  const basePath = `${path.join(repoRoot(), 'bin')}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
  const modes: Mode[] = [];
  try {
    // keepsContainerUp: a spare lives only while one of its containerd's shims serves (no spare
    // outlives the last container), so the warm mode keeps one sleeping container per side up, as a
    // node that runs containers does; without it every run of that mode started cold too (until
    // 2026-12-04).
    for (const [name, extra, keepsContainerUp] of [
      ['cold (spares off)', { TSSHIM_SPARES: '0' }, false],
      ['warm spare', {}, true],
    ] as const) {
      const wrap = makeShimWrap(tmp, name.startsWith('cold') ? 'cold' : 'warm');
      const c = await startContainerd({
        namespace: 'bench',
        logLevel: 'debug',
        env: { ...extra, PATH: `${wrap.dir}:${basePath}` },
      });
      const mode: Mode = { name, c, wrap, residents: [] };
      modes.push(mode);
      if (keepsContainerUp) {
        for (const side of SIDES) {
          const id = newId(`cold-resident-${side}`);
          await runSleeper(env, c, { side }, id);
          mode.residents.push(id);
        }
      }
    }
    const runs = new Map<string, { id: string; run: Run }[]>();
    const key = (m: Mode, s: Side) => `${m.name}|${s}`;
    // Warm-up (page cache; in the warm containerd, the first spare), not recorded.
    for (const m of modes) for (const side of SIDES) await runOnce(env, m, side, newId(`cw-${side}`));
    await sleep(1000);
    for (let i = 0; i < iterations; i++) {
      for (const [k, m] of modes.entries()) {
        for (const side of rotate(SIDES, i + k)) {
          const id = newId(`cold-${side}`);
          const run = await runOnce(env, m, side, id);
          await sleep(40); // the shim's last log lines
          run.to = logMark(m.c);
          if (!runs.has(key(m, side))) runs.set(key(m, side), []);
          runs.get(key(m, side))!.push({ id, run });
        }
      }
      if (i % 5 === 4 || i === iterations - 1) env.log(`  cold: ${i + 1}/${iterations}`);
    }
    await sleep(1500); // the last spare boot (warm mode) ends inside the window of the last run
    for (const m of modes) {
      // How tsshim's daemons booted (serve.ts 'shim started' loaded=): from the V8 startup snapshot
      // (src/daemon/snapshot-build.ts), or from the bundle when the build has none for this node.
      const loaded = new Map<string, number>();
      for (const l of readLines(m.c.logFile, 0, fs.statSync(m.c.logFile).size))
        if (l.msg === 'shim started') loaded.set(l.fields.loaded ?? '?', (loaded.get(l.fields.loaded ?? '?') ?? 0) + 1);
      const counts = [...loaded].map(([how, n]) => `${n} from ${how}`).join(', ');
      results.note(`cold: ${m.name}: tsshim daemons booted ${counts || 'unseen'}`);
      const values = new Map<string, number[]>();
      const push = (measure: Measure, side: Side, v: number) => {
        if (!Number.isFinite(v)) return;
        const k = `${measure}|${side}`;
        if (!values.has(k)) values.set(k, []);
        values.get(k)!.push(v);
      };
      const starts = m.wrap.starts();
      for (const side of SIDES) {
        const list = runs.get(key(m, side)) ?? [];
        for (const [j, { id, run }] of list.entries()) {
          const lines = readLines(m.c.logFile, run.from, run.to);
          const created = topicAt(lines, '/tasks/create');
          const started = topicAt(lines, '/tasks/start');
          const st = starts.find((s) => s.id === id && s.side === side);
          if (st) {
            push('shim start (start command)', side, st.t1 - st.t0);
            push('Create (start exited -> /tasks/create)', side, created - st.t1);
            push('start + Create', side, created - st.t0);
            push('CPU: start command', side, st.cpuMs);
          }
          push('Start (/tasks/create -> /tasks/start)', side, started - created);
          const runc = m.wrap.runcCalls().filter((r) => r.id === id);
          const rc = runc.find((r) => r.command === 'create');
          const rs = runc.find((r) => r.command === 'start');
          if (rc && st) {
            push('runc create (wall, inside Create)', side, rc.t1 - rc.t0);
            push('Create minus runc create', side, created - st.t1 - (rc.t1 - rc.t0));
          }
          if (rs) {
            push('runc start (wall, inside Start)', side, rs.t1 - rs.t0);
            push('Start minus runc start', side, started - created - (rs.t1 - rs.t0));
          }
          push('total: ctr spawned -> first output', side, run.firstOutputAt - run.spawnedAt);
          push('ctr run --rm wall time', side, run.exitedAt - run.spawnedAt);
          push('CPU: ctr spawned -> first output (shims + runc)', side, run.cpuAtFirstOutput - run.cpuBefore);
          // Back-to-back windows of one runtime: whatever a run leaves running (a spare's boot, the
          // shim's exit) lands in its own window or the next one, never between two.
          const next = j + 1 < list.length ? list[j + 1].run.cpuBefore : m.wrap.cgroupCpuMs(side);
          push('CPU per container (shims + runc + spares, whole run)', side, next - run.cpuBefore);
        }
      }
      for (const measure of MEASURES) {
        const target =
          m.name.startsWith('cold') && measure === 'start + Create'
            ? { text: 'ratio <= 2.0 (cold start + first Create)', on: 'ratio' as const, op: '<=' as const, value: 2.0 }
            : undefined;
        results.add({
          suite: 'cold',
          name: measure,
          mode: m.name,
          unit: 'ms',
          runc: values.get(`${measure}|runc`) ?? null,
          tsshim: values.get(`${measure}|tsshim`) ?? null,
          target,
        });
      }
    }
    results.note(
      'cold: runc calls timed by a bash wrapper around runc (adds ~1-2 ms to each call, counted on the shim side of the split);'
    );
    results.note(
      'cold: start timed by a bash wrapper around each shim binary; CPU from a cpuacct cgroup per runtime that the wrapper joins (start, daemon, runc children, spares; ~1-2 ms of bash per shim command on both sides)'
    );
  } finally {
    for (const m of modes) {
      for (const id of m.residents) await removeContainer(m.c, id).catch(() => undefined);
      await stop(m.c);
      await m.wrap.remove();
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

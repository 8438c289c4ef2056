// Live upgrade (issue 16): `tsshim upgrade` alternating between this build and a copy of it with
// another version string, while a container prints a counter every ~1 ms into a FIFO read here and
// containerd's Tasks.Get is called every 2 ms (open loop). For one shim with one container (the main
// containerd) and for a per-node shim (TSSHIM_PER_NODE=1) holding 50 containers (10 in --quick):
// one fast counter, the others printing every 100 ms so the shim carries their IO too.
// Rows are tsshim only: containerd-shim-runc-v2 has no live upgrade, so they are absolute values
// (no ratio). Only with `--only upgrade`: neither the default run nor --quick includes it.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoRoot, pidAlive, type Containerd } from '../../test/support/harness';
import { PATH_ENV_ARGS } from '../../test/support/rootfs';
import { callTasks, getTask } from '../../test/support/containerd-api';
import { type BenchEnv, TSSHIM, mustCtr, newId, removeContainer } from '../lib/env';
import type { Results } from '../lib/results';
import { currentEntry, makeVersionedBuild } from '../lib/upgrade-build';
import { percentile, sleep } from '../lib/stats';
import { logSize, readLines } from '../lib/containerd-log';

const SUITE = 'upgrade';
const ABS = '(tsshim only, absolute: runc has no upgrade)';
const FAST_SCRIPT = '/upbench-fast.sh';
const SLOW_SCRIPT = '/upbench-slow.sh';
/** Quiet time before each upgrade; the last QUIET_MS - QUIET_SKIP_MS of it is the no-upgrade window. */
const QUIET_MS = 1200;
const QUIET_SKIP_MS = 200;

const now = () => performance.now();

/** A FIFO read by this process: the arrival time of every chunk and the text. */
interface Reader {
  path: string;
  arrivals: number[];
  text: () => string;
  close: () => void;
}

function readFifo(dir: string, name: string, keepTimes: boolean): Reader {
  const p = path.join(dir, `${name}.fifo`);
  fs.rmSync(p, { force: true });
  execFileSync('mkfifo', [p]);
  const sock = new net.Socket({
    fd: fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK),
    readable: true,
    writable: false,
  });
  const arrivals: number[] = [];
  const parts: string[] = [];
  sock.on('data', (d) => {
    if (keepTimes) {
      arrivals.push(now());
      parts.push(d.toString());
    }
  });
  sock.on('error', () => undefined);
  return { path: p, arrivals, text: () => parts.join(''), close: () => sock.destroy() };
}

/** Longest interval between consecutive arrivals in [from, to], counting the one just before `from`; `at`: its start. */
function longestGap(arrivals: number[], from: number, to: number): { ms: number; at: number } {
  let prev = NaN;
  let gap = { ms: 0, at: NaN };
  for (const t of arrivals) {
    if (t >= from && Number.isFinite(prev) && t - prev > gap.ms) gap = { ms: t - prev, at: prev };
    if (t > to) break;
    prev = t;
  }
  return gap;
}

/** Counter lines 0..n-1 in order: the first place where a line is missing or doubled, or null. */
function counterBreak(text: string): string | null {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  for (let i = 0; i < lines.length - 1; i++)
    if (lines[i].trim() !== String(i)) return `line ${i} is ${JSON.stringify(lines[i].trim())}`;
  return lines.length < 10 ? `only ${lines.length} lines` : null;
}

/** Interval between two Tasks.Get calls: an open loop, so a call that waits does not hold back the next ones. */
const GET_EVERY_MS = 2;

/**
 * Tasks.Get round-robin over `ids`, one started every GET_EVERY_MS whether the previous ones ended or
 * not (a closed loop would issue one call during a stall and under-count it), until stopped: start
 * time and latency of each.
 */
function pollGet(c: Containerd, ids: string[]) {
  const calls: { t: number; ms: number }[] = [];
  const errors: string[] = [];
  const pending = new Set<Promise<void>>();
  let running = true;
  const loop = (async () => {
    let k = 0;
    while (running) {
      const id = ids[k++ % ids.length];
      const t = now();
      const p: Promise<void> = getTask(c, id).then(
        () => {
          calls.push({ t, ms: now() - t });
        },
        (e) => {
          errors.push(`${id}: ${(e as Error).message}`);
        }
      );
      pending.add(p);
      void p.finally(() => pending.delete(p));
      await sleep(GET_EVERY_MS);
    }
  })();
  return {
    calls,
    errors,
    in: (from: number, to: number) => calls.filter((x) => x.t >= from && x.t <= to).map((x) => x.ms),
    stop: async () => {
      running = false;
      await loop;
      await Promise.all([...pending]);
    },
  };
}

/** `tsshim upgrade --entry <entry> <id>` of this checkout's CLI, asynchronously (the FIFO readers keep reading). */
function runUpgrade(c: Containerd, entry: string, id: string): Promise<{ code: number; out: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = now();
    const child = spawn(
      process.execPath,
      [path.join(repoRoot(), 'dist', 'src', 'cli', 'main.js'), 'upgrade', '--entry', entry, id, '--state', c.state],
      { stdio: ['ignore', 'pipe', 'pipe'] }
    );
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out, ms: now() - t0 });
    });
  });
}

/** The shim serving a container: its shim.pid, or (a container that joined a running shim) the shim's pid file. */
function shimPidOf(c: Containerd, id: string): number | null {
  try {
    return Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
  } catch {
    /* joined a running shim */
  }
  try {
    const socket = fs.readFileSync(path.join(c.bundleDir(id), 'address'), 'utf8').replace(/^unix:\/\//, '');
    const dir = process.env.TSSHIM_STATE_DIR || '/run/tsshim';
    return Number(fs.readFileSync(path.join(dir, `${path.basename(socket)}.pid`), 'utf8'));
  } catch {
    return null;
  }
}

async function startCounter(env: BenchEnv, c: Containerd, id: string, script: string, out: Reader): Promise<void> {
  await mustCtr(c, [
    'container',
    'create',
    '--runtime',
    TSSHIM,
    ...PATH_ENV_ARGS,
    '--rootfs',
    env.rootfs,
    id,
    'sh',
    script,
  ]);
  await callTasks(c, 'Create', { container_id: id, stdout: out.path, stderr: '', terminal: false });
  await callTasks(c, 'Start', { container_id: id });
}

interface Scenario {
  label: string;
  c: Containerd;
  containers: number;
}

async function scenario(env: BenchEnv, results: Results, s: Scenario, entries: string[], rounds: number) {
  const dir = fs.mkdtempSync(path.join(s.c.dir, 'upbench-'));
  const readers: Reader[] = [];
  const ids: string[] = [];
  let poll: ReturnType<typeof pollGet> | null = null;
  try {
    for (let i = 0; i < s.containers; i++) {
      const id = newId(i === 0 ? 'upb-fast' : 'upb-slow');
      const r = readFifo(dir, id, i === 0);
      readers.push(r);
      await startCounter(env, s.c, id, i === 0 ? FAST_SCRIPT : SLOW_SCRIPT, r);
      ids.push(id);
    }
    const shims = new Set(ids.map((id) => shimPidOf(s.c, id)));
    if (shims.size !== 1 || shims.has(null))
      throw new Error(`${s.label}: expected one shim for ${ids.length} containers, found ${[...shims].join(',')}`);
    const shim = [...shims][0]!;
    env.log(`  upgrade/${s.label}: ${ids.length} container(s) on shim ${shim}`);
    await sleep(300);
    const fast = readers[0];
    poll = pollGet(s.c, ids);
    const gaps: number[] = [];
    const quietGaps: number[] = [];
    const durations: number[] = [];
    const during: number[] = [];
    const quiet: number[] = [];
    const getMax: number[] = [];
    const timeline: {
      gapAt: number;
      getCallsInGap: number;
      slowestGetAt: number;
      commandMs: number;
      out: string;
      shimLog: string[];
    }[] = [];
    for (let i = 0; i < rounds; i++) {
      const q0 = now();
      await sleep(QUIET_MS);
      const q1 = now();
      quietGaps.push(longestGap(fast.arrivals, q0 + QUIET_SKIP_MS, q1).ms);
      const entry = entries[i % entries.length];
      const mark = logSize(s.c.logFile);
      const u = await runUpgrade(s.c, entry, ids[0]);
      const t1 = now();
      if (u.code !== 0 || !/upgraded/.test(u.out))
        throw new Error(`${s.label}: upgrade ${i} failed (${u.code}): ${u.out}\n${s.c.logTail(3000)}`);
      if (!pidAlive(shim)) throw new Error(`${s.label}: shim ${shim} gone after upgrade ${i}`);
      durations.push(u.ms);
      // Let output that waited during the swap arrive, and the Tasks.Get calls that waited end (a call
      // answered by the new code ends with the command or after it), before reading either.
      await sleep(200);
      quiet.push(...poll.in(q0 + QUIET_SKIP_MS, q1));
      const mine = poll.in(t1 - u.ms, t1);
      during.push(...mine);
      getMax.push(mine.length ? Math.max(...mine) : NaN);
      const g = longestGap(fast.arrivals, t1 - u.ms - 100, t1 + 100);
      gaps.push(g.ms);
      const slowest = poll.calls.filter((x) => x.t >= t1 - u.ms && x.t <= t1).sort((a, b) => b.ms - a.ms)[0];
      // When the gap and the slowest call began, in ms after the command was started.
      timeline.push({
        gapAt: g.at - (t1 - u.ms),
        getCallsInGap: poll.calls.filter((x) => x.t > g.at && x.t < g.at + g.ms).length,
        slowestGetAt: slowest ? slowest.t - (t1 - u.ms) : NaN,
        commandMs: u.ms,
        out: u.out.trim(),
        // The shim's upgrade steps from containerd's log, in ms after the command was started.
        shimLog: readLines(s.c.logFile, mark, logSize(s.c.logFile))
          .filter((l) => /upgrade|restor|shim started/i.test(l.msg))
          .map((l) => `+${(l.timeMs - performance.timeOrigin - (t1 - u.ms)).toFixed(0)} ${l.msg}`),
      });
      env.log(
        `  upgrade/${s.label} ${i + 1}/${rounds}: ${u.ms.toFixed(0)} ms, output gap ${gaps[gaps.length - 1].toFixed(1)} ms at +${(g.at - (t1 - u.ms)) | 0}, slowest Tasks.Get ${getMax[getMax.length - 1].toFixed(1)} ms`
      );
    }
    await poll.stop();
    const name = (what: string) => `${what}, ${s.label} ${ABS}`;
    results.add({ suite: SUITE, name: name('`tsshim upgrade` duration'), unit: 'ms', runc: null, tsshim: durations });
    results.add({
      suite: SUITE,
      name: name('longest output gap during upgrade (median, max over upgrades)'),
      unit: 'ms',
      runc: null,
      tsshim: gaps,
    });
    results.add({
      suite: SUITE,
      name: name('longest output gap, no upgrade (same counter, 1 s windows)'),
      unit: 'ms',
      runc: null,
      tsshim: quietGaps,
    });
    const p99During = percentile(during, 99);
    const p99Quiet = percentile(quiet, 99);
    results.add({
      suite: SUITE,
      name: name('Tasks.Get p99 during upgrade'),
      unit: 'ms',
      runc: null,
      tsshim: [p99During],
      note: `${during.length} calls over ${rounds} upgrades, max ${Math.max(...during).toFixed(1)} ms, median ${percentile(during, 50).toFixed(2)} ms`,
    });
    results.add({
      suite: SUITE,
      name: name('Tasks.Get p99 without upgrade'),
      unit: 'ms',
      runc: null,
      tsshim: [p99Quiet],
      note: `${quiet.length} calls, max ${Math.max(...quiet).toFixed(1)} ms, median ${percentile(quiet, 50).toFixed(2)} ms`,
    });
    results.add({
      suite: SUITE,
      name: name('Tasks.Get slowest call per upgrade (median, max over upgrades)'),
      unit: 'ms',
      runc: null,
      tsshim: getMax,
    });
    if (poll.errors.length)
      results.note(`upgrade/${s.label}: ${poll.errors.length} Tasks.Get errors, first: ${poll.errors[0]}`);
    results.extra[`upgrade/${s.label}`] = {
      durations,
      gaps,
      quietGaps,
      getMaxPerUpgrade: getMax,
      timeline,
      getCallsDuring: during.length,
      getCallsQuiet: quiet.length,
      p99During,
      p99Quiet,
    };
    // The counter must be whole: a gap measured on lost output would flatter the number.
    for (const id of ids) await callTasks(s.c, 'Kill', { container_id: id, signal: 9 }).catch(() => undefined);
    await sleep(300);
    const broken = counterBreak(fast.text());
    if (broken) results.note(`upgrade/${s.label}: the fast counter's output is not whole: ${broken}`);
  } finally {
    if (poll) await poll.stop();
    for (const id of ids) await removeContainer(s.c, id).catch(() => undefined);
    for (const r of readers) r.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function upgradeSuite(env: BenchEnv, results: Results): Promise<void> {
  const rounds = env.quick ? 3 : 10;
  const builds = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-upbench-'));
  fs.writeFileSync(path.join(env.rootfs, FAST_SCRIPT), 'i=0; while :; do echo $i; i=$((i+1)); usleep 1000; done\n');
  fs.writeFileSync(path.join(env.rootfs, SLOW_SCRIPT), 'i=0; while :; do echo $i; i=$((i+1)); usleep 100000; done\n');
  try {
    const entryB = makeVersionedBuild(path.join(builds, 'b'), '0.1.0-upbench.b');
    const entries = [entryB, currentEntry()];
    await scenario(env, results, { label: 'one shim, 1 container', c: env.main, containers: 1 }, entries, rounds);
    const n = env.quick ? 10 : 50;
    await scenario(
      env,
      results,
      { label: `per-node shim, ${n} containers`, c: env.perNode, containers: n },
      entries,
      rounds
    );
    results.note(
      'upgrade: gaps are between arrivals of output chunks at the bench (its event loop also runs the Tasks.Get loop); ' +
        'the upgrade duration includes the start of the tsshim CLI; Tasks.Get: one call started every 2 ms (open loop, round-robin over the containers); its p99 pools every call started during the upgrades, its slowest call is per upgrade'
    );
  } finally {
    fs.rmSync(builds, { recursive: true, force: true });
  }
}

// Where tsshim's time goes in `ctr run --rm /bin/true`: Node start-up against the Go shim's, the
// cost of requiring the shim's module graph (per module), and CPU profiles of the `start` process
// and the daemon. --cpu-prof is refused in NODE_OPTIONS and the daemon is spawned without execArgv,
// so a `--require` hook in NODE_OPTIONS (which containerd passes on to shims and start passes to
// the daemon) runs the V8 profiler through node:inspector and writes the profile at exit.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoRoot, startContainerd } from '../../test/support/harness';
import { type BenchEnv, mustCtr, newId, runArgs } from '../lib/env';
import type { Results } from '../lib/results';
import { nowMs, percentile } from '../lib/stats';

function wallMs(cmd: string, args: string[], env?: NodeJS.ProcessEnv): number {
  const t0 = nowMs();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  const ms = nowMs() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

function repeat(n: number, f: () => number): number[] {
  f(); // warm the page cache
  return Array.from({ length: n }, f);
}

// A preload that times every first require: inclusive and self time per module file.
const REQUIRE_TIMER = `
const Module = require('module');
const orig = Module._load;
const stack = [];
const seen = new Map();
Module._load = function (request, parent, isMain) {
  let file;
  try { file = Module._resolveFilename(request, parent, isMain); } catch { return orig.apply(this, arguments); }
  if (seen.has(file) || Module._cache[file] || file.startsWith('node:') || !file.includes('/')) return orig.apply(this, arguments);
  const frame = { child: 0 };
  stack.push(frame);
  const t0 = process.hrtime.bigint();
  try { return orig.apply(this, arguments); } finally {
    const incl = Number(process.hrtime.bigint() - t0) / 1e6;
    stack.pop();
    if (stack.length) stack[stack.length - 1].child += incl;
    seen.set(file, { incl, self: incl - frame.child });
  }
};
process.on('exit', () => {
  const out = [...seen].map(([file, t]) => ({ file, ...t }));
  require('fs').writeFileSync(process.env.REQUIRE_TIMES_OUT, JSON.stringify(out));
});
`;

const PROFILE_HOOK = `
const inspector = require('inspector');
const bootMs = performance.now();
const session = new inspector.Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.setSamplingInterval', { interval: 200 });
session.post('Profiler.start');
process.on('exit', () => {
  session.post('Profiler.stop', (err, res) => {
    if (err) return;
    const out = { argv: process.argv.slice(2), bootMs, exitMs: performance.now(), profile: res.profile };
    require('fs').writeFileSync(require('path').join(process.env.TSSHIM_PROF_DIR, process.pid + '.json'), JSON.stringify(out));
  });
});
`;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Self time (ms) by bucket: which file or which kind of work. */
function bucketOf(url: string, fn: string, repo: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return '(program: V8/native, incl. compile)';
  if (fn === '(idle)') return '(idle)';
  if (url.startsWith('node:internal/modules') || url.startsWith('node:internal/bootstrap'))
    return 'node: module loader / bootstrap';
  if (url.startsWith('node:')) return `node: ${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const rel = url.replace(/^file:\/\//, '');
  if (rel.includes('/node_modules/')) return 'node_modules/' + rel.split('/node_modules/')[1].split('/')[0];
  if (rel.startsWith(repo)) return path.relative(repo, rel);
  return rel || fn || '(native)';
}

interface HookOutput {
  argv: string[];
  bootMs: number;
  exitMs: number;
  profile: CpuProfile;
}

function summarizeProfile(h: HookOutput, repo: string) {
  const p = h.profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const buckets: Record<string, number> = {};
  const fns: Record<string, number> = {};
  const last = h.argv[h.argv.length - 1];
  const kind = last === 'start' || last === 'delete' ? last : 'daemon';
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]);
    if (!n) continue;
    const ms = (p.timeDeltas[i + 1] ?? 0) / 1000;
    const b = bucketOf(n.callFrame.url, n.callFrame.functionName, repo);
    buckets[b] = (buckets[b] ?? 0) + ms;
    const f = `${n.callFrame.functionName || '(anonymous)'} ${bucketOf(n.callFrame.url, '', repo)}`;
    fns[f] = (fns[f] ?? 0) + ms;
  }
  return { totalMs: (p.endTime - p.startTime) / 1000, bootMs: h.bootMs, exitMs: h.exitMs, buckets, fns, kind };
}

function top(rec: Record<string, number>, n: number): [string, number][] {
  return Object.entries(rec)
    .filter(([k]) => k !== '(idle)')
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, v]) => [k, Math.round(v * 10) / 10]);
}

export async function profileSuite(env: BenchEnv, results: Results): Promise<void> {
  const repo = repoRoot();
  const n = env.quick ? 5 : 15;
  const dist = path.join(repo, 'dist', 'src');
  const shimBin = path.join(repo, 'bin', 'containerd-shim-tsshim-v2');
  const nodeE0 = repeat(n, () => wallMs(process.execPath, ['-e', '0']));
  const goV = repeat(n, () => wallMs('containerd-shim-runc-v2', ['-v']));
  const ourV = repeat(n, () => wallMs(shimBin, ['-v']));
  const requireGraph = (files: string[]) =>
    repeat(n, () => {
      const code = `const t=process.hrtime.bigint();${files.map((f) => `require(${JSON.stringify(path.join(dist, f))});`).join('')}process.stdout.write(String(Number(process.hrtime.bigint()-t)/1e6))`;
      const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(r.stderr);
      return Number(r.stdout);
    });
  const startReq = requireGraph([
    'shim/flags.js',
    'shim/address.js',
    'shim/start.js',
    'shim/start-options.js',
    'shim/bootstrap.js',
  ]);
  const daemonReq = requireGraph(['shim/flags.js', 'shim/address.js', 'daemon/serve.js']);
  results.add({
    suite: 'profile',
    name: 'binary start-up: -v (Go shim vs sh wrapper + node main.js)',
    mode: 'start-up',
    unit: 'ms',
    runc: goV,
    tsshim: ourV,
  });
  results.add({ suite: 'profile', name: 'node -e 0', mode: 'start-up', unit: 'ms', tsshim: nodeE0 });
  results.add({
    suite: 'profile',
    name: 'require: start command graph',
    mode: 'start-up',
    unit: 'ms',
    tsshim: startReq,
  });
  results.add({
    suite: 'profile',
    name: 'require: daemon graph (serve.js)',
    mode: 'start-up',
    unit: 'ms',
    tsshim: daemonReq,
  });

  // Per-module require times of the daemon graph.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-bench-prof-'));
  try {
    const preload = path.join(tmp, 'require-timer.js');
    fs.writeFileSync(preload, REQUIRE_TIMER);
    const out = path.join(tmp, 'require-times.json');
    spawnSync(
      process.execPath,
      ['-r', preload, '-e', `require(${JSON.stringify(path.join(dist, 'daemon', 'serve.js'))})`],
      {
        env: { ...process.env, REQUIRE_TIMES_OUT: out },
        stdio: 'inherit',
      }
    );
    const times = JSON.parse(fs.readFileSync(out, 'utf8')) as { file: string; incl: number; self: number }[];
    const rel = (f: string) =>
      f.includes('/node_modules/') ? 'node_modules/' + f.split('/node_modules/')[1] : path.relative(repo, f);
    results.extra.requireSelfMs = times
      .sort((a, b) => b.self - a.self)
      .slice(0, 12)
      .map((t) => [rel(t.file), Math.round(t.self * 10) / 10, Math.round(t.incl * 10) / 10]);

    // CPU profiles of start and daemon for a few `ctr run --rm /bin/true`.
    const profDir = path.join(tmp, 'cpuprof');
    fs.mkdirSync(profDir);
    const hook = path.join(tmp, 'profile-hook.js');
    fs.writeFileSync(hook, PROFILE_HOOK);
    const c = await startContainerd({
      namespace: 'bench',
      logLevel: 'info',
      env: { NODE_OPTIONS: `--require ${hook}`, TSSHIM_PROF_DIR: profDir },
    });
    try {
      const runs = env.quick ? 3 : 6;
      for (let i = 0; i < runs; i++)
        await mustCtr(c, runArgs(env, { side: 'tsshim' }, ['--rm'], newId('prof'), ['/bin/true']));
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      await c.stop();
    }
    const summaries = fs
      .readdirSync(profDir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => summarizeProfile(JSON.parse(fs.readFileSync(path.join(profDir, f), 'utf8')), repo));
    const prof: Record<string, unknown> = {};
    for (const kind of ['start', 'daemon', 'delete']) {
      const ss = summaries.filter((s) => s.kind === kind);
      if (!ss.length) continue;
      const avg = (recs: Record<string, number>[]) => {
        const acc: Record<string, number> = {};
        for (const r of recs) for (const [k, v] of Object.entries(r)) acc[k] = (acc[k] ?? 0) + v / recs.length;
        return acc;
      };
      prof[kind] = {
        profiles: ss.length,
        medianProfiledMs:
          Math.round(
            percentile(
              ss.map((s) => s.totalMs),
              50
            ) * 10
          ) / 10,
        medianNodeBootMs:
          Math.round(
            percentile(
              ss.map((s) => s.bootMs),
              50
            ) * 10
          ) / 10,
        medianLifetimeMs:
          Math.round(
            percentile(
              ss.map((s) => s.exitMs),
              50
            ) * 10
          ) / 10,
        topBuckets: top(avg(ss.map((s) => s.buckets)), 12),
        topFunctions: top(avg(ss.map((s) => s.fns)), 12),
      };
    }
    results.extra.cpuProfile = prof;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

#!/usr/bin/env node
// Runs the compiled tests: dist/test/unit/**/*.test.js first, then dist/test/e2e/**/*.test.js, one
// file at a time (e2e tests each start their own containerd), once per containerd release of the
// matrix below. Ends with one summary line and a non-zero exit status when anything failed.
//
//   node scripts/test.mjs                  unit, then e2e on every containerd of the matrix
//   node scripts/test.mjs --unit           unit only          (--e2e: e2e only)
//   node scripts/test.mjs --suite stress   dist/test/stress   (repeatable; any dir under dist/test but support)
//   node scripts/test.mjs ttrpc harness    only files whose path contains one of the words
//   --containerd 2.3.4                     e2e on this release only (repeatable; 'apt' = 1.6.20)
//   TEST_TIMEOUT_MS=300000                 per-test timeout (default 600000)
//   node scripts/test.mjs --under-load     beside two busy loops pinned to CPUs 0 and 1 (not in CI)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, dirname, relative, basename } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const distTest = join(root, 'dist', 'test');

// The containerd matrix for the e2e suite: which test files (by name, without .test.js) run against
// which release. 'apt' is the distribution's containerd (1.6.20), which runs every file; the 2.x
// releases are unpacked from ../shared/containerd and skipped with one line where that is missing.
const CORE = ['shim-core', 'harness', 'badinput', 'operator', 'containerd2-real'];
const PARITY = ['parity', 'parity-per-node', 'tty'];
const SURVIVAL = ['survival', 'spare'];
const CRI = ['cri'];
// Conformance, faults, hostile clients and the Prometheus exporter: on the LTS line as well.
const HARDENING = ['conform', 'faults', 'hostile-clients', 'exporter', 'library-path'];
// The package as operators install it (npm pack, npm install -g, an install over a running one).
const INSTALL = ['package-install'];
// In-place upgrade of running shims (tsshim upgrade, issue 16).
const UPGRADE = ['live-upgrade'];
const MATRIX = [
  { release: 'apt', files: 'all' },
  { release: '2.3.4', files: [...CORE, ...PARITY, ...SURVIVAL, ...CRI, ...HARDENING, ...INSTALL, ...UPGRADE] },
  { release: '2.2.7', files: [...CORE, ...PARITY, ...SURVIVAL, ...CRI] },
  { release: '2.0.11', files: [...CORE, ...CRI] },
];

function parseArgs(argv) {
  const suites = [];
  const filters = [];
  let underLoad = false;
  const releases = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--unit') suites.push('unit');
    else if (a === '--e2e') suites.push('e2e');
    else if (a === '--under-load') underLoad = true;
    else if (a === '--suite') suites.push(argv[++i]);
    else if (a.startsWith('--suite=')) suites.push(a.slice('--suite='.length));
    else if (a === '--containerd') releases.push(argv[++i]);
    else if (a.startsWith('--containerd=')) releases.push(a.slice('--containerd='.length));
    else if (a === '-h' || a === '--help') {
      process.stdout.write(
        readFileSync(fileURLToPath(import.meta.url), 'utf8')
          .split('\n')
          .slice(1, 12)
          .join('\n') + '\n'
      );
      process.exit(0);
    } else if (a.startsWith('-')) {
      process.stderr.write(`test.mjs: unknown option ${a}\n`);
      process.exit(2);
    } else filters.push(a);
  }
  if (!releases.length && process.env.TSSHIM_CONTAINERD) releases.push(process.env.TSSHIM_CONTAINERD);
  // test/support holds the helpers the suites share, never tests.
  if (suites.includes('support')) {
    process.stderr.write('test.mjs: test/support is shared helper code, not a suite\n');
    process.exit(2);
  }
  return { suites: suites.length ? suites : ['unit', 'e2e'], filters, releases, underLoad };
}

/** --under-load: one busy loop pinned to each of the first two CPUs; the returned stop kills them by pid. */
function startCpuHogs() {
  const hogs = [0, 1].map((cpu) =>
    spawn('taskset', ['-c', String(cpu), 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' })
  );
  process.stdout.write(`test.mjs: CPU hogs running: pids ${hogs.map((h) => h.pid).join(' ')}\n`);
  return () => {
    for (const h of hogs) {
      try {
        process.kill(h.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
}

function testFiles(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...testFiles(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

/** Runs one suite; the spec reporter goes to the terminal, a TAP copy to a file we count from. */
function runSuite(files, env = process.env) {
  const tmp = mkdtempSync(join(tmpdir(), 'tsshim-test-'));
  const tapFile = join(tmp, 'report.tap');
  const args = [
    '--test',
    '--test-concurrency=1',
    `--test-timeout=${Number(process.env.TEST_TIMEOUT_MS) || 600_000}`,
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tapFile}`,
    ...files,
  ];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] });
    const forward = (sig) => () => child.kill(sig);
    const handlers = ['SIGINT', 'SIGTERM'].map((sig) => [sig, forward(sig)]);
    for (const [sig, h] of handlers) process.on(sig, h);
    child.on('close', (code, signal) => {
      for (const [sig, h] of handlers) process.removeListener(sig, h);
      const counts = { tests: 0, pass: 0, fail: 0, skipped: 0, todo: 0, cancelled: 0 };
      let tap = '';
      try {
        tap = readFileSync(tapFile, 'utf8');
      } catch {
        /* runner died before writing */
      }
      rmSync(tmp, { recursive: true, force: true });
      // The runner's own totals are the last "# <name> <n>" lines of the TAP stream.
      for (const m of tap.matchAll(/^# (tests|pass|fail|skipped|todo|cancelled) (\d+)$/gm)) counts[m[1]] = Number(m[2]);
      resolve({ code, signal, counts, failures: failuresOf(tap) });
    });
  });
}

async function main() {
  const { suites, filters, releases, underLoad } = parseArgs(process.argv.slice(2));
  const stopHogs = underLoad ? startCpuHogs() : () => {};
  process.once('exit', stopHogs);
  if (!existsSync(distTest)) {
    process.stderr.write('test.mjs: dist/test not found; run `npm run build` first\n');
    process.exit(2);
  }
  const results = [];
  const releaseCache = mkdtempSync(join(tmpdir(), 'tsshim-containerd-'));
  try {
    for (const suite of suites) {
      let files = testFiles(join(distTest, suite));
      if (filters.length) files = files.filter((f) => filters.some((w) => relative(root, f).includes(w)));
      const runs =
        suite === 'e2e' ? e2eRuns(files, releases, releaseCache) : [{ name: suite, files, env: process.env }];
      for (const run of runs) results.push(await runOne(run, filters));
    }
  } finally {
    rmSync(releaseCache, { recursive: true, force: true });
  }

  const parts = results.map((r) =>
    r.skip
      ? `${r.suite}: skipped`
      : r.counts
        ? `${r.suite}: files=${r.files} tests=${r.counts.tests} pass=${r.counts.pass} fail=${r.counts.fail} cancelled=${r.counts.cancelled} skipped=${r.counts.skipped} todo=${r.counts.todo}${r.signal ? ` signal=${r.signal}` : ''} time=${minutes(r.ms)}`
        : `${r.suite}: files=0`
  );
  for (const r of results)
    for (const f of r.failures ?? []) process.stdout.write(`\n✖ ${r.suite}: ${f.name}\n${f.text}\n`);
  const allOk = results.every((r) => r.ok);
  const ran = results.some((r) => r.counts && r.counts.tests > 0);
  const verdict = allOk && ran ? 'PASS' : allOk ? 'NO TESTS' : 'FAIL';
  process.stdout.write(`\nTEST SUMMARY: ${verdict} | ${parts.join(' | ')}\n`);
  process.exit(verdict === 'PASS' ? 0 : 1);
}

/** One run of a suite: its files, the environment (TSSHIM_CONTAINERD for e2e) and a skip reason. */
async function runOne(run, filters) {
  const { name, files, env, skip } = run;
  if (skip) {
    process.stdout.write(`\n== ${name}: ${skip}\n`);
    return { suite: name, files: 0, ok: true, counts: null, skip };
  }
  if (files.length === 0) {
    process.stdout.write(`\n== ${name}: no test files${filters.length ? ' match the filter' : ''}\n`);
    return { suite: name, files: 0, ok: true, counts: null };
  }
  process.stdout.write(`\n== ${name}: ${files.length} file(s)\n`);
  const started = Date.now();
  const r = await runSuite(files, env);
  const ms = Date.now() - started;
  process.stdout.write(`== ${name}: ${minutes(ms)}\n`);
  const ok = r.code === 0 && r.counts.fail === 0 && r.counts.cancelled === 0;
  return { suite: name, files: files.length, ok, counts: r.counts, signal: r.signal, ms, failures: r.failures };
}

const DIGEST_LINES = 40;

/**
 * Failed tests of a TAP stream with the start of their diagnostics (error, location, stack). CI
 * shows only the tail of a long log: the digest printed before the summary keeps the reason there.
 * A suite that failed only because a subtest did is left out (the subtest is listed).
 */
function failuresOf(tap) {
  const lines = tap.split('\n');
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)not ok \d+ - (.*)$/.exec(lines[i]);
    if (!m) continue;
    const body = [];
    const end = `${m[1]}  ...`;
    for (let j = i + 1; j < lines.length && lines[j] !== end && !/^\s*(not )?ok \d+ /.test(lines[j]); j++)
      body.push(lines[j].slice(m[1].length + 2));
    const text = body.join('\n');
    if (/failureType: 'subtestsFailed'/.test(text)) continue;
    out.push({
      name: m[2],
      text: body
        .filter((l) => !/^(---|duration_ms:|type:)|\(?node:/.test(l.trim()))
        .slice(0, DIGEST_LINES)
        .join('\n'),
    });
  }
  return out;
}

/** The e2e files split into one run per containerd release of MATRIX (or of --containerd). */
function e2eRuns(files, releases, releaseCache) {
  const { releaseSkipReason } = createRequire(import.meta.url)(join(distTest, 'support', 'containerd-release.js'));
  const wanted = releases.length
    ? releases.map((v) => MATRIX.find((m) => m.release === v) ?? { release: v, files: 'all' })
    : MATRIX;
  return wanted.map(({ release, files: names }) => {
    const env = { ...process.env, TSSHIM_CONTAINERD: release, TSSHIM_CONTAINERD_CACHE: releaseCache };
    if (release === 'apt') delete env.TSSHIM_CONTAINERD;
    const name = `e2e@${release === 'apt' ? aptVersion() : release}`;
    const mine = names === 'all' ? files : files.filter((f) => names.includes(basename(f, '.test.js')));
    const skip = release === 'apt' ? null : withEnv({ TSSHIM_CONTAINERD: release }, () => releaseSkipReason(root));
    return { name, files: mine, env, skip };
  });
}

function withEnv(vars, fn) {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
}

function aptVersion() {
  const out = spawnSync('containerd', ['--version'], { encoding: 'utf8' }).stdout ?? '';
  return /\sv?(\d+\.\d+\.\d+)/.exec(out)?.[1] ?? 'apt';
}

function minutes(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

main().catch((err) => {
  process.stderr.write(`test.mjs: ${err?.stack ?? err}\n`);
  process.exit(2);
});

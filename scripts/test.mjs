#!/usr/bin/env node
// Runs the compiled tests: dist/test/unit/**/*.test.js first, then dist/test/e2e/**/*.test.js, one
// file at a time (e2e tests each start their own containerd). Ends with one summary line and a
// non-zero exit status when anything failed.
//
//   node scripts/test.mjs                  unit, then e2e
//   node scripts/test.mjs --unit           unit only          (--e2e: e2e only)
//   node scripts/test.mjs --suite stress   dist/test/stress   (repeatable; any dir under dist/test)
//   node scripts/test.mjs ttrpc harness    only files whose path contains one of the words
//   TEST_TIMEOUT_MS=300000                 per-test timeout (default 600000)
//   node scripts/test.mjs --under-load     beside two busy loops pinned to CPUs 0 and 1 (not in CI)
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, dirname, relative } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const distTest = join(root, 'dist', 'test');

function parseArgs(argv) {
  const suites = [];
  const filters = [];
  let underLoad = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--unit') suites.push('unit');
    else if (a === '--e2e') suites.push('e2e');
    else if (a === '--under-load') underLoad = true;
    else if (a === '--suite') suites.push(argv[++i]);
    else if (a.startsWith('--suite=')) suites.push(a.slice('--suite='.length));
    else if (a === '-h' || a === '--help') {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 10).join('\n') + '\n');
      process.exit(0);
    } else if (a.startsWith('-')) {
      process.stderr.write(`test.mjs: unknown option ${a}\n`);
      process.exit(2);
    } else filters.push(a);
  }
  return { suites: suites.length ? suites : ['unit', 'e2e'], filters, underLoad };
}

/** --under-load: one busy loop pinned to each of the first two CPUs; the returned stop kills them by pid. */
function startCpuHogs() {
  const hogs = [0, 1].map((cpu) => spawn('taskset', ['-c', String(cpu), 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' }));
  process.stdout.write(`test.mjs: CPU hogs running: pids ${hogs.map((h) => h.pid).join(' ')}\n`);
  return () => { for (const h of hogs) { try { process.kill(h.pid, 'SIGKILL'); } catch { /* gone */ } } };
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
function runSuite(files) {
  const tmp = mkdtempSync(join(tmpdir(), 'tsshim-test-'));
  const tapFile = join(tmp, 'report.tap');
  const args = [
    '--test', '--test-concurrency=1',
    `--test-timeout=${Number(process.env.TEST_TIMEOUT_MS) || 600_000}`,
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tapFile}`,
    ...files,
  ];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
    const forward = (sig) => () => child.kill(sig);
    const handlers = ['SIGINT', 'SIGTERM'].map((sig) => [sig, forward(sig)]);
    for (const [sig, h] of handlers) process.on(sig, h);
    child.on('close', (code, signal) => {
      for (const [sig, h] of handlers) process.removeListener(sig, h);
      const counts = { tests: 0, pass: 0, fail: 0, skipped: 0, todo: 0, cancelled: 0 };
      let tap = '';
      try { tap = readFileSync(tapFile, 'utf8'); } catch { /* runner died before writing */ }
      rmSync(tmp, { recursive: true, force: true });
      // The runner's own totals are the last "# <name> <n>" lines of the TAP stream.
      for (const m of tap.matchAll(/^# (tests|pass|fail|skipped|todo|cancelled) (\d+)$/gm)) counts[m[1]] = Number(m[2]);
      resolve({ code, signal, counts });
    });
  });
}

async function main() {
  const { suites, filters, underLoad } = parseArgs(process.argv.slice(2));
  const stopHogs = underLoad ? startCpuHogs() : () => {};
  process.once('exit', stopHogs);
  if (!existsSync(distTest)) {
    process.stderr.write('test.mjs: dist/test not found; run `npm run build` first\n');
    process.exit(2);
  }
  const results = [];
  for (const suite of suites) {
    let files = testFiles(join(distTest, suite));
    if (filters.length) files = files.filter((f) => filters.some((w) => relative(root, f).includes(w)));
    if (files.length === 0) {
      results.push({ suite, files: 0, ok: true, counts: null });
      process.stdout.write(`\n== ${suite}: no test files${filters.length ? ' match the filter' : ''}\n`);
      continue;
    }
    process.stdout.write(`\n== ${suite}: ${files.length} file(s)\n`);
    const r = await runSuite(files);
    const ok = r.code === 0 && r.counts.fail === 0 && r.counts.cancelled === 0;
    results.push({ suite, files: files.length, ok, counts: r.counts, signal: r.signal });
  }

  const parts = results.map((r) => r.counts
    ? `${r.suite}: files=${r.files} tests=${r.counts.tests} pass=${r.counts.pass} fail=${r.counts.fail} cancelled=${r.counts.cancelled} skipped=${r.counts.skipped} todo=${r.counts.todo}${r.signal ? ` signal=${r.signal}` : ''}`
    : `${r.suite}: files=0`);
  const allOk = results.every((r) => r.ok);
  const ran = results.some((r) => r.counts && r.counts.tests > 0);
  const verdict = allOk && ran ? 'PASS' : allOk ? 'NO TESTS' : 'FAIL';
  process.stdout.write(`\nTEST SUMMARY: ${verdict} | ${parts.join(' | ')}\n`);
  process.exit(verdict === 'PASS' ? 0 : 1);
}

main().catch((err) => {
  process.stderr.write(`test.mjs: ${err?.stack ?? err}\n`);
  process.exit(2);
});

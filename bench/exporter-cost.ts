// Cost of `tsshim exporter` scrapes, and the RSS of idle shims under a scrape interval.
//   node dist/bench/exporter-cost.js [--mode per-node|pod|per-container] [--containers 50]
//        [--scrapes 20] [--idle-interval-s 15] [--idle-minutes 3]
// Starts a private containerd, N sleeping tsshim containers, the exporter as its own process, then:
//  1. scrape cost: `--scrapes` back-to-back GET /metrics, CPU (utime+stime from /proc/<pid>/stat)
//     of the exporter and of all shims, per scrape;
//  2. idle RSS: with the shims idle, RSS (VmRSS) of every shim before scraping, then after each
//     scrape at the given interval.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { startContainerd, repoRoot, uniqueId, TSSHIM_RUNTIME } from '../test/support/harness';
import { makeRootfs, PATH_ENV_ARGS } from '../test/support/rootfs';
import { cpuMs, procMem } from './lib/proc';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const mode = arg('mode', 'per-node');
const containers = Number(arg('containers', '50'));
const scrapes = Number(arg('scrapes', '20'));
const idleIntervalS = Number(arg('idle-interval-s', '15'));
const idleMinutes = Number(arg('idle-minutes', '3'));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const rssMiB = (pids: number[]) => pids.map((p) => (procMem(p)?.rssKiB ?? 0) / 1024);

async function main(): Promise<void> {
  const c = await startContainerd({ logLevel: 'warn', env: mode === 'per-node' ? { TSSHIM_PER_NODE: '1' } : {} });
  let exporterPid = 0;
  try {
    const rootfs = makeRootfs(c.dir);
    const group = mode === 'pod' ? ['--annotation', 'io.containerd.tsshim.v2.group=bench-pod'] : [];
    for (let i = 0; i < containers; i++) {
      // One rootfs for all: read-only use by sleeping busybox is enough here.
      const r = await c.ctr(
        [
          'run',
          '-d',
          '--runtime',
          TSSHIM_RUNTIME,
          ...PATH_ENV_ARGS,
          ...group,
          '--rootfs',
          rootfs,
          uniqueId('cost'),
          '/bin/sleep',
          '100000',
        ],
        { timeoutMs: 60_000 }
      );
      if (r.code !== 0) throw new Error(`ctr run: ${r.stderr}`);
    }
    const shims = c.shimPids();
    // Baseline: the last Task API call (Start) was followed by the shims' idle collection and trim.
    await sleep(5000);
    const base = rssMiB(shims);
    console.log(
      `idle, never scraped: shim RSS max ${Math.max(...base).toFixed(1)} MiB, mean ${(sum(base) / base.length).toFixed(1)} MiB`
    );
    const port = 20000 + (process.pid % 20000);
    const exp = spawn(
      process.execPath,
      [path.join(repoRoot(), 'bin', 'tsshim'), 'exporter', '--listen', `127.0.0.1:${port}`, '--state', c.state],
      { stdio: ['ignore', 'ignore', 'inherit'] }
    );
    exporterPid = exp.pid!;
    for (let i = 0; i < 100; i++) {
      try {
        await get(port);
        break;
      } catch {
        await sleep(100);
      }
    }
    for (let i = 0; i < 3; i++) await get(port); // warm: code compiled, caches filled

    const e0 = cpuMs(exporterPid);
    const s0 = sum(shims.map(cpuMs));
    const t0 = Date.now();
    let body = '';
    for (let i = 0; i < scrapes; i++) body = await get(port);
    const wall = (Date.now() - t0) / scrapes;
    const exporterCpu = (cpuMs(exporterPid) - e0) / scrapes;
    const shimCpu = (sum(shims.map(cpuMs)) - s0) / scrapes;
    const series = body.split('\n').filter((l) => l && !l.startsWith('#')).length;
    console.log(`mode=${mode} containers=${containers} shims=${shims.length} series=${series} bytes=${body.length}`);
    console.log(
      `per scrape: wall ${wall.toFixed(1)} ms, exporter CPU ${exporterCpu.toFixed(1)} ms, all shims CPU ${shimCpu.toFixed(1)} ms` +
        ` (${(shimCpu / containers).toFixed(2)} ms/container)`
    );

    // Idle: no Task API call from now on. Let the idle collection run, then scrape at the interval.
    await sleep(5000);
    const fmt = (xs: number[]) => `max ${Math.max(...xs).toFixed(1)} MiB, mean ${(sum(xs) / xs.length).toFixed(1)} MiB`;
    console.log(`idle, 5 s after the back-to-back scrapes: shim RSS ${fmt(rssMiB(shims))}`);
    const rounds = Math.max(1, Math.round((idleMinutes * 60) / idleIntervalS));
    for (let i = 1; i <= rounds; i++) {
      await get(port);
      await sleep(2000);
      const after = rssMiB(shims);
      await sleep(idleIntervalS * 1000 - 2000);
      const before = rssMiB(shims);
      console.log(
        `scrape ${i}/${rounds} every ${idleIntervalS}s: shim RSS 2 s after ${fmt(after)}; just before the next ${fmt(before)}`
      );
    }
  } finally {
    if (exporterPid)
      try {
        process.kill(exporterPid, 'SIGTERM');
      } catch {
        /* gone */
      }
    await c.stop();
    fs.rmSync(c.dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

// Operator experience end to end: a private containerd started with TSSHIM_METRICS_DIR runs a
// detached tsshim container (and a runc one next to it); `bin/tsshim` ps / top / inspect / metrics
// find the tsshim shim through containerd's state dir, skip the runc shim, and report real numbers.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  startContainerd,
  uniqueId,
  repoRoot,
  pidAlive,
  TSSHIM_RUNTIME,
  RUNC_RUNTIME,
  type Containerd,
} from '../support/harness';
import { makeRootfs } from '../support/rootfs';
import { httpGetUnix } from '../../src/cli/http';
import { IDLE_GC_MS } from '../../src/shim/idle-gc';

let c: Containerd;
let metricsDir: string;
let rootfs: string;
const id = uniqueId('op');
const runcId = uniqueId('op-runc');

function tsshim(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'bin', 'tsshim'), ...args, '--state', c.state], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const cells = (line: string) => line.trim().split(/\s{3,}/);

before(async () => {
  // Short: <dir>/<64 hex>.metrics.sock must fit in 107 bytes.
  metricsDir = fs.mkdtempSync('/tmp/tsm-');
  c = await startContainerd({ env: { TSSHIM_METRICS_DIR: metricsDir } });
  rootfs = makeRootfs(c.dir);
  const r = await c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, '--rootfs', rootfs, id, '/bin/sleep', '1000'], {
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, `ctr run (tsshim) failed: ${r.stderr}\n${c.logTail(4000)}`);
  const runcRootfs = makeRootfs(c.dir);
  const r2 = await c.ctr(
    ['run', '-d', '--runtime', RUNC_RUNTIME, '--rootfs', runcRootfs, runcId, '/bin/sleep', '1000'],
    { timeoutMs: 60_000 }
  );
  assert.equal(r2.code, 0, `ctr run (runc) failed: ${r2.stderr}`);
});

after(async () => {
  if (c) {
    for (const x of [id, runcId]) {
      await c.ctr(['task', 'kill', '-s', 'SIGKILL', x]).catch(() => {});
      await c.ctr(['task', 'delete', '--force', x], { timeoutMs: 20_000 }).catch(() => {});
      await c.ctr(['container', 'rm', x]).catch(() => {});
    }
    await c.stop();
  }
  if (metricsDir) fs.rmSync(metricsDir, { recursive: true, force: true });
});

function taskPid(): number {
  return Number(fs.readFileSync(path.join(c.bundleDir(id), 'init.pid'), 'utf8').trim());
}

test('tsshim ps lists the tsshim container (running, with pid and shim pid) and skips the runc shim', () => {
  const r = tsshim(['ps']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.deepEqual(cells(lines[0]), [
    'NAMESPACE',
    'ID',
    'PID',
    'STATUS',
    'UPTIME',
    'EXECS',
    'SHIM-PID',
    'SHIM-VERSION',
  ]);
  const rows = lines.slice(1).map(cells);
  assert.equal(rows.filter((x) => x[1] === runcId).length, 0, 'runc shim answers Unimplemented and is skipped');
  const row = rows.find((x) => x[1] === id);
  assert.ok(row, r.stdout);
  assert.equal(row[0], c.namespace);
  assert.equal(row[3], 'running');
  assert.equal(Number(row[2]), taskPid());
  assert.ok(pidAlive(Number(row[2])));
  assert.match(row[4], /^\d+(ms|s|m\d+s)$/);
  assert.equal(row[5], '0');
  assert.ok(c.shimPids().includes(Number(row[6])), `shim pid ${row[6]} among ${c.shimPids()}`);
});

test('tsshim top --once shows the container with memory and pids from its cgroup', () => {
  const r = tsshim(['top', '--once', '--interval', '200', id]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 2, r.stdout);
  const row = cells(lines[1]);
  assert.deepEqual(row.slice(0, 4), [c.namespace, id, String(taskPid()), 'running']);
  assert.match(row[4], /^\d+\.\d%$/, 'CPU % from two samples');
  assert.match(row[5], /^\d+(\.\d)?(B|KiB|MiB)$/, `memory ${row[5]}`);
  assert.ok(Number(row[7]) >= 1, `pids ${row[7]}`);
  assert.match(row[9], /^\d+(\.\d)?(KiB|MiB)$/, `init RSS ${row[9]}`);
});

test('tsshim inspect <id> prints the shim state with the init process', () => {
  const r = tsshim(['inspect', id]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.ok(c.shimPids().includes(j.pid));
  const ctr = j.containers.find((x: any) => x.id === id);
  assert.ok(ctr, r.stdout);
  assert.equal(ctr.namespace, c.namespace);
  assert.equal(ctr.bundle, c.bundleDir(id));
  assert.equal(ctr.init.pid, taskPid());
  assert.equal(ctr.init.state, 'running');
  assert.equal(ctr.init.exit, null);
  assert.ok(j.rpc.Create.count >= 1 && j.rpc.Start.count >= 1, JSON.stringify(j.rpc));
  assert.ok(j.fds.count > 3);
  assert.equal(path.dirname(j.metrics_socket), metricsDir);
});

test('the metrics endpoint counts the Create call; tsshim metrics <id> scrapes it', async () => {
  const socks = fs.readdirSync(metricsDir).filter((n) => n.endsWith('.metrics.sock'));
  assert.equal(socks.length, 1, `one tsshim shim, one metrics socket: ${socks}`);
  const res = await httpGetUnix(path.join(metricsDir, socks[0]), '/metrics');
  assert.equal(res.status, 200);
  const m = /^tsshim_rpc_duration_seconds_count\{method="Create"\} (\d+)$/m.exec(res.body);
  assert.ok(m && Number(m[1]) >= 1, res.body);
  assert.match(res.body, /^tsshim_containers 1$/m);
  const viaCli = tsshim(['metrics', id]);
  assert.equal(viaCli.code, 0, viaCli.stderr);
  assert.match(viaCli.stdout, /^tsshim_rpc_duration_seconds_count\{method="Create"\} [1-9]\d*$/m);
});

test('the daemon collects garbage and trims its resident set once it goes idle', async () => {
  const socks = fs.readdirSync(metricsDir).filter((n) => n.endsWith('.metrics.sock'));
  await new Promise((r) => setTimeout(r, IDLE_GC_MS + 500));
  const res = await httpGetUnix(path.join(metricsDir, socks[0]), '/metrics');
  const m = /^tsshim_idle_gc_total (\d+)$/m.exec(res.body);
  assert.ok(m && Number(m[1]) >= 1, `an idle collection ran: ${m?.[0]}`);
  // ...and trimmed its resident set: an untrimmed daemon sits at ~60 MiB, a trimmed one near 30.
  const rss = Number(/^tsshim_resident_memory_bytes (\d+)$/m.exec(res.body)?.[1]);
  assert.ok(rss > 0 && rss < 45 * 1048576, `idle shim RSS ${(rss / 1048576).toFixed(1)} MiB`);
});

test('an in-place upgrade keeps the metrics endpoint: scrapes during the swap are answered, start time kept', async () => {
  const socks = fs.readdirSync(metricsDir).filter((n) => n.endsWith('.metrics.sock'));
  assert.equal(socks.length, 1, `one tsshim shim, one metrics socket: ${socks}`);
  const sock = path.join(metricsDir, socks[0]);
  const startTime = (body: string) => /^tsshim_start_time_seconds (\S+)$/m.exec(body)?.[1];
  const before = startTime((await httpGetUnix(sock, '/metrics')).body);
  assert.ok(before, 'tsshim_start_time_seconds');
  let scraping = true;
  let answered = 0;
  const failures: string[] = [];
  const scrapes = (async () => {
    while (scraping) {
      try {
        const r = await httpGetUnix(sock, '/metrics', 30_000);
        if (r.status === 200 && startTime(r.body) === before) answered++;
        else failures.push(`status ${r.status}, start time ${startTime(r.body)}`);
      } catch (e) {
        failures.push((e as Error).message);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  // Not spawnSync: the scrapes must go on while the CLI waits for the upgrade.
  const up = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, [path.join(repoRoot(), 'bin', 'tsshim'), 'upgrade', id, '--state', c.state]);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });
  await new Promise((r) => setTimeout(r, 100));
  scraping = false;
  await scrapes;
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /upgraded .* pid \d+ kept/);
  assert.deepEqual(failures, [], 'every scrape answered by one program or the other');
  assert.ok(answered > 0);
  assert.ok(fs.existsSync(sock), 'the socket file stays');
  assert.equal(startTime((await httpGetUnix(sock, '/metrics')).body), before, 'uptime goes on');
});

// The operator CLI against in-process shims: discovery (socket dir and containerd state dir, skipping
// runc-like and dead sockets), ps, top, inspect, metrics, units and argument errors.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Server } from '../../src/ttrpc';
import { run } from '../../src/cli/main';
import { parseArgs, UsageError } from '../../src/cli/args';
import { humanBytes, humanDuration, humanPercent } from '../../src/cli/units';
import { candidateSockets } from '../../src/cli/discover';
import { formatTable } from '../../src/cli/table';
import type { CliContext } from '../../src/cli/io';
import { startMetricsEndpoint } from '../../src/diag/metrics-endpoint';
import { SHIM_SERVICE } from '../../src/diag/introspection';
import { upgrade, upgradeConcurrency, UPGRADE_CONCURRENCY } from '../../src/cli/upgrade';
import { mapLimit } from '../../src/cli/limit';
import { tsshim } from '../../src/gen/proto';
import {
  fakeContainer,
  fakeDaemon,
  serveShim,
  serveForeignAndDeadSockets,
  tempDir,
} from '../support/shim-service-fixture';

const tmp = tempDir('tsshim-cli-');
const sockets = tmp.path('s');
const shimA = path.join(sockets, 'aaaa'); // tsshim with web, db, old (fixture defaults)
const shimB = path.join(sockets, 'bbbb'); // tsshim with api
const runcLike = path.join(sockets, 'cccc'); // answers Unimplemented for tsshim.v1.Shim
const dead = path.join(sockets, 'dddd'); // socket file, nobody listening
const servers: Server[] = [];
let metricsEndpoint: { socket: string; close(): void };
const daemonA = fakeDaemon();

before(async () => {
  fs.mkdirSync(sockets);
  servers.push(await serveShim(shimA, daemonA));
  servers.push(
    await serveShim(
      shimB,
      fakeDaemon([
        fakeContainer({
          namespace: 'default',
          id: 'api',
          pid: process.pid,
          state: 'created',
          createdAt: new Date(Date.now() - 3_700_000),
        }),
      ])
    )
  );
  servers.push(await serveForeignAndDeadSockets(runcLike, dead, tmp.dir));
  fs.writeFileSync(path.join(sockets, 'not-a-socket'), 'x');
  // Inspect of shim A reports this endpoint.
  metricsEndpoint = await startMetricsEndpoint(tmp.path('m/aaaa.metrics.sock'), fakeDaemon());
  daemonA.metricsSocket = metricsEndpoint.socket;
});

after(async () => {
  metricsEndpoint.close();
  for (const s of servers) await s.shutdown(100);
  tmp.remove();
});

function capture(opts: { tty?: boolean; signal?: AbortSignal } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const ctx: CliContext = {
    out: {
      write: (s) => {
        out.push(s);
      },
      isTTY: !!opts.tty,
    },
    err: {
      write: (s) => {
        err.push(s);
      },
    },
    env: { TSSHIM_SOCKET_DIR: '/nonexistent' },
    signal: opts.signal ?? new AbortController().signal,
  };
  return { ctx, out: () => out.join(''), err: () => err.join('') };
}

async function cli(args: string[], opts: { tty?: boolean; signal?: AbortSignal } = {}) {
  const c = capture(opts);
  const code = await run(args, c.ctx);
  return { code, out: c.out(), err: c.err() };
}

/**
 * Runs a streaming command (top) until its output so far satisfies `enough`, then aborts it as
 * Ctrl-C does. `limitMs` is only a safety net for a wedged command on a loaded machine: the
 * caller's assertions then say what the output lacked.
 */
async function cliUntil(
  args: string[],
  enough: (out: string) => boolean,
  opts: { tty?: boolean } = {},
  limitMs = 30_000
) {
  const ac = new AbortController();
  const c = capture({ ...opts, signal: ac.signal });
  const write = c.ctx.out.write;
  c.ctx.out.write = (s) => {
    write(s);
    if (!ac.signal.aborted && enough(c.out())) ac.abort();
  };
  const safety = setTimeout(() => ac.abort(), limitMs);
  try {
    const code = await run(args, c.ctx);
    return { code, out: c.out(), err: c.err() };
  } finally {
    clearTimeout(safety);
  }
}

const cells = (line: string) => line.trim().split(/\s{3,}/);

test('units: sizes, durations, percent', () => {
  assert.equal(humanBytes(0), '0B');
  assert.equal(humanBytes(1023), '1023B');
  assert.equal(humanBytes(1536), '1.5KiB');
  assert.equal(humanBytes(12.3 * 1024 * 1024), '12.3MiB');
  assert.equal(humanBytes(512 * 1024 * 1024), '512MiB');
  assert.equal(humanBytes(3 * 1024 ** 3), '3.0GiB');
  assert.equal(humanBytes(-1), '-');
  assert.equal(humanDuration(950), '950ms');
  assert.equal(humanDuration(5_000), '5s');
  assert.equal(humanDuration(192_000), '3m12s');
  assert.equal(humanDuration(7_380_000), '2h3m');
  assert.equal(humanDuration(93_600_000), '1d2h');
  assert.equal(humanPercent(12.345), '12.3%');
  assert.equal(humanPercent(null), '-');
});

test('args and table helpers', () => {
  assert.deepEqual(parseArgs(['top', '--interval', '50', '--once', 'web', '--state=/s'], ['once']), {
    flags: { interval: '50', once: true, state: '/s' },
    positional: ['top', 'web'],
  });
  assert.throws(() => parseArgs(['ps', '--state']), UsageError);
  assert.equal(
    formatTable(
      ['A', 'LONGER'],
      [
        ['xyz', '1'],
        ['x', '22'],
      ]
    ),
    'A     LONGER\nxyz   1\nx     22\n'
  );
});

test('discovery: socket dir lists only sockets; state dir reads address files, deduplicated', () => {
  assert.deepEqual(candidateSockets({ socketDir: sockets }), [shimA, shimB, runcLike, dead]);
  const state = tmp.path('state');
  const task = path.join(state, 'io.containerd.runtime.v2.task');
  for (const [ns, id, sock] of [
    ['default', 'web', shimA],
    ['default', 'db', shimA],
    ['k8s.io', 'api', shimB],
  ]) {
    fs.mkdirSync(path.join(task, ns, id), { recursive: true });
    fs.writeFileSync(path.join(task, ns, id, 'address'), `unix://${sock}\n`);
  }
  fs.mkdirSync(path.join(task, 'default', 'no-address-yet'));
  assert.deepEqual(candidateSockets({ state }).sort(), [shimA, shimB]);
});

test('ps: a table of the tsshim shims only, with shim pid and uptime', async () => {
  const r = await cli(['ps', '--socket-dir', sockets]);
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
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
  assert.deepEqual(
    rows.map((x) => x[1]),
    ['api', 'old', 'web', 'db'],
    'sorted by namespace, then id'
  );
  const web = rows.find((x) => x[1] === 'web')!;
  assert.deepEqual(web.slice(0, 7), [
    'default',
    'web',
    String(process.pid),
    'running',
    '1m5s',
    '1',
    String(process.pid),
  ]);
  assert.match(web[7], /^\d+\.\d+\.\d+\S* \(\S+\)$/, 'the shim version (and revision)');
  assert.deepEqual(rows.find((x) => x[1] === 'api')!.slice(3, 5), ['created', '1h1m']);
  assert.deepEqual(rows.find((x) => x[1] === 'old')!.slice(2, 5), ['4000000', 'stopped', '-']);
  assert.equal(rows.find((x) => x[1] === 'db')![3], 'pausing');
});

test('ps --state and --namespace', async () => {
  const r = await cli(['ps', '--state', tmp.path('state'), '-n', 'k8s.io']);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(
    r.out
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((l) => cells(l)[1]),
    ['db']
  );
  const none = await cli(['ps']);
  assert.equal(none.code, 0);
  assert.equal(none.out.trimEnd().split('\n').length, 1, 'header only when no shim is found');
});

test('top --once <id>: CPU %, working-set memory in IEC units, limit, pids, init RSS', async () => {
  const r = await cli(['top', '--socket-dir', sockets, '--interval', '30', '--once', 'web']);
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  assert.deepEqual(cells(lines[0]), [
    'NAMESPACE',
    'ID',
    'PID',
    'STATUS',
    'CPU%',
    'MEM',
    'LIMIT',
    'PIDS',
    'INIT-CPU%',
    'INIT-RSS',
  ]);
  assert.equal(lines.length, 2, r.out);
  const row = cells(lines[1]);
  assert.deepEqual(row.slice(0, 4), ['default', 'web', String(process.pid), 'running']);
  // 5 ms of CPU per ~30 ms sample: clearly above 0, well below 100.
  const cpu = Number(row[4].replace('%', ''));
  assert.ok(cpu > 1 && cpu < 60, `cpu ${row[4]}`);
  assert.equal(row[5], '12.0MiB', '13 MiB usage minus 1 MiB inactive file');
  assert.equal(row[6], '512MiB');
  assert.equal(row[7], '3');
  assert.match(row[8], /^\d+\.\d%$/);
  assert.match(row[9], /^\d+(\.\d)?MiB$/);
  assert.ok(!r.out.includes('\x1b['), 'no escape codes when not a TTY');
});

test('top without id streams all shims; lines without a TTY, ANSI redraw with one; ends on abort', async () => {
  // Rows of the lines written so far (each render writes whole lines), and the ids in them.
  const rowsOf = (out: string) => out.split('\n').slice(1, -1);
  const idsOf = (rows: string[]) => new Set(rows.map((l) => cells(l)[1]));
  const r = await cliUntil(['top', '--socket-dir', sockets, '--interval', '40'], (out) => {
    const rows = rowsOf(out);
    return rows.length >= 8 && idsOf(rows).size >= 4;
  });
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trimEnd().split('\n');
  assert.equal(lines.filter((l) => l.startsWith('NAMESPACE')).length, 1, 'header printed once');
  assert.deepEqual([...idsOf(lines.slice(1))].sort(), ['api', 'db', 'old', 'web']);
  assert.ok(lines.length - 1 >= 8, `several frames of 4 rows: ${lines.length - 1} rows`);

  const framesOf = (out: string) => out.split('\x1b[H\x1b[2J').filter(Boolean);
  const t = await cliUntil(
    ['top', '--socket-dir', sockets, '--interval', '40', 'api'],
    (out) => {
      const f = framesOf(out);
      return f.length >= 2 && /\bapi\b.*created/.test(f[f.length - 1]);
    },
    { tty: true }
  );
  const frames = framesOf(t.out);
  assert.ok(frames.length >= 2, `redrawn frames: ${frames.length}`);
  assert.match(frames[frames.length - 1], /tsshim top - .*1 container\(s\), every 40 ms/);
  assert.match(frames[frames.length - 1], /\bapi\b.*created/);
});

test('inspect by socket and by id; unknown id is a usage error', async () => {
  const bySocket = await cli(['inspect', shimB]);
  assert.equal(bySocket.code, 0, bySocket.err);
  const j = JSON.parse(bySocket.out);
  assert.equal(j.pid, process.pid);
  assert.deepEqual(
    j.containers.map((c: any) => c.id),
    ['api']
  );
  const byId = await cli(['inspect', '--socket-dir', sockets, 'db']);
  assert.equal(byId.code, 0, byId.err);
  assert.ok(JSON.parse(byId.out).containers.some((c: any) => c.id === 'db' && c.namespace === 'k8s.io'));
  const byNsId = await cli(['inspect', '--socket-dir', sockets, 'k8s.io/db']);
  assert.equal(byNsId.code, 0, byNsId.err);
  const missing = await cli(['inspect', '--socket-dir', sockets, 'nope']);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /no tsshim shim holds container "nope"/);
  assert.doesNotMatch(missing.err, /usage:/);
  const runc = await cli(['inspect', runcLike]);
  assert.equal(runc.code, 1);
  assert.match(runc.err, /not a tsshim shim/);
});

test('metrics: by metrics socket, by shim socket (via Inspect), by id', async () => {
  for (const target of [tmp.path('m/aaaa.metrics.sock'), shimA, 'web']) {
    const r = await cli(['metrics', '--socket-dir', sockets, target]);
    assert.equal(r.code, 0, `${target}: ${r.err}`);
    assert.match(r.out, /^# HELP /);
    assert.match(r.out, /\ntsshim_rpc_duration_seconds_count\{method="Create"\} 2\n/);
  }
  metricsEndpoint.close();
  daemonA.metricsSocket = null;
  const off = await cli(['metrics', shimA]);
  assert.equal(off.code, 1);
  assert.match(off.err, /TSSHIM_METRICS_DIR/);
  metricsEndpoint = await startMetricsEndpoint(tmp.path('m/aaaa.metrics.sock'), fakeDaemon());
  daemonA.metricsSocket = metricsEndpoint.socket;
});

test('usage errors exit 2 with the usage text', async () => {
  for (const args of [['bogus'], ['inspect'], ['top', 'a', 'b'], ['top', '--interval', 'x'], []]) {
    const r = await cli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.out + r.err, /usage: tsshim <command>/);
  }
  assert.equal((await cli(['help'])).code, 0);
});

test('--help, -h and help print the usage on stdout and exit 0; an unknown command: stderr, exit 2', async () => {
  for (const args of [['--help'], ['-h'], ['help'], ['ps', '--help'], ['top', '-h']]) {
    const r = await cli(args);
    assert.equal(r.code, 0, args.join(' '));
    assert.match(r.out, /^usage: tsshim <command>/, args.join(' '));
    assert.equal(r.err, '', args.join(' '));
  }
  for (const args of [['bogus'], []]) {
    const r = await cli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.equal(r.out, '', args.join(' '));
    assert.match(r.err, /usage: tsshim <command>/, args.join(' '));
  }
});

test('mapLimit hands results to inOrder in input order, each as soon as the ones before it are done', async () => {
  const seen: string[] = [];
  const gates = [0, 1, 2, 3].map(() => {
    let open!: () => void;
    const p = new Promise<void>((r) => (open = r));
    return { p, open };
  });
  const run = mapLimit(
    [0, 1, 2, 3],
    4,
    async (n) => {
      await gates[n].p;
      seen.push(`done ${n}`);
      return n;
    },
    (n) => seen.push(`emit ${n}`)
  );
  for (const n of [2, 0, 3, 1]) {
    gates[n].open();
    await new Promise((r) => setImmediate(r));
  }
  await run;
  assert.deepEqual(seen, ['done 2', 'done 0', 'emit 0', 'done 3', 'done 1', 'emit 1', 'emit 2', 'emit 3']);
});

test('upgrade concurrency: a few at a time, never more than the CPUs, at least one', () => {
  assert.equal(upgradeConcurrency(1), 1);
  assert.equal(upgradeConcurrency(2), 2);
  assert.equal(upgradeConcurrency(64), UPGRADE_CONCURRENCY);
  assert.equal(upgradeConcurrency(0), 1);
});

test('upgrade: a few shims at a time (never more), one line per shim in the order found, exit 1 when one failed', async () => {
  const dir = tmp.path('upgrade-sockets');
  fs.mkdirSync(dir);
  const N = 7;
  const names = Array.from({ length: N }, (_, i) => `u${i}`);
  let inFlight = 0;
  let most = 0;
  let arrived = 0;
  const finished: string[] = [];
  // The first wave is held until it is full (as many as the limit lets in, or all that are left),
  // then let go last-first: a shim found later finishing sooner must not change the output order.
  const wave: { name: string; go: () => void }[] = [];
  let waveSize = UPGRADE_CONCURRENCY;
  let bound: NodeJS.Timeout | undefined;
  const release = () => {
    clearTimeout(bound);
    const w = wave.splice(0).reverse();
    let chain = Promise.resolve();
    for (const x of w) chain = chain.then(() => new Promise<void>((r) => setTimeout(() => (x.go(), r()), 5)));
  };
  const upgradeServers: Server[] = [];
  for (const [i, name] of names.entries()) {
    const server = await serveShim(
      path.join(dir, name),
      fakeDaemon([fakeContainer({ namespace: 'default', id: name, pid: process.pid, state: 'running' })])
    );
    server.register(SHIM_SERVICE, {
      Upgrade: async (payload) => {
        const req = tsshim.v1.UpgradeRequest.decode(payload);
        inFlight++;
        arrived++;
        most = Math.max(most, inFlight);
        await new Promise<void>((go) => {
          wave.push({ name, go });
          // The timer only bounds a failure: with a lower limit the wave would never fill.
          if (wave.length === waveSize || arrived === N) release();
          else if (wave.length === 1) bound = setTimeout(release, 3000);
        });
        inFlight--;
        finished.push(name);
        const failed = i === 5;
        return tsshim.v1.UpgradeResponse.encode({
          upgraded: !failed && !req.check,
          would_upgrade: !failed && req.check,
          reason: failed ? 'the new build is missing' : '',
          from_version: '0.1.0',
          from_revision: 'aaaa',
          to_version: '0.2.0',
          to_revision: 'bbbb',
          pid: 1000 + i,
        }).finish();
      },
    });
    upgradeServers.push(server);
  }
  try {
    const c = capture();
    const code = await upgrade(c.ctx, {
      socketDir: dir,
      ids: [],
      check: false,
      entry: '/builds/b/dist/src/daemon/boot.js',
      concurrency: UPGRADE_CONCURRENCY,
    });
    const r = { code, out: c.out(), err: c.err() };
    assert.equal(r.code, 1, r.out + r.err);
    const lines = r.out.trimEnd().split('\n');
    assert.deepEqual(
      lines.map((l) => /default\/(u\d)/.exec(l)?.[1]),
      names,
      `one line per shim in the order found:\n${r.out}`
    );
    assert.match(lines[0], /^shim \d+ default\/u0: upgraded 0\.1\.0 \(aaaa\) -> 0\.2\.0 \(bbbb\), pid 1000 kept$/);
    assert.match(lines[5], /u5: not upgraded, still 0\.1\.0 \(aaaa\): the new build is missing$/);
    assert.equal(most, UPGRADE_CONCURRENCY, 'shims in flight at once');
    assert.notDeepEqual(finished, names, 'the shims did not finish in the order found');
    // The command itself: no more at once than the CPUs.
    most = 0;
    arrived = 0;
    waveSize = upgradeConcurrency();
    const check = await cli(['upgrade', '--check', '--socket-dir', dir]);
    assert.equal(check.code, 1);
    assert.match(check.out.split('\n')[1], /u1: would upgrade 0\.1\.0 \(aaaa\) -> 0\.2\.0 \(bbbb\)$/);
    assert.equal(most, upgradeConcurrency(), '--check: shims in flight at once');
  } finally {
    for (const s of upgradeServers) await s.shutdown(100);
  }
});

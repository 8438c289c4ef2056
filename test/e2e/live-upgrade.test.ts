// In-place upgrade (issue 16, README "Upgrading tsshim") through a real containerd: running shims
// re-execute themselves into another build (same pid) while containers stream output, a tty
// session stays open and an exec is in flight; containerd notices nothing. Two builds that differ
// visibly: this checkout (A) and a copy of it with another version string (B). Broken builds (a
// bundle that does not parse, a restore that throws) and an older build refusing a newer state
// version prove the fallback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import {
  startContainerd,
  uniqueId,
  repoRoot,
  pidAlive,
  selectedRelease,
  TSSHIM_RUNTIME,
  type Containerd,
} from '../support/harness';
import { installTarball, packCurrentTree, variantTarball } from '../support/package';
import { makeRootfs, PATH_ENV_ARGS, DEFAULT_PATH } from '../support/rootfs';
import { callTasks, closeClients, collectEvents, getTask, type EventCollector } from '../support/containerd-api';

let c: Containerd;
let rootfs: string;
/** Exit events of every subscription (a containerd restart ends one; the next starts right after). */
const collectors: EventCollector[] = [];
const exitEvents = () => collectors.flatMap((k) => k.events);
let builds: string;
const GROUP = 'io.containerd.runc.v2.group';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A copy of this checkout's build with another version (and optionally a patched bundle); returns its shim entry. */
function makeBuild(name: string, version: string, patch?: (bundle: string) => string): string {
  const root = repoRoot();
  const dir = path.join(builds, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.cpSync(path.join(root, 'bin'), path.join(dir, 'bin'), { recursive: true });
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ ...pkg, version }));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  if (patch) {
    const bundle = path.join(dir, 'dist', 'src', 'daemon', 'bundle.js');
    const before = fs.readFileSync(bundle, 'utf8');
    const after = patch(before);
    assert.notEqual(after, before, `the patch of build ${name} changed nothing`);
    fs.writeFileSync(bundle, after);
  }
  return path.join(dir, 'dist', 'src', 'daemon', 'boot.js');
}

/** The tsshim CLI of this checkout, run without blocking this process (its fifo readers must keep reading). */
function tsshim(
  args: string[],
  on: Containerd = c,
  cli?: { bin: string; env: NodeJS.ProcessEnv }
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = cli
      ? spawn(cli.bin, [...args, '--state', on.state], { stdio: ['ignore', 'pipe', 'pipe'], env: cli.env })
      : spawn(
          process.execPath,
          [path.join(repoRoot(), 'dist', 'src', 'cli', 'main.js'), ...args, '--state', on.state],
          { stdio: ['ignore', 'pipe', 'pipe'] }
        );
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out });
    });
  });
}

function upgrade(entry: string, extra: string[] = [], on: Containerd = c): Promise<{ code: number; out: string }> {
  return tsshim(['upgrade', '--entry', entry, ...extra], on);
}

/** A fifo in the test dir with a reader that collects what arrives (survives containerd restarts). */
function outputFifo(name: string): { path: string; text: () => string; close: () => void } {
  const p = path.join(c.dir, `${name}-${uniqueId('f')}`);
  execFileSync('mkfifo', [p]);
  const sock = new net.Socket({
    fd: fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK),
    readable: true,
    writable: false,
  });
  let text = '';
  sock.on('data', (d) => (text += d));
  sock.on('error', () => undefined);
  return { path: p, text: () => text, close: () => sock.destroy() };
}

function inputFifo(name: string): { path: string; write: (s: string) => void; close: () => void } {
  const p = path.join(c.dir, `${name}-${uniqueId('i')}`);
  execFileSync('mkfifo', [p]);
  const fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  return { path: p, write: (s) => fs.writeSync(fd, s), close: () => fs.closeSync(fd) };
}

async function createContainer(id: string, cmd: string[], extra: string[] = []): Promise<void> {
  const r = await c.ctr([
    'container',
    'create',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    ...extra,
    '--rootfs',
    rootfs,
    id,
    ...cmd,
  ]);
  assert.equal(r.code, 0, r.stderr);
}

/** Lines 0..n-1 each exactly once, in order (a counter's output). */
function assertCounter(text: string, what: string): number {
  const lines = text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.trim());
  assert.ok(lines.length > 10, `${what}: too little output (${lines.length} lines)`);
  for (let i = 0; i < lines.length - 1; i++)
    assert.equal(lines[i], String(i), `${what}: line ${i} is ${JSON.stringify(lines[i])} (gap or duplicate)`);
  return lines.length;
}

// Scripts in the rootfs: `ctr container create` would take a `-c` for its own flag.
const COUNTER = ['sh', '/counter.sh'];
const SLOW_EXIT = ['sh', '/slow-exit.sh'];

/** The shim serving a container: its shim.pid, or (a container that joined a running shim) the shim's pid file. */
function shimPidOf(id: string, on: Containerd = c): number {
  try {
    return Number(fs.readFileSync(path.join(on.bundleDir(id), 'shim.pid'), 'utf8'));
  } catch {
    /* joined */
  }
  const socket = fs.readFileSync(path.join(on.bundleDir(id), 'address'), 'utf8').replace(/^unix:\/\//, '');
  return Number(
    fs.readFileSync(path.join(process.env.TSSHIM_STATE_DIR || '/run/tsshim', `${path.basename(socket)}.pid`), 'utf8')
  );
}

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The SHIM-VERSION column of `tsshim ps` for each shim pid. */
async function versions(on: Containerd = c): Promise<Map<number, string>> {
  const r = await tsshim(['ps'], on);
  const out = new Map<number, string>();
  for (const line of r.out.split('\n').slice(1)) {
    const cells = line.trim().split(/\s{2,}/);
    if (cells.length >= 8) out.set(Number(cells[6]), cells[7]);
  }
  return out;
}

/** Children of a process (its containers' processes are re-parented to the shim: it is their subreaper). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      out.push(...fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    } catch {
      /* gone */
    }
  }
  return out.sort((a, b) => a - b);
}

/** Calls containerd's Tasks.Get in a loop until stopped; every call must succeed (requests wait in the socket during a swap). */
function pollTasks(ids: string[]): { stop: () => Promise<{ calls: number; errors: string[] }> } {
  let running = true;
  const errors: string[] = [];
  let calls = 0;
  const loop = (async () => {
    while (running) {
      for (const id of ids) {
        try {
          await getTask(c, id);
          calls++;
        } catch (e) {
          errors.push(`${id}: ${(e as Error).message}`);
        }
      }
      await sleep(20);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { calls, errors };
    },
  };
}

before(async () => {
  c = await startContainerd();
  rootfs = makeRootfs(c.dir);
  fs.writeFileSync(path.join(rootfs, 'counter.sh'), 'i=0; while :; do echo $i; i=$((i+1)); usleep 2000; done\n');
  fs.writeFileSync(path.join(rootfs, 'slow-exit.sh'), 'sleep 4; exit 7\n');
  builds = path.join(c.dir, 'builds');
  collectors.push(await collectEvents(c, ['topic=="/tasks/exit"']));
});
after(async () => {
  for (const k of collectors) k.stop();
  if (c) {
    closeClients(c);
    await c.stop();
  }
});

test('upgrades in a row between two builds, containerd restarted between two: output without gap or duplicate, tty, exec in flight, grouped shim, exits once', async (t) => {
  const entryA = path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
  const entryB = makeBuild('b', '0.1.0-upgrade.b');
  // A file:// log (ctr run -d) and a FIFO read by this test, both counters.
  const fileId = uniqueId('upf');
  const logFile = path.join(c.dir, `${fileId}.log`);
  const r = await c.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--log-uri',
    `file://${logFile}`,
    '--rootfs',
    rootfs,
    fileId,
    ...COUNTER,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const fifoId = uniqueId('upq');
  const fifoOut = outputFifo('out');
  await createContainer(fifoId, COUNTER);
  await callTasks(c, 'Create', { container_id: fifoId, stdout: fifoOut.path, stderr: '', terminal: false });
  await callTasks(c, 'Start', { container_id: fifoId });
  // A tty shell with stdin.
  const ttyId = uniqueId('upt');
  const ttyOut = outputFifo('tty');
  const ttyIn = inputFifo('ttyin');
  await createContainer(ttyId, ['sh'], ['--tty']);
  await callTasks(c, 'Create', { container_id: ttyId, stdin: ttyIn.path, stdout: ttyOut.path, terminal: true });
  await callTasks(c, 'Start', { container_id: ttyId });
  ttyIn.write('echo tty-$((40+2))\n');
  await until(() => ttyOut.text().includes('tty-42'), 'tty answer before the upgrade');
  // Two containers of one pod-grouped shim; one of them is killed while the first upgrade runs.
  const group = uniqueId('grp');
  const g1 = uniqueId('upg');
  const g2 = uniqueId('upg');
  for (const g of [g1, g2]) {
    const rr = await c.ctr([
      'run',
      '-d',
      '--runtime',
      TSSHIM_RUNTIME,
      ...PATH_ENV_ARGS,
      '--annotation',
      `${GROUP}=${group}`,
      '--rootfs',
      rootfs,
      g,
      'sleep',
      '1000',
    ]);
    assert.equal(rr.code, 0, rr.stderr);
  }
  const addressOf = (id: string) => fs.readFileSync(path.join(c.bundleDir(id), 'address'), 'utf8');
  assert.equal(addressOf(g1), addressOf(g2), 'grouped containers share a shim');
  // An exec that ends a few seconds later with status 7; its Wait stays in flight across upgrades.
  const spec = { args: SLOW_EXIT, env: [DEFAULT_PATH], cwd: '/', user: { uid: 0, gid: 0 } };
  await callTasks(c, 'Exec', {
    container_id: fifoId,
    exec_id: 'slow',
    stdout: '',
    terminal: false,
    spec: {
      type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
      value: Buffer.from(JSON.stringify(spec)),
    },
  });
  await callTasks(c, 'Start', { container_id: fifoId, exec_id: 'slow' });
  const waitSlow = callTasks<{ exit_status: number }>(
    c,
    'Wait',
    { container_id: fifoId, exec_id: 'slow' },
    { timeoutMs: 120_000 }
  );

  const ids = [fileId, fifoId, ttyId, g1];
  const shims = [...new Set(ids.map((id) => shimPidOf(id)))];
  await sleep(300);
  const fdsBefore = new Map(shims.map((pid) => [pid, fdCount(pid)]));
  const childrenBefore = new Map(shims.map((pid) => [pid, childrenOf(pid).length]));

  const poll = pollTasks([fileId, fifoId, ttyId]);
  const ROUNDS = 6;
  for (let i = 0; i < ROUNDS; i++) {
    const entry = i % 2 === 0 ? entryB : entryA;
    // An exit during the first swap: the grouped container g2 is killed as the upgrade starts.
    const killing = i === 0 ? callTasks(c, 'Kill', { container_id: g2, signal: 9 }) : Promise.resolve();
    const u = await upgrade(entry);
    await killing;
    assert.equal(u.code, 0, `upgrade ${i}: ${u.out}\n${c.logTail(3000)}`);
    t.diagnostic(`upgrade ${i}: ${u.out.trim().split('\n').join(' | ')}`);
    const want = entry === entryB ? '0.1.0-upgrade.b' : '0.1.0 (';
    const v = await versions();
    for (const pid of shims) {
      assert.ok(pidAlive(pid), `shim ${pid} alive after upgrade ${i}`);
      assert.ok(v.get(pid)?.startsWith(want), `ps after upgrade ${i}: shim ${pid} shows ${v.get(pid)}`);
    }
    ttyIn.write(`echo tty-${i}-$((1+1))\n`);
    await until(() => ttyOut.text().includes(`tty-${i}-2`), `tty answer after upgrade ${i}`);
    if (i === 2) {
      await c.restart();
      closeClients(c); // the gRPC channels of the old containerd
      collectors.push(await collectEvents(c, ['topic=="/tasks/exit"']));
      t.diagnostic('containerd restarted');
    }
  }
  const polled = await poll.stop();
  assert.deepEqual(
    polled.errors.filter((e) => !/connection|UNAVAILABLE|14 /.test(e)),
    [],
    'Tasks.Get during the upgrades'
  );
  assert.ok(polled.calls > 20, `polled ${polled.calls} times`);
  assert.deepEqual([...new Set(ids.map((id) => shimPidOf(id)))], shims, 'same shim pids');

  const slow = await waitSlow.catch(() =>
    callTasks<{ exit_status: number }>(c, 'Wait', { container_id: fifoId, exec_id: 'slow' })
  );
  assert.equal(slow.exit_status, 7);
  await callTasks(c, 'DeleteProcess', { container_id: fifoId, exec_id: 'slow' });
  // exec, resize and kill/delete on the upgraded shims.
  const ex = await c.ctr(['task', 'exec', '--exec-id', 'after', fileId, 'echo', 'exec-after-upgrades']);
  assert.equal(ex.code, 0, ex.stderr);
  assert.match(ex.stdout, /exec-after-upgrades/);
  await callTasks(c, 'ResizePty', { container_id: ttyId, width: 101, height: 31 });
  ttyIn.write('stty size\n');
  await until(() => /31 101/.test(ttyOut.text()), 'the tty size after resize');

  // Stop the counters and check every byte of both.
  for (const id of [fileId, fifoId, ttyId, g1]) await callTasks(c, 'Kill', { container_id: id, signal: 9 });
  // g2 stopped before containerd's restart: containerd 2.x does not load a stopped task again (NOT_FOUND).
  const stoppedOrGone = async (id: string) => {
    try {
      return (await getTask(c, id)).status === 'STOPPED';
    } catch (e) {
      return id === g2 && /NOT_FOUND|not found/.test(String(e));
    }
  };
  for (const id of [fileId, fifoId, ttyId, g1, g2]) await until(() => stoppedOrGone(id), `${id} stopped`);
  await sleep(300);
  const n1 = assertCounter(fs.readFileSync(logFile, 'utf8'), 'file:// log');
  const n2 = assertCounter(fifoOut.text(), 'fifo');
  t.diagnostic(`counter lines: file ${n1}, fifo ${n2}`);
  await until(
    () => exitEvents().filter((e) => [fileId, fifoId, ttyId, g1, g2].includes(e.event?.container_id)).length >= 6,
    'exit events',
    10_000
  ).catch(() => {});
  const exits = exitEvents().filter((e) => [fileId, fifoId, ttyId, g1, g2].includes(e.event?.container_id));
  for (const id of [fileId, fifoId, ttyId, g1, g2]) {
    const mine = exits.filter((e) => e.event?.container_id === id && e.event?.id === id);
    assert.equal(mine.length, 1, `one exit event for ${id}: ${JSON.stringify(mine)}`);
    assert.equal(mine[0].event?.exit_status, 137);
  }
  const slowExits = exits.filter((e) => e.event?.id === 'slow');
  assert.equal(slowExits.length, 1, 'one exit event for the exec');
  assert.equal(slowExits[0].event?.exit_status, 7);
  // Nothing leaked: fds (the containers' stdio is still open until delete) and children.
  for (const pid of shims) {
    assert.ok(
      fdCount(pid) <= fdsBefore.get(pid)! + 2,
      `shim ${pid} fds: ${fdsBefore.get(pid)} before, ${fdCount(pid)} after`
    );
    assert.ok(
      childrenOf(pid).length <= childrenBefore.get(pid)!,
      `shim ${pid} children: ${childrenBefore.get(pid)} before, ${childrenOf(pid).join(',')} after`
    );
  }
  for (const id of [fileId, fifoId, ttyId, g1, g2]) {
    await callTasks(c, 'Delete', { container_id: id }).catch((e) => {
      if (id !== g2) throw e;
    });
    await c.ctr(['container', 'delete', id]);
  }
  await until(() => shims.every((pid) => !pidAlive(pid)), 'shims gone after their last container');
  fifoOut.close();
  ttyOut.close();
  ttyIn.close();
});

/** A running file:// counter: its id, log file and shim pid. */
async function fileCounter(on: Containerd = c, prefix = 'upc'): Promise<{ id: string; log: string; shim: number }> {
  const id = uniqueId(prefix);
  const log = path.join(on.dir, `${id}.log`);
  const r = await on.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--log-uri',
    `file://${log}`,
    '--rootfs',
    rootfs,
    id,
    ...COUNTER,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return { id, log, shim: shimPidOf(id, on) };
}

/** Kills and deletes a counter container; its output must be complete and its exit reported once. */
async function finishCounter(k: { id: string; log: string }, on: Containerd = c, what = k.id): Promise<void> {
  await callTasks(on, 'Kill', { container_id: k.id, signal: 9 });
  await until(async () => (await getTask(on, k.id)).status === 'STOPPED', `${k.id} stopped`);
  await sleep(200);
  assertCounter(fs.readFileSync(k.log, 'utf8'), what);
  await callTasks(on, 'Delete', { container_id: k.id });
  await on.ctr(['container', 'delete', k.id]);
}

test('a broken new build falls back to the running one: missing, a bundle that does not parse, a restore that throws', async (t) => {
  const k = await fileCounter();
  const entryA = path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
  const missing = path.join(builds, 'nowhere', 'dist', 'src', 'daemon', 'boot.js');
  const syntax = makeBuild('syntax', '0.1.0-syntax', (b) => `${b}\n}}} this is not javascript (((\n`);
  const throwing = makeBuild('throwing', '0.1.0-throwing', (b) =>
    b.replace(/return ["']tsshim-restore-hook["'];/, 'throw new Error("injected restore failure");')
  );
  const fdsBefore = fdCount(k.shim);
  const cases: [string, string, RegExp][] = [
    ['missing', missing, /the new build is missing/],
    ['syntax', syntax, /cannot be loaded: .*SyntaxError/],
    ['throwing', throwing, /not upgraded, still 0\.1\.0 .*the new build failed to restore: injected restore failure/],
  ];
  for (const [name, entry, why] of cases) {
    const check = await upgrade(entry, ['--check', k.id]);
    const u = await upgrade(entry, [k.id]);
    t.diagnostic(`${name}: check: ${check.out.trim()} | upgrade: ${u.out.trim()}`);
    assert.equal(u.code, 1, `${name}: ${u.out}`);
    assert.match(u.out, why, name);
    if (name !== 'throwing') assert.match(check.out, why, `${name} --check`);
    assert.ok(pidAlive(k.shim), `${name}: shim alive`);
    assert.ok((await versions()).get(k.shim)?.startsWith('0.1.0 ('), `${name}: still the running build`);
    assert.equal((await getTask(c, k.id)).status, 'RUNNING', `${name}: container unaffected`);
  }
  // containerd's log says why (the shim logs to it).
  await until(
    () => /injected restore failure/.test(c.logTail(200_000)),
    "the fallback reason in containerd's log",
    5000
  );
  // Still fully working, and upgradable afterwards.
  const u = await upgrade(makeBuild('b2', '0.1.0-upgrade.b2'), [k.id]);
  assert.equal(u.code, 0, u.out);
  assert.match(u.out, /upgraded 0\.1\.0 .* -> 0\.1\.0-upgrade\.b2/);
  const back = await upgrade(entryA, [k.id]);
  assert.equal(back.code, 0, back.out);
  const ex = await c.ctr(['task', 'exec', '--exec-id', 'fb', k.id, 'echo', 'still-here']);
  assert.match(ex.stdout, /still-here/, ex.stderr);
  assert.ok(fdCount(k.shim) <= fdsBefore + 2, `fds ${fdsBefore} -> ${fdCount(k.shim)}`);
  await finishCounter(k);
  const mine = exitEvents().filter((e) => e.event?.container_id === k.id && e.event?.id === k.id);
  assert.equal(mine.length, 1, 'one exit event');
});

test('state versions: a newer build reads the older state; an older build refuses a newer state (the shim stays)', async () => {
  const k = await fileCounter();
  const entryA = path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
  const v2 = makeBuild('state2', '0.2.0-state2', (b) =>
    b
      .replace(/(exports\d*\.STATE_VERSION = )(\d+);/, (_m, a: string, n: string) => `${a}${Number(n) + 1};`)
      .replace(
        /(exports\d*\.ACCEPTED_STATE_VERSIONS = \[)([\d, ]+)\];/,
        (_m, a: string, list: string) => `${a}${list}, ${Number(list.split(',').pop()) + 1}];`
      )
  );
  const up = await upgrade(v2, [k.id]);
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /upgraded 0\.1\.0 .* -> 0\.2\.0-state2/);
  const check = await upgrade(entryA, ['--check', k.id]);
  assert.equal(check.code, 1, check.out);
  assert.match(
    check.out,
    /cannot upgrade from 0\.2\.0-state2 .*reads upgrade state versions \[[\d, ]+\], this one writes version \d+: it refuses the state/
  );
  const down = await upgrade(entryA, [k.id]);
  assert.equal(down.code, 1, down.out);
  assert.match(down.out, /not upgraded, still 0\.2\.0-state2/);
  assert.ok((await versions()).get(k.shim)?.startsWith('0.2.0-state2'), 'the newer build still runs');
  assert.equal((await getTask(c, k.id)).status, 'RUNNING');
  await finishCounter(k);
});

test('a per-node shim (TSSHIM_PER_NODE) is upgraded with all its containers', async () => {
  const pn = await startContainerd({ env: { TSSHIM_PER_NODE: '1' } });
  try {
    const entryA = path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
    const entryB = fs.existsSync(path.join(builds, 'b'))
      ? path.join(builds, 'b', 'dist', 'src', 'daemon', 'boot.js')
      : makeBuild('b', '0.1.0-upgrade.b');
    const k1 = await fileCounter(pn);
    const k2 = await fileCounter(pn);
    const addressOf = (id: string) => fs.readFileSync(path.join(pn.bundleDir(id), 'address'), 'utf8');
    assert.equal(addressOf(k1.id), addressOf(k2.id), 'one shim for the namespace');
    for (const entry of [entryB, entryA, entryB]) {
      const u = await upgrade(entry, ['-n', pn.namespace], pn);
      assert.equal(u.code, 0, `${u.out}\n${pn.logTail(3000)}`);
      assert.match(u.out, /upgraded/);
    }
    assert.ok((await versions(pn)).get(k1.shim)?.startsWith('0.1.0-upgrade.b'));
    const ex = await pn.ctr(['task', 'exec', '--exec-id', 'pn', k2.id, 'echo', 'per-node-ok']);
    assert.match(ex.stdout, /per-node-ok/, ex.stderr);
    await finishCounter(k1, pn);
    await finishCounter(k2, pn);
    assert.ok(pidAlive(k1.shim), 'the per-node shim stays without containers');
  } finally {
    closeClients(pn);
    await pn.stop();
  }
});

/** This process's PATH without any dir of the repository (its bin/ in particular). */
function pathWithoutRepo(): string[] {
  const repo = repoRoot();
  return (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .filter((d) => d && path.resolve(d) !== repo && !path.resolve(d).startsWith(repo + path.sep));
}

test('installed the way operators install: npm install -g of a newer package over the running one, then its tsshim upgrade', async () => {
  const base = packCurrentTree();
  const next = variantTarball(base, `${base.version}-live.1`);
  const inst = installTarball(base.file);
  const release = selectedRelease(repoRoot());
  // containerd finds the shim only through the prefix; the CLI is the installed one too.
  const PATH = [
    inst.binDir,
    ...(release.binDir ? [release.binDir] : []),
    path.dirname(process.execPath),
    ...pathWithoutRepo(),
  ].join(':');
  const pc = await startContainerd({ env: { PATH } });
  try {
    const k = await fileCounter(pc);
    const cli = { bin: path.join(inst.binDir, 'tsshim'), env: { ...process.env, PATH } };
    assert.ok((await versions(pc)).get(k.shim)?.startsWith(`${base.version} (`), 'the first install runs');
    installTarball(next.file, inst.prefix);
    const check = await tsshim(['upgrade', '--check'], pc, cli);
    assert.match(
      check.out,
      new RegExp(`would upgrade ${base.version.replace(/\./g, '\\.')} .* -> ${next.version.replace(/\./g, '\\.')}`),
      check.out
    );
    const u = await tsshim(['upgrade'], pc, cli);
    assert.equal(u.code, 0, `${u.out}\n${pc.logTail(3000)}`);
    assert.match(u.out, /upgraded .* pid \d+ kept/);
    assert.ok(
      (await versions(pc)).get(k.shim)?.startsWith(`${next.version} (`),
      'the running shim runs the new install'
    );
    const ex = await pc.ctr(['task', 'exec', '--exec-id', 'inst', k.id, 'echo', 'installed-ok']);
    assert.match(ex.stdout, /installed-ok/, ex.stderr);
    await finishCounter(k, pc);
  } finally {
    closeClients(pc);
    await pc.stop();
    inst.remove();
  }
});

test('a binary:// logger keeps getting the output across upgrades and is stopped by the new code on Delete', async () => {
  const entryA = path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
  const entryB = fs.existsSync(path.join(builds, 'b'))
    ? path.join(builds, 'b', 'dist', 'src', 'daemon', 'boot.js')
    : makeBuild('b', '0.1.0-upgrade.b');
  const id = uniqueId('upl');
  const prefix = path.join(c.dir, id);
  const logger = path.join(repoRoot(), 'test', 'fixtures', 'parity', 'logger.sh');
  const r = await c.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--log-uri',
    `binary://${logger}?out=${prefix}`,
    '--rootfs',
    rootfs,
    id,
    ...COUNTER,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const shim = shimPidOf(id);
  const loggers = () =>
    childrenOf(shim).filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('logger.sh');
      } catch {
        return false;
      }
    });
  const loggerPid = await until(() => loggers()[0] ?? 0, 'the logger running');
  for (const entry of [entryB, entryA]) {
    const u = await upgrade(entry, [id]);
    assert.equal(u.code, 0, u.out);
    await sleep(300);
  }
  assert.deepEqual(loggers(), [loggerPid], "the same logger, still the shim's child");
  await callTasks(c, 'Kill', { container_id: id, signal: 9 });
  await until(async () => (await getTask(c, id)).status === 'STOPPED', `${id} stopped`);
  await sleep(300);
  assertCounter(fs.readFileSync(`${prefix}.stdout`, 'utf8'), 'binary:// logger');
  await callTasks(c, 'Delete', { container_id: id });
  await c.ctr(['container', 'delete', id]);
  await until(() => !pidAlive(loggerPid), 'the logger stopped after Delete');
});

test('under load: an exec storm and Tasks.Get during upgrades; every exec answers with its own output', async () => {
  const entryA = path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
  const entryB = fs.existsSync(path.join(builds, 'b'))
    ? path.join(builds, 'b', 'dist', 'src', 'daemon', 'boot.js')
    : makeBuild('b', '0.1.0-upgrade.b');
  const id = uniqueId('ups');
  const r = await c.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--rootfs',
    rootfs,
    id,
    'sleep',
    '1000',
  ]);
  assert.equal(r.code, 0, r.stderr);
  let storming = true;
  const failures: string[] = [];
  let done = 0;
  const storm = async (lane: number) => {
    for (let n = 0; storming; n++) {
      const word = `lane${lane}-${n}`;
      const ex = await c.ctr(['task', 'exec', '--exec-id', word, id, 'echo', word], { timeoutMs: 60_000 });
      if (ex.code !== 0 || ex.stdout.trim() !== word)
        failures.push(`${word}: code ${ex.code} out ${JSON.stringify(ex.stdout)} err ${ex.stderr.trim()}`);
      else done++;
    }
  };
  const lanes = [0, 1, 2].map(storm);
  const poll = pollTasks([id]);
  await until(() => done >= 3, 'the storm under way');
  for (const entry of [entryB, entryA, entryB, entryA]) {
    const u = await upgrade(entry, [id]);
    assert.equal(u.code, 0, `${u.out}\n${c.logTail(3000)}`);
  }
  storming = false;
  await Promise.all(lanes);
  const polled = await poll.stop();
  assert.deepEqual(failures, [], 'execs during upgrades');
  assert.deepEqual(polled.errors, [], 'Tasks.Get during upgrades');
  assert.ok(done >= 6, `execs done: ${done}`);
  await callTasks(c, 'Kill', { container_id: id, signal: 9 });
  await until(async () => (await getTask(c, id)).status === 'STOPPED', `${id} stopped`);
  await callTasks(c, 'Delete', { container_id: id });
  await c.ctr(['container', 'delete', id]);
});

/** The file a cgroup counts its OOM kills in (`oom_kill N`), from the process's cgroup. */
function oomCounterFile(pid: number): string {
  const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('memory'));
  if (v1) return path.join('/sys/fs/cgroup/memory', v1.split(':')[2], 'memory.oom_control');
  const v2 = lines.find((l) => l.startsWith('0::'))!;
  const base = fs.existsSync('/sys/fs/cgroup/unified/cgroup.controllers') ? '/sys/fs/cgroup/unified' : '/sys/fs/cgroup';
  return path.join(base, v2.slice(3), 'memory.events');
}

test('OOM kills across upgrades: one during the swap itself is reported once, none twice', async () => {
  const id = uniqueId('upoom');
  const trigger = path.join(rootfs, `${id}.go`);
  // Each time the trigger file appears, a process of the container outgrows the limit and is OOM-killed.
  fs.writeFileSync(
    path.join(rootfs, `${id}.sh`),
    `while :; do if [ -e /${id}.go ]; then rm /${id}.go; dd if=/dev/zero of=/dev/null bs=128M count=1; fi; usleep 20000; done\n`
  );
  const ooms = await collectEvents(c, ['topic=="/tasks/oom"']);
  const mine = () => ooms.events.filter((e) => e.event?.container_id === id).length;
  const r = await c.ctr([
    'run',
    '-d',
    '--runtime',
    TSSHIM_RUNTIME,
    ...PATH_ENV_ARGS,
    '--memory-limit',
    String(32 << 20),
    '--rootfs',
    rootfs,
    id,
    'sh',
    `/${id}.sh`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  try {
    const counter = oomCounterFile((await getTask(c, id)).pid);
    const kills = () => Number(/oom_kill (\d+)/.exec(fs.readFileSync(counter, 'utf8'))?.[1] ?? -1);
    const oomNow = async (n: number) => {
      fs.writeFileSync(trigger, '');
      await until(() => kills() >= n, `OOM kill ${n}`);
    };
    assert.equal(kills(), 0, `${counter} counts OOM kills`);
    await oomNow(1);
    await until(() => mine() === 1, 'the first /tasks/oom');

    // A build whose restore makes the container OOM and waits for the kill before it goes on: the
    // OOM happens while no program watches the cgroup.
    const during = makeBuild('oomgap', '0.1.0-oomgap', (b) =>
      b.replace(
        /return ["']tsshim-restore-hook["'];/,
        `{ const fs = require("fs"); fs.writeFileSync(${JSON.stringify(trigger)}, ""); const nap = new Int32Array(new SharedArrayBuffer(4)); const end = Date.now() + 30000; while (Date.now() < end && !/oom_kill [2-9]/.test(fs.readFileSync(${JSON.stringify(counter)}, "utf8"))) Atomics.wait(nap, 0, 0, 20); } return "tsshim-restore-hook";`
      )
    );
    const up = await upgrade(during, [id]);
    assert.equal(up.code, 0, up.out);
    assert.equal(kills(), 2, 'the restore saw the second OOM kill');
    await until(() => mine() === 2, 'the /tasks/oom of the kill during the swap');

    await oomNow(3);
    await until(() => mine() === 3, 'an OOM after the upgrade is reported');
    // Back to this build, with no OOM in between: nothing is reported again.
    const back = await upgrade(path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js'), [id]);
    assert.equal(back.code, 0, back.out);
    await oomNow(4);
    await until(() => mine() === 4, 'the fourth /tasks/oom');
    await sleep(500);
    assert.equal(mine(), 4, 'one /tasks/oom per OOM kill, none twice');
    assert.equal((await getTask(c, id)).status, 'RUNNING');
  } finally {
    ooms.stop();
    await callTasks(c, 'Kill', { container_id: id, signal: 9 }).catch(() => undefined);
    await until(async () => (await getTask(c, id)).status === 'STOPPED', `${id} stopped`);
    await callTasks(c, 'Delete', { container_id: id });
    await c.ctr(['container', 'delete', id]);
  }
});

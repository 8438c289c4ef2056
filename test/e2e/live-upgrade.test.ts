// In-place upgrade (issue 16, README "Upgrading tsshim") through a real containerd: running shims
// re-execute themselves into another build (same pid) while containers stream output, a tty
// session stays open and an exec is in flight; containerd notices nothing. Two builds that differ
// visibly: this checkout (A) and a copy of it with another version string (B). Broken builds (a
// bundle that does not parse, a restore that throws) and an older build refusing a newer state
// version prove the fallback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { startContainerd, uniqueId, repoRoot, pidAlive, TSSHIM_RUNTIME, type Containerd } from './harness';
import { makeRootfs, PATH_ENV_ARGS, DEFAULT_PATH } from './rootfs';
import { callTasks, closeClients, collectEvents, getTask, type EventCollector } from './containerd-api';

let c: Containerd;
let rootfs: string;
let events: EventCollector;
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
    const bundle = path.join(dir, 'dist', 'src', 'shim', 'bundle.js');
    const before = fs.readFileSync(bundle, 'utf8');
    const after = patch(before);
    assert.notEqual(after, before, `the patch of build ${name} changed nothing`);
    fs.writeFileSync(bundle, after);
  }
  return path.join(dir, 'dist', 'src', 'shim', 'boot.js');
}

function tsshim(args: string[]): { code: number; out: string } {
  const r = spawnSync(process.execPath, [path.join(repoRoot(), 'dist', 'src', 'cli', 'main.js'), ...args, '--state', c.state],
    { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function upgrade(entry: string, extra: string[] = []): { code: number; out: string } {
  return tsshim(['upgrade', '--entry', entry, ...extra]);
}

/** A fifo in the test dir with a reader that collects what arrives (survives containerd restarts). */
function outputFifo(name: string): { path: string; text: () => string; close: () => void } {
  const p = path.join(c.dir, `${name}-${uniqueId('f')}`);
  execFileSync('mkfifo', [p]);
  const sock = new net.Socket({ fd: fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
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
  const r = await c.ctr(['container', 'create', '--runtime', TSSHIM_RUNTIME, ...PATH_ENV_ARGS, ...extra, '--rootfs', rootfs, id, ...cmd]);
  assert.equal(r.code, 0, r.stderr);
}

/** Lines 0..n-1 each exactly once, in order (a counter's output). */
function assertCounter(text: string, what: string): number {
  const lines = text.split('\n').filter((l) => l.trim() !== '').map((l) => l.trim());
  assert.ok(lines.length > 10, `${what}: too little output (${lines.length} lines)`);
  for (let i = 0; i < lines.length - 1; i++) assert.equal(lines[i], String(i), `${what}: line ${i} is ${JSON.stringify(lines[i])} (gap or duplicate)`);
  return lines.length;
}

// Scripts in the rootfs: `ctr container create` would take a `-c` for its own flag.
const COUNTER = ['sh', '/counter.sh'];
const SLOW_EXIT = ['sh', '/slow-exit.sh'];

function shimPidOf(id: string): number {
  return Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
}

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

function versionOf(pid: number): string {
  const r = tsshim(['ps']);
  const line = r.out.split('\n').find((l) => l.includes(` ${pid} `) || l.trim().split(/\s+/).includes(String(pid)));
  return line ?? '';
}

before(async () => {
  c = await startContainerd();
  rootfs = makeRootfs(c.dir);
  fs.writeFileSync(path.join(rootfs, 'counter.sh'), 'i=0; while :; do echo $i; i=$((i+1)); usleep 2000; done\n');
  fs.writeFileSync(path.join(rootfs, 'slow-exit.sh'), 'sleep 4; exit 7\n');
  builds = path.join(c.dir, 'builds');
  events = await collectEvents(c, ['topic=="/tasks/exit"']);
});
after(async () => {
  events?.stop();
  if (c) { closeClients(c); await c.stop(); }
});

test('upgrades in a row between two builds: output without gap or duplicate, tty, exec in flight, exits once', async (t) => {
  const entryA = path.join(repoRoot(), 'dist', 'src', 'shim', 'boot.js');
  const entryB = makeBuild('b', '0.1.0-upgrade.b');
  // A file:// log (ctr run -d) and a FIFO read by this test, both counters.
  const fileId = uniqueId('upf');
  const logFile = path.join(c.dir, `${fileId}.log`);
  const r = await c.ctr(['run', '-d', '--runtime', TSSHIM_RUNTIME, ...PATH_ENV_ARGS, '--log-uri', `file://${logFile}`, '--rootfs', rootfs, fileId, ...COUNTER]);
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
  // An exec that ends after the first upgrade with status 7.
  const spec = { args: SLOW_EXIT, env: [DEFAULT_PATH], cwd: '/', user: { uid: 0, gid: 0 } };
  await callTasks(c, 'Exec', {
    container_id: fifoId, exec_id: 'slow', stdout: '', terminal: false,
    spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(spec)) },
  });
  await callTasks(c, 'Start', { container_id: fifoId, exec_id: 'slow' });
  const waitSlow = callTasks<{ exit_status: number }>(c, 'Wait', { container_id: fifoId, exec_id: 'slow' }, { timeoutMs: 120_000 });

  const shims = [fileId, fifoId, ttyId].map(shimPidOf);
  await sleep(500);
  const fdsBefore = shims.map(fdCount);

  const targets = [entryB, entryA];
  for (const [i, entry] of targets.entries()) {
    const u = upgrade(entry);
    assert.equal(u.code, 0, `upgrade ${i}: ${u.out}\n${c.logTail(3000)}`);
    assert.match(u.out, /upgraded .* -> /);
    t.diagnostic(`upgrade ${i}: ${u.out.trim()}`);
    for (const pid of shims) assert.ok(pidAlive(pid), `shim ${pid} alive after upgrade ${i}`);
    const want = entry === entryB ? '0.1.0-upgrade.b' : '0.1.0 ';
    for (const pid of shims) assert.ok(versionOf(pid).includes(want), `ps after upgrade ${i}: ${versionOf(pid)}`);
    ttyIn.write(`echo tty-${i}-$((1+1))\n`);
    await until(() => ttyOut.text().includes(`tty-${i}-2`), `tty answer after upgrade ${i}`);
    await sleep(300);
  }
  assert.deepEqual(shims.map((pid) => shimPidOf([fileId, fifoId, ttyId][shims.indexOf(pid)])), shims, 'same shim pids');

  const slow = await waitSlow;
  assert.equal(slow.exit_status, 7);
  await callTasks(c, 'DeleteProcess', { container_id: fifoId, exec_id: 'slow' });

  // Stop the counters and check every byte of both.
  for (const id of [fileId, fifoId, ttyId]) await callTasks(c, 'Kill', { container_id: id, signal: 9 });
  for (const id of [fileId, fifoId, ttyId]) await until(async () => (await getTask(c, id)).status === 'STOPPED', `${id} stopped`);
  await sleep(300);
  assertCounter(fs.readFileSync(logFile, 'utf8'), 'file:// log');
  assertCounter(fifoOut.text(), 'fifo');
  const exits = events.events.filter((e) => [fileId, fifoId, ttyId].includes(e.event?.container_id));
  for (const id of [fileId, fifoId, ttyId]) {
    const mine = exits.filter((e) => e.event?.container_id === id && e.event?.id === id);
    assert.equal(mine.length, 1, `one exit event for ${id}: ${JSON.stringify(mine)}`);
    assert.equal(mine[0].event?.exit_status, 137);
  }
  const slowExits = exits.filter((e) => e.event?.id === 'slow');
  assert.equal(slowExits.length, 1, 'one exit event for the exec');
  assert.equal(slowExits[0].event?.exit_status, 7);
  for (const [i, pid] of shims.entries()) {
    if (!pidAlive(pid)) continue;
    assert.ok(fdCount(pid) <= fdsBefore[i] + 2, `shim ${pid} fds: ${fdsBefore[i]} before, ${fdCount(pid)} after`);
  }
  for (const id of [fileId, fifoId, ttyId]) {
    await callTasks(c, 'Delete', { container_id: id });
    await c.ctr(['container', 'delete', id]);
  }
  fifoOut.close(); ttyOut.close(); ttyIn.close();
});

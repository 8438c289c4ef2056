// In-place upgrade (issue 16, README "Upgrading tsshim") through a real containerd: running shims
// re-execute themselves into another build (same pid) while containers stream output, tty sessions
// (`ctr task attach` on a real terminal among them) stay open and execs are in flight; containerd
// notices nothing. Two builds that differ visibly: this checkout (A) and a copy of it with another
// version string (B). Broken builds (a bundle that does not parse, a restore that throws, exits or
// aborts) and an older build refusing a newer state version prove the fallback.
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
import {
  callTasks,
  closeClients,
  collectEvents,
  getTask,
  type ContainerdEvent,
  type EventCollector,
} from '../support/containerd-api';
import { daemonShims, removeContainer, runDetached, shimLeft, shimPidOf } from '../support/containers';
import { allPids, argvOf, childrenOf, fdCount, procStat, zombiesOf } from '../support/proc';
import { PtySession, PROMPT, resizeUntilSeen } from '../support/pty';
import { sleep, until } from '../support/wait';
import { mapLimit } from '../../src/cli/limit';
import { eventfd, EFD_CLOEXEC, EFD_NONBLOCK } from '../../src/sys/libc';
import { io as genIo } from '../../src/gen/proto';

let c: Containerd;
let rootfs: string;
/** Exit events of every subscription (a containerd restart ends one; the next starts right after). */
const collectors: EventCollector[] = [];
const exitEvents = () => collectors.flatMap((k) => k.events);
let builds: string;
const GROUP = 'io.containerd.runc.v2.group';

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

const ENTRY_A = () => path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js');
const VERSION_B = '0.1.0-upgrade.b';
/** Build B (made once, shared by the tests). */
function entryB(): string {
  return fs.existsSync(path.join(builds, 'b'))
    ? path.join(builds, 'b', 'dist', 'src', 'daemon', 'boot.js')
    : makeBuild('b', VERSION_B);
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

/** `ctr run -d` of a tsshim container on the test rootfs (PATH set); `extra` goes before the id. */
function run(id: string, cmd: string[], extra: string[] = [], on: Containerd = c): Promise<number> {
  return runDetached(on, id, cmd, { runtime: TSSHIM_RUNTIME, rootfs, env: [DEFAULT_PATH], extra });
}

/** Starts an exec through the Task API (its stdout: a fifo path, or none). */
async function startExec(id: string, execId: string, args: string[], stdout = ''): Promise<void> {
  const spec = { args, env: [DEFAULT_PATH], cwd: '/', user: { uid: 0, gid: 0 } };
  await callTasks(c, 'Exec', {
    container_id: id,
    exec_id: execId,
    stdout,
    terminal: false,
    spec: {
      type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
      value: Buffer.from(JSON.stringify(spec)),
    },
  });
  await callTasks(c, 'Start', { container_id: id, exec_id: execId });
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
/**
 * A counter: `sh /counter.sh <us> <n>` writes n lines (default 1), then sleeps <us> microseconds
 * (default 2000). Every usleep is a fork: n > 1 streams as fast with fewer of them (20 containers
 * share two cores).
 */
const COUNTER = ['sh', '/counter.sh'];
/** 500 lines a second in bursts of 10, 50 forks a second. */
const FAST = [...COUNTER, '20000', '10'];
/** 20 lines a second. */
const STEADY = [...COUNTER, '50000'];
/** `sh /wait-exit.sh /go-<name> <status>`: prints start-<status>, waits for the file, prints end-<status>, exits. */
const waitExit = (name: string, status: number) => ['sh', '/wait-exit.sh', `/go-${name}`, String(status)];
/** Lets a wait-exit.sh waiting for `name` go on (the containers share the rootfs). */
const go = (name: string) => fs.writeFileSync(path.join(rootfs, `go-${name}`), '');

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

/** Calls containerd's Tasks.Get in a loop until stopped; every call must succeed (requests wait in the socket during a swap). */
function pollTasks(ids: string[]): { stop: () => Promise<{ calls: number; errors: string[]; longestMs: number }> } {
  let running = true;
  const errors: string[] = [];
  let calls = 0;
  let longestMs = 0;
  const loop = (async () => {
    while (running) {
      for (const id of ids) {
        const started = Date.now();
        try {
          await getTask(c, id);
          calls++;
          longestMs = Math.max(longestMs, Date.now() - started);
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
      return { calls, errors, longestMs };
    },
  };
}

/** Each (container, process) with more than one exit event: none may have two. */
function duplicateExits(events: ContainerdEvent[]): string[] {
  const seen = new Map<string, number>();
  for (const e of events) {
    const key = `${e.event?.container_id}/${e.event?.id}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return [...seen].filter(([, n]) => n > 1).map(([k, n]) => `${k} x${n}`);
}

/**
 * containerd gives a shim's State 2 s (io.containerd.timeout.task.state), then answers Tasks.Get
 * with DEADLINE_EXCEEDED. A swap pauses a shim for ~0.2 s, but several seconds on a machine loaded
 * like CI's (seen at load 10 on 2 cores): more here, so a slow swap is not taken for a call the
 * shim lost (a lost call still fails, after 10 s). The longest wait is reported.
 */
const STATE_TIMEOUT_TOML = '[timeouts]\n  "io.containerd.timeout.task.state" = "10s"';

before(async () => {
  c = await startContainerd({ extraToml: STATE_TIMEOUT_TOML });
  rootfs = makeRootfs(c.dir);
  fs.writeFileSync(
    path.join(rootfs, 'counter.sh'),
    'd=${1:-2000}; n=${2:-1}; i=0; while :; do j=0; while [ $j -lt $n ]; do echo $i; i=$((i+1)); j=$((j+1)); done; usleep $d; done\n'
  );
  fs.writeFileSync(
    path.join(rootfs, 'wait-exit.sh'),
    'echo start-$2; while [ ! -e "$1" ]; do usleep 50000; done; echo end-$2; exit $2\n'
  );
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
/**
 * The issue's e2e at its size: 20 containers on 17 shims, 10 upgrades in a row between builds A and
 * B with containerd restarted between two of them. Every container has its part:
 *  F0-F3  counters with a file:// log (F0 fast)          Q0-Q3  counters on a fifo this test reads (Q0 fast)
 *  T1     tty shell, stdin and stdout fifos of the test   T2     tty counter on a fifo (console master copy)
 *  A1     tty shell started by `ctr run -d -t`, driven by `ctr task attach` on a real terminal
 *  S1     sleeps; its exec `count` streams a counter to a fifo for the whole test
 *  X0-X2  exit by themselves (3, 4, 5) during a swap       G0-G2  one pod-grouped shim (G1 killed during a swap)
 *  P0-P1  one per-node shim; a `ctr task exec` on P0 is in flight across swaps and exits 6
 * plus the exec `slow` on Q0 whose Wait is in flight until it exits 7 during a swap.
 */
test('issue size: 20 containers, 10 upgrades in a row between two builds, containerd restarted between two: every byte once, every exit once, attach/exec/kill/delete after, nothing leaked', async (t) => {
  const entryA = ENTRY_A();
  const entryBuildB = entryB();
  const perNodeToml = path.join(c.dir, 'per-node.toml');
  fs.writeFileSync(perNodeToml, 'PerNode = true\n');
  const n4 = [0, 1, 2, 3];
  const F = n4.map(() => uniqueId('upf'));
  const Q = n4.map(() => uniqueId('upq'));
  const T1 = uniqueId('upt');
  const T2 = uniqueId('upu');
  const A1 = uniqueId('upa');
  const S1 = uniqueId('ups');
  const X = [3, 4, 5].map(() => uniqueId('upx'));
  const G = [0, 1, 2].map(() => uniqueId('upg'));
  const P = [0, 1].map(() => uniqueId('upn'));
  const all = [...F, ...Q, T1, T2, A1, S1, ...X, ...G, ...P];
  assert.equal(all.length, 20);
  const logs = new Map<string, string>();
  const logOf = (id: string) => {
    const log = path.join(c.dir, `${id}.log`);
    logs.set(id, log);
    return ['--log-uri', `file://${log}`];
  };
  const fifos = new Map<string, ReturnType<typeof outputFifo>>();
  const fifoTask = async (id: string, cmd: string[], tty = false) => {
    const out = outputFifo(id);
    fifos.set(id, out);
    await createContainer(id, cmd, tty ? ['--tty'] : []);
    await callTasks(c, 'Create', { container_id: id, stdout: out.path, stderr: '', terminal: tty });
    await callTasks(c, 'Start', { container_id: id });
  };
  const ttyOut = outputFifo('tty');
  const ttyIn = inputFifo('ttyin');
  const group = uniqueId('grp');
  const setups: (() => Promise<unknown>)[] = [
    ...F.map((id, i) => () => run(id, i === 0 ? FAST : STEADY, logOf(id))),
    ...Q.map((id, i) => () => fifoTask(id, i === 0 ? FAST : STEADY)),
    async () => {
      await createContainer(T1, ['sh'], ['--tty']);
      await callTasks(c, 'Create', { container_id: T1, stdin: ttyIn.path, stdout: ttyOut.path, terminal: true });
      await callTasks(c, 'Start', { container_id: T1 });
    },
    () => fifoTask(T2, [...COUNTER, '20000', '3'], true),
    async () => {
      const r = new PtySession(c, [
        'run',
        '-d',
        '-t',
        '--runtime',
        TSSHIM_RUNTIME,
        ...PATH_ENV_ARGS,
        '--rootfs',
        rootfs,
        A1,
        'sh',
      ]);
      assert.equal(await r.exitCode(60_000), 0, `ctr run -d -t: ${r.output}`);
    },
    async () => {
      await run(S1, ['sleep', '1000']);
      const out = outputFifo('count');
      fifos.set(`${S1}/count`, out);
      await startExec(S1, 'count', [...COUNTER, '20000', '5'], out.path);
    },
    ...X.map((id, i) => () => run(id, waitExit(id, 3 + i), logOf(id))),
    async () => {
      // One after the other: the first starts the group's shim, the others join it.
      for (const [i, id] of G.entries())
        await run(id, i === 2 ? STEADY : ['sleep', '1000'], [
          '--annotation',
          `${GROUP}=${group}`,
          ...(i === 2 ? logOf(id) : []),
        ]);
    },
    async () => {
      for (const [i, id] of P.entries())
        await run(id, i === 1 ? STEADY : ['sleep', '1000'], [
          '--runtime-config-path',
          perNodeToml,
          ...(i === 1 ? logOf(id) : []),
        ]);
    },
  ];
  await mapLimit(setups, 3, (f) => f());
  ttyIn.write('echo tty-$((40+2))\n');
  await until(() => ttyOut.text().includes('tty-42'), 'tty answer before the upgrades');
  // Execs in flight: `slow` on Q0 (its Wait stays open), a `ctr task exec` on the per-node P0.
  await startExec(Q[0], 'slow', waitExit('slow', 7));
  const waitSlow = callTasks<{ exit_status: number }>(
    c,
    'Wait',
    { container_id: Q[0], exec_id: 'slow' },
    { timeoutMs: 300_000 }
  );
  const pexec = c.ctr(['task', 'exec', '--exec-id', 'pexec', P[0], ...waitExit('pexec', 6)], { timeoutMs: 300_000 });
  await until(async () => (await getTask(c, P[0], 'pexec')).status === 'RUNNING', 'the exec on P0 running', {
    retryErrors: true,
  });
  // A terminal session on A1 through `ctr task attach`.
  let attach = new PtySession(c, ['task', 'attach', A1]);
  attach.type('echo a""ttached\r');
  await attach.expect(/\nattached\r*\n/, 30_000);

  const shimOf = new Map<string, number>();
  for (const id of all) shimOf.set(id, await shimPidOf(c, id));
  const shims = [...new Set(shimOf.values())].sort((a, b) => a - b);
  /** Tasks that stopped before containerd's restart and that it did not load again. */
  const unloaded = new Set<string>();
  assert.equal(new Set(G.map((id) => shimOf.get(id))).size, 1, 'one shim for the group');
  assert.equal(new Set(P.map((id) => shimOf.get(id))).size, 1, 'one per-node shim');
  assert.equal(shims.length, 17, 'shims');
  const perNodeShim = shimOf.get(P[0])!;
  await sleep(300);
  const fdsBefore = new Map(shims.map((pid) => [pid, fdCount(pid)]));
  const childrenBefore = new Map(shims.map((pid) => [pid, new Set(childrenOf(pid))]));

  const poll = pollTasks([F[0], Q[0], T1, G[0], P[1]]);
  const ROUNDS = 10;
  const RESTART_AFTER = 4;
  const during: Record<number, () => Promise<unknown>> = {
    0: () => callTasks(c, 'Kill', { container_id: G[1], signal: 9 }),
    1: async () => go(X[0]),
    2: async () => {
      go('pexec');
      attach.resize(111, 33); // ctr's ResizePty waits in the socket and is answered by the new code
    },
    3: async () => {
      go('slow');
      go(X[1]);
    },
    6: async () => go(X[2]),
    7: () => callTasks(c, 'ResizePty', { container_id: T1, width: 101, height: 31 }),
    8: async () => {
      const ex = await c.ctr(['task', 'exec', '--exec-id', 'during', F[1], 'echo', 'exec-during-upgrade']);
      assert.equal(ex.code, 0, ex.stderr);
      assert.match(ex.stdout, /exec-during-upgrade/);
    },
  };
  for (let i = 0; i < ROUNDS; i++) {
    const entry = i % 2 === 0 ? entryBuildB : entryA;
    const started = Date.now();
    // What happens during a swap starts a moment after the command (which first probes the new build).
    const side = sleep(300).then(() => during[i]?.());
    const u = await upgrade(entry);
    await side;
    assert.equal(u.code, 0, `upgrade ${i}: ${u.out}\n${c.logTail(3000)}`);
    const lines = u.out.trim().split('\n');
    assert.equal(lines.length, shims.length, `upgrade ${i}: one line per shim:\n${u.out}`);
    assert.deepEqual(
      lines.map((l) => Number(/upgraded .* pid (\d+) kept$/.exec(l)?.[1])).sort((a, b) => a - b),
      shims,
      `upgrade ${i}:\n${u.out}`
    );
    t.diagnostic(`upgrade ${i} to ${entry === entryA ? 'A' : 'B'}: ${lines.length} shims, ${Date.now() - started} ms`);
    const want = entry === entryBuildB ? VERSION_B : '0.1.0 (';
    const v = await versions();
    for (const pid of shims) {
      assert.ok(pidAlive(pid), `shim ${pid} alive after upgrade ${i}`);
      assert.ok(v.get(pid)?.startsWith(want), `ps after upgrade ${i}: shim ${pid} shows ${v.get(pid)}`);
    }
    ttyIn.write(`echo tty-${i}-$((1+1))\n`);
    await until(() => ttyOut.text().includes(`tty-${i}-2`), `tty answer after upgrade ${i}`);
    if (i <= RESTART_AFTER) {
      attach.type(`echo r""ound-${i}\r`);
      await attach.expect(new RegExp(`\\nround-${i}\\r*\\n`), 30_000);
    }
    if (i === 2) {
      // The resize sent during the swap reached the terminal.
      await until(
        async () => {
          attach.type('stty size\r');
          return (await attach.expect(/\n(\d+ \d+)\r*\n/))[1] === '33 111';
        },
        'the size of the attached terminal after a resize during the swap',
        10_000
      );
    }
    if (i === RESTART_AFTER) {
      // ctr task attach ends with containerd (its Wait breaks): leave it before, attach again after.
      attach.kill();
      await attach.exited;
      const p = await pexec;
      assert.equal(p.code, 6, `ctr task exec: ${p.stdout} ${p.stderr}`);
      assert.match(p.stdout, /start-6\s+end-6/);
      // Exits so far arrive before containerd goes (a subscription started after the restart could miss them).
      const want = [G[1], ...X.slice(0, 2)].map((id) => `${id}/${id}`).concat([`${Q[0]}/slow`, `${P[0]}/pexec`]);
      await until(
        () => want.every((k) => exitEvents().some((e) => `${e.event?.container_id}/${e.event?.id}` === k)),
        'the exit events before the restart',
        30_000
      );
      await c.restart();
      closeClients(c); // the gRPC channels of the old containerd
      collectors.push(await collectEvents(c, ['topic=="/tasks/exit"']));
      // containerd 2.x does not load a task that stopped while it was away again: it deletes it and
      // shuts down a shim left without tasks (X0's and X1's must then end); 1.6 loads them.
      for (const id of [G[1], X[0], X[1]]) {
        const gone = await getTask(c, id).then(
          () => false,
          (e) => {
            if (/NOT_FOUND|not found/.test(String(e))) return true;
            throw e;
          }
        );
        if (gone) unloaded.add(id);
      }
      for (const id of [X[0], X[1]].filter((x) => unloaded.has(x))) {
        const pid = shimOf.get(id)!;
        await until(() => shimLeft(pid), `the shim of ${id} gone after containerd deleted its task`);
        shims.splice(shims.indexOf(pid), 1);
      }
      t.diagnostic(`containerd restarted; tasks not loaded again: ${[...unloaded].join(', ') || 'none'}`);
    }
  }
  const polled = await poll.stop();
  assert.deepEqual(
    polled.errors.filter((e) => !/connection|UNAVAILABLE|14 /.test(e)),
    [],
    'Tasks.Get during the upgrades'
  );
  assert.ok(polled.calls > 20, `polled ${polled.calls} times`);
  t.diagnostic(`Tasks.Get during the upgrades: ${polled.calls} calls, the longest ${polled.longestMs} ms`);
  const running = all.filter((id) => !X.includes(id) && id !== G[1]);
  for (const id of running) assert.equal(await shimPidOf(c, id), shimOf.get(id), `${id}: the same shim pid`);
  const slow = await waitSlow.catch(() =>
    callTasks<{ exit_status: number }>(c, 'Wait', { container_id: Q[0], exec_id: 'slow' })
  );
  assert.equal(slow.exit_status, 7);

  // Nothing leaked, while every container is still there: fds, children, zombies, probes, shims.
  for (const pid of shims) {
    assert.ok(
      fdCount(pid) <= fdsBefore.get(pid)! + 2,
      `shim ${pid} fds: ${fdsBefore.get(pid)} before, ${fdCount(pid)} after`
    );
    const extra = childrenOf(pid).filter((k) => !childrenBefore.get(pid)!.has(k));
    assert.deepEqual(extra, [], `shim ${pid}: children that were not there before the upgrades`);
  }
  await until(() => zombiesOf(shims).length === 0, 'no zombie under a shim', 5000);
  const probes = allPids().filter((pid) => argvOf(pid)?.includes('-tsshim-upgrade-probe'));
  assert.deepEqual(
    probes.filter((pid) => shims.includes(procStat(pid)?.ppid ?? 0)),
    [],
    'no probe of a new build left'
  );
  assert.deepEqual(
    daemonShims(c).sort((a, b) => a - b),
    shims,
    'no other shim daemon'
  );

  // A new container beside them runs the build installed (A, the one the shims run now too): no
  // spare of build B is left to take it.
  const fresh = uniqueId('upz');
  await run(fresh, ['sleep', '1000']);
  const freshShim = await shimPidOf(c, fresh);
  assert.ok(!shims.includes(freshShim), 'a shim of its own');
  const freshVersion = (await versions()).get(freshShim);
  assert.ok(freshVersion?.startsWith('0.1.0 ('), `the new container's shim runs ${freshVersion}`);
  await removeContainer(c, fresh);

  // exec, attach (stdin still open), resize and exec on the upgraded shims of every kind.
  for (const id of [F[1], Q[1], G[0], P[1], T2]) {
    const ex = await c.ctr(['task', 'exec', '--exec-id', 'after', id, 'echo', `exec-after-${id}`]);
    assert.equal(ex.code, 0, `${id}: ${ex.stderr}`);
    assert.match(ex.stdout, new RegExp(`exec-after-${id}`));
  }
  ttyIn.write('stty size\n');
  await until(() => /31 101/.test(ttyOut.text()), 'the tty size after the resize during a swap');
  attach = new PtySession(c, ['task', 'attach', A1]);
  attach.type('echo a""gain\r');
  await attach.expect(/\nagain\r*\n/, 30_000);
  const { size, want } = await resizeUntilSeen(attach, 40, 100);
  assert.equal(size, want, 'rows and columns after a resize of the attached terminal');
  attach.type('echo b""ye; exit 9\r');
  await attach.expect(/\nbye\r*\n/);
  assert.equal(await attach.exitCode(), 9, 'ctr task attach returns the exit status');
  assert.match(attach.output, PROMPT);
  // ctr task attach deletes the task it waited for (a Delete served by the upgraded shim).
  await assert.rejects(getTask(c, A1), /NOT_FOUND|not found/);

  // kill: every container still running, and the exec `count`.
  await callTasks(c, 'Kill', { container_id: S1, exec_id: 'count', signal: 9 });
  const toKill = running.filter((id) => id !== A1);
  for (const id of toKill) await callTasks(c, 'Kill', { container_id: id, signal: 9 });
  // Gone: A1 (deleted by ctr task attach) and the tasks containerd did not load again.
  const mayBeGone = new Set([...unloaded, A1]);
  const stoppedOrGone = async (id: string) => {
    try {
      return (await getTask(c, id)).status === 'STOPPED';
    } catch (e) {
      return mayBeGone.has(id) && /NOT_FOUND|not found/.test(String(e));
    }
  };
  for (const id of all) await until(() => stoppedOrGone(id), `${id} stopped`);
  await sleep(300);
  // Every byte of output, once.
  const counted: string[] = [];
  for (const id of [...F, G[2], P[1]])
    counted.push(`${id} ${assertCounter(fs.readFileSync(logs.get(id)!, 'utf8'), `file:// log of ${id}`)}`);
  for (const [key, out] of fifos) counted.push(`${key} ${assertCounter(out.text(), `fifo of ${key}`)}`);
  t.diagnostic(`counter lines: ${counted.join(', ')}`);
  for (const [i, id] of X.entries())
    assert.equal(fs.readFileSync(logs.get(id)!, 'utf8'), `start-${3 + i}\nend-${3 + i}\n`, `the output of ${id}`);
  // Every exit, once, with its status.
  const status = new Map<string, number>([
    [`${G[1]}/${G[1]}`, 137],
    ...X.map((id, i): [string, number] => [`${id}/${id}`, 3 + i]),
    [`${Q[0]}/slow`, 7],
    [`${P[0]}/pexec`, 6],
    [`${A1}/${A1}`, 9],
    [`${S1}/count`, 137],
    ...toKill.map((id): [string, number] => [`${id}/${id}`, 137]),
  ]);
  const mine = () => exitEvents().filter((e) => all.includes(e.event?.container_id));
  await until(
    () => [...status.keys()].every((k) => mine().some((e) => `${e.event?.container_id}/${e.event?.id}` === k)),
    'every exit event',
    { timeoutMs: 15_000, detail: () => JSON.stringify(mine().map((e) => e.event)) }
  ).catch(() => {});
  for (const [key, want] of status) {
    const got = mine().filter((e) => `${e.event?.container_id}/${e.event?.id}` === key);
    assert.equal(got.length, 1, `one exit event for ${key}: ${JSON.stringify(got.map((e) => e.event))}`);
    assert.equal(got[0].event?.exit_status, want, `the exit status of ${key}`);
  }
  assert.deepEqual(duplicateExits(mine()), [], 'no exit event twice');

  // delete: every task and container; every shim but the per-node one ends with its last container.
  for (const id of all) {
    await callTasks(c, 'Delete', { container_id: id }).catch((e) => {
      if (!mayBeGone.has(id)) throw e;
    });
    const r = await c.ctr(['container', 'delete', id]);
    assert.equal(r.code, 0, `container delete ${id}: ${r.stderr}`);
  }
  await until(
    () => shims.every((pid) => pid === perNodeShim || shimLeft(pid)),
    'shims gone after their last container'
  );
  assert.ok(pidAlive(perNodeShim), 'the per-node shim stays without containers');
  for (const f of fifos.values()) f.close();
  ttyOut.close();
  ttyIn.close();
});

/** A running file:// counter: its id, log file and shim pid. */
async function fileCounter(on: Containerd = c, prefix = 'upc'): Promise<{ id: string; log: string; shim: number }> {
  const id = uniqueId(prefix);
  const log = path.join(on.dir, `${id}.log`);
  await run(id, COUNTER, ['--log-uri', `file://${log}`], on);
  return { id, log, shim: await shimPidOf(on, id) };
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

/**
 * A build whose restore fails: always (the probe's dry run on this shim's state finds it, nothing is
 * touched), or only in the real restore after the exec (`_mode` of restoreHook: the fallback).
 */
function failingRestore(name: string, failure: string, when: 'always' | 'after the exec'): string {
  return makeBuild(name, `0.1.0-${name}`, (b) =>
    patchRestoreHook(b, (mode) => `${when === 'always' ? '' : `if (${mode} === "restore") `}${failure};`)
  );
}

/**
 * The bundle with code put before restoreHook's return: `before(mode)` gets the name of its
 * parameter (`_mode` in a readable build; the minified bundle, the default, renames it).
 */
function patchRestoreHook(bundle: string, before: (mode: string) => string): string {
  return bundle.replace(
    /function\s*([\w$]*)\s*\(([\w$]+)\)\s*\{\s*return\s*["']tsshim-restore-hook["'];?\s*\}/,
    (_m, name: string, mode: string) => `function ${name}(${mode}) { ${before(mode)} return "tsshim-restore-hook"; }`
  );
}

test('a broken new build falls back to the running one: missing, a bundle that does not parse, a restore that throws, exits or aborts', async (t) => {
  const k = await fileCounter();
  const entryA = ENTRY_A();
  const missing = path.join(builds, 'nowhere', 'dist', 'src', 'daemon', 'boot.js');
  const syntax = makeBuild('syntax', '0.1.0-syntax', (b) => `${b}\n}}} this is not javascript (((\n`);
  const throwing = 'throw new Error("injected restore failure")';
  const fdsBefore = fdCount(k.shim);
  const dryRun = (v: string) =>
    new RegExp(
      `build 0\\.1\\.0-${v} .*cannot restore this shim's state \\(its restore failed in a dry run in the probe process, nothing was touched\\): `
    );
  const fellBack = /not upgraded, still 0\.1\.0 \(/;
  // [name, entry, the reason, the probe refuses it (also for --check)]
  const cases: [string, string, RegExp, boolean][] = [
    ['missing', missing, /the new build is missing/, true],
    ['syntax', syntax, /cannot be loaded: .*SyntaxError/, true],
    [
      'throws',
      failingRestore('throws', throwing, 'always'),
      new RegExp(`${dryRun('throws').source}injected restore failure`),
      true,
    ],
    [
      'exits',
      failingRestore('exits', 'process.exit(3)', 'always'),
      new RegExp(`${dryRun('exits').source}exited with status 3`),
      true,
    ],
    [
      'aborts',
      failingRestore('aborts', 'process.abort()', 'always'),
      new RegExp(`${dryRun('aborts').source}killed by SIGABRT`),
      true,
    ],
    [
      'throws-after-exec',
      failingRestore('throws-after-exec', throwing, 'after the exec'),
      new RegExp(`${fellBack.source}.*the new build failed to restore: injected restore failure`),
      false,
    ],
    [
      'exits-after-exec',
      failingRestore('exits-after-exec', 'process.exit(3)', 'after the exec'),
      new RegExp(`${fellBack.source}.*the new build exited with status 3 while restoring`),
      false,
    ],
  ];
  for (const [name, entry, why, probeRefuses] of cases) {
    const check = await upgrade(entry, ['--check', k.id]);
    const u = await upgrade(entry, [k.id]);
    t.diagnostic(`${name}: check: ${check.out.trim()} | upgrade: ${u.out.trim()}`);
    assert.equal(u.code, 1, `${name}: ${u.out}`);
    assert.match(u.out, why, name);
    if (probeRefuses) {
      assert.equal(check.code, 1, `${name} --check: ${check.out}`);
      assert.match(check.out, why, `${name} --check`);
    } else assert.equal(check.code, 0, `${name} --check: the probe finds nothing: ${check.out}`);
    assert.ok(pidAlive(k.shim), `${name}: shim alive`);
    assert.ok((await versions()).get(k.shim)?.startsWith('0.1.0 ('), `${name}: still the running build`);
    assert.equal((await getTask(c, k.id)).status, 'RUNNING', `${name}: container unaffected`);
  }
  // containerd's log says why (the shim logs to it): the probe's refusals and the fallbacks.
  for (const why of [
    /upgrade refused: staying on this build.*exited with status 3/,
    /upgrade refused: staying on this build.*killed by SIGABRT/,
    /fell back to this build.*the new build failed to restore: injected restore failure/,
    /fell back to this build.*the new build exited with status 3 while restoring/,
  ])
    await until(() => why.test(c.logTail(400_000)), `${why.source} in containerd's log`, 5000);
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
  const entryA = ENTRY_A();
  const v2 = makeBuild('state2', '0.2.0-state2', (b) =>
    b
      // exports.STATE_VERSION = 2; in a readable build, l.STATE_VERSION=2 minified
      .replace(/([\w$]+\.STATE_VERSION\s*=\s*)(\d+)/, (_m, a: string, n: string) => `${a}${Number(n) + 1}`)
      .replace(
        /([\w$]+\.ACCEPTED_STATE_VERSIONS\s*=\s*\[)([\d, ]+)\]/,
        (_m, a: string, list: string) => `${a}${list}, ${Number(list.split(',').pop()) + 1}]`
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
    const entryA = ENTRY_A();
    const entryBuildB = entryB();
    const k1 = await fileCounter(pn);
    const k2 = await fileCounter(pn);
    const addressOf = (id: string) => fs.readFileSync(path.join(pn.bundleDir(id), 'address'), 'utf8');
    assert.equal(addressOf(k1.id), addressOf(k2.id), 'one shim for the namespace');
    for (const entry of [entryBuildB, entryA, entryBuildB]) {
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
  const entryA = ENTRY_A();
  const entryBuildB = entryB();
  const id = uniqueId('upl');
  const prefix = path.join(c.dir, id);
  const logger = path.join(repoRoot(), 'test', 'fixtures', 'parity', 'logger.sh');
  await run(id, COUNTER, ['--log-uri', `binary://${logger}?out=${prefix}`]);
  const shim = await shimPidOf(c, id);
  const loggers = () =>
    childrenOf(shim).filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('logger.sh');
      } catch {
        return false;
      }
    });
  const loggerPid = await until(() => loggers()[0] ?? 0, 'the logger running');
  for (const entry of [entryBuildB, entryA]) {
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

/** One container's cgroup metrics as containerd's Tasks.Metrics returns them, in the few numbers checked here. */
function metricsOf(any: { type_url: string; value: Buffer }): { pids: number; memory: number; cpu: number } {
  if (any.type_url === 'io.containerd.cgroups.v1.Metrics') {
    const m = genIo.containerd.cgroups.v1.Metrics.toObject(genIo.containerd.cgroups.v1.Metrics.decode(any.value), {
      longs: Number,
    });
    return { pids: m.pids?.current ?? 0, memory: m.memory?.usage?.usage ?? 0, cpu: m.cpu?.usage?.total ?? 0 };
  }
  assert.equal(any.type_url, 'io.containerd.cgroups.v2.Metrics');
  const m = genIo.containerd.cgroups.v2.Metrics.toObject(genIo.containerd.cgroups.v2.Metrics.decode(any.value), {
    longs: Number,
  });
  return { pids: m.pids?.current ?? 0, memory: m.memory?.usage ?? 0, cpu: m.cpu?.usage_usec ?? 0 };
}

/**
 * Asks for a container's stats in a loop until stopped, through containerd's Tasks.Metrics (the
 * shim's Stats) and `ctr task metrics`: every call must be answered, with plausible numbers (a
 * process or more, memory in use, CPU time that never goes back).
 */
function statsStream(id: string): { stop: () => Promise<{ calls: number; errors: string[] }> } {
  let running = true;
  const errors: string[] = [];
  let calls = 0;
  let lastCpu = 0;
  const viaApi = (async () => {
    while (running) {
      try {
        const r = await callTasks<{ metrics: { id: string; data: { type_url: string; value: Buffer } }[] }>(
          c,
          'Metrics',
          { filters: [`id==${id}`] },
          { timeoutMs: 60_000 }
        );
        const mine = r.metrics.filter((m) => m.id === id);
        if (mine.length !== 1) errors.push(`Tasks.Metrics: ${mine.length} entries for ${id}`);
        else {
          const m = metricsOf(mine[0].data);
          if (m.pids < 1 || m.memory <= 0 || m.cpu < lastCpu)
            errors.push(`implausible stats ${JSON.stringify(m)} after cpu ${lastCpu}`);
          lastCpu = Math.max(lastCpu, m.cpu);
          calls++;
        }
      } catch (e) {
        errors.push(`Tasks.Metrics: ${(e as Error).message}`);
      }
      await sleep(20);
    }
  })();
  const viaCtr = (async () => {
    while (running) {
      const r = await c.ctr(['task', 'metrics', id], { timeoutMs: 60_000 });
      const pids = /^pids\.current\s+(\d+)/m.exec(r.stdout);
      if (r.code !== 0 || !pids || Number(pids[1]) < 1)
        errors.push(`ctr task metrics: code ${r.code} ${r.stderr.trim()} ${JSON.stringify(r.stdout.slice(0, 300))}`);
      else calls++;
    }
  })();
  return {
    stop: async () => {
      running = false;
      await Promise.all([viaApi, viaCtr]);
      return { calls, errors };
    },
  };
}

test('under load: an exec storm, Tasks.Get and a stats stream during upgrades; every exec answers with its own output, every stats call with plausible numbers', async (t) => {
  const entryA = ENTRY_A();
  const entryBuildB = entryB();
  const id = uniqueId('ups');
  await run(id, ['sleep', '1000']);
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
  const stats = statsStream(id);
  await until(() => done >= 3, 'the storm under way');
  for (const entry of [entryBuildB, entryA, entryBuildB, entryA]) {
    const u = await upgrade(entry, [id]);
    assert.equal(u.code, 0, `${u.out}\n${c.logTail(3000)}`);
  }
  storming = false;
  await Promise.all(lanes);
  const polled = await poll.stop();
  const statted = await stats.stop();
  assert.deepEqual(failures, [], 'execs during upgrades');
  assert.deepEqual(polled.errors, [], 'Tasks.Get during upgrades');
  assert.deepEqual(statted.errors, [], 'stats during upgrades');
  assert.ok(statted.calls >= 8, `stats calls answered: ${statted.calls}`);
  t.diagnostic(`execs ${done}, stats calls ${statted.calls}, Tasks.Get the longest ${polled.longestMs} ms`);
  assert.ok(done >= 6, `execs done: ${done}`);
  await callTasks(c, 'Kill', { container_id: id, signal: 9 });
  await until(async () => (await getTask(c, id)).status === 'STOPPED', `${id} stopped`);
  await callTasks(c, 'Delete', { container_id: id });
  await c.ctr(['container', 'delete', id]);
});

/** The file a cgroup counts its OOM kills in (`oom_kill N`), from the process's cgroup. */
/**
 * How many OOM notifications the kernel gave for a container's memory cgroup since this call, seen
 * by a watcher of the test's own. cgroup v2: the oom_kill count, which is what tsshim reports from.
 * cgroup v1: an eventfd registered on memory.oom_control as tsshim (and the Go shim) registers one;
 * v1 notifies per OOM episode, not per kill, and a process of the cgroup that allocates while the
 * killed one is still exiting can make a second episode (and a second /tasks/oom, from either shim)
 * for one kill.
 */
function oomNotifications(counterFile: string, kills: () => number): { count: () => number; close: () => void } {
  if (!counterFile.endsWith('memory.oom_control')) return { count: kills, close: () => {} };
  const efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const control = fs.openSync(counterFile, 'r');
  try {
    fs.writeFileSync(path.join(path.dirname(counterFile), 'cgroup.event_control'), `${efd} ${control}`);
  } finally {
    fs.closeSync(control);
  }
  let total = 0;
  const counter = Buffer.alloc(8);
  return {
    count: () => {
      try {
        if (fs.readSync(efd, counter, 0, 8, null) === 8) total += Number(counter.readBigUInt64LE());
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
      return total;
    },
    close: () => fs.closeSync(efd),
  };
}

function oomCounterFile(pid: number): string {
  const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('memory'));
  if (v1) return path.join('/sys/fs/cgroup/memory', v1.split(':')[2], 'memory.oom_control');
  const v2 = lines.find((l) => l.startsWith('0::'))!;
  const base = fs.existsSync('/sys/fs/cgroup/unified/cgroup.controllers') ? '/sys/fs/cgroup/unified' : '/sys/fs/cgroup';
  return path.join(base, v2.slice(3), 'memory.events');
}

test('OOM kills across upgrades: one during the swap itself is reported once, none twice', async (t) => {
  const id = uniqueId('upoom');
  const trigger = path.join(rootfs, `${id}.go`);
  // Each time the trigger file appears, a process of the container outgrows the limit and is OOM-killed.
  fs.writeFileSync(
    path.join(rootfs, `${id}.sh`),
    `while :; do if [ -e /${id}.go ]; then rm /${id}.go; dd if=/dev/zero of=/dev/null bs=128M count=1; fi; usleep 20000; done\n`
  );
  const ooms = await collectEvents(c, ['topic=="/tasks/oom"']);
  const mine = () => ooms.events.filter((e) => e.event?.container_id === id).length;
  // What a failure shows: when each step ran and when each /tasks/oom was stamped.
  const steps: string[] = [];
  const step = (what: string) =>
    steps.push(`${new Date().toISOString()} ${what}: kills ${kills()}, notified ${notified.count()}, events ${mine()}`);
  const timeline = () =>
    [
      ...steps,
      ...ooms.events
        .filter((e) => e.event?.container_id === id)
        .map((e) => `${e.timestamp?.toISOString() ?? '(no time)'} /tasks/oom`),
      ...c
        .logTail(400_000)
        .split('\n')
        .filter((l) => (l.includes(id) && l.includes('oom:')) || l.includes('msg="upgrade:')),
    ].join('\n');
  // Every kill is reported (at least n events), and no notification twice (never more events
  // than the kernel gave: on cgroup v2 that is exactly one per kill).
  const reported = async (n: number, what: string) => {
    await until(() => mine() >= n, what).catch((e: Error) => {
      throw new Error(`${e.message}\n${timeline()}`);
    });
    assert.ok(mine() <= notified.count(), `${what}: more /tasks/oom than OOM notifications\n${timeline()}`);
  };
  const pid = await runDetached(c, id, ['sh', `/${id}.sh`], {
    runtime: TSSHIM_RUNTIME,
    rootfs,
    extra: [...PATH_ENV_ARGS, '--memory-limit', String(32 << 20)],
  });
  const counter = oomCounterFile(pid);
  const kills = () => Number(/oom_kill (\d+)/.exec(fs.readFileSync(counter, 'utf8'))?.[1] ?? -1);
  const notified = oomNotifications(counter, kills);
  try {
    const oomNow = async (n: number) => {
      step(`trigger ${n}`);
      fs.writeFileSync(trigger, '');
      await until(() => kills() >= n, `OOM kill ${n}`);
      step(`killed ${n}`);
    };
    assert.equal(kills(), 0, `${counter} counts OOM kills`);
    await oomNow(1);
    await reported(1, 'the first /tasks/oom');

    // A build whose restore makes the container OOM and waits for the kill before it goes on: the
    // OOM happens while no program watches the cgroup (in the real restore, not the probe's dry run).
    const during = makeBuild('oomgap', '0.1.0-oomgap', (b) =>
      patchRestoreHook(
        b,
        (mode) =>
          `if (${mode} === "restore") { const fs = require("fs"); fs.writeFileSync(${JSON.stringify(trigger)}, ""); const nap = new Int32Array(new SharedArrayBuffer(4)); const end = Date.now() + 30000; while (Date.now() < end && !/oom_kill [2-9]/.test(fs.readFileSync(${JSON.stringify(counter)}, "utf8"))) Atomics.wait(nap, 0, 0, 20); }`
      )
    );
    step('upgrade to oomgap');
    const up = await upgrade(during, [id]);
    step('upgraded');
    assert.equal(up.code, 0, up.out);
    assert.equal(kills(), 2, 'the restore saw the second OOM kill');
    await reported(2, 'the /tasks/oom of the kill during the swap');

    await oomNow(3);
    await reported(3, 'an OOM after the upgrade is reported');
    // Back to this build, with no OOM in between: nothing is reported again.
    step('upgrade back');
    const back = await upgrade(path.join(repoRoot(), 'dist', 'src', 'daemon', 'boot.js'), [id]);
    step('upgraded back');
    assert.equal(back.code, 0, back.out);
    await oomNow(4);
    await reported(4, 'the fourth /tasks/oom');
    await sleep(500);
    assert.ok(mine() <= notified.count(), `one /tasks/oom per OOM notification, none twice\n${timeline()}`);
    t.diagnostic(`OOM kills ${kills()}, kernel notifications ${notified.count()}, /tasks/oom ${mine()}`);
    assert.equal((await getTask(c, id)).status, 'RUNNING');
  } finally {
    ooms.stop();
    notified.close();
    await callTasks(c, 'Kill', { container_id: id, signal: 9 }).catch(() => undefined);
    await until(async () => (await getTask(c, id)).status === 'STOPPED', `${id} stopped`);
    await callTasks(c, 'Delete', { container_id: id });
    await c.ctr(['container', 'delete', id]);
  }
});

// Warm spares: the next container's `start` hands the container to an idle pre-booted shim.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as net from 'node:net';
import * as os from 'node:os';
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { startContainerd, uniqueId, pidAlive, repoRoot, TSSHIM_RUNTIME, type Containerd } from '../support/harness';
import {
  makeRootfs,
  PATH_ENV_ARGS,
  buildBusyboxImage,
  buildPauseImage,
  importImage,
  BUSYBOX_IMAGE,
  PAUSE_IMAGE,
} from '../support/rootfs';
import { CriClient, type PodSandboxConfig } from '../support/cri-client';
import { criPluginConfig, renderCriFixture } from '../support/cri-config';
import { SPARE_MAX_DEFER_MS, sparePool, waitingSpares } from '../../src/shim/spare';
import { socketPath } from '../../src/shim/address';
import { until as untilShared } from '../support/wait';
import { removeContainer, runDetached } from '../support/containers';
import { childrenOf, fdTargets, rssBytes } from '../support/proc';

let c: Containerd;
let rootfs: string;
before(async () => {
  c = await startContainerd();
  rootfs = makeRootfs(c.dir);
});
after(async () => {
  if (c) await c.stop();
});

// Spares boot in the background: give them longer than the shared default.
const until = <T>(fn: () => T, what: string, timeoutMs = 20_000) => untilShared(fn, what, timeoutMs);

/** A detached sleeper on tsshim; its shim's pid. */
const runSleeper = async (id: string) => {
  await runDetached(c, id, ['sleep', '1000'], { runtime: TSSHIM_RUNTIME, rootfs, extra: PATH_ENV_ARGS });
  return Number(fs.readFileSync(path.join(c.bundleDir(id), 'shim.pid'), 'utf8'));
};

/** The waiting spares of the pool once at least one waits and none is still booting. */
function bootedSpares(pool: string): Promise<number[]> {
  return until(() => {
    const s = waitingSpares(pool);
    const booting = fs.readdirSync(pool).some((n) => n.startsWith('.booting-'));
    return s.length && !booting ? s : null;
  }, 'spares booted, none booting');
}
test("a waiting spare becomes the next container's shim; a dead spare is skipped", async () => {
  const pool = sparePool(c.address);
  const first = await runSleeper(uniqueId('sp1'));
  const [spare] = await until(() => {
    const s = waitingSpares(pool);
    return s.length ? s : null;
  }, 'a spare in the pool');
  assert.notEqual(spare, first);
  const id2 = uniqueId('sp2');
  const second = await runSleeper(id2);
  assert.equal(second, spare, 'the spare serves the second container');
  const exec = await c.ctr(['task', 'exec', '--exec-id', 'e', id2, 'sh', '-c', 'echo via-spare']);
  assert.equal(exec.stdout, 'via-spare\n', exec.stderr);

  // A spare that died while waiting must not hang or break `start`.
  const [next] = await until(() => {
    const s = waitingSpares(pool);
    return s.length ? s : null;
  }, 'a replacement spare');
  process.kill(next, 'SIGKILL');
  await until(() => !pidAlive(next), 'the killed spare gone');
  const t0 = Date.now();
  const third = await runSleeper(uniqueId('sp3'));
  assert.ok(Date.now() - t0 < 8000, 'no 10 s handshake timeout on a dead spare');
  assert.notEqual(third, next);
  assert.equal((await c.ctr(['task', 'ls'])).stdout.split('\n').filter((l) => / RUNNING/.test(l)).length, 3);
});

test('a spare-born shim that leaves while a spare is due goes back to the pool itself, with nothing of its container', async () => {
  const pool = sparePool(c.address);
  const keep = uniqueId('keep');
  await runSleeper(keep); // another shim serves: a spare is wanted after the next one leaves
  // A short container's shim leaves before its RPCs go quiet long enough to boot a spare
  // (SpareLaunch), so the spare is due at its leave; a loaded machine may boot one earlier: retry.
  /**
   * A process's environment as the kernel shows it, less what only a spare's boot uses, and with
   * NODE_EXTRA_CA_CERTS as its process.env has it (a spare boots with it set aside:
   * node-flags.ts; one that went back shows its process.env).
   */
  const environ = (pid: number) => {
    const vars = fs
      .readFileSync(`/proc/${pid}/environ`, 'latin1')
      .split('\0')
      .filter((v) => v && !/^(TSSHIM_ENV_ROOM|TSSHIM_SPARE_LAUNCH_NICE)=/.test(v));
    const saved = vars.find((v) => v.startsWith('TSSHIM_SAVED_NODE_EXTRA_CA_CERTS='));
    if (saved === undefined) return vars.sort();
    const restored = vars.filter((v) => !/^(TSSHIM_SAVED_)?NODE_EXTRA_CA_CERTS=/.test(v));
    return [...restored, `NODE_EXTRA_CA_CERTS=${saved.slice(saved.indexOf('=') + 1)}`].sort();
  };
  let returned = 0;
  let lastId = '';
  let spareEnviron: string[] = [];
  for (let i = 0; i < 8 && !returned; i++) {
    const [spare] = await bootedSpares(pool);
    spareEnviron = environ(spare);
    lastId = uniqueId('back');
    const r = await c.ctr([
      'run',
      '--rm',
      '--runtime',
      TSSHIM_RUNTIME,
      ...PATH_ENV_ARGS,
      '--rootfs',
      rootfs,
      lastId,
      'sh',
      '-c',
      `echo out-${i}; exit 3`,
    ]);
    assert.equal(r.stdout, `out-${i}\n`, r.stderr);
    assert.equal(r.code, 3, 'the exit status reaches ctr');
    const after = await bootedSpares(pool);
    if (after.includes(spare)) returned = spare;
  }
  assert.ok(returned, 'in 8 short containers, a shim went back to the pool at least once');
  const proc = (f: string) => fs.readFileSync(`/proc/${returned}/${f}`, 'latin1');
  // Back to what a spare is: the sh finds it by this exact title.
  assert.equal(proc('cmdline').replace(/\0+$/, ''), `containerd-shim-tsshim-v2 spare -address ${c.address}`);
  assert.equal(fs.readlinkSync(`/proc/${returned}/cwd`), '/');
  assert.deepEqual(environ(returned), spareEnviron, "the spare's own environment, not the served start's");
  // Niced (10) until its cleanup, then at its launcher's nice value, as a spare that was never claimed.
  assert.ok([10, os.getPriority(c.pid)].includes(os.getPriority(returned)), "a waiting spare's nice value");
  for (const target of fdTargets(returned)) {
    assert.ok(!target.includes(lastId), `fd -> ${target} belongs to the last container`);
  }
  assert.deepEqual(childrenOf(returned), [], 'no child left');
  assert.ok(!/uncaught exception|unhandled rejection/.test(c.logTail(1 << 20)), 'no tsshim bug reported');

  // And it serves a next container as a fresh spare would (the sh takes any waiting spare: there
  // may be two during a burst).
  const started: string[] = [];
  let servedBy = 0;
  for (let i = 0; i < 4 && servedBy !== returned; i++) {
    await bootedSpares(pool);
    started.push(uniqueId('next'));
    servedBy = await runSleeper(started[started.length - 1]);
  }
  assert.equal(servedBy, returned, 'the returned process serves a next container');
  const exec = await c.ctr(['task', 'exec', '--exec-id', 'e', started[started.length - 1], 'sh', '-c', 'echo again']);
  assert.equal(exec.stdout, 'again\n', exec.stderr);
  for (const id of [...started, keep]) await removeContainer(c, id);
});

test('starts that outrun the spares make the pool keep two while the burst lasts, one after it', async () => {
  const pool = sparePool(c.address);
  await until(() => waitingSpares(pool).length > 0, 'a spare');
  // Back to back: the second start finds only the spare the first container's shim is booting.
  const shims = [];
  for (let i = 0; i < 4; i++) shims.push(await runSleeper(uniqueId('burst')));
  assert.equal(new Set(shims).size, 4, 'one shim per container');
  assert.ok(fs.existsSync(path.join(pool, '.starved')), 'a start had to wait for a booting spare');
  await twoDuringBurstThenOne(pool);
});

/**
 * While the burst lasts (starts keep coming: here the marker is kept fresh as a claim does), the
 * pool fills to two waiting spares; once no start came for BURST_GAP_MS the newest goes and the
 * other stays.
 */
async function twoDuringBurstThenOne(pool: string): Promise<void> {
  const marker = path.join(pool, '.starved');
  const two = await until(
    () => {
      const now = new Date();
      fs.utimesSync(marker, now, now);
      const w = waitingSpares(pool);
      return w.length >= 2 ? w : null;
    },
    'two spares waiting during the burst',
    30_000
  );
  await until(() => waitingSpares(pool).length === 1, 'the extra spare gone once the burst ended', 30_000);
  assert.deepEqual(waitingSpares(pool), [Math.min(...two)], 'the older spare stays, the newest went');
}

test('a start that finds no spare while shims serve makes the pool keep two (a cold start counts as waiting)', async () => {
  const pool = sparePool(c.address);
  await runSleeper(uniqueId('cold1'));
  // Every spare gone (none is booted again before the next Start goes quiet): the next start is cold.
  fs.rmSync(path.join(pool, '.starved'), { force: true });
  const spares = await bootedSpares(pool);
  for (const pid of spares) process.kill(pid, 'SIGKILL');
  await until(() => spares.every((pid) => !pidAlive(pid)), 'the spares gone');
  fs.rmSync(path.join(pool, '.starved'), { force: true });
  const cold = await runSleeper(uniqueId('cold2'));
  assert.ok(!spares.includes(cold));
  assert.ok(fs.existsSync(path.join(pool, '.starved')), 'the cold start marked the pool');
  await twoDuringBurstThenOne(pool);
});

/** What bin/containerd-shim-tsshim-v2's promote_booting does for a start that waits for a spare. */
function promote(pid: number): void {
  spawnSync('chrt', ['-a', '-o', '-p', '0', String(pid)], { stdio: 'ignore' });
  const tids = fs.readdirSync(`/proc/${pid}/task`);
  spawnSync('renice', ['-n', '0', '-p', ...tids], { stdio: 'ignore' });
}

const rssMiB = (pid: number) => rssBytes(pid) / 1048576;

test('spares that a start promoted while they booted, and then did not take, still clean up in the pool', async () => {
  const pool = sparePool(c.address);
  await runSleeper(uniqueId('pr1'));
  const spares = await bootedSpares(pool);
  for (const pid of spares) process.kill(pid, 'SIGKILL');
  await until(() => spares.every((pid) => !pidAlive(pid)), 'the spares gone');
  // The next container's shim boots the next spares: each is promoted as soon as its booting marker
  // shows (long before its warm-up: Node boots for ~100 ms first), and none is claimed.
  const promoted = new Set<number>();
  const watch = setInterval(() => {
    for (const n of fs.readdirSync(pool)) {
      const pid = Number(/^\.booting-(\d+)$/.exec(n)?.[1]);
      if (!pid || promoted.has(pid)) continue;
      promoted.add(pid);
      try {
        promote(pid);
      } catch {
        /* gone meanwhile */
      }
    }
  }, 2);
  try {
    await runSleeper(uniqueId('pr2'));
    await until(() => promoted.size > 0 || null, 'a booting spare promoted');
    await bootedSpares(pool);
  } finally {
    clearInterval(watch);
  }
  // Cut short, a spare's warm-up leaves its collection and trim for later: without them one held
  // ~54 MiB RSS in the pool, with them ~16-20.
  const left = waitingSpares(pool).filter((pid) => promoted.has(pid));
  assert.ok(left.length > 0, `a promoted spare waits in the pool (promoted ${[...promoted]})`);
  await until(
    () => left.every((pid) => !pidAlive(pid) || rssMiB(pid) < 35) || null,
    `promoted spares trimmed: ${left.map((pid) => `${pid}: ${rssMiB(pid).toFixed(1)} MiB`)}`,
    15_000
  );
});

// ---------------------------------------------------------------------------------------------
// A spare-born shim is indistinguishable from a cold one.

const statFields = (pid: number) => {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ');
};
const ppidOf = (pid: number) => Number(statFields(pid)[1]);
const sidOf = (pid: number) => Number(statFields(pid)[3]);
const niceOf = (pid: number) => Number(statFields(pid)[16]);
const cmdline = (pid: number) => {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
};
function environOf(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean)) {
    const eq = kv.indexOf('=');
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}
/** Distinct values of a /proc/<pid>/task/<tid>/stat field (index after the command) over all threads. */
function threadField(pid: number, index: number): number[] {
  return [
    ...new Set(
      fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
        const s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[index]);
      })
    ),
  ];
}
const threadNices = (pid: number) => threadField(pid, 16);
/** Scheduling policy (stat field 41): 0 SCHED_OTHER, 5 SCHED_IDLE (a spare boots under it). */
const threadPolicies = (pid: number) => threadField(pid, 38);

/** Every pid in the pool: waiting spares and booting ones. */
function poolPids(pool: string): number[] {
  let names: string[] = [];
  try {
    names = fs.readdirSync(pool);
  } catch {
    return [];
  }
  return names
    .map((n) => /^(?:\.booting-)?(\d+)$/.exec(n)?.[1])
    .filter(Boolean)
    .map(Number)
    .filter(pidAlive);
}

test('a stopped spare does not hang start: once the bound passes it is killed and a cold shim serves the container, alone', async () => {
  const pool = sparePool(c.address);
  await runSleeper(uniqueId('st1'));
  // Past the moment its shim boots the next spare (SPARE_MAX_DEFER_MS after Start): no spare comes later.
  await new Promise((r) => setTimeout(r, 2 * SPARE_MAX_DEFER_MS));
  // One booted spare, stopped (as a wedged one would be): the next start claims it.
  const spares = await bootedSpares(pool);
  const [stopped, ...others] = spares;
  for (const pid of others) process.kill(pid, 'SIGKILL');
  await until(() => others.every((pid) => !pidAlive(pid)), 'the other spares gone');
  process.kill(stopped, 'SIGSTOP');
  try {
    const id = uniqueId('st2');
    const shim = await runSleeper(id);
    assert.notEqual(shim, stopped, 'a cold shim serves the container');
    await until(() => !pidAlive(stopped), 'the stopped spare killed');
    const exec = await c.ctr(['task', 'exec', '--exec-id', 'e', id, 'sh', '-c', 'echo via-cold']);
    assert.equal(exec.stdout, 'via-cold\n', exec.stderr);
    // Nothing of the claim is left, and no other process serves the container's socket.
    const claimLeft = (n: string) => n.includes('.answered.') || fs.existsSync(path.join(pool, n, 'claimed'));
    assert.ok(!fs.readdirSync(pool).some(claimLeft), 'no claimed dir left');
    const socket = fs.readFileSync(path.join(c.bundleDir(id), 'address'), 'utf8').replace(/^unix:\/\//, '');
    const serving = fs
      .readdirSync('/proc')
      .filter((n) => /^\d+$/.test(n))
      .map(Number)
      .filter(
        (pid) => pidAlive(pid) && cmdline(pid).startsWith('containerd-shim-tsshim-v2') && holdsSocket(pid, socket)
      );
    assert.deepEqual(serving, [shim], "one shim listens on the container's socket");
  } finally {
    try {
      process.kill(stopped, 'SIGKILL');
    } catch {
      /* killed by the start, as it should be */
    }
  }
});

/** The process has a listening unix socket bound at `socket` open (/proc/net/unix inode among its fds). */
function holdsSocket(pid: number, socket: string): boolean {
  const inodes = new Set(
    fs
      .readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[7] === socket)
      .map((f) => f[6])
  );
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return inodes.has(/^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1] ?? '');
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

test('a spare-born shim matches a cold one: parent, session, cgroup, environment, rlimits, oom_score_adj, nice, scheduling policy', async () => {
  const pool = sparePool(c.address);
  await runSleeper(uniqueId('first'));
  // One, or two while a burst lasts (the start above may have waited): the claim takes one of them.
  const spares = await bootedSpares(pool);
  // What a start inherits from containerd changes after the spare booted: another cgroup (pids
  // hierarchy), lower limits, a nice value, another oom score; the claim comes from another namespace.
  const cg = `/sys/fs/cgroup/pids/tsshim-spare-${process.pid}`;
  fs.mkdirSync(cg, { recursive: true });
  fs.writeFileSync(path.join(cg, 'cgroup.procs'), String(c.pid));
  const lim = spawnSync('prlimit', ['--pid', String(c.pid), '--nofile=4000:4096', '--core=0:0']);
  assert.equal(lim.status, 0, String(lim.stderr));
  for (const tid of fs.readdirSync(`/proc/${c.pid}/task`)) os.setPriority(Number(tid), 3);
  const oom = Number(fs.readFileSync(`/proc/${c.pid}/oom_score_adj`, 'utf8'));
  fs.writeFileSync(`/proc/${c.pid}/oom_score_adj`, String(oom + 7));
  const ns = 'tsshim-ns2';
  const run = async (id: string) => {
    const r = await c.ctr(
      ['run', '-d', '--runtime', TSSHIM_RUNTIME, ...PATH_ENV_ARGS, '--rootfs', rootfs, id, 'sleep', '1000'],
      { namespace: ns }
    );
    assert.equal(r.code, 0, r.stderr + c.logTail(2000));
    return Number(fs.readFileSync(path.join(c.bundleDir(id, ns), 'shim.pid'), 'utf8'));
  };
  const warmId = uniqueId('warm');
  const warm = await run(warmId);
  assert.ok(spares.includes(warm), `the second namespace's container got a waiting spare (${warm} of ${spares})`);
  // No spare for the next one: it starts cold.
  const [next] = await until(() => {
    const s = waitingSpares(pool);
    return s.length ? s : null;
  }, 'the next spare');
  // The next start must be cold, but every serving shim of the earlier tests may still boot a spare
  // (each one once, when it went quiet: late on a loaded machine). A pool writable by others is
  // distrusted: no shim boots a spare into it and no start claims from it.
  fs.chmodSync(pool, 0o777);
  let cold: number;
  try {
    await until(() => {
      for (const pid of poolPids(pool)) process.kill(pid, 'SIGKILL');
      return !pidAlive(next) && poolPids(pool).length === 0;
    }, 'spares gone');
    cold = await run(uniqueId('cold'));
  } finally {
    fs.chmodSync(pool, 0o700);
  }
  assert.notEqual(cold, next);

  for (const pid of [warm, cold]) {
    assert.doesNotMatch(cmdline(ppidOf(pid)), /containerd-shim-tsshim-v2|boot\.js/, `parent of ${pid} is not a shim`);
    assert.equal(sidOf(pid), pid, `${pid} leads its own session`);
  }
  assert.equal(ppidOf(warm), ppidOf(cold), 'same parent as a cold shim');
  assert.equal(fs.readFileSync(`/proc/${warm}/cgroup`, 'utf8'), fs.readFileSync(`/proc/${cold}/cgroup`, 'utf8'));
  assert.match(fs.readFileSync(`/proc/${warm}/cgroup`, 'utf8'), new RegExp(`pids:/tsshim-spare-${process.pid}`));
  const [we, ce] = [environOf(warm), environOf(cold)];
  // The spare booted with its booter's TSSHIM_SOCKET; the shim it became names its own group's.
  assert.equal(`unix://${we.TSSHIM_SOCKET}`, fs.readFileSync(path.join(c.bundleDir(warmId, ns), 'address'), 'utf8'));
  assert.equal(we.TSSHIM_ENV_ROOM, undefined);
  assert.deepEqual(Object.keys(we).sort(), Object.keys(ce).sort(), 'same environment variables');
  for (const k of ['TSSHIM_SOCKET', 'TSSHIM_GROUP', 'PWD']) {
    delete we[k];
    delete ce[k];
  } // their own group's, bundle's
  assert.deepEqual(we, ce, 'same environment');
  assert.equal(fs.readFileSync(`/proc/${warm}/limits`, 'utf8'), fs.readFileSync(`/proc/${cold}/limits`, 'utf8'));
  assert.equal(
    fs.readFileSync(`/proc/${warm}/oom_score_adj`, 'utf8'),
    fs.readFileSync(`/proc/${cold}/oom_score_adj`, 'utf8')
  );
  assert.equal(niceOf(warm), niceOf(cold));
  const sig = (pid: number) =>
    fs
      .readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .filter((l) => /^Sig(Ign|Blk):/.test(l))
      .join('\n');
  assert.equal(sig(warm), sig(cold), 'same ignored and blocked signals');
  assert.deepEqual(threadNices(warm), [3], 'every thread of the spare-born shim');
  assert.deepEqual(threadNices(cold), [3]);
  // The spare booted under SCHED_IDLE (as root): the daemon it became is an ordinary one.
  assert.deepEqual(threadPolicies(warm), threadPolicies(cold), 'same scheduling policy on every thread');
  assert.deepEqual(threadPolicies(warm), [0], 'SCHED_OTHER');
  for (const id of (await c.ctr(['task', 'ls', '-q'], { namespace: ns })).stdout.split('\n').filter(Boolean)) {
    await c.ctr(['task', 'delete', '-f', id], { namespace: ns });
    await c.ctr(['container', 'delete', id], { namespace: ns });
  }
});

// ---------------------------------------------------------------------------------------------
// No tsshim process outlives the last container of its containerd.

/** tsshim processes of containerd `address`: daemons, spares, booting spares (found in /proc). */
function tsshimProcesses(address = c.address): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmd = cmdline(Number(name));
    const words = cmd.split(' ');
    // A spare titles itself only once booted: before, it is node running the daemon's boot.js.
    if (!words.includes(address) || !/containerd-shim-tsshim-v2|dist\/src\/daemon\/boot\.js/.test(cmd)) continue;
    if (words.includes('start') || words.includes('delete')) continue; // transient commands
    out.push(Number(name));
  }
  return out;
}

async function deleteEverything(namespaces: string[]): Promise<void> {
  for (const ns of namespaces) {
    for (const id of (await c.ctr(['task', 'ls', '-q'], { namespace: ns })).stdout.split('\n').filter(Boolean)) {
      const r = await c.ctr(['task', 'delete', '-f', id], { namespace: ns });
      assert.equal(r.code, 0, r.stderr);
    }
    for (const id of (await c.ctr(['container', 'ls', '-q'], { namespace: ns })).stdout.split('\n').filter(Boolean)) {
      await c.ctr(['container', 'delete', id], { namespace: ns });
    }
  }
}

test('after the last container is deleted no tsshim process of the containerd remains (default mode)', async () => {
  await deleteEverything([c.namespace, 'tsshim-ns2']);
  await until(() => tsshimProcesses(c.address).length === 0, 'nothing left from earlier tests', 15_000);
  const ids = [uniqueId('last'), uniqueId('last')];
  for (const id of ids) await runSleeper(id);
  await until(() => waitingSpares(sparePool(c.address)).length > 0, 'a spare');
  assert.ok(tsshimProcesses(c.address).length >= 3, 'two shims and a spare are running');
  await deleteEverything([c.namespace]);
  await until(
    () => tsshimProcesses(c.address).length === 0,
    `no tsshim process left (${tsshimProcesses(c.address).map(cmdline).join(' | ')})`,
    10_000
  );
  const left = () => (fs.existsSync(sparePool(c.address)) ? fs.readdirSync(sparePool(c.address)) : null);
  assert.equal(left(), null, 'the pool directory is gone too');
});

test('grouped containers (tsshim and runc group annotations): no tsshim process remains after the last', async () => {
  const annotated = async (id: string, annotation: string) => {
    const r = await c.ctr([
      'run',
      '-d',
      '--runtime',
      TSSHIM_RUNTIME,
      '--annotation',
      annotation,
      ...PATH_ENV_ARGS,
      '--rootfs',
      rootfs,
      id,
      'sleep',
      '1000',
    ]);
    assert.equal(r.code, 0, r.stderr + c.logTail(2000));
    return fs.readFileSync(path.join(c.bundleDir(id), 'address'), 'utf8');
  };
  const g = uniqueId('g');
  const a = await annotated(uniqueId('ga'), `io.containerd.tsshim.v2.group=${g}`);
  const b = await annotated(uniqueId('gb'), `io.containerd.tsshim.v2.group=${g}`);
  assert.equal(a, b, 'one shim for the tsshim group');
  const r1 = await annotated(uniqueId('ra'), `io.containerd.runc.v2.group=${g}-runc`);
  const r2 = await annotated(uniqueId('rb'), `io.containerd.runc.v2.group=${g}-runc`);
  assert.equal(r1, r2, 'one shim for the runc group annotation');
  await until(() => waitingSpares(sparePool(c.address)).length > 0, 'a spare');
  await deleteEverything([c.namespace]);
  await until(
    () => tsshimProcesses(c.address).length === 0,
    `no tsshim process left (${tsshimProcesses(c.address).map(cmdline).join(' | ')})`,
    10_000
  );
});

test('a spare leaves when its containerd is gone, although the socket file and a serving shim remain', async () => {
  const pool = sparePool(c.address);
  await runSleeper(uniqueId('orphan'));
  fs.rmSync(path.join(pool, '.starved'), { force: true });
  const spares = await bootedSpares(pool);
  await c.kill9(); // containerd only: its shims stay, and so does its socket file
  assert.ok(fs.existsSync(c.address), 'containerd left its socket file behind');
  await until(() => spares.every((p) => !pidAlive(p)), 'spares gone', 10_000);
});

test("a spare decides with the claiming start's TSSHIM_PER_NODE, not its own boot environment", async () => {
  const work = fs.mkdtempSync(path.join('/tmp', 'tss-pernode-'));
  const stateDir = path.join(work, 'state');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TSSHIM_STATE_DIR: stateDir,
    TSSHIM_SOCKET_DIR: path.join(work, 's'),
  };
  delete env.TSSHIM_PER_NODE;
  fs.mkdirSync(stateDir, { mode: 0o700 });
  const address = path.join(work, 'containerd.sock');
  const fakeContainerd = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => fakeContainerd.listen(address, r));
  const pids: number[] = [];
  try {
    // A serving shim of this "containerd" (spares live only beside one) and a spare booted without TSSHIM_PER_NODE.
    const serving = spawn('bash', ['-c', 'exec -a containerd-shim-tsshim-v2 sleep 120'], { stdio: 'ignore' });
    pids.push(serving.pid!);
    const hash = path.basename(sparePoolFor(stateDir, address));
    const pool = path.join(stateDir, 'spares', hash);
    fs.mkdirSync(pool, { recursive: true, mode: 0o700 });
    await until(() => cmdline(serving.pid!).startsWith('containerd-shim-tsshim-v2'), 'the fake serving shim');
    fs.writeFileSync(path.join(pool, `.serving-${serving.pid}`), '');
    const boot = path.join(repoRoot(), 'dist/src/daemon/boot.js');
    const spare = spawn(process.execPath, [boot, '-namespace', 'default', '-address', address, 'spare'], {
      env,
      stdio: 'ignore',
      detached: true,
    });
    pids.push(spare.pid!);
    await until(() => fs.existsSync(path.join(pool, String(spare.pid))), 'the spare waiting', 30_000);
    const bundle = path.join(work, 'bundle');
    fs.mkdirSync(bundle);
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.1.0', annotations: {} }));
    const wrapper = path.join(repoRoot(), 'bin/containerd-shim-tsshim-v2');
    const r = spawnSync(wrapper, ['-namespace', 'default', '-id', 'c1', '-address', address, 'start'], {
      cwd: bundle,
      env: { ...env, TSSHIM_PER_NODE: '1' },
      input: '',
      encoding: 'utf8',
      timeout: 30_000,
    });
    const perNodeSocket = path.join(work, 's', path.basename(socketPath(address, 'default', '.tsshim-per-node')));
    assert.equal(r.stdout + r.stderr, `unix://${perNodeSocket}`, "the per-node shim's socket");
    assert.equal(Number(fs.readFileSync(path.join(bundle, 'shim.pid'), 'utf8')), spare.pid, 'the spare answered');
  } finally {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    fakeContainerd.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

function sparePoolFor(stateDir: string, address: string): string {
  return path.join(stateDir, 'spares', createHash('sha256').update(address).digest('hex').slice(0, 16));
}

after(async () => {
  const cg = `/sys/fs/cgroup/pids/tsshim-spare-${process.pid}`;
  for (let i = 0; i < 50 && fs.existsSync(cg); i++) {
    try {
      fs.rmdirSync(cg);
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    } // shims still leaving
  }
});

describe('through CRI', () => {
  let cd: Containerd | undefined;
  let cri: CriClient;
  let work = '';
  const cgroupRoot = `/tsshim-spare-cri-${process.pid}`;
  before(async () => {
    work = fs.mkdtempSync(path.join('/tmp', 'tss-spare-cri-'));
    for (const d of ['cni/bin', 'cni/net.d', 'runc-root', 'pods', 'images'])
      fs.mkdirSync(path.join(work, d), { recursive: true });
    fs.writeFileSync(path.join(work, 'tsshim.toml'), renderCriFixture('tsshim.toml', work));
    cd = await startContainerd({ cri: criPluginConfig(work), namespace: 'k8s.io' });
    for (const [build, image] of [
      [buildBusyboxImage, BUSYBOX_IMAGE],
      [buildPauseImage, PAUSE_IMAGE],
    ] as const) {
      const tar = path.join(work, 'images', `${path.basename(image).replace(/[^a-z]/g, '')}.tar`);
      build(tar);
      await importImage(cd, tar, image, { namespace: 'k8s.io' });
    }
    cri = new CriClient(cd.address);
    await cri.waitForImage(BUSYBOX_IMAGE);
    await cri.waitForImage(PAUSE_IMAGE);
  });
  after(async () => {
    cri?.close();
    if (cd) await cd.stop();
    for (const controller of fs.readdirSync('/sys/fs/cgroup')) {
      const top = path.join('/sys/fs/cgroup', controller, cgroupRoot);
      const dirs: string[] = [];
      const walk = (d: string): void => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
        dirs.push(d);
      };
      try {
        walk(top);
      } catch {
        continue;
      }
      for (const d of dirs) {
        try {
          fs.rmdirSync(d);
        } catch {
          /* in use */
        }
      }
    }
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  test('after RemovePodSandbox of the last pod no tsshim process of the containerd remains', async () => {
    const pods: string[] = [];
    for (const name of ['p1', 'p2']) {
      const uid = `${name}-${process.pid}`;
      const logDir = path.join(work, 'pods', uid);
      fs.mkdirSync(path.join(logDir, 'c'), { recursive: true });
      const config: PodSandboxConfig = {
        metadata: { name, uid, namespace: 'tsshim-spare', attempt: 0 },
        hostname: '',
        log_directory: logDir,
        labels: {},
        annotations: {},
        linux: {
          cgroup_parent: `${cgroupRoot}/pod${uid}`,
          security_context: { namespace_options: { network: 'NODE', pid: 'POD', ipc: 'POD' } },
        },
      };
      const pod = await cri.runPodSandbox(config, 'tsshim');
      pods.push(pod);
      const ctr = await cri.createContainer(
        pod,
        {
          metadata: { name: 'c', attempt: 0 },
          image: { image: BUSYBOX_IMAGE },
          command: ['sleep', '1000'],
          log_path: 'c/0.log',
          linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
        },
        config
      );
      await cri.startContainer(ctr);
    }
    await until(() => waitingSpares(sparePool(cd!.address)).length > 0, 'a spare');
    assert.ok(tsshimProcesses(cd!.address).length >= 3, 'two pod shims and a spare');
    for (const pod of pods) {
      await cri.stopPodSandbox(pod);
      await cri.removePodSandbox(pod);
    }
    await until(
      () => tsshimProcesses(cd!.address).length === 0,
      `no tsshim process left (${tsshimProcesses(cd!.address).map(cmdline).join(' | ')})`,
      10_000
    );
  });
});

// The reaper is process-wide (subreaper + SIGCHLD), so each scenario runs in a child node process
// (this same file with REAPER_SCENARIO set): the test runner itself never becomes a subreaper.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn as rawSpawn, spawnSync } from 'node:child_process';
import { Reaper, ExitBuffer, RunTimeoutError, listOwnChildren } from '../../src/sys/reaper';
import { processExists } from '../../src/sys/libc';
import { zombiesOf } from '../support/proc';
import { sleep } from '../support/wait';

function resources(): string[] {
  return process
    .getActiveResourcesInfo()
    .filter((r) => r !== 'TTYWrap')
    .sort();
}

async function pool<T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const i = next++;
        results[i] = await fn(i);
      }
    })
  );
  return results;
}

async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(10);
  }
  return true;
}

// ------------------------------------------------------------------------------------------
// Scenarios (child side)

const scenarios: Record<string, () => Promise<unknown>> = {
  async stress() {
    const baseline = resources();
    const reaper = Reaper.instance();
    // pid -> statuses, in any order: under load the kernel may give an exited orphan's pid to a
    // later process, so one pid can stand for several orphans; each must be reaped once.
    const seen = new Map<number, number[]>();
    reaper.subscribe((e) => seen.set(e.pid, [...(seen.get(e.pid) ?? []), e.status]));
    const RUNS = Number(process.env.REAPER_RUNS ?? 2000);
    const ORPHAN_MAKERS = 200;
    const orphans = new Map<number, number[]>();
    const expect = (pid: number, status: number) => orphans.set(pid, [...(orphans.get(pid) ?? []), status]);
    let orphanRecords = 0;
    // orphan makers: each leaves three grandchildren behind that get re-parented to us. Each one
    // waits until it is an orphan (its parent is no longer the maker): dash reaps its background
    // jobs on SIGCHLD while it lives, so an orphan that exited under a maker slowed by load had its
    // status taken by the maker, not lost by us (a CI run at load 6 failed so with a fixed sleep).
    const orphaned = (maker: string) =>
      `while read -r _ _ _ pp _ </proc/self/stat && [ "$pp" = ${maker} ]; do sleep 0.01; done`;
    const makers = pool(ORPHAN_MAKERS, 4, async (i) => {
      const r = await reaper.run('/bin/sh', [
        '-c',
        // The orphans do not hold the output pipe: run() stops reading 250 ms after the maker's
        // exit (drainMs), which a loaded machine may not have reached the pids by.
        `(${orphaned('$$')}; sleep 0.0${i % 10}; exit 7) >/dev/null & echo $!; ` +
          `(${orphaned('$$')}; exit 3) >/dev/null & echo $!; ` +
          `sh -c '${orphaned('$1')}; sleep 0.02; kill -9 $$' sh $$ >/dev/null & echo $!`,
      ]);
      const [seven, three, killed] = r.stdout.toString().trim().split('\n').map(Number);
      if (![seven, three, killed].every((p) => p > 0))
        throw new Error(`maker ${i}: no pids in ${JSON.stringify(r.stdout.toString())}`);
      expect(seven, 7);
      expect(three, 3);
      expect(killed, 137); // kills itself with SIGKILL
      orphanRecords += 3;
      return r.code;
    });
    // runc-like children: short lived, status must come back through libuv intact
    const runs = pool(RUNS, 32, async (i) => {
      if (i % 4 === 0) return { want: 0, got: (await reaper.run('/bin/true', [])).code };
      const want = i % 250;
      const r = await reaper.run('/bin/sh', ['-c', `exit ${want}`]);
      return { want, got: r.code };
    });
    // a child spawned with plain child_process (not via the reaper) must keep its status too
    const plain = new Promise<number | null>((res) => rawSpawn('/bin/sh', ['-c', 'exit 42']).once('exit', res));
    const [makerCodes, runResults, plainCode] = await Promise.all([makers, runs, plain]);
    const delivered = (p: number) => (seen.get(p)?.length ?? 0) >= orphans.get(p)!.length;
    const allDelivered = await waitUntil(() => [...orphans.keys()].every(delivered), 10_000);
    const missing = [...orphans.keys()]
      .filter((p) => !delivered(p))
      .slice(0, 5)
      .map((p) => {
        let stat = 'gone';
        try {
          stat = fs.readFileSync(`/proc/${p}/stat`, 'latin1').slice(0, 80);
        } catch {
          /* reaped elsewhere */
        }
        return { pid: p, want: orphans.get(p), stat };
      });
    const sorted = (xs: number[] | undefined) => [...(xs ?? [])].sort((a, b) => a - b).join();
    const wrongOrphans = [...orphans].filter(([pid, want]) => sorted(seen.get(pid)) !== sorted(want));
    const wrongRuns = runResults.filter((r) => r.want !== r.got);
    // libuv-owned children must never show up in the subscriber stream
    await waitUntil(() => zombiesOf(process.pid).length === 0, 2000);
    const zombies = zombiesOf(process.pid);
    await waitUntil(() => resources().join() === baseline.join(), 2000);
    return {
      runs: runResults.length,
      wrongRuns: wrongRuns.slice(0, 5),
      makerCodes: [...new Set(makerCodes)],
      orphans: orphanRecords,
      allDelivered,
      missing,
      wrongOrphans: wrongOrphans.slice(0, 5).map(([pid, want]) => ({ pid, want, got: seen.get(pid) })),
      plainCode,
      zombies,
      resourcesBefore: baseline,
      resourcesAfter: resources(),
      stats: reaper.stats,
    };
  },

  async signalled() {
    const reaper = Reaper.instance();
    const buf = new ExitBuffer(reaper);
    const r = await reaper.run('/bin/sh', ['-c', 'sleep 30 & echo $!']);
    const pid = Number(r.stdout.toString().trim());
    process.kill(pid, 'SIGKILL');
    const e = await buf.wait(pid, 5000);
    buf.close();
    return {
      status: e.status,
      pid: e.pid === pid,
      nanosInRange: e.atNanos >= 0 && e.atNanos < 1e9,
      atMatches: Math.floor(e.at.getTime() % 1000) === Math.floor(e.atNanos / 1e6),
    };
  },

  async earlyExit() {
    // The exit happens before the caller knows the pid (like a container dying before runc's
    // pid file is read): the buffer keeps it and hands it out later.
    const reaper = Reaper.instance();
    const buf = new ExitBuffer(reaper);
    const r = await reaper.run('/bin/sh', ['-c', '(sleep 0.02; exit 9) & echo $!']);
    const pid = Number(r.stdout.toString().trim());
    await sleep(300); // it is long gone before anyone asks for it
    const zombie = zombiesOf(process.pid).includes(pid);
    const claimed = buf.claim(pid);
    const again = buf.claim(pid);
    const timedOut = await buf.wait(999999, 50).then(
      () => false,
      (e) => e.code === 'ETIMEDOUT'
    );
    buf.close();
    return { claimed: claimed?.status, again: again === undefined, timedOut, zombie };
  },

  async runBasics() {
    const reaper = Reaper.instance();
    const baseline = resources();
    const cat = await reaper.run('/bin/cat', [], { input: 'through stdin' });
    const env = await reaper.run('/bin/sh', ['-c', 'echo $FOO; pwd; echo err >&2; exit 4'], {
      env: { FOO: 'bar' },
      cwd: '/tmp',
    });
    const t0 = Date.now();
    let timeoutErr: unknown;
    let sleeperPid = 0;
    const sleeper = reaper.run('/bin/sh', ['-c', 'echo $$; exec sleep 30'], { timeoutMs: 300 });
    await sleeper.catch((e) => {
      timeoutErr = e;
    });
    const elapsed = Date.now() - t0;
    if (timeoutErr instanceof RunTimeoutError) sleeperPid = Number(timeoutErr.stdout.toString().trim());
    let enoent: unknown;
    await reaper.run('/nonexistent/binary', []).catch((e) => {
      enoent = e;
    });
    const ac = new AbortController();
    const aborted = reaper.run('/bin/sleep', ['30'], { signal: ac.signal, timeoutMs: 0 }).catch((e) => e.name);
    setTimeout(() => ac.abort(), 50);
    const abortName = await aborted;
    const killed = await reaper.run('/bin/sh', ['-c', 'kill -TERM $$']);
    // a grandchild holding stdout must not hold run() hostage
    const t1 = Date.now();
    const holder = await reaper.run('/bin/sh', ['-c', 'sleep 3 & echo started'], { drainMs: 100 });
    const holderMs = Date.now() - t1;
    const fd = fs.openSync('/tmp/tsshim-reaper-fd-test', 'w');
    await reaper.run('/bin/sh', ['-c', 'echo into-fd'], { stdio: ['ignore', fd, 'pipe'] });
    fs.closeSync(fd);
    const fdContent = fs.readFileSync('/tmp/tsshim-reaper-fd-test', 'utf8');
    fs.unlinkSync('/tmp/tsshim-reaper-fd-test');
    // stderr 'stdout': one pipe for both, in the order written (posix_spawn); child_process gets two.
    const script = ['-c', 'echo a; echo b >&2; echo c'];
    const shared = await reaper.run('/bin/sh', script, { stdio: ['ignore', 'pipe', 'stdout'] });
    const bare = await reaper.run('sh', script, { stdio: ['ignore', 'pipe', 'stdout'] });
    const refused = await reaper.run('/bin/true', [], { stdio: ['ignore', 'stdout', 'pipe'] }).catch((e) => e.message);
    await waitUntil(() => resources().join() === baseline.join(), 4000);
    return {
      cat: cat.stdout.toString(),
      catCode: cat.code,
      env: env.stdout.toString(),
      envErr: env.stderr.toString(),
      envCode: env.code,
      timeout: timeoutErr instanceof RunTimeoutError ? timeoutErr.message : String(timeoutErr),
      elapsed,
      sleeperAlive: sleeperPid > 0 && processExists(sleeperPid) && zombiesOf(process.pid).indexOf(sleeperPid) < 0,
      sleeperPid,
      enoent: (enoent as { code?: string })?.code,
      abortName,
      killed: { code: killed.code, signal: killed.signal },
      holder: holder.stdout.toString(),
      holderMs,
      fdContent,
      shared: [shared.stdout.toString(), shared.stderr.toString()],
      bare: [bare.stdout.toString(), bare.stderr.toString()],
      refused,
      resourcesBefore: baseline,
      resourcesAfter: resources(),
    };
  },
  // Without the kernel's naming of exited children (a listing of /proc children only), every reap
  // that found an exit is followed by one more sweep: a listing may skip a child while it changes.
  async listed() {
    const reaper = Reaper.instance({ listChildren: listOwnChildren });
    const runs = await Promise.all(Array.from({ length: 5 }, (_, i) => reaper.run('/bin/sh', ['-c', `exit ${i}`])));
    await sleep(300); // the follow-up sweep
    return {
      codes: runs.map((r) => r.code),
      followUps: reaper.stats.followUps,
      zombies: zombiesOf(process.pid),
    };
  },
  // run() starts an absolute path with posix_spawn (src/sys/spawn.ts), not by forking Node.
  async direct() {
    const reaper = Reaper.instance();
    const subscribed: number[] = [];
    reaper.subscribe((e) => subscribed.push(e.pid));
    const status = (pid: number, key: string) =>
      /^(\w+):\s*(\S+)/m.exec(
        fs
          .readFileSync(`/proc/${pid}/status`, 'utf8')
          .split('\n')
          .find((l) => l.startsWith(`${key}:`)) ?? ''
      )?.[2];
    // Node ignores SIGPIPE and blocks nothing: the child must start with every default, as libuv's do.
    const signals = await reaper.run('/bin/sh', ['-c', 'grep -E "^Sig(Ign|Blk)" /proc/self/status']);
    // Slots that name each other's fds (stdout <-> stderr) and an extra fd.
    const file = '/tmp/tsshim-reaper-direct-test';
    const fd = fs.openSync(file, 'w');
    const swapped = await reaper.run('/bin/sh', ['-c', 'echo to-stdout; echo to-stderr >&2; echo to-fd3 >&3'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      extraFds: [fd],
    });
    fs.closeSync(fd);
    const fd3 = fs.readFileSync(file, 'utf8');
    fs.unlinkSync(file);
    // While it runs, the pid is ours, not libuv's; its exit reaches run() and no subscriber.
    let ownedWhileRunning = false;
    let libuvWhileRunning = true;
    const running = reaper.run('/bin/sh', ['-c', 'read x; exit 5'], { input: 'go\n' });
    const pids: number[] = [];
    for (const pid of fs
      .readFileSync('/proc/self/task/' + process.pid + '/children', 'utf8')
      .split(' ')
      .filter(Boolean)
      .map(Number)) {
      pids.push(pid);
      if (reaper.startedHere(pid)) ownedWhileRunning = true;
      libuvWhileRunning = reaper.ownsByLibuv(pid);
    }
    const five = await running;
    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => reaper.run('/bin/sh', ['-c', `exit ${i}`])));
    await sleep(300); // a follow-up sweep, were one armed
    return {
      followUps: reaper.stats.followUps,
      signals: signals.stdout.toString(),
      parentSigIgnNonZero: status(process.pid, 'SigIgn') !== '0000000000000000',
      swapped: [swapped.stdout.toString(), swapped.stderr.toString()],
      fd3,
      ownedWhileRunning,
      libuvWhileRunning,
      fiveCode: five.code,
      fivePid: five.pid > 0,
      manyOk: many.every((r, i) => r.code === i),
      runPidsSeenBySubscribers: [five.pid, ...many.map((r) => r.pid), signals.pid, swapped.pid].filter((p) =>
        subscribed.includes(p)
      ),
      ownRuns: reaper.stats.ownRuns,
      zombies: zombiesOf(process.pid),
    };
  },
};

if (process.env.REAPER_SCENARIO) {
  const name = process.env.REAPER_SCENARIO;
  scenarios[name]().then(
    (r) => {
      process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (e) => {
      process.stderr.write(`scenario ${name} failed: ${e?.stack ?? e}\n`);
      process.exit(1);
    }
  );
} else {
  const runScenario = (name: string, env: Record<string, string> = {}, timeout = 120_000) => {
    const r = spawnSync(process.execPath, [__filename], {
      env: { ...process.env, REAPER_SCENARIO: name, ...env },
      encoding: 'utf8',
      timeout,
      maxBuffer: 64 << 20,
    });
    assert.equal(r.status, 0, `scenario ${name}: status ${r.status} signal ${r.signal}\n${r.stderr}`);
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    assert.ok(line, `no result from ${name}: ${r.stdout}\n${r.stderr}`);
    return JSON.parse(line.slice(7));
  };

  test('stress: 2000 runs at 32 in flight + 600 orphans exiting meanwhile, nothing stolen or lost', () => {
    const r = runScenario('stress');
    assert.equal(r.runs, 2000);
    assert.deepEqual(r.wrongRuns, [], 'every run must get its own exit code');
    assert.deepEqual(r.makerCodes, [0]);
    assert.equal(r.orphans, 600);
    // Every orphan reaped with its own status (a reused pid counts each of its orphans), none left.
    assert.equal(r.allDelivered, true, `every orphan exit reaches subscribers; missing ${JSON.stringify(r.missing)}`);
    assert.deepEqual(r.wrongOrphans, []);
    assert.equal(r.plainCode, 42, 'a plain child_process child keeps its status');
    assert.deepEqual(r.zombies, []);
    assert.deepEqual(r.resourcesAfter, r.resourcesBefore, 'no handle leak');
    assert.ok(
      r.stats.reaped >= 600 && r.stats.reaped < 700,
      `reaped ${r.stats.reaped}: only orphans, never runc-like children`
    );
  });

  test('an orphan killed by a signal is reported as 128+signal with a sane timestamp', () => {
    const r = runScenario('signalled');
    assert.deepEqual(r, { status: 137, pid: true, nanosInRange: true, atMatches: true });
  });

  test('ExitBuffer keeps an exit that happened before the pid was known', () => {
    const r = runScenario('earlyExit');
    assert.deepEqual(r, { claimed: 9, again: true, timedOut: true, zombie: false });
  });

  test('a reap that listed the children is followed by one more sweep; nothing is lost either way', () => {
    const r = runScenario('listed');
    assert.deepEqual(r.codes, [0, 1, 2, 3, 4]);
    assert.ok(r.followUps >= 1, `followUps ${r.followUps}`);
    assert.deepEqual(r.zombies, []);
  });

  test('run() of an absolute path: posix_spawn, default signals in the child, fds as asked, every exit to its run() only', () => {
    const r = runScenario('direct');
    assert.equal(r.signals, 'SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n');
    assert.equal(r.parentSigIgnNonZero, true, 'the parent (Node) does ignore signals: the child did not inherit them');
    assert.deepEqual(r.swapped, ['to-stdout\n', 'to-stderr\n']);
    assert.equal(r.fd3, 'to-fd3\n');
    assert.equal(r.ownedWhileRunning, true);
    assert.equal(r.libuvWhileRunning, false, 'not a child_process child');
    assert.equal(r.fiveCode, 5);
    assert.equal(r.manyOk, true, 'every run gets its own exit code');
    assert.deepEqual(r.runPidsSeenBySubscribers, [], 'run() exits are not fanned out');
    assert.ok(r.ownRuns >= 53, `ownRuns ${r.ownRuns}`);
    assert.equal(r.followUps, 0, 'exits the kernel named one by one (no listing of children) arm no follow-up sweep');
    assert.deepEqual(r.zombies, []);
  });

  test('run(): input, env, cwd, stderr, deadline, ENOENT, abort, signals, held pipes, fd stdio', () => {
    const r = runScenario('runBasics');
    assert.equal(r.cat, 'through stdin');
    assert.equal(r.catCode, 0);
    assert.equal(r.env, 'bar\n/tmp\n');
    assert.equal(r.envErr, 'err\n');
    assert.equal(r.envCode, 4);
    assert.match(r.timeout, /timed out after 300 ms \(killed with SIGKILL\)/);
    assert.ok(r.elapsed >= 290 && r.elapsed < 3000, `deadline took ${r.elapsed} ms`);
    assert.ok(r.sleeperPid > 0);
    assert.equal(r.sleeperAlive, false, 'the timed-out child must be dead and reaped');
    assert.equal(r.enoent, 'ENOENT');
    assert.equal(r.abortName, 'AbortError');
    assert.deepEqual(r.killed, { code: 143, signal: 'SIGTERM' });
    assert.equal(r.holder, 'started\n');
    assert.ok(r.holderMs < 2000, `a grandchild holding stdout held run() for ${r.holderMs} ms`);
    assert.equal(r.fdContent, 'into-fd\n');
    assert.deepEqual(r.shared, ['a\nb\nc\n', ''], 'one pipe for stdout and stderr');
    assert.deepEqual(r.bare, ['a\nc\n', 'b\n'], 'child_process: a pipe of its own');
    assert.match(r.refused, /only stderr can be 'stdout'/);
    assert.deepEqual(r.resourcesAfter, r.resourcesBefore);
  });
}

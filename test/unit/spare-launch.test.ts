// When a daemon boots the next container's spare (src/shim/spare.ts SpareLaunch): once, after its
// first Start, when its RPCs went quiet or when it leaves, never on the Start's own path; and what a
// spare that leaves on its own takes with it (leavePool), and what a dead one left (sweepDeadSpares).
import { test, mock, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { leavePool, SpareLaunch, stopSpares } from '../../src/shim/spare';

afterEach(() => mock.timers.reset());

/** `busyTries`: the first so many launches find a runc of ours running and refuse. */
function launcher(opts: { launched?: boolean; busyTries?: number } = {}) {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  let boots = 0;
  let tries = 0;
  const l = new SpareLaunch(
    () => {
      if (tries++ < (opts.busyTries ?? 0)) return false;
      boots++;
      return true;
    },
    { launched: opts.launched, quietMs: 100, maxDeferMs: 1000 }
  );
  return { l, boots: () => boots, tries: () => tries };
}

test('a Start does not boot the spare on its own path: only once the RPCs went quiet', () => {
  const { l, boots } = launcher();
  l.started();
  assert.equal(boots(), 0, 'not synchronously with the Start');
  assert.ok(l.pending);
  // State, Wait, Delete... each answered call postpones the boot.
  for (let i = 0; i < 5; i++) {
    mock.timers.tick(90);
    l.activity();
  }
  assert.equal(boots(), 0, 'calls kept coming');
  mock.timers.tick(100);
  assert.equal(boots(), 1, 'quiet: booted');
  assert.equal(l.launched, true);
  assert.equal(l.pending, false);
});

test('calls postpone the boot only up to the limit after the Start', () => {
  const { l, boots } = launcher();
  l.started();
  for (let i = 0; i < 30 && boots() === 0; i++) {
    mock.timers.tick(50);
    l.activity();
  }
  assert.equal(boots(), 1, 'booted although calls never stopped');
});

test('one boot per daemon: later Starts and calls boot nothing more', () => {
  const { l, boots } = launcher();
  l.started();
  mock.timers.tick(100);
  l.started();
  l.activity();
  mock.timers.tick(5000);
  assert.equal(boots(), 1);
  assert.equal(l.leave(), false, 'nothing left to boot when leaving');
});

test('leaving before the quiet moment hands the boot to the caller, and no timer boots it later', () => {
  const { l, boots } = launcher();
  l.started();
  mock.timers.tick(50);
  assert.equal(l.leave(), true, 'still to boot: the leaving daemon boots it after its Shutdown reply');
  mock.timers.tick(5000);
  assert.equal(boots(), 0);
});

test('a launch refused while runc runs is tried again at the next quiet moment, and boots once it can', () => {
  const { l, boots, tries } = launcher({ busyTries: 3 });
  l.started();
  mock.timers.tick(100);
  assert.equal(tries(), 1);
  assert.equal(boots(), 0);
  assert.ok(l.pending, 'still due after a refusal');
  mock.timers.tick(90);
  l.activity(); // an RPC answered meanwhile postpones the next try by the quiet period
  mock.timers.tick(90);
  assert.equal(tries(), 1, 'not while RPCs come');
  for (let i = 0; i < 3; i++) mock.timers.tick(100);
  assert.equal(boots(), 1, 'booted at the first quiet moment without runc');
  assert.equal(tries(), 4);
  assert.equal(l.leave(), false, 'nothing left to boot when leaving');
});

test('a daemon that leaves while every launch was refused still owes the spare (the CRI pod cycle)', () => {
  const { l, boots, tries } = launcher({ busyTries: 1000 });
  l.started();
  for (let i = 0; i < 30; i++) mock.timers.tick(100);
  assert.ok(tries() >= 20, 'tried again at every quiet moment');
  assert.equal(boots(), 0);
  assert.equal(l.leave(), true, 'the leaving daemon boots it after its Shutdown reply');
  mock.timers.tick(10_000);
  assert.equal(boots(), 0, 'and no timer boots a second one');
});

test('a daemon that never started a container has no spare pending; leaving, it still owes one', () => {
  const { l, boots } = launcher();
  l.activity();
  mock.timers.tick(5000);
  assert.equal(boots(), 0);
  assert.equal(l.pending, false);
  assert.equal(l.leave(), true);
});

test('a daemon that already booted its spare (restored after an upgrade, per-node) boots none', () => {
  const { l, boots } = launcher({ launched: true });
  l.started();
  mock.timers.tick(5000);
  assert.equal(boots(), 0);
  assert.equal(l.leave(), false);
});

/** A pid that ran and is gone (reaped): what a spare killed outright leaves its entries under. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(r.stdout.toString().trim());
}

test("leavePool removes a leaving spare's own entries (half-built or not), dead spares' entries and the pool once empty, nothing else", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-leave-pool-'));
  try {
    const pool = path.join(root, 'pool');
    const live = String(process.pid); // a waiting spare that still runs
    fs.mkdirSync(path.join(pool, '.new-41'), { recursive: true });
    fs.writeFileSync(path.join(pool, '.new-41', 'req'), '');
    fs.writeFileSync(path.join(pool, '.booting-41'), '');
    fs.mkdirSync(path.join(pool, live));
    fs.mkdirSync(path.join(pool, `.new-${live}`));
    // A dead spare's directory that a start claimed (it falls back to Node with the request in
    // it), and one a spare answered in: the starts', not a spare's.
    const claimedByStart = path.join(pool, String(deadPid()));
    fs.mkdirSync(claimedByStart);
    fs.writeFileSync(path.join(claimedByStart, 'claimed'), '');
    fs.mkdirSync(path.join(pool, `${deadPid()}.answered.1`));
    fs.writeFileSync(path.join(pool, '.serving-43'), '');
    const dead = deadPid();
    fs.mkdirSync(path.join(pool, `.new-${dead}`)); // half built by a spare killed outright
    fs.mkdirSync(path.join(pool, String(deadPid())));
    fs.writeFileSync(path.join(pool, `.booting-${deadPid()}`), '');
    leavePool(pool, 41);
    const starts = (n: string) => n.includes('.answered.') || path.join(pool, n) === claimedByStart;
    assert.deepEqual(
      fs
        .readdirSync(pool)
        .filter((n) => !starts(n))
        .sort(),
      [`.new-${live}`, '.serving-43', live].sort(),
      '41 and the dead spares went, the live one stays'
    );
    assert.equal(fs.readdirSync(pool).filter(starts).length, 2, 'the claimed and the answered directory stay');
    assert.ok(fs.existsSync(path.join(claimedByStart, 'claimed')), 'with the claim in it');
    assert.ok(!fs.readdirSync(pool).some((n) => n.startsWith('.gone-')), 'nothing half removed');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('leavePool: the last one out removes the pool; a second call finds nothing to do', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-leave-pool-'));
  try {
    const pool = path.join(root, 'pool');
    fs.mkdirSync(path.join(pool, '44'), { recursive: true });
    fs.mkdirSync(path.join(pool, `.new-${deadPid()}`));
    leavePool(pool, 44);
    assert.equal(fs.existsSync(pool), false, "the last one out removes the pool, a dead spare's leftover too");
    leavePool(pool, 44); // gone already: nothing to do
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('stopSpares of the last shim removes the pool even when a spare killed outright left a half-built directory', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-stop-spares-'));
  try {
    const pool = path.join(root, 'pool');
    const half = path.join(pool, `.new-${deadPid()}`);
    fs.mkdirSync(half, { recursive: true });
    fs.writeFileSync(path.join(half, 'req'), '');
    stopSpares(pool);
    assert.equal(fs.existsSync(pool), false);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

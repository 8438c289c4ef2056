// When a daemon boots the next container's spare (src/shim/spare.ts SpareLaunch): once, after its
// first Start, when its RPCs went quiet or when it leaves, never on the Start's own path; and what a
// spare that leaves on its own takes with it (leavePool).
import { test, mock, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { leavePool, SpareLaunch } from '../../src/shim/spare';

afterEach(() => mock.timers.reset());

function launcher(opts: { launched?: boolean } = {}) {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  let boots = 0;
  const l = new SpareLaunch(() => boots++, { launched: opts.launched, quietMs: 100, maxDeferMs: 1000 });
  return { l, boots: () => boots };
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

test("leavePool removes a leaving spare's own entries (half-built or not) and the pool once empty, nothing else", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-leave-pool-'));
  try {
    const pool = path.join(root, 'pool');
    fs.mkdirSync(path.join(pool, '.new-41'), { recursive: true });
    fs.writeFileSync(path.join(pool, '.new-41', 'req'), '');
    fs.writeFileSync(path.join(pool, '.booting-41'), '');
    fs.mkdirSync(path.join(pool, '42'));
    fs.writeFileSync(path.join(pool, '.serving-43'), '');
    leavePool(pool, 41);
    assert.deepEqual(fs.readdirSync(pool).sort(), ['.serving-43', '42'], 'only 41 went');
    leavePool(pool, 42);
    assert.deepEqual(fs.readdirSync(pool), ['.serving-43']);
    fs.rmSync(path.join(pool, '.serving-43'));
    fs.mkdirSync(path.join(pool, '44'));
    leavePool(pool, 44);
    assert.equal(fs.existsSync(pool), false, 'the last one out removes the pool');
    leavePool(pool, 44); // gone already: nothing to do
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

// A spare boots under SCHED_IDLE and niced; the daemon it becomes runs with its claiming start's
// policy and nice value on every thread (src/shim/spare-identity.ts, src/sys/libc.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as sys from '../../src/sys/libc';
import { spawnOutsideShims } from '../../src/shim/spare-identity';
import { until } from '../support/wait';

const isRoot = process.geteuid?.() === 0;

/** [policy, nice] of every thread of pid, from /proc (fields 41 and 19 of stat). */
function threadScheduling(pid: number): string[] {
  return [
    ...new Set(
      fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
        const s = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        return `policy ${f[38]} nice ${f[16]}`;
      })
    ),
  ].sort();
}

test(
  'schedPolicy reads what /proc shows; setSchedPolicy moves one thread only',
  { skip: !isRoot && 'needs root to leave SCHED_IDLE' },
  () => {
    // In a child: this test runner's own threads keep their policy.
    const script = `
    const sys = require(${JSON.stringify(path.resolve(__dirname, '../../src/sys/libc.js'))});
    const before = sys.schedPolicy(0);
    sys.setSchedPolicy(0, { policy: sys.SCHED_IDLE, priority: 0 });
    const idle = sys.schedPolicy(0);
    const stat = require('fs').readFileSync('/proc/thread-self/stat', 'utf8');
    const procPolicy = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
    sys.setSchedPolicy(0, { policy: sys.SCHED_OTHER, priority: 0 });
    console.log(JSON.stringify({ before, idle, procPolicy, after: sys.schedPolicy(0) }));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.before, { policy: sys.SCHED_OTHER, priority: 0 });
    assert.deepEqual(out.idle, { policy: sys.SCHED_IDLE, priority: 0 });
    assert.equal(out.procPolicy, sys.SCHED_IDLE);
    assert.deepEqual(out.after, { policy: sys.SCHED_OTHER, priority: 0 });
  }
);

test(
  'spawnOutsideShims with idle boots the process under SCHED_IDLE at the nice value given',
  { skip: !isRoot && 'SCHED_IDLE spares are for root' },
  async () => {
    const pool = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-spare-sched-'));
    try {
      assert.ok(spawnOutsideShims(['/bin/sleep', '30'], { PATH: process.env.PATH }, 10, pool, true));
      const pid = await until(() => {
        const m = fs
          .readdirSync(pool)
          .map((n) => /^\.booting-(\d+)$/.exec(n)?.[1])
          .find(Boolean);
        if (!m) return null;
        try {
          return fs.readFileSync(`/proc/${m}/cmdline`, 'utf8').startsWith('/bin/sleep') ? Number(m) : null;
        } catch {
          return null;
        }
      }, 'the launched process');
      try {
        assert.deepEqual(threadScheduling(pid), [`policy ${sys.SCHED_IDLE} nice 10`]);
      } finally {
        process.kill(pid, 'SIGKILL');
      }
      // Without idle: the ordinary policy, niced.
      assert.ok(spawnOutsideShims(['/bin/sleep', '31'], { PATH: process.env.PATH }, 7, pool, false));
      const plain = await until(() => {
        for (const n of fs.readdirSync(pool)) {
          const m = /^\.booting-(\d+)$/.exec(n)?.[1];
          if (!m || Number(m) === pid) continue;
          try {
            if (fs.readFileSync(`/proc/${m}/cmdline`, 'utf8').startsWith('/bin/sleep\x0031')) return Number(m);
          } catch {
            /* not yet */
          }
        }
        return null;
      }, 'the second launched process');
      try {
        assert.deepEqual(threadScheduling(plain), [`policy ${sys.SCHED_OTHER} nice 7`]);
      } finally {
        process.kill(plain, 'SIGKILL');
      }
    } finally {
      fs.rmSync(pool, { recursive: true, force: true });
    }
  }
);

test('spawnOutsideShims returns once the booting marker is there, and false when it cannot be written', () => {
  // A last shim's stopSpares right after the launch must find the marker (CI found a spare booted
  // unseen after the last container, leaving its half-built pool entry).
  const pool = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-spare-marker-'));
  const pids: number[] = [];
  try {
    for (let i = 0; i < 5; i++) {
      assert.ok(spawnOutsideShims(['/bin/sleep', '30'], { PATH: process.env.PATH }, 5, pool, false));
      const markers = fs.readdirSync(pool).filter((n) => /^\.booting-\d+$/.test(n));
      assert.equal(markers.length, i + 1, 'one marker per launch, there when the call returns');
      pids.push(...markers.map((n) => Number(n.slice(9))).filter((p) => !pids.includes(p)));
    }
    const gone = path.join(pool, 'missing');
    assert.equal(spawnOutsideShims(['/bin/sleep', '30'], { PATH: process.env.PATH }, 5, gone, false), false);
  } finally {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    fs.rmSync(pool, { recursive: true, force: true });
  }
});

test(
  'copySchedulingOf: every thread, even one under SCHED_IDLE, takes the policy and nice value of the given process',
  { skip: !isRoot && 'needs root to leave SCHED_IDLE' },
  () => {
    // A Node child with its worker threads idle and niced, as a booted spare is, copies this runner's
    // main thread (SCHED_OTHER); then leaveIdleScheduling on another idle child keeps its nice value.
    const identity = JSON.stringify(path.resolve(__dirname, '../../src/shim/spare-identity.js'));
    const libc = JSON.stringify(path.resolve(__dirname, '../../src/sys/libc.js'));
    const script = `
    const fs = require('fs'), os = require('os');
    const sys = require(${libc});
    const id = require(${identity});
    const mode = process.argv[1];
    for (const tid of fs.readdirSync('/proc/self/task').map(Number)) {
      sys.setSchedPolicy(tid, { policy: sys.SCHED_IDLE, priority: 0 });
      os.setPriority(tid, 12);
    }
    if (mode === 'copy') id.copySchedulingOf(process.ppid); else id.leaveIdleScheduling();
    const seen = new Set();
    for (const tid of fs.readdirSync('/proc/self/task')) {
      const s = fs.readFileSync('/proc/self/task/' + tid + '/stat', 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      seen.add('policy ' + f[38] + ' nice ' + f[16]);
    }
    console.log(JSON.stringify({ threads: fs.readdirSync('/proc/self/task').length, seen: [...seen].sort() }));`;
    const ownNice = os.getPriority(process.pid);
    for (const [mode, want] of [
      ['copy', `policy ${sys.SCHED_OTHER} nice ${ownNice}`],
      ['leave', `policy ${sys.SCHED_OTHER} nice 12`],
    ]) {
      const r = spawnSync(process.execPath, ['-e', script, mode], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.ok(out.threads > 1, 'Node runs several threads');
      assert.deepEqual(out.seen, [want], mode);
    }
  }
);

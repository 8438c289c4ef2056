// runToExitSync (src/sys/spawn.ts): a short helper started with posix_spawn and waited for without
// returning to the event loop, as spawnOutsideShims starts `setsid -f`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { runToExitSync } from '../../src/sys/spawn';
import { waitpidNoHang } from '../../src/sys/libc';

const env = { PATH: process.env.PATH };

test('runToExitSync returns the raw wait status and leaves no child behind', () => {
  assert.equal(runToExitSync('/bin/sh', ['-c', 'exit 0'], { env, timeoutMs: 10_000 }), 0);
  assert.equal(runToExitSync('/bin/sh', ['-c', 'exit 3'], { env, timeoutMs: 10_000 }), 3 << 8);
  assert.equal(runToExitSync('/bin/sh', ['-c', 'kill -9 $$'], { env, timeoutMs: 10_000 }), 9);
  // Reaped here: nothing of ours is left for waitpid (or the Reaper) to find.
  const children = fs.readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').trim();
  for (const pid of children.split(' ').filter(Boolean).map(Number)) {
    assert.equal(waitpidNoHang(pid), null, `child ${pid} left exited and unreaped`);
  }
});

test('runToExitSync gives the child /dev/null as stdio, the environment and cwd asked for', () => {
  const out = `/tmp/tsshim-rtes-${process.pid}`;
  try {
    const fd = (n: number) => `$(readlink /proc/$$/fd/${n})`;
    const script = `echo "${fd(0)} ${fd(1)} ${fd(2)} $WORD $(pwd)" > ${out}`;
    const status = runToExitSync('/bin/sh', ['-c', script], {
      env: { ...env, WORD: 'hi' },
      cwd: '/',
      timeoutMs: 10_000,
    });
    assert.equal(status, 0);
    assert.equal(fs.readFileSync(out, 'utf8'), '/dev/null /dev/null /dev/null hi /\n');
  } finally {
    fs.rmSync(out, { force: true });
  }
});

test('runToExitSync kills and reaps a helper that outlives its timeout, and says so with null', () => {
  const t0 = Date.now();
  assert.equal(runToExitSync('/bin/sleep', ['30'], { env, timeoutMs: 200 }), null);
  assert.ok(Date.now() - t0 < 20_000);
});

test('runToExitSync throws when nothing can be started', () => {
  assert.throws(() => runToExitSync('/nonexistent/helper', [], { env, timeoutMs: 1000 }), /ENOENT|nonexistent/);
});

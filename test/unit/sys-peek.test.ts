// waitid(WNOWAIT) peeking, the reaper's fast path: names an exited child without reaping it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

if (process.env.PEEK_SCENARIO) {
  // Runs in a child process: making the test runner a subreaper would adopt its orphans.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- only the child loads sys
  const sys = require('../../src/sys/libc') as typeof import('../../src/sys/libc');
  sys.setChildSubreaper();
  const before = sys.peekExitedChild();
  const r = spawnSync('/bin/sh', ['-c', '(sleep 0.2; exit 5) & echo $!'], { encoding: 'utf8' });
  const orphan = Number(r.stdout.trim());
  const deadline = Date.now() + 5000;
  let first = 0;
  while (Date.now() < deadline && (first = sys.peekExitedChild()) <= 0) spawnSync('sleep', ['0.05']);
  const again = sys.peekExitedChild();
  const reaped = sys.waitpidNoHang(orphan);
  const after = sys.peekExitedChild();
  process.stdout.write(
    JSON.stringify({ before, orphan, first, again, status: reaped && sys.decodeWaitStatus(reaped.status), after })
  );
  process.exit(0);
}

test('peekExitedChild names an exited orphan, leaves it for waitpid, then reports none', () => {
  const r = spawnSync(process.execPath, [__filename], {
    env: { ...process.env, PEEK_SCENARIO: '1' },
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.before, -1, 'no children at all');
  assert.ok(out.orphan > 0);
  assert.equal(out.first, out.orphan, 'the adopted orphan is named once it exited');
  assert.equal(out.again, out.orphan, 'WNOWAIT: still there until reaped');
  assert.equal(out.status, 5);
  assert.equal(out.after, -1, 'nothing left');
});

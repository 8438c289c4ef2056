// Whether a leaving daemon's process is clean enough to go back to the spare pool (src/shim/pool-return.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  MAX_POOL_RETURNS,
  notPoolClean,
  poolReturnRefusal,
  spareSnapshot,
  type SpareSnapshot,
} from '../../src/shim/pool-return';
import { ownFds } from '../../src/sys/proc-fds';

const snapshot = (fds: [number, string][], listeners: Partial<SpareSnapshot['listeners']> = {}): SpareSnapshot => ({
  fds: new Map(fds),
  listeners: { SIGTERM: 0, SIGINT: 0, uncaughtException: 0, unhandledRejection: 0, ...listeners },
});
const spare = snapshot([
  [0, '/dev/null'],
  [1, '/dev/null'],
  [5, 'anon_inode:[eventpoll]'],
]);
const noChildren = () => [];

test('the same descriptors, no child and the same listeners: clean', () => {
  assert.equal(notPoolClean(spare, [], snapshot([...spare.fds]), noChildren), '');
});

test('a descriptor of the last container (its log fifo, a socket) is named, unless it is one the daemon closes next', () => {
  const now = snapshot([...spare.fds, [21, 'socket:[123]']]);
  assert.match(notPoolClean(spare, [], now, noChildren), /descriptor 21 \(socket:\[123\]\) was not open as a spare/);
  assert.equal(notPoolClean(spare, [21], now, noChildren), '');
});

test('a spare descriptor now closed or pointing elsewhere is not clean', () => {
  assert.match(
    notPoolClean(
      spare,
      [],
      snapshot([
        [0, '/dev/null'],
        [1, '/dev/null'],
      ]),
      noChildren
    ),
    /descriptor 5 .* is gone/
  );
  const swapped = snapshot([
    [0, '/dev/null'],
    [1, '/dev/null'],
    [5, '/run/x/log'],
  ]);
  assert.match(notPoolClean(spare, [], swapped, noChildren), /descriptor 5 \(\/run\/x\/log\) was not open as a spare/);
});

test('a child process left (a runc, a logger) is not clean', () => {
  assert.match(
    notPoolClean(spare, [], snapshot([...spare.fds]), () => [4242]),
    /child processes left: 4242/
  );
});

test('a process listener the daemon did not take off is not clean', () => {
  const now = snapshot([...spare.fds], { uncaughtException: 1 });
  assert.match(notPoolClean(spare, [], now, noChildren), /uncaughtException listeners: 1, 0 as a spare/);
});

test('ownFds sees a file opened and closed; spareSnapshot counts listeners', () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pool-return-')), 'f');
  const fd = fs.openSync(file, 'w');
  try {
    assert.equal(ownFds().get(fd), file);
  } finally {
    fs.closeSync(fd);
  }
  assert.equal(ownFds().get(fd), undefined);
  const before = spareSnapshot();
  const fn = () => {};
  process.on('SIGINT', fn);
  try {
    assert.equal(spareSnapshot().listeners.SIGINT, before.listeners.SIGINT + 1);
    assert.match(notPoolClean(before, [], spareSnapshot(), noChildren), /SIGINT listeners/);
  } finally {
    process.removeListener('SIGINT', fn);
  }
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
});

test('a process that went back often, sits in a pod ShimCgroup, or runs a replaced install does not go back', () => {
  const ok = { returns: 0, inShimCgroup: false, installChanged: false };
  let checked = 0;
  const clean = () => (checked++, '');
  assert.equal(poolReturnRefusal(ok, clean), '');
  assert.equal(checked, 1, 'the process is checked when the conditions hold');
  assert.match(poolReturnRefusal({ ...ok, returns: MAX_POOL_RETURNS }, clean), /went back 100 times/);
  assert.match(poolReturnRefusal({ ...ok, inShimCgroup: true }, clean), /ShimCgroup/);
  assert.match(poolReturnRefusal({ ...ok, installChanged: true }, clean), /installed anew/);
  assert.equal(checked, 1, 'refused before the process is looked at');
  assert.equal(
    poolReturnRefusal(ok, () => 'descriptor 9'),
    'descriptor 9'
  );
});

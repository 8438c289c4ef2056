// A spare's warm-up (src/shim/warm-up.ts) runs a container's first calls ahead of time, Stats among
// them, and leaves nothing behind: no cgroup file stays open, no child is left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

test('warm-up runs through (Stats of its own cgroup included) and keeps no cgroup file open', () => {
  // In a child: the warm-up makes its process a subreaper and spawns through the Reaper.
  const dist = path.resolve(__dirname, '../../src');
  const script = `
  const { warmUp } = require(${JSON.stringify(path.join(dist, 'shim/warm-up.js'))});
  const { openCgroupFileCount } = require(${JSON.stringify(path.join(dist, 'task/cgroups/files.js'))});
  warmUp().then((done) => {
    console.log(JSON.stringify({ done, open: openCgroupFileCount() }));
    process.exit(0);
  });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(out.done, true, 'ran through');
  assert.equal(out.open, 0, 'the warm-up closed the cgroup files it read');
});

test('warm-up stops before its next step once a start waits for the spare (hurry), and says so', () => {
  const dist = path.resolve(__dirname, '../../src');
  const script = `
  const { warmUp } = require(${JSON.stringify(path.join(dist, 'shim/warm-up.js'))});
  let asked = 0;
  // Two steps (the codecs, a container's stdio) run, then a start waits.
  warmUp(() => ++asked > 2).then((done) => {
    console.log(JSON.stringify({ done, asked }));
    process.exit(0);
  });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.deepEqual(out, { done: false, asked: 3 }, 'asked before each step, stopped at the third');
});

test("warm-up: a container's whole life runs through the Task handlers against a stand-in runc, and leaves nothing behind", () => {
  // In a child with its own temp dir: the scratch bundle must be gone afterwards, no fd left open,
  // no child process left, and every call of the life must have gone through (a failing step is
  // swallowed by warmUp, so this is where a broken warm-up shows).
  const dist = path.resolve(__dirname, '../../src');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warm-life-'));
  try {
    const script = `
    const fs = require('fs');
    const { warmTaskLifecycle } = require(${JSON.stringify(path.join(dist, 'shim/warm-up.js'))});
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    warmTaskLifecycle().then((done) => {
      const children = fs.readFileSync('/proc/self/task/' + process.pid + '/children', 'utf8').trim();
      console.log(JSON.stringify({ done, leftFds: fds() - before, children, tmp: fs.readdirSync(process.env.TMPDIR) }));
      process.exit(0);
    });`;
    const r = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, TMPDIR: tmp },
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.deepEqual(out.done, [
      'Create',
      'Connect',
      'Start',
      'Pause',
      'Resume',
      'Wait',
      'State',
      'Delete',
      'Shutdown',
    ]);
    assert.equal(out.leftFds, 0, 'no fd left open');
    assert.equal(out.children, '', 'no child process');
    assert.deepEqual(out.tmp, [], 'the scratch bundle was removed');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test("warm-up: the exit's OOM check runs once on an eventfd of the warm-up's own, which is closed again", async () => {
  const { warmOomCheck } = await import(path.resolve(__dirname, '../../src/shim/warm-up.js'));
  assert.equal(await warmOomCheck(), true, 'nothing pending: no OOM reported'); // loads what it needs
  const fds = () => fs.readdirSync('/proc/self/fd').length;
  const before = fds();
  assert.equal(await warmOomCheck(), true);
  await new Promise((r) => setTimeout(r, 20)); // the reader's socket closes its fd on the next turn
  assert.equal(fds(), before, 'the eventfd was closed');
});

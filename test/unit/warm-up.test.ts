// A spare's warm-up (src/shim/warm-up.ts) runs a container's first calls ahead of time, Stats among
// them, and leaves nothing behind: no cgroup file stays open, no child is left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

test('warm-up runs through (Stats of its own cgroup included) and keeps no cgroup file open', () => {
  // In a child: the warm-up makes its process a subreaper and spawns through the Reaper.
  const dist = path.resolve(__dirname, '../../src');
  const script = `
  const { warmUp } = require(${JSON.stringify(path.join(dist, 'shim/warm-up.js'))});
  const { openCgroupFileCount } = require(${JSON.stringify(path.join(dist, 'task/cgroups/files.js'))});
  warmUp().then(() => {
    console.log(JSON.stringify({ open: openCgroupFileCount() }));
    process.exit(0);
  });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(out.open, 0, 'the warm-up closed the cgroup files it read');
});

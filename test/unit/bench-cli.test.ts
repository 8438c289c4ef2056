// The benchmark's command line: --help prints the usage and succeeds; a wrong argument is a one-line
// error (not a stack trace) and a failure. Nothing is measured: both exit before any containerd starts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const runJs = path.resolve(__dirname, '../../bench/run.js'); // dist/test/unit -> dist/bench/run.js

test('bench: --help prints the usage and exits 0; an unknown argument or suite is one line on stderr and exit 1', () => {
  const help = spawnSync(process.execPath, [runJs, '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^usage: run \[--quick\] \[--only [a-z,-]+\] \[--out DIR\]/);
  for (const args of [['--bogus'], ['--only', 'nosuch']]) {
    const r = spawnSync(process.execPath, [runJs, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 1, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line, no stack trace: ${r.stderr}`);
    assert.match(r.stderr, /^bench: unknown (argument|suite) .*usage: run/);
  }
});

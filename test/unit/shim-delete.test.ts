// The `delete` subcommand (src/shim/delete.ts) against the fake runc: it finds runc from the bundle
// files, runs `runc delete --force` through the typed client with the Go shim's flags, and answers
// with the exit the daemon persisted, tolerating whatever the dead shim left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { containerd } from '../../src/gen/proto';
import { runDelete } from '../../src/shim/delete';
import { oneShotRunner } from '../../src/shim/one-shot-runner';
import { parseFlags } from '../../src/shim/flags';
import { readConfig } from '../../src/shim/config';
import { defaultOptions } from '../../src/task/options';
import { writeInitExit, writeRuntimeFiles } from '../../src/task/bundle-files';

const FAKE = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'fake-runc', 'runc');
const US = '\x1f';

function setup(opts: { systemdCgroup?: boolean; runcState?: boolean } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-delete-'));
  const bundle = path.join(dir, 'c1');
  fs.mkdirSync(bundle);
  const root = path.join(dir, 'runc-root');
  writeRuntimeFiles(bundle, { ...defaultOptions(), binaryName: FAKE, root, systemdCgroup: !!opts.systemdCgroup });
  if (opts.runcState ?? true) fs.mkdirSync(path.join(root, 'ns1', 'c1'), { recursive: true });
  const record = path.join(dir, 'record');
  // The fake runc reads its knobs from the environment the runc client passes on (process.env).
  process.env.FAKE_RUNC_RECORD = record;
  const calls = () =>
    fs.existsSync(record)
      ? fs
          .readFileSync(record, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(US))
      : [];
  const warnings: string[] = [];
  const run = async () =>
    containerd.task.v2.DeleteResponse.decode(
      await runDelete(
        parseFlags(['-namespace', 'ns1', '-id', 'c1', '-bundle', bundle, 'delete']),
        readConfig({ TSSHIM_STATE_DIR: path.join(dir, 'state') }),
        (m) => warnings.push(m)
      )
    );
  return { dir, bundle, root, calls, warnings, run };
}

test('delete: runc delete --force with the Go shim flags, the persisted exit in the response', async () => {
  const s = setup({ systemdCgroup: true });
  fs.writeFileSync(path.join(s.bundle, 'init.pid'), '4321');
  writeInitExit(s.bundle, { pid: 4321, status: 3, at: 1_700_000_000_250 });
  const d = await s.run();
  assert.deepEqual(s.calls(), [
    [
      '--root',
      path.join(s.root, 'ns1'),
      '--log',
      path.join(s.bundle, 'log.json'),
      '--log-format',
      'json',
      '--systemd-cgroup',
      'delete',
      '--force',
      'c1',
    ],
  ]);
  assert.deepEqual(s.warnings, []);
  assert.equal(d.pid, 4321);
  assert.equal(d.exit_status, 3);
  assert.equal(Number(d.exited_at!.seconds), 1_700_000_000);
  assert.equal(d.exited_at!.nanos, 250_000_000);
  // A short-lived command: runc runs without the reaper (no subreaper bit, no libc bindings).
  assert.ok(
    !Object.keys(require.cache).some((m) => /[/\\]sys[/\\](reaper|libc)\.js$/.test(m)),
    'delete loaded the reaper'
  );
});

test('delete: no runc state dir, no runc; a container that never exited reports 137', async () => {
  const s = setup({ runcState: false });
  const before = Date.now();
  const d = await s.run();
  assert.deepEqual(s.calls(), []);
  assert.equal(d.pid, 0);
  assert.equal(d.exit_status, 137);
  assert.ok(Number(d.exited_at!.seconds) >= Math.floor(before / 1000));
});

test("delete: a failing runc is a warning with runc's own message, and delete still answers", async () => {
  const s = setup();
  process.env.FAKE_RUNC_FAIL = 'delete';
  process.env.FAKE_RUNC_ERROR = 'container c1 is locked';
  try {
    const d = await s.run();
    assert.equal(d.exit_status, 137);
  } finally {
    delete process.env.FAKE_RUNC_FAIL;
    delete process.env.FAKE_RUNC_ERROR;
  }
  assert.equal(s.warnings.length, 1);
  assert.match(s.warnings[0], /^runc delete --force c1 failed: container c1 is locked$/);
});

test('delete: a missing runtime binary is a warning, not a failure', async () => {
  const s = setup();
  fs.writeFileSync(path.join(s.bundle, 'runtime'), path.join(s.dir, 'no-such-runc'));
  const d = await s.run();
  assert.equal(d.exit_status, 137);
  assert.equal(s.warnings.length, 1);
  assert.match(s.warnings[0], /runc delete --force c1 failed: .*not found/);
});

test('delete: a damaged options.json falls back to the defaults instead of failing (containerd would keep the bundle)', async () => {
  const s = setup({ runcState: false });
  fs.writeFileSync(path.join(s.bundle, 'options.json'), '{"root":');
  writeInitExit(s.bundle, { pid: 7, status: 0, at: 1_700_000_000_000 });
  const d = await s.run();
  assert.equal(d.exit_status, 0);
  assert.equal(s.warnings.length, 1);
  assert.match(s.warnings[0], /options\.json/);
});

test("delete's runner: output and status like the reaper's run; a deadline SIGKILLs and rejects as ETIMEDOUT", async () => {
  const ok = await oneShotRunner.run('sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'in' });
  assert.equal(ok.code, 3);
  assert.equal(ok.stdout.toString(), 'in');
  assert.equal(ok.stderr.toString(), 'err\n');
  const killed = await oneShotRunner.run('sh', ['-c', 'kill -TERM $$']);
  assert.equal(killed.code, 128 + 15);
  const late = await oneShotRunner.run('sleep', ['30'], { timeoutMs: 100 }).then(
    () => null,
    (e: NodeJS.ErrnoException) => e
  );
  assert.equal(late?.code, 'ETIMEDOUT');
  const missing = await oneShotRunner.run('/nonexistent/runc', []).then(
    () => null,
    (e: NodeJS.ErrnoException) => e
  );
  assert.equal(missing?.code, 'ENOENT');
});

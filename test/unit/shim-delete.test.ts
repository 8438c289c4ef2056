// The `delete` subcommand (src/shim/delete.ts) against the fake runc: it finds runc from the bundle
// files, runs `runc delete --force` through the typed client with the Go shim's flags, and answers
// with the exit the daemon persisted, tolerating whatever the dead shim left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as net from 'node:net';
import { spawnSync } from 'node:child_process';
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

// ---- the sh's own `delete` after a shim died (bin/containerd-shim-tsshim-v2 dead_delete) -------

const WRAPPER = path.resolve(__dirname, '..', '..', '..', 'bin', 'containerd-shim-tsshim-v2');

/**
 * Runs the entry's `delete` as containerd does (cwd = bundle) and reports whether Node booted: a
 * preloaded module leaves a mark only in a Node process.
 */
function shDelete(s: ReturnType<typeof setup>) {
  const mark = path.join(s.dir, 'node-booted');
  const preload = path.join(s.dir, 'mark.js');
  fs.writeFileSync(preload, `require('fs').writeFileSync(${JSON.stringify(mark)}, '')`);
  const r = spawnSync(WRAPPER, ['-namespace', 'ns1', '-id', 'c1', 'delete'], {
    cwd: s.bundle,
    env: { ...process.env, TSSHIM_STATE_DIR: path.join(s.dir, 'state'), NODE_OPTIONS: `--require ${preload}` },
  });
  assert.equal(r.status, 0, String(r.stderr));
  const nodeBooted = fs.existsSync(mark);
  fs.rmSync(mark, { force: true });
  return { bytes: new Uint8Array(r.stdout), stderr: String(r.stderr), nodeBooted };
}

test('sh delete after a shim died: the same runc call and the same bytes as the Node path, without booting Node', async () => {
  const s = setup({ systemdCgroup: true });
  fs.writeFileSync(path.join(s.bundle, 'init.pid'), '4321');
  for (const exit of [
    { pid: 4321, status: 3, at: 1_700_000_000_250 },
    { pid: 4321, status: 0, at: 1_700_000_000_000 },
    { pid: 4321, status: 137, at: 4_102_444_800_999 },
  ]) {
    writeInitExit(s.bundle, exit);
    const sh = shDelete(s);
    assert.equal(sh.nodeBooted, false, 'the sh answered');
    assert.equal(sh.stderr, '');
    const fromSh = s.calls();
    fs.rmSync(process.env.FAKE_RUNC_RECORD!, { force: true });
    const node = await runDelete(
      parseFlags(['-namespace', 'ns1', '-id', 'c1', '-bundle', s.bundle, 'delete']),
      readConfig({ TSSHIM_STATE_DIR: path.join(s.dir, 'state') }),
      () => {}
    );
    assert.deepEqual(fromSh, s.calls(), 'runc called alike');
    fs.rmSync(process.env.FAKE_RUNC_RECORD!, { force: true });
    assert.deepEqual(sh.bytes, new Uint8Array(node), `same DeleteResponse for ${JSON.stringify(exit)}`);
  }
  // No runc state, no init.pid, no init.exit: no runc call, 137 now.
  const t = setup({ runcState: false });
  const before = Math.floor(Date.now() / 1000);
  const d = containerd.task.v2.DeleteResponse.decode(shDelete(t).bytes);
  assert.deepEqual(t.calls(), []);
  assert.equal(d.pid, 0);
  assert.equal(d.exit_status, 137);
  assert.ok(Number(d.exited_at!.seconds) >= before && Number(d.exited_at!.seconds) <= Date.now() / 1000 + 1);
});

test("sh delete after a shim died: the dead shim's socket, outbox and pid file go; a served socket stays", async (t) => {
  const s = setup({ runcState: false });
  const state = path.join(s.dir, 'state');
  fs.mkdirSync(state);
  const socket = path.join(s.dir, 'sock');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(socket, r));
  t.after(() => server.close()); // a failed assertion must not leave the test file running
  fs.writeFileSync(path.join(s.bundle, 'address'), `unix://${socket}`);
  for (const ext of ['.outbox', '.pid']) fs.writeFileSync(path.join(state, `sock${ext}`), '');
  assert.equal(shDelete(s).nodeBooted, false);
  assert.ok(fs.existsSync(socket), 'a served socket stays');
  assert.ok(fs.existsSync(path.join(state, 'sock.outbox')));
  // The server dies without unlinking its path, as a SIGKILLed shim does.
  server.close();
  fs.rmSync(socket, { force: true });
  const killed = spawnSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  assert.equal(killed.signal, 'SIGKILL');
  assert.ok(fs.lstatSync(socket).isSocket());
  const r = shDelete(s);
  assert.equal(r.nodeBooted, false);
  assert.equal(fs.existsSync(socket), false, 'the dead socket removed');
  assert.deepEqual(fs.readdirSync(state), [], 'outbox and pid file of the dead shim removed');
});

test('sh delete after a shim died: what the sh cannot read exactly, and a failing runc, go to Node', () => {
  const s = setup();
  writeInitExit(s.bundle, { pid: 7, status: 5, at: 1_700_000_000_000 });
  // An escape in options.json: Node reads it.
  fs.writeFileSync(
    path.join(s.bundle, 'options.json'),
    JSON.stringify({ root: s.root, binary_name: FAKE, criu_path: 'a\\b' })
  );
  const escaped = shDelete(s);
  assert.equal(escaped.nodeBooted, true);
  assert.equal(containerd.task.v2.DeleteResponse.decode(escaped.bytes).exit_status, 5);
  writeRuntimeFiles(s.bundle, { ...defaultOptions(), binaryName: FAKE, root: s.root });
  // runc fails: Node runs it again and reports runc's own message.
  process.env.FAKE_RUNC_FAIL = 'delete';
  process.env.FAKE_RUNC_ERROR = 'container c1 is locked';
  try {
    const failed = shDelete(s);
    assert.equal(failed.nodeBooted, true);
    assert.match(failed.stderr, /runc delete --force c1 failed: container c1 is locked/);
    assert.equal(containerd.task.v2.DeleteResponse.decode(failed.bytes).exit_status, 5);
  } finally {
    delete process.env.FAKE_RUNC_FAIL;
    delete process.env.FAKE_RUNC_ERROR;
  }
});

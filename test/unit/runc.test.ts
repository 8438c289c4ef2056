// RuncClient against a fake runc (argv, log.json errors, deadlines) and, in a child process made
// subreaper, against the real runc with a busybox rootfs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { RuncClient, RuncError, readPidFile, lastLogError } from '../../src/runc';
import { Reaper, ExitBuffer } from '../../src/sys/reaper';
import { pipe2, close } from '../../src/sys/libc';

function findFakeRunc(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const p = path.join(dir, 'test', 'fixtures', 'fake-runc', 'runc');
    if (fs.existsSync(p)) return p;
    if (path.dirname(dir) === dir) break;
  }
  return path.join(process.cwd(), 'test', 'fixtures', 'fake-runc', 'runc');
}

const FAKE = findFakeRunc();
// In the real-runc child process only the scenario runs.
const unitTest: (name: string, fn: () => void | Promise<void>) => void = process.env.RUNC_SCENARIO
  ? () => {}
  : (name, fn) => {
      void test(name, fn);
    };
const US = '\x1f';

function setup(env: Record<string, string> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-runc-'));
  const record = path.join(dir, 'record');
  const bundle = path.join(dir, 'bundle');
  fs.mkdirSync(bundle);
  const log = path.join(bundle, 'log.json');
  // the fake reads its knobs from the environment the client passes on
  const client = (extra: Partial<ConstructorParameters<typeof RuncClient>[0]> = {}) =>
    new RuncClient({
      binary: FAKE,
      root: path.join(dir, 'root', 'default'),
      log,
      env: { ...process.env, FAKE_RUNC_RECORD: record, NOTIFY_SOCKET: '/run/systemd/notify', ...env },
      runner: Reaper.instance({ subreaper: false }),
      ...extra,
    });
  const calls = () =>
    fs.existsSync(record)
      ? fs
          .readFileSync(record, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(US))
      : [];
  return { dir, record, bundle, log, client, calls };
}

function globals(s: ReturnType<typeof setup>): string[] {
  return ['--root', path.join(s.dir, 'root', 'default'), '--log', s.log, '--log-format', 'json'];
}

unitTest('command lines match the Go shim, global flags first and in order', async () => {
  const s = setup();
  const r = s.client();
  const pidFile = path.join(s.bundle, 'init.pid');
  await r.create('c1', s.bundle, { pidFile, consoleSocket: '/tmp/pty.sock', noPivot: true, noNewKeyring: true });
  await r.start('c1');
  await r.exec('c1', { args: ['sh'], terminal: false }, { pidFile: path.join(s.bundle, 'e1.pid'), detach: true });
  await r.kill('c1', 15);
  await r.kill('c1', 9, { all: true });
  await r.pause('c1');
  await r.resume('c1');
  await r.update('c1', { memory: { limit: 1048576 } });
  await r.checkpoint('c1', {
    imagePath: '/img',
    workPath: '/work',
    tcpEstablished: true,
    extUnixSockets: true,
    shellJob: true,
    fileLocks: true,
    emptyNamespaces: ['network', 'ipc'],
    leaveRunning: true,
  });
  await r.restore('c1', s.bundle, {
    imagePath: '/img',
    workPath: '/work',
    parentPath: '/parent',
    pidFile,
    noPivot: true,
  });
  await r.delete('c1');
  await r.delete('c1', { force: true });
  const g = globals(s);
  const calls = s.calls();
  const execCall = calls[2];
  assert.match(execCall[g.length + 2], /^(\/run\/user\/\d+|\/tmp)\/runc-process\d+$/);
  execCall[g.length + 2] = '<tmp>';
  assert.deepEqual(calls, [
    [
      ...g,
      'create',
      '--bundle',
      s.bundle,
      '--pid-file',
      pidFile,
      '--console-socket',
      '/tmp/pty.sock',
      '--no-pivot',
      '--no-new-keyring',
      'c1',
    ],
    [...g, 'start', 'c1'],
    [...g, 'exec', '--process', '<tmp>', '--detach', '--pid-file', path.join(s.bundle, 'e1.pid'), 'c1'],
    [...g, 'kill', 'c1', '15'],
    [...g, 'kill', '--all', 'c1', '9'],
    [...g, 'pause', 'c1'],
    [...g, 'resume', 'c1'],
    [...g, 'update', '--resources', '-', 'c1'],
    [
      ...g,
      'checkpoint',
      '--image-path',
      '/img',
      '--work-path',
      '/work',
      '--tcp-established',
      '--ext-unix-sk',
      '--shell-job',
      '--file-locks',
      '--empty-ns',
      'network',
      '--empty-ns',
      'ipc',
      '--leave-running',
      'c1',
    ],
    [
      ...g,
      'restore',
      '--image-path',
      '/img',
      '--work-path',
      '/work',
      '--parent-path',
      '/parent',
      '--detach',
      '--pid-file',
      pidFile,
      '--no-pivot',
      '-no-subreaper',
      '--bundle',
      s.bundle,
      'c1',
    ],
    [...g, 'delete', 'c1'],
    [...g, 'delete', '--force', 'c1'],
  ]);
  // update's resources arrive on stdin as one JSON line
  assert.equal(fs.readFileSync(`${s.record}.stdin`, 'utf8'), '{"memory":{"limit":1048576}}\n');
  // exec's process spec went through a temp file that is gone now
  assert.deepEqual(JSON.parse(fs.readFileSync(`${s.record}.process`, 'utf8')), { args: ['sh'], terminal: false });
  const leftovers = fs
    .readdirSync(process.env.XDG_RUNTIME_DIR || os.tmpdir())
    .filter((n) => /^runc-process\d+$/.test(n));
  assert.ok(!leftovers.some((n) => execCall.includes(n)), 'process file removed');
  // NOTIFY_SOCKET is never passed on to runc
  assert.equal(fs.readFileSync(`${s.record}.env`, 'utf8').trim(), 'unset');
  assert.equal(await readPidFile(pidFile), Number(fs.readFileSync(pidFile, 'utf8')));
});

unitTest('optional global flags: --debug, --criu, --systemd-cgroup; no --root/--log when unset', async () => {
  const s = setup();
  await s.client({ criuPath: '/usr/sbin/criu', systemdCgroup: true, debug: true }).start('x');
  await new RuncClient({
    binary: FAKE,
    env: { ...process.env, FAKE_RUNC_RECORD: s.record },
    runner: Reaper.instance({ subreaper: false }),
  }).start('y');
  const [a, b] = s.calls();
  assert.deepEqual(a, [
    '--root',
    path.join(s.dir, 'root', 'default'),
    '--debug',
    '--log',
    s.log,
    '--log-format',
    'json',
    '--criu',
    '/usr/sbin/criu',
    '--systemd-cgroup',
    'start',
    'x',
  ]);
  assert.deepEqual(b, ['start', 'y']);
  const c = new RuncClient({ logDir: '/some/bundle', runner: Reaper.instance({ subreaper: false }) });
  assert.deepEqual(c.globalArgs(), ['--log', '/some/bundle/log.json', '--log-format', 'json']);
});

unitTest("a failed create reports runc's last logged error from this run, not a stale one", async () => {
  const s = setup({
    FAKE_RUNC_FAIL: 'create',
    FAKE_RUNC_ERROR:
      'runc create failed: unable to start container process: exec: \\"/nonexistent\\": stat /nonexistent: no such file or directory',
  });
  fs.writeFileSync(s.log, '{"level":"error","msg":"stale error from yesterday","time":"x"}\n');
  const err = await s
    .client()
    .create('c1', s.bundle, { pidFile: path.join(s.bundle, 'init.pid') })
    .then(
      () => null,
      (e) => e
    );
  assert.ok(err instanceof RuncError);
  assert.equal(err.command, 'create');
  assert.equal(err.exitCode, 1);
  assert.equal(
    err.runcMessage,
    'runc create failed: unable to start container process: exec: "/nonexistent": stat /nonexistent: no such file or directory'
  );
  // runc's stdio belonged to the container: only the exit status is known
  assert.equal(err.message, `${FAKE} did not terminate successfully: exit status 1`);
  assert.equal(err.output, undefined);
});

unitTest('a failed captured command: Go error text with the output; fallbacks when the log has nothing', async () => {
  const s = setup({ FAKE_RUNC_FAIL: 'kill', FAKE_RUNC_NOLOG: '1', FAKE_RUNC_EXIT: '3' });
  const err = await s
    .client()
    .kill('c1', 9)
    .then(
      () => null,
      (e) => e
    );
  assert.ok(err instanceof RuncError);
  assert.equal(err.exitCode, 3);
  assert.match(
    err.message,
    /did not terminate successfully: exit status 3: fake stdout for kill\nfake stderr for kill\n$/
  );
  assert.equal(err.stderr, undefined, "go-runc's combined output: stdout and stderr share one pipe");
  // no log file at all: Go's "unable to retrieve OCI runtime error"
  assert.equal(
    err.runcMessage,
    `unable to retrieve OCI runtime error (open ${s.log}: no such file or directory): ${err.message}`
  );
  // log exists but has no error line: the plain runc error
  fs.writeFileSync(s.log, '{"level":"info","msg":"hello"}\n');
  const err2 = await s
    .client()
    .kill('c1', 9)
    .then(
      () => null,
      (e) => e
    );
  assert.equal(err2.runcMessage, err2.message);
});

unitTest('terminal-mode create captures runc output for the error (console socket)', async () => {
  const s = setup({ FAKE_RUNC_FAIL: 'create', FAKE_RUNC_NOLOG: '1' });
  fs.writeFileSync(s.log, '');
  const err = await s
    .client()
    .create('c1', s.bundle, { consoleSocket: '/tmp/x.sock', stdio: ['ignore', 'ignore', 'ignore'] })
    .then(
      () => null,
      (e) => e
    );
  assert.ok(err instanceof RuncError);
  assert.match(err.message, /exit status 1: fake stdout for create\nfake stderr for create/);
});

unitTest('create hands the stdio fds to runc (the container inherits them)', async () => {
  const s = setup();
  const [outR, outW] = pipe2();
  const [errR, errW] = pipe2();
  try {
    await s.client().create('c1', s.bundle, { stdio: ['ignore', outW, errW] });
    close(outW);
    close(errW);
    const buf = Buffer.alloc(256);
    assert.equal(buf.subarray(0, fs.readSync(outR, buf)).toString(), 'runc create on stdout\n');
    assert.equal(buf.subarray(0, fs.readSync(errR, buf)).toString(), 'runc create on stderr\n');
  } finally {
    close(outR);
    close(errR);
  }
});

unitTest('missing binary gives a clear error', async () => {
  const r = new RuncClient({ binary: '/nonexistent/runc-xyz', runner: Reaper.instance({ subreaper: false }) });
  const err = await r.start('c1').then(
    () => null,
    (e) => e
  );
  assert.ok(err instanceof RuncError);
  assert.equal(err.message, 'runc binary "/nonexistent/runc-xyz" not found');
  assert.equal(err.notFound, true);
  const err2 = await new RuncClient({ binary: 'no-such-runc-in-path', runner: Reaper.instance({ subreaper: false }) })
    .state('c1')
    .then(
      () => null,
      (e) => e
    );
  assert.equal(err2.message, 'runc binary "no-such-runc-in-path" not found');
});

unitTest('every run has a deadline: a hung runc is killed and reported', async () => {
  const s = setup({ FAKE_RUNC_HANG: 'pause' });
  const t0 = Date.now();
  const err = await s
    .client({ timeoutMs: 300 })
    .pause('c1')
    .then(
      () => null,
      (e) => e
    );
  const elapsed = Date.now() - t0;
  assert.ok(err instanceof RuncError);
  assert.equal(err.timedOut, true);
  assert.equal(err.message, `runc pause: ${FAKE} did not answer within 300ms (killed with SIGKILL)`);
  assert.ok(elapsed < 3000, `took ${elapsed} ms`);
  // per-call deadline and abort signal
  const err2 = await s
    .client()
    .pause('c1', { timeoutMs: 100 })
    .then(
      () => null,
      (e) => e
    );
  assert.match(err2.message, /did not answer within 100ms/);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  const err3 = await s
    .client()
    .pause('c1', { signal: ac.signal })
    .then(
      () => null,
      (e) => e
    );
  assert.ok(err3 instanceof RuncError);
  assert.match(err3.message, /aborted/);
});

unitTest(
  'a hung runtime fails at the deadline containerd sent (signal + remaining time), naming the binary and the command',
  async () => {
    const s = setup({ FAKE_RUNC_HANG: 'create' });
    // What the Task service passes for a request with timeout_nano: what is left of it, and the
    // request's signal, which the ttrpc server aborts at the same deadline.
    const signal = AbortSignal.timeout(400);
    const t0 = Date.now();
    const err = await s
      .client()
      .create('c1', s.bundle, { timeoutMs: 400, signal })
      .then(
        () => null,
        (e) => e
      );
    const elapsed = Date.now() - t0;
    assert.ok(err instanceof RuncError);
    assert.equal(err.timedOut, true);
    assert.match(
      err.message,
      new RegExp(`^runc create: ${FAKE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} did not answer within (400|3\\d\\d)ms`)
    );
    assert.ok(elapsed < 5000, `the client gave up at the deadline, not after the default 120 s (took ${elapsed} ms)`);
  }
);

unitTest('TSSHIM_RUNC_TIMEOUT-style durations parse and print', async () => {
  const { parseDuration, formatDuration } = await import('../../src/runc/timeouts');
  assert.equal(parseDuration('90'), 90_000);
  assert.equal(parseDuration('30s'), 30_000);
  assert.equal(parseDuration('1500ms'), 1500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration(''), undefined);
  assert.equal(parseDuration('soon'), undefined);
  assert.equal(parseDuration('0'), undefined);
  assert.equal(formatDuration(10_000), '10s');
  assert.equal(formatDuration(2500), '2.5s');
  assert.equal(formatDuration(300), '300ms');
});

unitTest('state, ps, features, version are parsed', async () => {
  const s = setup();
  const r = s.client();
  const st = await r.state('c1');
  assert.equal(st.pid, 4242);
  assert.equal(st.status, 'running');
  assert.deepEqual(await r.ps('c1'), [4242, 4243]);
  assert.deepEqual(await r.features(), { ociVersionMin: '1.0.0', ociVersionMax: '1.0.2-dev', hooks: ['prestart'] });
  const v = await r.version();
  assert.deepEqual(
    { ...v, raw: undefined },
    { runc: '9.9.9-fake', commit: 'deadbeef', spec: '1.0.2-dev', raw: undefined }
  );
  const old = setup({ FAKE_RUNC_NO_FEATURES: '1' });
  assert.equal(await old.client().features(), null);
});

unitTest('lastLogError keeps the last error line and skips torn lines', () => {
  const text = [
    '{"level":"error","msg":"first"}',
    '{"level":"info","msg":"info"}',
    '{"level":"error","msg":"  second \\n"}',
    '{"level":"error","msg":"torn',
    'not json',
  ].join('\n');
  assert.equal(lastLogError(text), 'second');
  assert.equal(lastLogError(''), undefined);
});

unitTest('readPidFile retries until runc wrote the pid, rejects empty or garbage', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-pid-'));
  const p = path.join(dir, 'init.pid');
  setTimeout(() => fs.writeFileSync(p, '12345'), 60);
  assert.equal(await readPidFile(p, { attempts: 20, intervalMs: 10 }), 12345);
  fs.writeFileSync(p, '');
  await assert.rejects(readPidFile(p, { attempts: 2, intervalMs: 1 }), /is empty/);
  fs.writeFileSync(p, 'abc');
  await assert.rejects(readPidFile(p, { attempts: 2, intervalMs: 1 }), /not a pid/);
  await assert.rejects(readPidFile(path.join(dir, 'missing'), { attempts: 2, intervalMs: 1 }), /no such file/);
});

// ---- real runc --------------------------------------------------------------------------------

async function realRuncScenario(): Promise<unknown> {
  const reaper = Reaper.instance(); // subreaper: the container init is re-parented to us
  const exits = new ExitBuffer(reaper);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsshim-realrunc-'));
  const bundle = path.join(dir, 'bundle');
  const rootfs = path.join(bundle, 'rootfs');
  fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'dev', 'sys', 'tmp']) fs.mkdirSync(path.join(rootfs, d));
  fs.copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
  for (const t of ['sh', 'true', 'sleep', 'echo']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', t));
  const spec = spawnSync('runc', ['spec', '--bundle', bundle], { encoding: 'utf8' });
  if (spec.status !== 0) throw new Error(`runc spec: ${spec.stderr}`);
  const cfgPath = path.join(bundle, 'config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
  cfg.process.terminal = false;
  cfg.process.args = ['/bin/sleep', '60'];
  fs.writeFileSync(cfgPath, JSON.stringify(cfg));
  const id = `tsshim-unit-${process.pid}`;
  const runc = new RuncClient({
    root: path.join(dir, 'state'),
    log: path.join(bundle, 'log.json'),
    timeoutMs: 30_000,
    runner: Reaper.instance(),
  });
  const result: Record<string, unknown> = {};
  const pidFile = path.join(bundle, 'init.pid');
  try {
    await runc.create(id, bundle, { pidFile });
    const pid = await readPidFile(pidFile);
    result.createdStatus = (await runc.state(id)).status;
    result.parentIsUs =
      fs.readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1].split(' ')[1] === String(process.pid);
    await runc.start(id);
    const st = await runc.state(id);
    result.startedStatus = st.status;
    result.statePid = st.pid === pid;
    result.psHasInit = (await runc.ps(id)).includes(pid);
    await runc.exec(id, { ...cfg.process, args: ['/bin/true'] }, { pidFile: path.join(bundle, 'e1.pid') });
    const execPid = await readPidFile(path.join(bundle, 'e1.pid'));
    result.execStatus = (await exits.wait(execPid, 10_000)).status;
    await runc.pause(id);
    result.pausedStatus = (await runc.state(id)).status;
    await runc.resume(id);
    await runc.kill(id, 9);
    result.initExit = (await exits.wait(pid, 10_000)).status;
    result.stoppedStatus = (await runc.state(id)).status;
    await runc.delete(id);
    result.stateAfterDelete = await runc.state(id).then(
      () => 'still there',
      (e: RuncError) => (/does not exist/.test(e.message) ? 'gone' : e.message)
    );
    // a failing create reports runc's own error from log.json
    cfg.process.args = ['/nonexistent'];
    fs.writeFileSync(cfgPath, JSON.stringify(cfg));
    const err = await runc.create(`${id}-bad`, bundle, { pidFile }).then(
      () => null,
      (e) => e as RuncError
    );
    result.badCreate = err?.runcMessage;
    await runc.delete(`${id}-bad`, { force: true }).catch(() => {});
    result.version = (await runc.version()).runc;
    result.features = (await runc.features()) !== null;
  } finally {
    await runc.delete(id, { force: true }).catch(() => {});
    exits.close();
  }
  return result;
}

if (process.env.RUNC_SCENARIO === 'real') {
  realRuncScenario().then(
    (r) => {
      process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (e) => {
      process.stderr.write(`real runc scenario failed: ${e?.stack ?? e}\n`);
      process.exit(1);
    }
  );
} else {
  const haveRunc =
    spawnSync('runc', ['--version']).status === 0 && fs.existsSync('/bin/busybox') && process.getuid?.() === 0;
  test(
    'real runc: create/start/state/ps/exec/pause/kill/delete with a busybox rootfs',
    { skip: haveRunc ? false : 'needs root, runc and /bin/busybox' },
    () => {
      const r = spawnSync(process.execPath, [__filename], {
        env: { ...process.env, RUNC_SCENARIO: 'real' },
        encoding: 'utf8',
        timeout: 90_000,
      });
      assert.equal(r.status, 0, r.stderr);
      const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
      assert.ok(line, r.stdout + r.stderr);
      const res = JSON.parse(line.slice(7));
      assert.equal(res.createdStatus, 'created');
      assert.equal(res.parentIsUs, true, 'container init re-parented to the subreaper');
      assert.equal(res.startedStatus, 'running');
      assert.equal(res.statePid, true);
      assert.equal(res.psHasInit, true);
      assert.equal(res.execStatus, 0);
      assert.equal(res.pausedStatus, 'paused');
      assert.equal(res.initExit, 137, 'SIGKILLed init reaped by us with 128+9');
      assert.equal(res.stoppedStatus, 'stopped');
      assert.equal(res.stateAfterDelete, 'gone');
      assert.match(
        res.badCreate,
        /^runc create failed: unable to start container process: exec: "\/nonexistent": stat \/nonexistent: no such file or directory$/
      );
      assert.ok(res.version.length > 0);
      assert.equal(res.features, true);
    }
  );
}
